"""Fault injection: faults as data, applied to live lab guests, verified, always reverted,
and recorded in the fault ledger (Kafka topic ``vmroc.faults`` + a local JSONL file).

Entry point::

    from vmroc.inject import FaultSpec, apply, Ledger
    spec = FaultSpec("disk-eio", ["g1"], {"iotype": "write"}, duration=5)
    with apply(spec, lab, Ledger()) as fault:     # validated, leased, invoked
        fault.hold()                              # verifies the effect meanwhile
    fault.effective, fault.evidence, fault.time_to_recover

``run(spec, lab, ledger)`` does the same blocking and signal-safe (the CLI uses it);
``heal()`` reverts faults left behind by a killed injector (from their lease files);
``all_kinds()`` / ``get_kind(name)`` describe the registered kinds.
Root error: ``InjectError`` (tree in ``inject.errors``). Library code never prints;
it logs to ``inject.<kind>.<guest>``.
"""

import logging

from .errors import (
    ApplyError,
    FaultStateError,
    InjectError,
    LedgerError,
    SpecError,
    TargetError,
    TeardownError,
)
from .lease import heal, leases
from .ledger import Ledger
from .registry import KINDS, LEVELS, Kind, Param, all_kinds, get_kind, register
from .runner import AppliedFault, apply, prepare, run
from .spec import FaultSpec, Target, parse_duration

logging.getLogger("vmroc.inject").addHandler(logging.NullHandler())

__all__ = [
    "apply", "run", "FaultSpec", "Target", "AppliedFault", "Ledger", "heal",
    "all_kinds", "get_kind", "InjectError", "SpecError", "TargetError", "ApplyError",
    "TeardownError", "FaultStateError", "LedgerError", "prepare", "leases", "Kind",
    "Param", "KINDS", "LEVELS", "register", "parse_duration",
]
