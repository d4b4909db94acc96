"""Back to normal: waiting for the guests to recover, and healing faults left behind.

``wait_recovered`` watches guests until they run and the counters that advanced
before the fault advance again: after every teardown (``AppliedFault.stop``) and after
a heal. ``heal_lease`` reverts the fault a lease records (its injector was killed),
from the kind's undo state in the lease, and records the recovery in the ledger;
``lease.heal`` runs it for every lease whose owner is gone. A guest whose QEMU runs but
no longer answers QMP (wedged: e.g. stopping the VM drains the disks, and a request that
disk-hang holds never completes) cannot be reverted through QMP: heal kills and relaunches
it, which drops whatever QEMU held for it, then runs the teardown again for what lives
on the host. A guest that QEMU holds stopped in a kernel panic (``guest-panicked``) is
reset after the teardown (it boots again), by the fault's own stop and by heal alike.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from vmroc.deploy import Lab
from vmroc.errors import VmrocError

from .fault import Fault, SerialMark
from .ledger import Ledger, event
from .registry import get_kind
from .spec import FaultSpec

if TYPE_CHECKING:  # pragma: no cover
    from .lease import Lease

__all__ = ["wait_recovered", "heal_lease", "restart_panicked", "restart_wedged"]

log = logging.getLogger(__name__)


def wait_recovered(lab: Lab, watch: dict[str, list[str]], marks: dict[str, SerialMark],
                   timeout: float, relaunch: bool = False) -> dict[str, Any]:
    """Wait until every watched guest runs and its advancing counters advance again."""
    t0 = time.monotonic()
    first: dict[str, list] = {}
    done: dict[str, float] = {}
    reason = ""
    while True:
        for name, keys in watch.items():
            if name in done:
                continue
            g = lab.guest(name)
            if not g.alive():
                reason = f"{name} has no QEMU process"
                continue
            lines = marks[name].lines() if name in marks else []
            if not lines:
                reason = f"{name} printed no status line yet"
                continue
            ref = first.setdefault(name, [lines[0]])[0]
            last = lines[-1]
            behind = [k for k in keys
                      if last.get(k, 0) <= ref.get(k, 0) and last["up"] >= ref["up"]]
            if len(lines) >= 2 and not behind:
                done[name] = time.monotonic() - t0
            else:
                reason = f"{name}: {', '.join(behind) or 'waiting'} not advancing yet"
        if len(done) == len(watch):
            break
        if time.monotonic() - t0 > timeout:
            return {"recovered": False, "reason": reason, "waited_s": round(timeout, 1),
                    "guests": {k: round(v, 2) for k, v in done.items()}}
        time.sleep(0.25)
    states = {}
    for name in watch:
        states[name] = lab.guest(name).state()
    if any(s != "running" for s in states.values()):
        return {"recovered": False, "reason": f"run states {states}",
                "guests": {k: round(v, 2) for k, v in done.items()}}
    return {"recovered": True, "time_to_recover": round(max(done.values(), default=0.0), 2),
            "guests": {k: round(v, 2) for k, v in done.items()}, "checked": watch}


def restart_wedged(lab: Lab, names: list[str], say: Callable[[str], None],
                   boot_timeout: float = 180.0) -> list[str]:
    """Kill and relaunch every guest of ``names`` whose QEMU runs but answers no QMP;
    returns their names (empty: none was wedged)."""
    out = []
    for name in names:
        g = lab.guest(name)
        if not g.alive() or g.state() != "unresponsive":
            continue
        say(f"{name}: QEMU (pid {g.pid}) runs but does not answer QMP (wedged); "
            "killing and relaunching it, which removes the faults QEMU held for it")
        g.kill()
        deadline = time.monotonic() + 10
        while g.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        g.launch()
        g.wait_for_status(boot_timeout)
        out.append(name)
    return out


def restart_panicked(lab: Lab, names: list[str], say: Callable[[str], None]) -> list[str]:
    """Reset every guest of ``names`` that QEMU holds stopped in a kernel panic (pvpanic:
    run state ``guest-panicked``, e.g. its OOM killer found nothing left to kill under
    mem-pressure) and let it boot again; returns their names. Without this a panicked
    guest stays down for the rest of a campaign and every later fault on it is
    ineffective."""
    out = []
    for name in names:
        g = lab.guest(name)
        if not g.alive() or g.state() != "guest-panicked":
            continue
        say(f"{name}: stopped in a kernel panic; resetting it (QMP system_reset, cont)")
        with g.qmp(timeout=10) as qmp:
            qmp.cmd("system_reset")
            qmp.cmd("cont")
        out.append(name)
    return out


def heal_lease(lease: Lease, ledger: Ledger | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the teardown recorded in ``lease``; record the recovery; drop the lease."""
    say = progress or (lambda msg: log.info("%s", msg))
    data = lease.data
    out = {"fault_id": lease.fault_id, "kind": data.get("kind"), "lab": data.get("lab"),
           "guests": data.get("spec", {}).get("target", {}).get("guests", []),
           "healed": False}
    try:
        spec = FaultSpec.from_dict(data["spec"])
        kind = get_kind(spec.kind)
        lab = Lab(data["lab"])
        fx = Fault(lease.fault_id, spec, kind, dict(data.get("params") or {}), lab,
                   state=dict(data.get("state") or {}),
                   save=lambda f: lease.update(state=f.state))
        if not lab.is_up:
            say(f"{lease.fault_id}: lab {lab.name} is gone; nothing left to revert")
        else:
            try:
                kind.teardown(fx)
            except VmrocError:  # the kinds wrap a QMP that does not answer (ApplyError)
                out["restarted"] = restart_wedged(lab, spec.guests, say)
                if not out["restarted"]:
                    raise
                kind.teardown(fx)  # idempotent: QEMU's part is gone, the host's is not
            out["restarted"] = out.get("restarted", []) + restart_panicked(lab, spec.guests,
                                                                           say)
        out["healed"] = True
    except Exception as exc:  # noqa: BLE001 - one bad lease must not stop the others
        out["error"] = f"{type(exc).__name__}: {exc}"
        say(f"{lease.fault_id}: heal failed: {exc}")
        return out
    say(f"{lease.fault_id}: {kind.name} on {','.join(spec.guests)} reverted")
    ledger = ledger if ledger is not None else Ledger()
    if any(e.phase == "recovered" for e in ledger.events(lease.fault_id)):
        # its owner recorded the recovery and was stopped before it dropped the lease
        lease.remove()
        out["recovery"] = {"recorded_by_owner": True}
        return out
    evidence: dict[str, Any] = {"healed_by": "vmroc inject heal",
                                "owner_pid": data.get("owner_pid"), "pid": os.getpid()}
    if out.get("restarted"):
        evidence["restarted"] = out["restarted"]
    if lab.is_up:
        marks = {g.name: SerialMark(g.serial_path) for g in lab.guests}
        watch = {k: v for k, v in (data.get("watch") or {}).items()}
        evidence.update(wait_recovered(lab, watch, marks, min(kind.recover_timeout, 30.0)))
    ledger.record(event(lease.fault_id, kind.name, kind.level, "recovered",
                        {"lab": lab.name, **spec.target.to_dict()}, fx.params, evidence,
                        campaign=data.get("campaign")))
    out["recovery"] = evidence
    lease.remove()
    return out
