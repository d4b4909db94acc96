"""The kind registry: every fault kind as data.

A ``Kind`` holds its name (kebab-case), level (cpu, memory, disk, network, cluster),
the part of a guest it breaks (``part``: what RCA's truth is; by default the level's
part, declared by every cluster kind), typed parameters with defaults and validation,
the effect it expects, a description of its mechanism, the mechanism it shares with
other kinds (``shared_mechanism``, e.g. "blkdebug": two faults using one may not
overlap on a guest), whether it is ``lab_wide`` (breaks the whole lab: two may not
overlap anywhere), and the functions that apply it::

    setup(fault)      reach a known-good state (heal leftovers of the same fault kind)
    invoke(fault)     break the guest; record what to undo in ``fault.state``
    verify(fault)     evidence dict once the expected effect is observed, else None
    teardown(fault)   undo, from ``fault.state`` alone (works in `vmroc inject heal`)

Kinds register themselves with ``@register`` on a class carrying those attributes;
``KINDS`` maps names to ``Kind``. ``vmroc inject list`` and docs/inject.md's kind
table (``vmroc inject list --markdown``) come from it; every ledger event carries its
kind's part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from vmroc.introspect.catalog import PARTS  # what a fault breaks (features measure the same)

from .errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from .fault import Fault

__all__ = ["Param", "Kind", "KINDS", "LEVELS", "PARTS", "register", "get_kind",
           "all_kinds", "resolve_params"]

LEVELS = ("cpu", "memory", "disk", "network", "cluster")
# a kind's part unless it declares one; a cluster kind always declares its own
LEVEL_PARTS = {"cpu": "cpu", "memory": "memory", "disk": "disk", "network": "network"}
_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One parameter of a kind: name, type, default (None = optional), limits, help."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None

    def coerce(self, value: Any, kind: str) -> Any:
        """``value`` (a string from the CLI or a JSON value) as this parameter's type."""
        def bad(why: str) -> SpecError:
            return SpecError(f"{kind}: bad value {value!r} for parameter {self.name} "
                             f"({why})", kind=kind)
        if value is None:
            return None
        t = self.type
        if t is bool:
            if isinstance(value, bool):
                out = value
            elif str(value).lower() in _TRUE | _FALSE:
                out = str(value).lower() in _TRUE
            else:
                raise bad("expected true or false")
        elif t is int:
            if isinstance(value, bool):
                raise bad("expected an integer")
            try:
                out = int(value, 0) if isinstance(value, str) else int(value)
            except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
                raise bad("expected an integer, e.g. 5 or 0x1000") from None
            if isinstance(value, float) and value != out:
                raise bad("expected an integer")
        elif t is float:
            if isinstance(value, bool):
                raise bad("expected a number")
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise bad("expected a number") from None
            if out != out or out in (float("inf"), float("-inf")):
                raise bad("expected a finite number")
        else:
            out = str(value)
        if self.choices is not None and out not in self.choices:
            raise bad("expected one of " + ", ".join(map(str, self.choices)))
        if self.min is not None and out < self.min:
            raise bad(f"minimum {self.min:g}")
        if self.max is not None and out > self.max:
            raise bad(f"maximum {self.max:g}")
        return out

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "type": _TYPES.get(self.type, "str"),
               "default": self.default, "help": self.help}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


def _nothing(fault: "Fault") -> None:
    return None


