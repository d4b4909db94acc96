"""A small synchronous QMP client on top of ``qemu.qmp`` (one short connection per use).

QEMU serves one client per QMP socket at a time, so callers open, command and close::

    with guest.qmp() as qmp:
        qmp.cmd("query-status")["status"]

Every step has a deadline, connecting included: a QEMU whose main loop is blocked (a
TCG vCPU thread frozen while holding the big lock, by ``cpu-stall``) still accepts the
connection but never greets, and a wait without a deadline would hang the caller (and
the teardown that would have thawed it) until someone thawed QEMU by hand.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from .errors import GuestError

log = logging.getLogger(__name__)


class QMP:
    """Connected QMP session to one guest; raises ``GuestError`` with context."""

    def __init__(self, path: Path, guest: str, timeout: float = 10.0):
        self.guest = guest
        self._proto = QEMUMonitorProtocol(str(path), nickname=guest)
        self._timeout = timeout
        try:
            self._proto.settimeout(timeout)
            self._deadline(self._proto._qmp.connect(str(path)))  # greeting + capabilities
        except Exception as exc:  # qemu.qmp raises several unrelated types here
            self.close()
            raise GuestError(f"guest {guest}: QMP socket {path} does not answer ({exc}); "
                             "is the guest running? see `vmroc lab status`", guest) from exc

    def cmd(self, name: str, /, **args: Any) -> Any:
        """Run a QMP command and return its ``return`` value."""
        try:
            reply = self._proto.cmd_raw(name, args or None)
        except Exception as exc:
            raise GuestError(f"guest {self.guest}: QMP {name} failed: {exc}", self.guest) from exc
        if "error" in reply:
            err = reply["error"]
            raise GuestError(f"guest {self.guest}: QMP {name} {args or ''} -> "
                             f"{err.get('class')}: {err.get('desc')}", self.guest)
        log.getChild(self.guest).debug("QMP %s %s -> %s", name, args, reply.get("return"))
        return reply.get("return")

    def hmp(self, command_line: str) -> str:
        """Run a human-monitor command (``info registers``, ``mce ...``)."""
        return self.cmd("human-monitor-command", **{"command-line": command_line})

    def events(self, wait: float | bool = False) -> list[dict]:
        """QMP events received so far, oldest first (waiting up to ``wait`` seconds
        for one if none is queued)."""
        out = []
        try:
            first = self._proto.pull_event(wait=wait)  # removes it from the queue
            if first:
                out.append(first)
        except Exception:  # asyncio.TimeoutError: nothing arrived in time
            pass
        out += self._proto.get_events()
        self._proto.clear_events()
        return out

    def close(self) -> None:
        try:
            self._deadline(self._proto._qmp.disconnect())
        except Exception:  # the peer went away first (e.g. after `quit`), or hangs
            pass

    def _deadline(self, coro) -> Any:
        """Run one step of the session, at most ``timeout`` seconds (``qemu.qmp``'s legacy
        ``connect`` and ``close`` have no deadline of their own)."""
        return self._proto._sync(coro, self._timeout)

    def __enter__(self) -> "QMP":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
