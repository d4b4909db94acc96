"""Recording files: the events of a run kept as JSON lines, read back by any stage.

    with open_for_writing("run.jsonl.xz") as out: ...      # compressed by its name
    header, events = read_recording("run.jsonl.xz", stats)  # (topic, event) pairs

A recording is a header ``{"vmroc_recording": 1, "depends": {...}, ...}``, then one
``{"topic", "partition", "offset", "timestamp_ms", "event"}`` per event, in the order
read; compressed when the name ends in ``.xz`` or ``.gz`` (readers go by the file's
magic bytes, not its name). A line that does not parse is logged with its number and
counted, never fatal; a compressed stream cut short (a killed writer) keeps every line
before the cut. Writing from the bus is ``service.recording.record``.
"""

from __future__ import annotations

import gzip
import json
import logging
import lzma
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import VmrocError
from .events import TOPICS, Sample, SchemaError, from_dict, sample_line_reader

__all__ = ["FORMAT", "RecordingError", "open_for_writing", "read_recording"]

log = logging.getLogger(__name__)

FORMAT = 1
# A sample's task list, cut from its line unparsed when the reader does not want it (most
# of a line's bytes and of its parsing time): from the key to the next field, ``log``.
# Quotes inside JSON strings are escaped, so neither pattern matches inside one.
_TASKS = re.compile(r'"tasks"\s*:\s*\[')
_AFTER_TASKS = re.compile(r'\]\s*,\s*"log"\s*:')
_MAGIC = {b"\xfd7zXZ\x00": lzma.open, b"\x1f\x8b": gzip.open}
SAMPLES = Sample.topic  # the topic of the lines read fast
_CUT = (EOFError, lzma.LZMAError, gzip.BadGzipFile, zlib.error)


class RecordingError(VmrocError):
    """A recording file that cannot be read at all."""


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
    return opener(path, "rt", errors="replace")  # bytes not UTF-8 spoil one line only


def read_recording(path: str | Path, stats: dict[str, int] | None = None, *,
                   tasks: bool = True) -> tuple[dict[str, Any], Iterator[tuple[str, Any]]]:
    """The header and an iterator of (topic, event); bad lines are logged and counted
    in ``stats["skipped"]``. ``tasks=False``: samples come without their task lists
    (``tasks`` None), which are then neither parsed nor checked: three times faster."""
    stats = stats if stats is not None else {}
    stats.setdefault("skipped", 0)
    try:
        f = _open_for_reading(path)
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from exc
    try:
        header = json.loads(f.readline() or "{}")
    except (ValueError, RecursionError, *_CUT):
        header = {}
    if not isinstance(header, dict) or header.get("vmroc_recording") != FORMAT:
        f.close()
        raise RecordingError(f"{path} is not a vmroc recording (no header line); make one "
                             "with `vmroc record`")
    depends = header.get("depends")
    if depends is not None and not (isinstance(depends, dict) and all(
            isinstance(s, list) and all(isinstance(x, str) for x in s)
            for s in depends.values())):
        f.close()
        raise RecordingError(f"{path}: bad header: `depends` is not who calls whom "
                             f"({{guest: [servers]}}): {depends!r:.60}")

    fast = sample_line_reader(tasks)  # most lines: samples, checked by msgspec in C

    def events() -> Iterator[tuple[str, Any]]:
        number = 1
        with f:
            try:
                for number, line in enumerate(f, 2):
                    sample = fast and fast(line)
                    if sample is not None:
                        yield SAMPLES, sample
                        continue
                    try:
                        row = _parse(line, tasks)
                        cls = TOPICS[row["topic"]]
                        yield row["topic"], from_dict(cls, row["event"])
                    except (ValueError, KeyError, TypeError, RecursionError,
                            SchemaError) as exc:
                        stats["skipped"] += 1
                        log.warning("%s line %d skipped: %s", path, number, exc)
            except _CUT as exc:
                stats["truncated"] = number
                log.warning("%s: compressed stream cut after line %d (%s); the lines "
                            "before it are kept", path, number, exc)
    return header, events()


def _parse(line: str, tasks: bool) -> dict[str, Any]:
    """One line's row; without a sample's task list unless ``tasks``."""
    if not tasks:
        start = _TASKS.search(line)
        end = start and _AFTER_TASKS.search(line, start.end())
        if end:
            try:
                row = json.loads(f'{line[:start.start()]}"tasks": null, "log":'
                                 f'{line[end.end():]}')
            except ValueError:
                row = None
            if isinstance(row, dict) and row.get("topic") == "vmroc.samples":
                return row
        row = json.loads(line)  # no task list, or the cut is not a sample's: read it all
        if isinstance(row, dict) and row.get("topic") == "vmroc.samples" and \
                isinstance(row.get("event"), dict):
            row["event"]["tasks"] = None
        return row
    return json.loads(line)
