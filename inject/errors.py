"""Errors of the inject stage.

Tree::

    VmrocError
     +-- InjectError            root of everything the injector raises on purpose
          +-- SpecError         a fault spec is malformed: unknown kind, bad parameter,
          |                     bad duration (nothing was applied)
          +-- TargetError       unknown or dead guest, address outside guest RAM,
          |                     address outside the lab subnet (nothing was applied)
          +-- ApplyError        a mechanism failed while applying (already torn down)
          |    +-- TeardownError  reverting failed; the lease is kept for `vmroc inject heal`
          +-- FaultStateError   a lifecycle method called in the wrong state
          +-- LedgerError       the local ledger file cannot be written

Errors carry context: the kind, the guest and (for mechanism failures) the command
sent and the reply received, as attributes and in the one-line message.
"""

from __future__ import annotations

from vmroc.errors import VmrocError


class InjectError(VmrocError):
    """Root error of the injector; the message says what to do."""

    def __init__(self, message: str, *, kind: str | None = None, guest: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.guest = guest


class SpecError(InjectError):
    """Unknown kind, unknown/ill-typed/out-of-range parameter, bad duration."""


class TargetError(InjectError):
    """Unknown or dead guest, or an address outside guest RAM / the lab network."""


class ApplyError(InjectError):
    """A mechanism failed while applying; ``command`` and ``reply`` say what and how."""

    def __init__(self, message: str, *, kind: str | None = None, guest: str | None = None,
                 command: object = None, reply: object = None):
        super().__init__(message, kind=kind, guest=guest)
        self.command = command
        self.reply = reply


class TeardownError(ApplyError):
    """Reverting a fault failed; its lease is kept so `vmroc inject heal` can retry."""


class FaultStateError(InjectError):
    """A lifecycle method was called in the wrong state (names both states)."""

    def __init__(self, message: str, *, state: str, wanted: str, kind: str | None = None):
        super().__init__(message, kind=kind)
        self.state = state
        self.wanted = wanted


class LedgerError(InjectError):
    """The local ledger (JSONL) could not be written."""
