"""Parse the guest's own status line (the guest's truth; format in docs/guest.md).

A line looks like ``VMROC1 name=g1 up=5.89 load1=0.00 ... http_ok=4 http_err=0``. The
serial console may prefix it with escape codes, so the marker is searched anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MARKER = "VMROC1 "


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
