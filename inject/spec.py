"""Faults as data: ``FaultSpec``, a small immutable record that round-trips through
JSON and YAML.

    spec = FaultSpec("disk-eio", Target(("g1",)), {"iotype": "write"}, duration=5)
    FaultSpec.from_json(spec.to_json()) == spec
    FaultSpec.from_yaml("kind: net-drop\\ntarget: {guests: [g2]}\\nparams: {loss: 30}")

The spec says *what* to break; ``inject.registry`` knows *how*. Parameter values are
validated and typed by the kind (``registry.resolve_params``), not here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .errors import SpecError

__all__ = ["FaultSpec", "Target", "parse_duration"]

_KIND = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``10``, ``"10s"``, ``"500ms"``, ``"2m"``; ``SpecError`` otherwise."""
    if isinstance(value, bool):
        raise SpecError(f"bad duration {value!r}: use e.g. 10s, 500ms, 2m")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int past a float's range
            seconds = float("inf")
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise SpecError(f"bad duration {value!r}: use e.g. 10s, 500ms, 2m")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not 0 <= seconds <= 24 * 3600:
        raise SpecError(f"bad duration {value!r}: must be between 0 and 24h")
    return seconds


@dataclass(frozen=True)
class Target:
    """Where a fault lands: guest name(s), optionally a device and an address range.

    ``addr`` is ``(start, length)`` in the kind's address space (guest physical
    bytes for memory kinds, bytes of the disk image for disk kinds).
    """

    guests: tuple[str, ...] = ()
    device: str | None = None
    addr: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        guests = self.guests
        if isinstance(guests, str):
            guests = tuple(g for g in guests.split(",") if g)
        if not isinstance(guests, (list, tuple)) or not all(isinstance(g, str) and g
                                                             for g in guests):
            raise SpecError(f"bad target guests {self.guests!r}: expected guest names")
        object.__setattr__(self, "guests", tuple(guests))
        if self.device is not None and not isinstance(self.device, str):
            raise SpecError(f"bad target device {self.device!r}: expected a name, e.g. vda")
        if self.addr is not None:
            try:
                if not isinstance(self.addr, (list, tuple)):
                    raise TypeError
                start, length = (int(x) for x in self.addr)
            except (TypeError, ValueError, OverflowError):
                raise SpecError(f"bad target addr {self.addr!r}: expected [start, length]") \
                    from None
            if start < 0 or length <= 0:
                raise SpecError(f"bad target addr {self.addr!r}: start >= 0, length > 0")
            object.__setattr__(self, "addr", (start, length))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"guests": list(self.guests)}
        if self.device is not None:
            out["device"] = self.device
        if self.addr is not None:
            out["addr"] = list(self.addr)
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any] | None) -> "Target":
        if obj is not None and not isinstance(obj, Mapping):
            raise SpecError(f"bad target {obj!r}: expected a mapping with guests, device, "
                            "addr")
        obj = dict(obj or {})
        unknown = set(obj) - {"guests", "device", "addr"}
        if unknown:
            raise SpecError(f"unknown target field {sorted(unknown)[0]!r}: "
                            "use guests, device, addr")
        if "guest" in obj:
            obj["guests"] = obj.pop("guest")
        return cls(guests=obj.get("guests") or (), device=obj.get("device"),
                   addr=obj.get("addr"))


@dataclass(frozen=True)
class FaultSpec:
    """One fault: kebab-case ``kind``, ``target``, ``params`` and ``duration`` (s).

    ``params`` is read-only; ``duration`` 0 means "apply, verify, revert at once"
    (useful for instantaneous kinds such as ``cpu-nmi``). ``seed`` makes random
    choices (addresses, bit positions) reproducible.
    """

    kind: str
    target: Target = field(default_factory=Target)
    params: Mapping[str, Any] = field(default_factory=dict)
    duration: float = 10.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND.match(self.kind):
            raise SpecError(f"bad kind {self.kind!r}: kinds are kebab-case, e.g. disk-eio")
        if isinstance(self.target, (list, tuple, str)):
            object.__setattr__(self, "target", Target(guests=self.target))
        elif isinstance(self.target, Mapping):
            object.__setattr__(self, "target", Target.from_dict(self.target))
        if not isinstance(self.params, Mapping):
            raise SpecError(f"bad params {self.params!r}: expected a mapping")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "duration", parse_duration(self.duration))
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise SpecError(f"bad seed {self.seed!r}: expected an integer")

    def __hash__(self) -> int:
        return hash(self.to_json())

    @property
    def guests(self) -> tuple[str, ...]:
        return self.target.guests

    def replace(self, **changes: Any) -> "FaultSpec":
        data = {"kind": self.kind, "target": self.target, "params": dict(self.params),
                "duration": self.duration, "seed": self.seed}
        data.update(changes)
        return FaultSpec(**data)

    # -- round trips -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "target": self.target.to_dict(),
                               "params": dict(self.params), "duration": self.duration}
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> "FaultSpec":
        if not isinstance(obj, Mapping):
            raise SpecError(f"a fault spec is a mapping, got {type(obj).__name__}")
        unknown = set(obj) - {"kind", "target", "params", "duration", "seed"}
        if unknown:
            raise SpecError(f"unknown spec field {sorted(unknown)[0]!r}: "
                            "use kind, target, params, duration, seed")
        if "kind" not in obj:
            raise SpecError("a fault spec needs a kind")
        return cls(kind=obj["kind"], target=Target.from_dict(obj.get("target")),
                   params=obj.get("params") or {}, duration=obj.get("duration", 10.0),
                   seed=obj.get("seed"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "FaultSpec":
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:  # also ints past 4300 digits, deep nesting
            raise SpecError(f"fault spec is not JSON: {exc}") from exc
        return cls.from_dict(obj)

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "FaultSpec":
        import yaml
        try:
            obj = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:  # bad dates, deep nesting
            raise SpecError(f"fault spec is not YAML: {exc}".splitlines()[0]) from exc
        return cls.from_dict(obj)
