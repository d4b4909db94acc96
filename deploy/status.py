"""Parse the guest's own status line (the guest's truth; format in docs/guest.md).

A line looks like ``VMROC1 name=g1 up=5.89 load1=0.00 ... http_ok=4 http_err=0``. The
serial console may prefix it with escape codes, so the marker is searched anywhere.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "VMROC1 "

# The guest's canaries (deploy/guest/init.sh): 4 KiB it wrote once and checks every
# second; each check that finds them changed adds 1 to ``disk_bad`` or ``mem_bad``.
DISK_CANARY_OFFSET = 16 << 20  # byte offset in /dev/vda, right after the disk worker's area
MEM_CANARY_MARKER = b"vmroc-canary name="  # starts the memory canary's page-cache page


@dataclass(frozen=True)
class StatusLine:
    """One parsed status line: ``name`` plus numeric ``values`` by key."""

    name: str
    values: dict[str, float]

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def get(self, key: str, default: float | None = None) -> float | None:
        return self.values.get(key, default)


def parse_line(line: str) -> StatusLine | None:
    """The status line in ``line``, or None if there is none or it is cut short."""
    at = line.find(MARKER)
    if at < 0:
        return None
    name = ""
    values: dict[str, float] = {}
    for token in line[at + len(MARKER):].split():
        key, sep, raw = token.partition("=")
        if not sep:
            return None
        if key == "name":
            name = raw
            continue
        try:
            values[key] = float(raw)
        except ValueError:
            return None  # a line torn by a concurrent write
    if "up" not in values or "cpu_ops" not in values:  # last key: line is complete
        return None
    return StatusLine(name, values)


def read_status_lines(path: Path) -> list[StatusLine]:
    """Every complete status line in a serial log, oldest first."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [s for s in map(parse_line, text.splitlines()) if s is not None]


class StatusTimeline:
    """Every guest's status lines as the host reads them, each with the host time it was
    read (polled every ``interval`` s by a thread): when did the cluster see what.

        timeline = StatusTimeline({"g1": path1, "g2": path2}).start()
        ...
        lines = timeline.stop()     # {"g1": [(host_ts, StatusLine), ...], ...}

    The last ``history`` lines already in a log are included, timed back from the start
    by their uptime (an upper bound on when they were printed). A log that shrinks (the
    guest was relaunched) is read again from its beginning."""

    def __init__(self, paths: dict[str, Path], interval: float = 0.1, history: int = 10):
        self.paths = paths
        self.interval = interval
        self.history = history
        self.lines: dict[str, list[tuple[float, StatusLine]]] = {n: [] for n in paths}
        self._offset = {n: 0 for n in paths}
        self._rest = {n: "" for n in paths}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "StatusTimeline":
        now = time.time()
        for name in self.paths:
            old = self._read(name)[-self.history:]
            if old:
                last_up = old[-1]["up"]
                self.lines[name] = [(now - max(0.0, last_up - s["up"]), s) for s in old]
        self._thread = threading.Thread(target=self._run, name="status-timeline", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, list[tuple[float, StatusLine]]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll()
        return self.lines

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        now = time.time()
        for name in self.paths:
            self.lines[name].extend((now, s) for s in self._read(name))

    def _read(self, name: str) -> list[StatusLine]:
        """Complete status lines appended to ``name``'s log since the last read."""
        path = self.paths[name]
        try:
            size = path.stat().st_size
            if size < self._offset[name]:
                self._offset[name], self._rest[name] = 0, ""
            with open(path, "rb") as f:
                f.seek(self._offset[name])
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset[name] += len(data)
        text = self._rest[name] + data.decode(errors="replace")
        *complete, self._rest[name] = text.split("\n")
        return [s for s in map(parse_line, complete) if s is not None]