@dataclass(frozen=True)
class Kind:
    """A fault kind: metadata plus setup/invoke/verify/teardown functions."""

    name: str
    level: str
    part: str                                        # what it breaks, one of PARTS
    effect: str
    mechanism: str
    params: tuple[Param, ...]
    invoke: Callable[["Fault"], None]
    teardown: Callable[["Fault"], None]
    verify: Callable[["Fault"], dict | None]
    setup: Callable[["Fault"], None] = _nothing
    check: Callable[["Fault"], None] = _nothing      # extra validation, before anything
    affected: Callable[["Fault"], list[str]] | None = None  # guests to watch for recovery
    guests: tuple[int, int | None] = (1, 1)          # min/max number of target guests
    destructive: bool = False                        # restarts or may kill the guest
    window: float = 6.0                              # seconds to wait for the effect
    recover_timeout: float = 40.0                    # seconds to wait for recovery
    instant: bool = False                            # applied once; nothing held
    shared_mechanism: str | None = None              # shared with other kinds, e.g. blkdebug
    lab_wide: bool = False                           # breaks the whole lab at once
    extra: Mapping[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise SpecError(f"{self.name}: unknown parameter {name!r}; parameters are "
                        f"{', '.join(p.name for p in self.params) or '(none)'}", kind=self.name)

    @property
    def conflict_key(self) -> str:
        """Two overlapping faults on one guest conflict when this is the same for both:
        the shared mechanism, or else the kind itself."""
        return self.shared_mechanism or self.name

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "level": self.level, "part": self.part,
                "effect": self.effect, "mechanism": self.mechanism,
                "shared_mechanism": self.shared_mechanism, "lab_wide": self.lab_wide,
                "params": [p.describe() for p in self.params],
                "guests": {"min": self.guests[0], "max": self.guests[1]},
                "destructive": self.destructive, "instant": self.instant}


KINDS: dict[str, Kind] = {}


def register(cls: type) -> type:
    """Class decorator: build a ``Kind`` from the class attributes and register it."""
    def fn(name: str, default=None):
        f = getattr(cls, name, None)
        return f if f is not None else default
    part = getattr(cls, "part", None) or LEVEL_PARTS.get(cls.level)
    if part is None:
        raise ValueError(f"kind {cls.name}: level {cls.level} has no default part; declare "
                         f"`part = ...` (one of {PARTS})")
    if part not in PARTS:
        raise ValueError(f"kind {cls.name}: part {part!r} not in {PARTS}")
    kind = Kind(
        name=cls.name, level=cls.level, part=part, effect=cls.effect, mechanism=cls.mechanism,
        params=tuple(getattr(cls, "params", ())), invoke=fn("invoke"),
        teardown=fn("teardown"), verify=fn("verify"), setup=fn("setup", _nothing),
        check=fn("check", _nothing), affected=fn("affected"),
        guests=getattr(cls, "guests", (1, 1)), destructive=getattr(cls, "destructive", False),
        window=getattr(cls, "window", 6.0), recover_timeout=getattr(cls, "recover_timeout", 40.0),
        instant=getattr(cls, "instant", False),
        shared_mechanism=getattr(cls, "shared_mechanism", None),
        lab_wide=getattr(cls, "lab_wide", False))
    if kind.level not in LEVELS:
        raise ValueError(f"kind {kind.name}: level {kind.level!r} not in {LEVELS}")
    if kind.name in KINDS:
        raise ValueError(f"kind {kind.name} registered twice")
    KINDS[kind.name] = kind
    cls.kind = kind
    return cls


def _load_kinds() -> None:
    from . import kinds  # noqa: F401  (registers every built-in kind)


def get_kind(name: str) -> Kind:
    """The kind called ``name``; ``SpecError`` listing the known kinds otherwise."""
    _load_kinds()
    try:
        return KINDS[name]
    except (KeyError, TypeError):  # TypeError: not a name (a list, a mapping)
        raise SpecError(f"unknown fault kind {name!r}; known kinds: "
                        f"{', '.join(sorted(KINDS))} (see `vmroc inject list`)",
                        kind=name) from None


def all_kinds() -> list[Kind]:
    """Every registered kind, by level then name."""
    _load_kinds()
    return sorted(KINDS.values(), key=lambda k: (LEVELS.index(k.level), k.name))


def resolve_params(kind: Kind, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``kind`` typed and validated; defaults filled in."""
    out: dict[str, Any] = {}
    for name in given:
        kind.param(name)  # unknown name -> SpecError
    for p in kind.params:
        out[p.name] = p.coerce(given[p.name], kind.name) if p.name in given else p.default
    return out
