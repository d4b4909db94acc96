"""One fault's lifecycle: validate, lease, set up, invoke, verify, tear down, recover.

    with apply(spec, lab, ledger) as fault:    # validated, lease written, set up, invoked
        fault.hold()                           # until the duration is over (verifying)
    fault.effective, fault.evidence, fault.time_to_recover

Lifecycle: ``prepared -> active -> stopped``. Validation (kind, parameters, guests,
addresses) happens in ``prepare`` before anything is touched. ``stop()`` (also run by
``__exit__``, with signals deferred) tears down, records ``ineffective`` if no effect
was seen, waits for the watched guests to return to their pre-fault baseline
(``recovery.wait_recovered``) and records ``recovered`` with the time it took; it is
idempotent.

On an etcd lab every fault also measures the cluster's failover (``failover.measure``
over a ``StatusTimeline`` of every guest, from before the invoke to after recovery) and
reads every acknowledged write back through every member (``deploy.etcd.check_writes``);
both go into the ``recovered`` entry as ``failover``.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Callable

from vmroc.deploy import GuestError, Lab
from vmroc.deploy.etcd import check_writes
from vmroc.deploy.status import StatusTimeline
from vmroc.errors import VmrocError
from vmroc.events import to_dict

from .errors import (
    ApplyError,
    FaultStateError,
    InjectError,
    LedgerError,
    SpecError,
    TargetError,
    TeardownError,
)
from .failover import measure as measure_failover
from .fault import Fault, SerialMark, rate
from .lease import Lease
from .ledger import Ledger, event
from .recovery import restart_panicked, restart_wedged, wait_recovered
from .registry import Kind, get_kind, resolve_params
from .signals import blocked_signals
from .spec import FaultSpec

__all__ = ["apply", "prepare", "AppliedFault"]

POLL = 0.5
WATCH_KEYS = ("http_ok", "disk_ok", "cpu_ops", "etcd_wok")
FAILOVER_TAIL_S = 3.0  # the cluster watched this long after recovery
Progress = Callable[[str], None]


def new_fault_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def prepare(spec: FaultSpec, lab: Lab, ledger: Ledger | None = None, *,
            progress: Progress | None = None, lease_dir=None,
            campaign: str | None = None) -> "AppliedFault":
    """Validate ``spec`` against the registry and the lab; nothing is applied yet.
    ``campaign`` (an id) is recorded on every ledger entry of the fault."""
    if not isinstance(spec, FaultSpec):
        raise SpecError(f"expected a FaultSpec, got {type(spec).__name__}")
    kind = get_kind(spec.kind)
    params = resolve_params(kind, spec.params)
    lo, hi = kind.guests
    n = len(spec.guests)
    if n < lo or (hi is not None and n > hi):
        want = f"exactly {lo}" if lo == hi else f"{lo} to {hi or 'any number of'}"
        raise SpecError(f"{kind.name} needs {want} target guest(s), got {n} "
                        f"({', '.join(spec.guests) or 'none'}); use --guest", kind=kind.name)
    if len(set(spec.guests)) != n:
        raise SpecError(f"{kind.name}: a guest is named twice in {list(spec.guests)}",
                        kind=kind.name)
    if not lab.is_up:
        raise TargetError(f"lab {lab.name} is not up; run `vmroc lab up --name {lab.name}`",
                          kind=kind.name)
    for name in spec.guests:
        try:
            g = lab.guest(name)
        except GuestError as exc:
            raise TargetError(f"{kind.name}: {exc}", kind=kind.name, guest=name) from exc
        if not g.alive():
            raise TargetError(f"{kind.name}: guest {name} is dead (no QEMU process); "
                              f"relaunch it with `vmroc lab up --name {lab.name}`",
                              kind=kind.name, guest=name)
    fault = Fault(new_fault_id(kind.name), spec, kind, params, lab)
    kind.check(fault)
    return AppliedFault(fault, ledger if ledger is not None else Ledger(),
                        progress=progress, lease_dir=lease_dir, campaign=campaign)


def apply(spec: FaultSpec, lab: Lab, ledger: Ledger | None = None, *,
          progress: Progress | None = None, lease_dir=None) -> "AppliedFault":
    """Validate, lease, set up and invoke ``spec``; returns the active fault.

    Use it as a context manager (or call ``stop()``): the fault is reverted on exit.
    """
    fault = prepare(spec, lab, ledger, progress=progress, lease_dir=lease_dir)
    fault.start()
    return fault


class AppliedFault:
    """One fault applied to the lab, its verification, recovery and ledger entries."""

    def __init__(self, fault: Fault, ledger: Ledger, *, progress: Progress | None = None,
                 lease_dir=None, campaign: str | None = None):
        self.fault = fault
        self.ledger = ledger
        self.campaign = campaign
        self.say = progress or (lambda msg: fault.log.info("%s", msg))
        self.lease_dir = lease_dir
        self.lease: Lease | None = None
        self.runstate = "prepared"
        self.effective: bool | None = None
        self.evidence: dict[str, Any] | None = None
        self.entries: list = []
        self.watch: dict[str, list[str]] = {}
        self.t_start: float | None = None      # wall clock when invoked
        self.apply_s: float | None = None
        self.held_s: float | None = None
        self.time_to_recover: float | None = None
        self.recovered: bool | None = None
        self.recovery: dict[str, Any] | None = None
        self._t0 = 0.0
        self._torn_down = False
        self._timeline: StatusTimeline | None = None
        self.restarted: list[str] = []   # wedged or panicked targets relaunched
        self.unrecorded: list[str] = []  # phases the ledger could not write (disk full)

    # -- facts -----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.fault.id

    @property
    def spec(self) -> FaultSpec:
        return self.fault.spec

    @property
    def kind(self) -> Kind:
        return self.fault.kind

    def _target(self) -> dict:
        return {"lab": self.fault.lab.name, **self.spec.target.to_dict()}

    def _record(self, phase: str, evidence: Any = None, ts: float | None = None):
        ev = event(self.id, self.kind.name, self.kind.level, phase, self._target(),
                   self.fault.params, evidence, ts, campaign=self.campaign)
        try:
            self.entries.append(self.ledger.record(ev))
        except LedgerError as exc:
            # the fault's own life goes on (its teardown above all): a ledger that cannot
            # write (a full disk) must not leave a fault applied
            self.unrecorded.append(phase)
            self.entries.append(ev)
            self.fault.log.error("%s: %s not recorded: %s", self.id, phase, exc)
        return ev

    def _require(self, wanted: str) -> None:
        if self.runstate != wanted:
            raise FaultStateError(f"fault {self.id} is {self.runstate}, not {wanted}",
                                  state=self.runstate, wanted=wanted, kind=self.kind.name)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "AppliedFault":
        """Lease, setup, invoke; records ``injected``. Reverts and raises on failure."""
        self._require("prepared")
        fx = self.fault
        self.lease = Lease.create(self.id, {
            "kind": self.kind.name, "lab": fx.lab.name, "spec": self.spec.to_dict(),
            "params": fx.params, "state": fx.state, "phase": "applying",
            "campaign": self.campaign},
            self.lease_dir)
        fx._save = lambda f: self.lease.update(state=f.state)
        self.runstate = "active"
        t0 = time.monotonic()
        if fx.lab.workload == "etcd":
            self._timeline = StatusTimeline({g.name: g.serial_path for g in fx.lab.guests})
            self._timeline.start()
        try:
            self.kind.setup(fx)
            fx.mark()
            self.watch = self._watch_keys()
            self.lease.update(watch=self.watch)
            self.t_start = time.time()
            self._t0 = time.monotonic()
            fx.t_invoke = self._t0
            self.say(f"{self.id}: applying {self.kind.name} to {','.join(self.spec.guests)}")
            self.kind.invoke(fx)
        except BaseException as exc:
            err = exc if isinstance(exc, VmrocError) else None
            self.fault.log.warning("applying %s failed: %s", self.kind.name, exc)
            if self.t_start is not None:
                self._record("injected", {"applied": False, "state": fx.state},
                             ts=self.t_start)
                self._record("ineffective", {"error": str(exc), "applied": False})
                self.effective = False
            self.stop(wait_recovery=self.t_start is not None)
            if err is not None and not isinstance(err, InjectError):
                raise ApplyError(f"{self.kind.name}: {err}", kind=self.kind.name,
                                 guest=getattr(err, "guest", None)) from exc
            raise
        self.apply_s = time.monotonic() - t0
        try:
            self.lease.update(phase="active", state=fx.state)
        except LedgerError as exc:  # the lease as saved before the invoke still heals it
            self.fault.log.error("%s: lease not updated: %s", self.id, exc)
        self._record("injected", {"mechanism": self.kind.mechanism, "state": _small(fx.state),
                                  "apply_s": round(self.apply_s, 3)}, ts=self.t_start)
        return self

    def check(self) -> bool:
        """One verification attempt; records ``effect-observed`` the first time."""
        if self.effective is not None:
            return self.effective
        if self.runstate != "active" or self._torn_down:
            return False
        try:
            found = self.kind.verify(self.fault)
        except VmrocError as exc:  # e.g. QMP busy; try again at the next poll
            self.fault.log.debug("verify: %s", exc)
            found = None
        if found:
            self.effective = True
            self.evidence = {"after_s": round(time.monotonic() - self._t0, 2), **found}
            self._record("effect-observed", self.evidence)
            self.say(f"{self.id}: effect observed: {_short(found)}")
        return bool(found)

    def hold(self, duration: float | None = None, stop: threading.Event | None = None) -> None:
        """Keep the fault for ``duration`` (default: the spec's), verifying as it goes;
        if no effect was seen by then, keep it up to the kind's window."""
        self._require("active")
        duration = self.spec.duration if duration is None else duration
        window = max(duration, self.kind.window)
        while True:
            self.check()
            elapsed = time.monotonic() - self._t0
            if elapsed >= duration and (self.effective or elapsed >= window
                                        or self.kind.instant and elapsed >= window):
                break
            if stop is not None and stop.is_set():
                break
            time.sleep(POLL if elapsed < duration or not self.effective else 0)

    def stop(self, wait_recovery: bool = True) -> "AppliedFault":
        """Teardown (idempotent), ``ineffective`` if no effect seen, recovery check."""
        if self.runstate == "stopped":
            return self
        if self.runstate == "prepared":
            self.runstate = "stopped"
            return self
        fx = self.fault
        if self.t_start is not None and not self.effective and not self._torn_down:
            self.check()
        self.held_s = time.monotonic() - self._t0 if self.t_start else 0.0
        try:
            self._teardown()
        except BaseException as exc:
            self.runstate = "stopped"
            if self.lease is not None:
                self.lease.update(phase="teardown-failed", error=str(exc), state=fx.state)
            raise TeardownError(f"{self.kind.name} on {','.join(self.spec.guests)}: teardown "
                                f"failed ({exc}); run `vmroc inject heal`",
                                kind=self.kind.name) from exc
        self._torn_down = True
        t_down = time.monotonic()
        t_revert = time.time()
        self.say(f"{self.id}: reverted after {self.held_s:.1f}s")
        if self.t_start is not None and not self.effective and self.effective is not False:
            self.effective = False
            self.evidence = {"checked": self.kind.effect, "held_s": round(self.held_s, 2)}
            self._record("ineffective", self.evidence)
        if self.t_start is not None and wait_recovery:
            marks = {g.name: SerialMark(g.serial_path) for g in fx.lab.guests}
            found = wait_recovered(fx.lab, self.watch, marks, self.kind.recover_timeout,
                             relaunch=False)
            self.recovered = found["recovered"]
            self.time_to_recover = found.get("time_to_recover")
            if self._timeline is not None:
                found["failover"] = self._failover(t_revert)
            self.recovery = found
            if self.restarted:
                found["restarted"] = self.restarted
            self._record("recovered", {"teardown_s": round(t_down - self._t0 - self.held_s, 3),
                                       **found})
            self.say(f"{self.id}: " + (f"recovered in {self.time_to_recover:.1f}s"
                                       if self.recovered else "NOT back to baseline: "
                                       + found.get("reason", "?")))
        if self._timeline is not None:
            self._timeline.stop()
        if self.lease is not None:
            self.lease.remove()
        self.runstate = "stopped"
        return self

    def _teardown(self) -> None:
        """The kind's teardown; if it fails on a target whose QEMU runs but answers no QMP
        (wedged), that guest is killed and relaunched and the teardown runs again. A target
        left stopped in a kernel panic is reset after it."""
        try:
            self.kind.teardown(self.fault)
        except VmrocError:
            self.restarted = restart_wedged(self.fault.lab, list(self.spec.guests), self.say)
            if not self.restarted:
                raise
            self.kind.teardown(self.fault)  # idempotent: QEMU's part went with the process
        # a target the fault left in a kernel panic is down for good unless relaunched
        self.restarted += restart_panicked(self.fault.lab, list(self.spec.guests), self.say)

    def _failover(self, t_revert: float) -> dict[str, Any] | None:
        """How the etcd cluster came through this fault: leaders, election and write
        outage times, client errors (``failover.measure``) and acknowledged writes read
        back through every member after recovery (``writes``)."""
        time.sleep(FAILOVER_TAIL_S)
        lines = self._timeline.stop()
        out = measure_failover(lines, t_inject=self.t_start, t_revert=t_revert,
                               targets=list(self.spec.guests))
        if out is None:
            return None
        try:
            out["writes"] = check_writes(self.fault.lab)
        except VmrocError as exc:
            out["writes"] = {"error": str(exc)}
        for what, name in (("lost", "acknowledged writes lost"),
                           ("stale", "stale reads (below an acknowledged write)")):
            if out["writes"] and out["writes"].get(what):
                self.fault.log.warning("%s: %s: %s", self.id, name, out["writes"][what])
        return out

    def _watch_keys(self) -> dict[str, list[str]]:
        """Guests to watch for recovery, and which counters were advancing before."""
        fx = self.fault
        if fx.kind.affected is not None:
            names = fx.kind.affected(fx)
        elif fx.kind.level in ("network", "cluster"):
            names = list(fx.spec.guests) + fx.clients_of(list(fx.spec.guests))
        else:
            names = list(fx.spec.guests)
        out = {}
        for name in dict.fromkeys(names):
            base = fx.baseline.get(name, [])
            out[name] = [k for k in WATCH_KEYS if (rate(base, k) or 0) > 0]
        return out

    def __enter__(self) -> "AppliedFault":
        if self.runstate == "prepared":
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with blocked_signals():
            self.stop()

    def result(self) -> dict[str, Any]:
        """What ``vmroc inject KIND --json`` prints."""
        return {"fault_id": self.id, "kind": self.kind.name, "level": self.kind.level,
                "target": self._target(), "params": self.fault.params,
                "duration": self.spec.duration, "effective": bool(self.effective),
                "evidence": self.evidence, "apply_s": _r(self.apply_s),
                "held_s": _r(self.held_s), "recovered": self.recovered,
                "time_to_recover": _r(self.time_to_recover),
                "entries": [to_dict(e) for e in self.entries],
                **({"unrecorded": self.unrecorded} if self.unrecorded else {})}


def _small(state: dict) -> dict:
    """The undo state without bulky values (original bytes stay in the lease only)."""
    return {k: v for k, v in state.items() if len(str(v)) <= 300}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _short(evidence: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in list(evidence.items())[:4])[:160]
