"""Record the bus to a file, and replay a recording: offline runs of detection and RCA
on what a campaign produced, or the same events published again.

    stats = record("run.jsonl", [SAMPLES, FAULTS], idle_s=5)        # until idle or stop
    report = replay_offline("run.jsonl")                           # detect + RCA + score
    replay_publish("run.jsonl")                                     # back onto the bus

The file format and its reader are ``vmroc.recordings`` (any stage reads recordings).
A message that does not decode while recording is logged with where it was and
counted, never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from vmroc.bus import FAULTS, SAMPLES, Consumer, Producer
from vmroc.events import TOPICS, to_dict
from vmroc.recordings import FORMAT, RecordingError, open_for_writing, read_recording

__all__ = ["record", "replay_offline", "replay_publish", "read_recording",
           "open_for_writing", "RecordingError"]

log = logging.getLogger(__name__)



def record(path: str | Path, topics: list[str] | None = None, servers: str | None = None, *,
           from_beginning: bool = True, stop: threading.Event | None = None,
           idle_s: float | None = None, depends: dict | None = None,
           meta: dict | None = None, ready: threading.Event | None = None,
           drain_s: float = 0.0) -> dict[str, int]:
    """Write every event of ``topics`` to ``path`` until ``stop`` or ``idle_s`` seconds
    without events; returns counts (written, and undecodable messages skipped).
    ``meta`` joins the header; ``ready`` is set once reading has begun (with
    ``from_beginning=False``: every event sent after it is recorded); after ``stop``,
    events keep being written until none came for ``drain_s`` seconds."""
    topics = topics or [SAMPLES, FAULTS]
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        raise RecordingError(f"cannot record {unknown[0]!r}: recordable topics are "
                             f"{', '.join(TOPICS)}")
    written = 0
    with Consumer(topics, servers, group=None, from_beginning=from_beginning,
                  dlq=False) as inp, open_for_writing(path) as out:
        out.write(json.dumps({"vmroc_recording": FORMAT, "topics": topics,
                              "depends": depends or {}, **(meta or {})}) + "\n")
        if ready is not None:
            ready.set()

        def write(msg) -> None:
            nonlocal written
            out.write(json.dumps({"topic": msg.topic, "partition": msg.partition,
                                  "offset": msg.offset, "timestamp_ms": msg.timestamp_ms,
                                  "event": to_dict(msg.event)}) + "\n")
            written += 1
        inp.run(write, stop=stop, idle_timeout=idle_s)
        if drain_s > 0:
            inp.run(write, idle_timeout=drain_s)
        skipped = inp.stats["dead"]
    log.info("recorded %d events to %s (%d undecodable skipped)", written, path, skipped)
    return {"written": written, "skipped": skipped}




def replay_offline(path: str | Path, depends: dict | None = None, ranker: str = "heuristic",
                   rca_model: str | None = None, **detector_options: Any) -> dict[str, Any]:
    """Detection and RCA (``ranker``, by name) on a recording's samples, scored against
    its ledger (``rca.scorecard``): the summary, ``rows`` (one per fault) and counts."""
    from vmroc.rca.rankers import SERIES_FREE
    from vmroc.rca.replay import run_recording
    from vmroc.rca.scorecard import score, summarize

    run = run_recording(path, ranker, depends=depends, series=ranker not in SERIES_FREE,
                        rca_model=rca_model, **detector_options)
    scored = score(run.faults, run.anomalies, run.incidents, guests=run.guests, span=run.span)
    return {**summarize(scored), "rows": scored.rows, "samples": run.samples,
            "anomalies": len(run.anomalies), "skipped_lines": run.skipped}


def replay_publish(path: str | Path, servers: str | None = None) -> dict[str, int]:
    """Publish a recording's events again, in the recorded order."""
    stats: dict[str, int] = {}
    _, events = read_recording(path, stats)
    sent = 0
    with Producer(servers) as out:
        for _, ev in events:
            out.send(ev)
            sent += 1
    return {"sent": sent, "skipped": stats["skipped"]}
