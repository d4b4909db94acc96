"""Apply a fault and always revert it: ``apply`` (library, context manager) and
``run`` (blocking, signal-safe, used by the CLI).

    with apply(spec, lab, ledger) as fault:    # validated, lease written, set up, invoked
        fault.hold()                           # until the duration is over (verifying)
    fault.effective, fault.evidence, fault.time_to_recover

The parts: ``lifecycle`` (one fault: ``prepare``, ``AppliedFault`` with start, hold,
stop), ``recovery`` (waiting for the guests to come back; healing a fault from its
lease) and ``signals`` (Ctrl-C, SIGTERM and SIGHUP during a fault). ``run`` puts them
together: SIGTERM/SIGHUP become an exception while the fault is held and are blocked
during teardown, so Ctrl-C, a kill or an error never leave a fault behind.
"""

from __future__ import annotations

import threading

from vmroc.deploy import Lab

from .ledger import Ledger
from .lifecycle import AppliedFault, Progress, apply, prepare
from .recovery import heal_lease
from .signals import Interrupted, blocked_signals, raising_signals
from .spec import FaultSpec

__all__ = ["apply", "prepare", "run", "AppliedFault", "Interrupted", "heal_lease",
           "raising_signals"]


def run(spec: FaultSpec, lab: Lab, ledger: Ledger | None = None, *,
        progress: Progress | None = None, stop: threading.Event | None = None,
        lease_dir=None) -> AppliedFault:
    """Apply ``spec``, hold it for its duration, revert it; signal-safe."""
    fault = prepare(spec, lab, ledger, progress=progress, lease_dir=lease_dir)
    with raising_signals():
        try:
            fault.start()
            fault.hold(stop=stop)
        finally:
            with blocked_signals():
                fault.stop()
    return fault
