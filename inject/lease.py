"""Crash safety: a lease file per applied fault, written *before* it is applied.

A lease (``$VMROC_HOME/inject/leases/<fault-id>.json``) holds the spec, the lab, the
typed parameters, the kind's undo ``state`` (rewritten after every change) and the
owner process (pid + start time, so a reused pid is not mistaken for the owner). It is
removed only after teardown succeeded. ``heal()`` runs the kind's teardown for every
lease whose owner is gone (or every lease with ``all=True``) and records the recovery
in the ledger (``recovery.heal_lease``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from vmroc.home import subdir
from vmroc.proc import start_time as _start_time

from .errors import InjectError, LedgerError
from .recovery import heal_lease

__all__ = ["Lease", "leases", "heal", "lease_dir"]

log = logging.getLogger(__name__)


def lease_dir() -> Path:
    env = os.environ.get("VMROC_LEASES")
    path = Path(env) if env else subdir("inject", "leases")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Lease:
    """The on-disk record of one applied fault."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def create(cls, fault_id: str, payload: dict[str, Any],
               directory: Path | None = None) -> "Lease":
        pid = os.getpid()
        data = {"fault_id": fault_id, "owner_pid": pid, "owner_start": _start_time(pid),
                "created": time.time(), **payload}
        lease = cls((directory or lease_dir()) / f"{fault_id}.json", data)
        lease.write()
        return lease

    @classmethod
    def load(cls, path: Path) -> "Lease":
        try:
            return cls(path, json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise InjectError(f"lease {path} is unreadable ({exc}); inspect and remove it") \
                from exc

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.data, indent=1, default=str))
            with open(tmp) as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise LedgerError(f"cannot write lease {self.path}: {exc}") from exc

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def fault_id(self) -> str:
        return self.data["fault_id"]

    def owner_alive(self) -> bool:
        pid = self.data.get("owner_pid")
        return bool(pid) and _start_time(pid) == self.data.get("owner_start")


def leases(directory: Path | None = None) -> list[Lease]:
    """Every lease on disk, oldest first."""
    out = [Lease.load(p) for p in sorted((directory or lease_dir()).glob("*.json"))]
    return sorted(out, key=lambda lease: lease.data.get("created", 0))


def heal(*, lab: str | None = None, all: bool = False, ledger=None,
         directory: Path | None = None,
         progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Revert every fault whose injector is gone (``all``: every fault); returns what
    was done, one dict per lease (fault id, kind, guests, healed, error)."""
    say = progress or (lambda msg: log.info("%s", msg))
    done = []
    for lease in leases(directory):
        if lab is not None and lease.data.get("lab") != lab:
            continue
        if lease.owner_alive() and not all:
            say(f"{lease.fault_id} ({lease.data.get('kind')}) is held by live pid "
                f"{lease.data.get('owner_pid')}: left alone (use --all to force)")
            continue
        done.append(heal_lease(lease, ledger=ledger, progress=say))
    return done
