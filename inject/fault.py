"""``Fault``: what a kind's functions get: the spec, the lab, typed parameters, a
persistent ``state`` (saved to the lease before and after every change) and helpers
to reach the guest (QMP, the lab namespace, the guest's own status lines and log).
"""

from __future__ import annotations

import logging
import random
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from vmroc.deploy import GuestError, Lab, StatusLine
from vmroc.deploy.status import parse_line

from .errors import ApplyError, TargetError
from .spec import FaultSpec

if TYPE_CHECKING:  # pragma: no cover
    from vmroc.deploy import Guest

    from .registry import Kind

log = logging.getLogger("vmroc.inject")


class SerialMark:
    """A position in a guest's serial log; reads what the guest printed after it."""

    def __init__(self, path: Path, offset: int | None = None):
        self.path = path
        self.offset = self._size() if offset is None else offset

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def text(self) -> str:
        start = self.offset if self._size() >= self.offset else 0  # relaunched: new file
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace").replace("\r\n", "\n")  # serial CRLF
        except FileNotFoundError:
            return ""

    def lines(self) -> list[StatusLine]:
        return [s for s in map(parse_line, self.text().splitlines()) if s is not None]


def rate(lines: list[StatusLine], key: str) -> float | None:
    """Increase of ``key`` per second of guest uptime over ``lines`` (None if < 2)."""
    if len(lines) < 2:
        return None
    a, b = lines[0], lines[-1]
    dt = b["up"] - a["up"]
    if dt <= 0 or key not in a.values or key not in b.values:
        return None
    return (b[key] - a[key]) / dt


class Fault:
    """One fault being applied (or healed): spec, lab, guests, params, state."""

    def __init__(self, fault_id: str, spec: FaultSpec, kind: "Kind", params: dict[str, Any],
                 lab: Lab, state: dict | None = None,
                 save: Callable[["Fault"], None] | None = None):
        self.id = fault_id
        self.spec = spec
        self.kind = kind
        self.params = params
        self.lab = lab
        self.state: dict[str, Any] = state if state is not None else {}
        self._save = save
        self.rng = random.Random(spec.seed if spec.seed is not None else fault_id)
        self.log = log.getChild(kind.name).getChild(",".join(spec.guests) or lab.name)
        self.baseline: dict[str, list[StatusLine]] = {}
        self.marks: dict[str, SerialMark] = {}
        self.t_invoke: float | None = None
        self.last_line: dict[str, tuple[int, float]] = {}  # guest -> (lines since, first seen)

    # -- targets -----------------------------------------------------------------------
    @property
    def guests(self) -> list["Guest"]:
        return [self.lab.guest(name) for name in self.spec.guests]

    @property
    def guest(self) -> "Guest":
        return self.guests[0]

    def save(self) -> None:
        """Persist ``state`` (called by kinds after every change they must be able to undo)."""
        if self._save is not None:
            self._save(self)

    # -- mechanisms ----------------------------------------------------------------------
    def qmp(self, guest: "Guest | None" = None):
        return (guest or self.guest).qmp()

    def cmd(self, command: str, guest: "Guest | None" = None, /, **args: Any) -> Any:
        g = guest or self.guest
        try:
            with g.qmp() as q:
                return q.cmd(command, **args)
        except GuestError as exc:
            raise ApplyError(f"{self.kind.name} on {g.name}: {exc}", kind=self.kind.name,
                             guest=g.name, command={command: args}, reply=str(exc)) from exc

    def hmp(self, line: str, guest: "Guest | None" = None) -> str:
        return self.cmd("human-monitor-command", guest, **{"command-line": line}) or ""

    def netns(self, argv: list[str], check: bool = True, input: str | None = None,
              timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a command inside the lab's network namespace."""
        if self.lab.state.get("net") != "tap":
            raise TargetError(f"{self.kind.name} needs the lab's tap network (lab "
                              f"{self.lab.name} runs on a QEMU socket network)",
                              kind=self.kind.name)
        cmd = self.lab.netns_prefix() + argv
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, input=input,
                                  timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ApplyError(f"{self.kind.name}: {' '.join(argv)} failed: {exc}",
                             kind=self.kind.name, command=argv) from exc
        if check and proc.returncode != 0:
            raise ApplyError(f"{self.kind.name}: {' '.join(argv[:4])} failed: "
                             f"{proc.stderr.strip() or proc.returncode}",
                             kind=self.kind.name, command=argv, reply=proc.stderr.strip())
        return proc

    def vcpu_tids(self, guest: "Guest | None" = None) -> list[int]:
        return [c["thread-id"] for c in self.cmd("query-cpus-fast", guest)]

    # -- the guest's view since the fault started ----------------------------------------
    def mark(self) -> None:
        """Remember the baseline: recent status lines and the end of each serial log."""
        for g in self.lab.guests:
            self.baseline[g.name] = g.status_lines()[-16:]
            self.marks[g.name] = SerialMark(g.serial_path)

    def since(self, guest: str) -> list[StatusLine]:
        """Status lines ``guest`` printed since the fault was invoked."""
        return self.marks[guest].lines() if guest in self.marks else []

    def log_since(self, guest: str) -> str:
        """Serial text (kernel messages included) since the fault was invoked."""
        return self.marks[guest].text() if guest in self.marks else ""

    def base_rate(self, guest: str, key: str, q: float = 0.5) -> float | None:
        """Pre-fault rate of ``key``: quantile ``q`` (median by default) of the rates
        between consecutive lines of the last ~15 s, so a burst left by an earlier fault
        does not set the baseline (use a low ``q`` for effects that raise a rate)."""
        lines = self.baseline.get(guest, [])
        rates = sorted(r for a, b in zip(lines, lines[1:]) if (r := rate([a, b], key)) is not None)
        return rates[min(len(rates) - 1, int(q * len(rates)))] if rates else None

    def delta(self, guest: str, key: str) -> float | None:
        """How much ``key`` grew from the last baseline line to the newest line."""
        base = self.baseline.get(guest) or []
        new = self.since(guest)
        if not base or not new:
            return None
        return new[-1].get(key, 0) - base[-1].get(key, 0)

    def clients_of(self, names: list[str]) -> list[str]:
        """Guests whose HTTP client calls one of ``names``."""
        ips = {self.lab.guest(n).ip for n in names}
        return [g.name for g in self.lab.guests if g.config.get("peer") in ips]


def wait_until(pred: Callable[[], Any], timeout: float, step: float = 0.25) -> Any:
    """Poll ``pred`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        out = pred()
        if out or time.monotonic() >= deadline:
            return out
        time.sleep(step)
