"""Record the bus to a file, and replay a recording: offline runs of detection and RCA
on what a campaign produced, or the same events published again.

    stats = record("run.jsonl", [SAMPLES, FAULTS], idle_s=5)        # until idle or stop
    report = replay_offline("run.jsonl")                           # detect + RCA + score
    replay_publish("run.jsonl")                                     # back onto the bus

A recording is JSON lines: a header ``{"vmroc_recording": 1, "depends": {...}, ...}``,
then one ``{"topic", "partition", "offset", "timestamp_ms", "event"}`` per event, in the
order read; compressed when the name ends in ``.xz`` or ``.gz`` (readers go by the file's
magic bytes, not its name). A message that does not decode while recording, or a line
that does not parse while replaying, is logged with where it was and counted, never
fatal; a compressed stream cut short (a killed writer) keeps every line before the cut.
"""

from __future__ import annotations

import gzip
import json
import logging
import lzma
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmroc.bus import FAULTS, SAMPLES, Consumer, Producer
from vmroc.errors import VmrocError
from vmroc.events import TOPICS, SchemaError, from_dict, to_dict

log = logging.getLogger(__name__)

FORMAT = 1
_MAGIC = {b"\xfd7zXZ\x00": lzma.open, b"\x1f\x8b": gzip.open}
_CUT = (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error)


class RecordingError(VmrocError):
    """A recording file that cannot be read at all."""


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


def open_for_writing(path: str | Path):
    """A text file for a recording, compressed as its name says (``.xz``, ``.gz``)."""
    name = str(path)
    if name.endswith(".xz"):
        # preset 3: ~30x on samples at a fifth of the CPU of the default preset
        return lzma.open(name, "wt", preset=3)
    if name.endswith(".gz"):
        return gzip.open(name, "wt", compresslevel=6)
    return open(name, "w")


def _open_for_reading(path: str | Path):
    with open(path, "rb") as f:
        head = f.read(6)
    opener = next((o for magic, o in _MAGIC.items() if head.startswith(magic)), open)
    return opener(path, "rt")


def read_recording(path: str | Path, stats: dict[str, int] | None = None
                   ) -> tuple[dict[str, Any], Iterator[tuple[str, Any]]]:
    """The header and an iterator of (topic, event); bad lines are logged and counted
    in ``stats["skipped"]``."""
    stats = stats if stats is not None else {}
    stats.setdefault("skipped", 0)
    try:
        f = _open_for_reading(path)
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from exc
    try:
        header = json.loads(f.readline() or "{}")
    except (ValueError, UnicodeDecodeError, *_CUT):
        header = {}
    if header.get("vmroc_recording") != FORMAT:
        f.close()
        raise RecordingError(f"{path} is not a vmroc recording (no header line); make one "
                             "with `vmroc record`")

    def events() -> Iterator[tuple[str, Any]]:
        number = 1
        with f:
            try:
                for number, line in enumerate(f, 2):
                    try:
                        row = json.loads(line)
                        cls = TOPICS[row["topic"]]
                        yield row["topic"], from_dict(cls, row["event"])
                    except (ValueError, KeyError, TypeError, SchemaError) as exc:
                        stats["skipped"] += 1
                        log.warning("%s line %d skipped: %s", path, number, exc)
            except _CUT as exc:
                stats["truncated"] = number
                log.warning("%s: compressed stream cut after line %d (%s); the lines "
                            "before it are kept", path, number, exc)
    return header, events()


def replay_offline(path: str | Path, depends: dict | None = None,
                   **detector_options: Any) -> dict[str, Any]:
    """Detection and RCA on a recording's samples, scored against its ledger events
    (``rca.evaluate``; ``vmroc eval`` scores with ``rca.scorecard`` instead)."""
    from vmroc.rca import evaluate

    from .evaluation import run_recording
    run = run_recording(path, depends=depends, series=False, **detector_options)
    report = evaluate(run.faults, run.incidents)
    report.update({"samples": run.samples, "anomalies": len(run.anomalies),
                   "skipped_lines": run.skipped})
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
