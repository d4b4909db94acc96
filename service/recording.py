"""Record the bus to a file, and replay a recording: offline runs of detection and RCA
on what a campaign produced, or the same events published again.

    stats = record("run.jsonl", [SAMPLES, FAULTS], idle_s=5)        # until idle or stop
    report = replay_offline("run.jsonl")                           # detect + RCA + score
    replay_publish("run.jsonl")                                     # back onto the bus

A recording is JSON lines: a header ``{"vmroc_recording": 1, "depends": {...}, ...}``,
then one ``{"topic", "partition", "offset", "timestamp_ms", "event"}`` per event, in the
order read. A message that does not decode while recording, or a line that does not
parse while replaying, is logged with where it was and counted, never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmroc.bus import FAULTS, SAMPLES, Consumer, Producer
from vmroc.errors import VmrocError
from vmroc.events import TOPICS, FaultEvent, Sample, SchemaError, from_dict, to_dict

log = logging.getLogger(__name__)

FORMAT = 1


class RecordingError(VmrocError):
    """A recording file that cannot be read at all."""


def record(path: str | Path, topics: list[str] | None = None, servers: str | None = None, *,
           from_beginning: bool = True, stop: threading.Event | None = None,
           idle_s: float | None = None, depends: dict | None = None) -> dict[str, int]:
    """Write every event of ``topics`` to ``path`` until ``stop`` or ``idle_s`` seconds
    without events; returns counts (written, and undecodable messages skipped)."""
    topics = topics or [SAMPLES, FAULTS]
    unknown = [t for t in topics if t not in TOPICS]
    if unknown:
        raise RecordingError(f"cannot record {unknown[0]!r}: recordable topics are "
                             f"{', '.join(TOPICS)}")
    written = 0
    with Consumer(topics, servers, group=None, from_beginning=from_beginning,
                  dlq=False) as inp, open(path, "w") as out:
        out.write(json.dumps({"vmroc_recording": FORMAT, "topics": topics,
                              "depends": depends or {}}) + "\n")

        def write(msg) -> None:
            nonlocal written
            out.write(json.dumps({"topic": msg.topic, "partition": msg.partition,
                                  "offset": msg.offset, "timestamp_ms": msg.timestamp_ms,
                                  "event": to_dict(msg.event)}) + "\n")
            written += 1
        inp.run(write, stop=stop, idle_timeout=idle_s)
        skipped = inp.stats["dead"]
    log.info("recorded %d events to %s (%d undecodable skipped)", written, path, skipped)
    return {"written": written, "skipped": skipped}


def read_recording(path: str | Path, stats: dict[str, int] | None = None
                   ) -> tuple[dict[str, Any], Iterator[tuple[str, Any]]]:
    """The header and an iterator of (topic, event); bad lines are logged and counted
    in ``stats["skipped"]``."""
    stats = stats if stats is not None else {}
    stats.setdefault("skipped", 0)
    try:
        f = open(path)
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from exc
    try:
        header = json.loads(f.readline() or "{}")
    except ValueError:
        header = {}
    if header.get("vmroc_recording") != FORMAT:
        f.close()
        raise RecordingError(f"{path} is not a vmroc recording (no header line); make one "
                             "with `vmroc record`")

    def events() -> Iterator[tuple[str, Any]]:
        with f:
            for number, line in enumerate(f, 2):
                try:
                    row = json.loads(line)
                    cls = TOPICS[row["topic"]]
                    yield row["topic"], from_dict(cls, row["event"])
                except (ValueError, KeyError, TypeError, SchemaError) as exc:
                    stats["skipped"] += 1
                    log.warning("%s line %d skipped: %s", path, number, exc)
    return header, events()


def replay_offline(path: str | Path, depends: dict | None = None,
                   **detector_options: Any) -> dict[str, Any]:
    """Detection and RCA on a recording's samples, scored against its ledger events."""
    from vmroc.detect import Detector
    from vmroc.rca import CausalRanker, Correlator, evaluate

    stats: dict[str, int] = {}
    header, events = read_recording(path, stats)
    samples, faults = [], []
    for _, ev in events:
        if isinstance(ev, Sample):
            samples.append(ev)
        elif isinstance(ev, FaultEvent):
            faults.append(ev)
    detector = Detector(**detector_options)
    anomalies = [a for s in sorted(samples, key=lambda s: s.ts) for a in detector.update(s)]
    corr = Correlator(CausalRanker(depends or header.get("depends") or {}).fit())
    for ev in faults:
        corr.add_fault(ev)
    incidents = [i for a in anomalies for i in corr.add(a)] + corr.flush()
    report = evaluate(faults, incidents)
    report.update({"samples": len(samples), "anomalies": len(anomalies),
                   "skipped_lines": stats["skipped"]})
    return report


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
