"""Every event that crosses the bus: one frozen dataclass per schema, versioned.

Each event class has ``schema`` (name), ``v`` (version), ``topic`` (where it is
published) and ``key`` (the Kafka message key, e.g. the guest). As JSON an event
is one object: ``{"schema": "sample", "v": 1, ...fields}``; samples travel on the bus
in a compact form (below).

    data = encode(Sample(guest="g1", ts=time.time(), features={"tasks": 51},
                         backend="accel", consistent=True, seq=7))
    event = decode("vmroc.samples", data)      # or decode("sample", data)

``decode`` raises ``SchemaError`` on bytes that are not JSON, an unknown schema,
another version, a missing field or a field of the wrong type. Unknown extra
fields are ignored, so adding an optional field does not need a new version;
renaming, removing or retyping one does (bump ``v``).

A *pack* (``encode_pack``/``decode_pack``) is a JSON array of events of one topic
and key in one Kafka message; ``vmroc.bus`` uses it to amortise per-message cost.

Samples (nearly all the traffic) also have a *compact* form, what ``vmroc.bus``
sends: ``encode(sample, compact=True)``, MessagePack behind a 3-byte header
(``0xC1``, a byte that starts no JSON text and no MessagePack value; the layout
version; 0 for one event, 1 for a pack), then the fields by position, the task
records as one table when they share their keys (the sampler's: keys once, then
rows). msgspec decodes it into a typed struct,
checking every field in C, so no per-field Python check runs on that path;
``decode`` and ``decode_pack`` take either form, and bad compact bytes raise the
same ``SchemaError``. Without msgspec, ``compact=True`` writes JSON (logged once).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Annotated, Any, Callable, ClassVar, Literal, Union

from .errors import VmrocError

try:
    import msgspec
except ImportError:             # compact samples need it; JSON works without
    msgspec = None

__all__ = [
    "SchemaError", "Sample", "FaultEvent", "Anomaly", "Cause", "Incident",
    "encode", "decode", "encode_pack", "decode_pack", "to_dict", "from_dict",
    "SCHEMAS", "TOPICS", "PHASES", "COMPACT", "unchecked_sample", "sample_line_reader",
]

log = logging.getLogger(__name__)

PHASES = ("injected", "effect-observed", "recovered", "ineffective")
Phase = Literal["injected", "effect-observed", "recovered", "ineffective"]


class SchemaError(VmrocError):
    """Bytes or fields that are not a valid event of the expected schema/version."""

    def __init__(self, message: str, schema: str | None = None, field: str | None = None):
        super().__init__(message)
        self.schema = schema
        self.field = field


class _Event:
    """Validation shared by all events: runs on construction and on decode."""

    schema: ClassVar[str]
    v: ClassVar[int]
    topic: ClassVar[str]

    def __post_init__(self) -> None:
        for name, path, check in _field_checks(type(self)):
            value = getattr(self, name)
            checked = check(value, path, self.schema)
            if checked is not value:
                object.__setattr__(self, name, checked)


@dataclass(frozen=True, kw_only=True)
class Sample(_Event):
    """One look at a guest's kernel state from outside."""

    schema: ClassVar[str] = "sample"
    v: ClassVar[int] = 1
    topic: ClassVar[str] = "vmroc.samples"

    guest: str
    ts: float                                   # wall clock, seconds since the epoch
    features: dict[str, float]                  # feature name -> number (int or float)
    backend: str                                # accel, mmap, libvmi or volatility
    consistent: bool                            # the walk saw a consistent snapshot
    seq: int = 0                                # per-guest sequence number
    flags: list[str] = field(default_factory=list)   # why not consistent, truncations
    tasks: list[dict[str, Any]] | None = None   # optional per-task records (read-only:
                                                # unchanged ones are shared between samples)
    log: list[str] | None = None                # optional new kernel log lines

    @property
    def key(self) -> str:
        return self.guest


# What a fault kind broke, for ledgers recorded before v0.2 (their events carry no
# ``part``): by kind, else by level. Newer events carry the registered kind's part.
_LEGACY_KIND_PARTS = {"guest-suspend": "guest", "guest-crash": "guest",
                      "guest-reboot": "guest", "net-partition": "network",
                      "bridge-down": "network"}
_LEGACY_LEVEL_PARTS = {"cpu": "cpu", "memory": "memory", "disk": "disk",
                       "network": "network", "cluster": "guest"}


@dataclass(frozen=True, kw_only=True)
class FaultEvent(_Event):
    """One entry of the fault ledger: a fault was injected, took effect, or healed.

    ``part`` is what the fault's kind breaks (cpu, memory, disk, network, guest), as the
    injector's registry declares it; ``broken_part()`` reads it, also from ledgers made
    before v0.2, which lack it."""

    schema: ClassVar[str] = "fault"
    v: ClassVar[int] = 1
    topic: ClassVar[str] = "vmroc.faults"

    fault_id: str
    kind: str                                   # kebab-case, e.g. "disk-eio"
    level: str                                  # cpu, memory, disk, network or cluster
    phase: Phase
    ts: float
    target: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] | str | None = None
    campaign: str | None = None                 # campaign id, when the fault is part of one
    part: str | None = None                     # what it breaks, e.g. "disk" (None: old)

    @property
    def key(self) -> str:
        return self.fault_id

    def broken_part(self) -> str:
        """The part the fault breaks: ``part``, or for a ledger recorded before v0.2 the
        part its kind and level stood for then (``other`` if neither is known)."""
        if self.part is not None:
            return self.part
        return (_LEGACY_KIND_PARTS.get(self.kind) or _LEGACY_LEVEL_PARTS.get(self.level)
                or "other")


@dataclass(frozen=True, kw_only=True)
class Anomaly(_Event):
    """A detector found a guest abnormal at ``ts``; ``features`` are the ones involved."""

    schema: ClassVar[str] = "anomaly"
    v: ClassVar[int] = 1
    topic: ClassVar[str] = "vmroc.anomalies"

    guest: str
    ts: float
    detector: str
    score: float                                # higher = more abnormal
    features: list[str] = field(default_factory=list)
    onset: float | None = None                  # first abnormal sample (ts: when confirmed)
    deviations: dict[str, float] = field(default_factory=dict)  # feature -> how far off

    @property
    def key(self) -> str:
        return self.guest


@dataclass(frozen=True, kw_only=True)
class Cause(_Event):
    """One ranked candidate root cause (not published alone; part of an Incident)."""

    schema: ClassVar[str] = "cause"
    v: ClassVar[int] = 1
    topic: ClassVar[str] = ""                   # only inside an Incident

    component: str                              # "<guest>/<part>", e.g. "g1/disk"
    score: float
    evidence: dict[str, Any] | str | None = None


@dataclass(frozen=True, kw_only=True)
class Incident(_Event):
    """Anomalies grouped into one incident, with causes ranked best first.

    It carries no ground truth: which injected fault it belongs to is a join made by
    evaluation and the dashboard (``rca.scorecard``), never by the ranking path."""

    schema: ClassVar[str] = "incident"
    v: ClassVar[int] = 1
    topic: ClassVar[str] = "vmroc.incidents"

    id: str
    ts: float
    guests: list[str]
    anomalies: list[Anomaly]
    causes: list[Cause]                         # rank order: causes[0] is rank 1
    abstained: bool = False                     # no credible cause: causes shown, not claimed

    @property
    def key(self) -> str:
        return self.id


SCHEMAS: dict[str, type] = {c.schema: c for c in (Sample, FaultEvent, Anomaly, Incident)}
TOPICS: dict[str, type] = {c.topic: c for c in SCHEMAS.values()}


@functools.cache
def _field_checks(cls: type) -> list[tuple[str, str, Callable[[Any, str, str], Any]]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, f"{cls.schema}.{f.name}", _validator(hints[f.name]))
            for f in dataclasses.fields(cls)]


def encode(event: _Event, *, compact: bool = False) -> bytes:
    """The event as UTF-8 JSON without spaces, ``schema`` and ``v`` first; with
    ``compact``, a sample in the compact form instead (other events stay JSON)."""
    if not isinstance(event, _Event):
        raise SchemaError(f"cannot encode {type(event).__name__}: not a vmroc event")
    if compact and type(event) is Sample and _compact_ok():
        try:
            return _ONE + _ENCODER.encode(_sample_row(event))
        except (OverflowError, TypeError):      # e.g. an int past 64 bits: JSON has it
            pass
    return json.dumps(to_dict(event), separators=(",", ":"), allow_nan=False).encode()


def decode(topic_or_schema: str, data: bytes | bytearray | memoryview | None) -> _Event:
    """Parse and validate ``data`` (JSON or compact) as the event expected on that
    topic (or schema)."""
    if data and data[0] == _MAGIC:
        return _decode_compact(topic_or_schema, data, pack=False)[0]
    cls, obj = _parse(topic_or_schema, data)
    if not isinstance(obj, dict):
        raise SchemaError(f"{cls.schema}: expected a JSON object, got "
                          f"{type(obj).__name__}", cls.schema)
    return _build(cls, obj)


def encode_pack(events: list[_Event], *, compact: bool = False) -> bytes:
    """Several events of one topic as one message: a JSON array of event objects, or
    with ``compact`` and only samples, one compact message."""
    if compact and events and all(type(e) is Sample for e in events) and _compact_ok():
        try:
            return _PACK + _ENCODER.encode([_sample_row(e) for e in events])
        except (OverflowError, TypeError):
            pass
    return b"[" + b",".join(encode(e) for e in events) + b"]"


def decode_pack(topic_or_schema: str, data: bytes | bytearray | memoryview | None, *,
                tasks: bool = True) -> list[_Event]:
    """The events of a message that is one event or a pack (``encode_pack``), JSON or
    compact; any invalid item makes the whole message invalid (the error names the
    item). ``tasks`` False: samples come without their task records (None; a compact
    message's task table is then neither made into records nor checked)."""
    if data and data[0] == _MAGIC:
        return _decode_compact(topic_or_schema, data, pack=None, tasks=tasks)
    events = _decode_json_pack(topic_or_schema, data)
    if not tasks:
        events = [_without_tasks(e) if type(e) is Sample else e for e in events]
    return events


def _without_tasks(s: Sample) -> Sample:
    return unchecked_sample(guest=s.guest, ts=s.ts, features=s.features, backend=s.backend,
                            consistent=s.consistent, seq=s.seq, flags=s.flags, tasks=None,
                            log=s.log)


def _decode_json_pack(topic_or_schema: str, data: bytes | bytearray | memoryview | None
                      ) -> list[_Event]:
    cls, obj = _parse(topic_or_schema, data)
    if isinstance(obj, dict):
        return [_build(cls, obj)]
    if not isinstance(obj, list) or not obj:
        raise SchemaError(f"{cls.schema}: expected a JSON object or a non-empty array of "
                          f"them, got {type(obj).__name__} {obj!r:.40}", cls.schema)
    events = []
    for i, item in enumerate(obj):
        try:
            if not isinstance(item, dict):
                raise SchemaError(f"expected a JSON object, got {type(item).__name__}")
            events.append(_build(cls, item))
        except SchemaError as exc:
            raise SchemaError(f"pack item {i}: {exc}", cls.schema, exc.field) from exc
    return events


def _schema_class(topic_or_schema: str) -> type:
    cls = TOPICS.get(topic_or_schema) or SCHEMAS.get(topic_or_schema)
    if cls is None:
        raise SchemaError(f"no event schema for {topic_or_schema!r}: expected one of "
                          f"{sorted(TOPICS) + sorted(SCHEMAS)}")
    return cls


def _parse(topic_or_schema: str, data: bytes | bytearray | memoryview | None
           ) -> tuple[type, Any]:
    cls = _schema_class(topic_or_schema)
    if data is None:
        raise SchemaError(f"{cls.schema}: empty message (null value)", cls.schema)
    try:
        return cls, json.loads(bytes(data), parse_float=_finite, parse_constant=_finite)
    except (ValueError, RecursionError) as exc:  # also ints past 4300 digits, deep nesting
        raise SchemaError(f"{cls.schema}: not JSON ({exc}): {bytes(data)[:40]!r}",
                          cls.schema) from exc


def _finite(text: str) -> float:
    """A JSON number as a float; NaN, Infinity and numbers past a float's range (1e400)
    are refused, also where a field takes any value: ``encode`` never writes them and
    the compact form refuses them."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _build(cls: type, obj: dict[str, Any]) -> _Event:
    if obj.get("schema") != cls.schema:
        raise SchemaError(f"expected schema {cls.schema!r}, got {obj.get('schema')!r}",
                          cls.schema, "schema")
    return from_dict(cls, obj)


def to_dict(event: _Event, *, header: bool = True) -> dict[str, Any]:
    """The event as a plain JSON-ready dict; ``header`` adds ``schema`` and ``v``."""
    out: dict[str, Any] = {"schema": event.schema, "v": event.v} if header else {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, list):
            value = [to_dict(x, header=False) if isinstance(x, _Event) else x
                     for x in value]
        out[f.name] = value
    return out


def from_dict(cls: type | str, obj: dict[str, Any], *, nested: bool = False) -> _Event:
    """Build and validate an event of ``cls`` (class or schema name) from a dict.

    ``nested`` objects (the anomalies and causes inside an incident) carry no
    ``schema``/``v`` of their own: they follow the enclosing event's version.
    """
    if isinstance(cls, str):
        if cls not in SCHEMAS:
            raise SchemaError(f"unknown schema {cls!r}: known {sorted(SCHEMAS)}", cls)
        cls = SCHEMAS[cls]
    if not isinstance(obj, dict):
        raise SchemaError(f"{cls.schema}: expected an object, got {type(obj).__name__}",
                          cls.schema)
    version = cls.v if nested else obj.get("v")
    if version != cls.v:
        raise SchemaError(f"{cls.schema}: version {version!r} not supported "
                          f"(this vmroc reads v{cls.v})", cls.schema, "v")
    names = {f.name for f in dataclasses.fields(cls)}
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in obj]
    if missing:
        raise SchemaError(f"{cls.schema}: missing field {', '.join(map(repr, missing))}",
                          cls.schema, missing[0])
    try:
        return cls(**{k: val for k, val in obj.items() if k in names})
    except SchemaError:
        raise
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{cls.schema}: {exc}", cls.schema) from exc


_STR_ONLY = {str}


@functools.cache
def _validator(tp: Any) -> Callable[[Any, str, str], Any]:
    """A function checking one value against ``tp``, built once per type (hot path)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return lambda value, path, schema: value
    if origin in (Union, types.UnionType):
        alts = [_validator(a) for a in args]
        wanted = " or ".join(_name(a) for a in args)

        def union(value, path, schema):
            if value is None and type(None) in args:
                return value
            for alt in alts:
                try:
                    return alt(value, path, schema)
                except SchemaError:
                    continue
            raise _bad(value, path, schema, f"expected {wanted}")
        return union
    if origin is Literal:
        def literal(value, path, schema):
            if value not in args:
                raise _bad(value, path, schema, f"expected one of {list(args)}")
            return value
        return literal
    if tp in _SCALARS:
        kinds, why = _SCALARS[tp]

        def scalar(value, path, schema):
            if type(value) not in kinds:
                raise _bad(value, path, schema, why)
            if type(value) is float and not math.isfinite(value):
                raise _bad(value, path, schema, "expected a finite number")
            return value
        return scalar
    if origin is list:
        item = _validator(args[0])

        def listing(value, path, schema):
            if not isinstance(value, (list, tuple)):
                raise _bad(value, path, schema, "expected a list")
            try:
                items = [item(x, path, schema) for x in value]
            except SchemaError:                 # again, naming the index (rare path)
                items = [item(x, f"{path}[{i}]", schema) for i, x in enumerate(value)]
            same = isinstance(value, list) and all(a is b for a, b in zip(items, value))
            return value if same else items
        return listing
    if origin is dict:
        item = _validator(args[1])

        numbers = args[1] is float         # the hot case (sample features): inline check
        anything = args[1] is Any          # e.g. per-task records: only keys to check

        def mapping(value, path, schema):
            if not isinstance(value, dict):
                raise _bad(value, path, schema, "expected an object")
            if numbers and all(type(k) is str and (type(x) is int or type(x) is float
                                                   and math.isfinite(x))
                               for k, x in value.items()):
                return value
            if anything and set(map(type, value)) <= _STR_ONLY:
                return value
            for k, x in value.items():
                if type(k) is not str:
                    raise _bad(value, path, schema, "expected string keys")
                try:
                    item(x, path, schema)
                except SchemaError:             # again, naming the key (rare path)
                    item(x, f"{path}[{k!r}]", schema)
            return value
        return mapping
    if isinstance(tp, type) and issubclass(tp, _Event):
        def event(value, path, schema):
            if isinstance(value, tp):
                return value
            if not isinstance(value, dict):
                raise _bad(value, path, schema, f"expected a {tp.schema} object")
            try:
                return from_dict(tp, value, nested=True)
            except SchemaError as exc:
                raise SchemaError(f"{path}: {exc}", schema, exc.field) from exc
        return event
    raise TypeError(f"unsupported field type {tp!r}")


_SCALARS = {
    bool: ((bool,), "expected a boolean"),
    int: ((int,), "expected an integer"),
    float: ((int, float), "expected a number"),
    str: ((str,), "expected a string"),
    type(None): ((type(None),), "expected null"),
}


def _bad(value: Any, path: str, schema: str, why: str) -> SchemaError:
    field_name = path.split(".", 1)[-1].split("[", 1)[0]
    return SchemaError(f"{path}: {why}, got {type(value).__name__} {value!r:.60}",
                       schema, field_name)


def _name(tp: Any) -> str:
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


# -- the compact form of samples (MessagePack, decoded by msgspec) -------------------

COMPACT = msgspec is not None       # whether compact=True writes the compact form
_MAGIC = 0xC1                       # never the first byte of JSON text or of MessagePack
_LAYOUT = 1                         # the field order of _SampleV1: a new one gets 2
_ONE = bytes((_MAGIC, _LAYOUT, 0))  # header of one sample
_PACK = bytes((_MAGIC, _LAYOUT, 1))  # header of a pack of samples
_warned_json = False


def _compact_ok() -> bool:
    global _warned_json
    if msgspec is None and not _warned_json:
        _warned_json = True
        log.warning("msgspec is not installed: samples go on the bus as JSON "
                    "(pip install msgspec for the compact form)")
    return msgspec is not None


def _sample_row(s: Sample) -> tuple:
    """A sample in layout 1: its fields by position; task records that all have the
    same keys (the sampler's) as one table, ``task_keys`` and ``task_rows``."""
    tasks, keys, rows = s.tasks, None, None
    if tasks:
        first = tasks[0].keys()
        if len(first) > 1 and all(t.keys() == first for t in tasks):
            keys = list(first)
            get = itemgetter(*keys)
            rows, tasks = [get(t) for t in tasks], None
    return (s.schema, s.v, s.guest, s.ts, s.features, s.backend, s.consistent, s.seq,
            s.flags, s.log, tasks, keys, rows)


if msgspec is not None:
    _Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
    _Number = Union[int, _Finite]
    _Value = Union[None, bool, int, _Finite, str, list[Any], dict[str, Any]]

    class _SampleV1(msgspec.Struct, array_like=True, gc=False):
        """Layout 1: what ``Sample`` declares, as msgspec checks it (in C) on decode.
        Fields may be added at the end with a default (older readers ignore them)."""

        schema: str
        v: int
        guest: str
        ts: _Number
        features: dict[str, _Number]
        backend: str
        consistent: bool
        seq: int = 0
        flags: list[str] = []
        log: Union[list[str], None] = None
        tasks: Union[list[dict[str, _Value]], None] = None     # records, if no table
        task_keys: Union[list[str], None] = None                # the table's columns
        task_rows: msgspec.Raw = msgspec.Raw()                  # its rows: _task_rows()

    _ENCODER = msgspec.msgpack.Encoder()
    _DECODERS = {False: msgspec.msgpack.Decoder(_SampleV1),
                 True: msgspec.msgpack.Decoder(list[_SampleV1])}
    _ROWS = msgspec.msgpack.Decoder(list[list[_Value]])
    _NIL = b"\xc0"
    # a wire field's name in errors: the table is the sample's tasks
    _WIRE_FIELDS = [{"task_keys": "tasks", "task_rows": "tasks"}.get(n, n)
                    for n in _SampleV1.__struct_fields__]


def _decode_compact(topic_or_schema: str, data: bytes | bytearray | memoryview,
                    pack: bool | None, tasks: bool = True) -> list[_Event]:
    """The samples of a compact message; ``pack`` False: it must hold one event;
    ``tasks`` False: without their task records."""
    cls = _schema_class(topic_or_schema)
    head = bytes(data[:3])
    if len(head) < 3 or head[1] != _LAYOUT or head[2] > 1:
        raise SchemaError(f"{cls.schema}: compact message of an unknown layout "
                          f"(header {head!r}; this vmroc reads layout {_LAYOUT})", cls.schema)
    many = head[2] == 1
    if many and pack is False:
        raise SchemaError(f"{cls.schema}: expected one event, got a compact pack", cls.schema)
    if msgspec is None:
        raise SchemaError(f"{cls.schema}: a compact message, and msgspec is not installed "
                          f"to read it (pip install msgspec)", cls.schema)
    try:
        wires = _DECODERS[many].decode(memoryview(data)[3:])
    except msgspec.ValidationError as exc:
        raise _compact_error(cls, str(exc), many) from exc
    except msgspec.DecodeError as exc:
        raise SchemaError(f"{cls.schema}: not a compact event ({exc}): "
                          f"{bytes(data[:40])!r}", cls.schema) from exc
    if not many:
        return [_sample_from(cls, wires, tasks)]
    if not wires:
        raise SchemaError(f"{cls.schema}: expected a non-empty compact pack", cls.schema)
    events = []
    for i, wire in enumerate(wires):
        try:
            events.append(_sample_from(cls, wire, tasks))
        except SchemaError as exc:
            raise SchemaError(f"pack item {i}: {exc}", cls.schema, exc.field) from exc
    return events


def _sample_from(cls: type, w: Any, tasks: bool = True) -> Sample:
    """The Sample of a checked ``_SampleV1``, built without Python checks (msgspec
    checked every field as ``Sample`` declares it); ``tasks`` False: without its task
    records (a table's rows are left unparsed)."""
    if w.schema != cls.schema:
        raise SchemaError(f"expected schema {cls.schema!r}, got {w.schema!r}",
                          cls.schema, "schema")
    if cls is not Sample:
        raise SchemaError(f"{cls.schema}: has no compact form (only samples do)", cls.schema)
    if w.v != Sample.v:
        raise SchemaError(f"sample: version {w.v!r} not supported (this vmroc reads "
                          f"v{Sample.v})", "sample", "v")
    if not tasks:
        return _wire_sample(w, None)
    records = w.tasks
    if w.task_keys is not None:
        if records is not None or not w.task_rows or bytes(w.task_rows) == _NIL:
            raise SchemaError("sample.tasks: a task table needs rows and no records",
                              "sample", "tasks")
        records = _task_rows(w.task_keys, w.task_rows)
    elif w.task_rows and bytes(w.task_rows) != _NIL:
        raise SchemaError("sample.tasks: task rows without keys", "sample", "tasks")
    return _wire_sample(w, records)


def _wire_sample(w: Any, tasks: list[dict[str, Any]] | None) -> Sample:
    """The Sample of a struct msgspec checked (compact or JSON line), with ``tasks``."""
    return unchecked_sample(guest=w.guest, ts=w.ts, features=w.features, backend=w.backend,
                            consistent=w.consistent, seq=w.seq, flags=w.flags, tasks=tasks,
                            log=w.log)


def unchecked_sample(*, guest: str, ts: float, features: dict[str, float], backend: str,
                     consistent: bool, seq: int, flags: list[str],
                     tasks: list[dict[str, Any]] | None, log: list[str] | None) -> Sample:
    """A Sample of fields already checked as ``Sample`` declares them (by msgspec, or
    taken from another Sample), built without checking them again (the hot path)."""
    event = object.__new__(Sample)
    event.__dict__.update(guest=guest, ts=ts, features=features, backend=backend,
                          consistent=consistent, seq=seq, flags=flags, tasks=tasks, log=log)
    return event


# -- samples in JSON lines, read fast (recordings) -----------------------------------

if msgspec is not None:
    def _json_line_type(tasks: bool) -> type:
        """A recording line whose event is a sample, as msgspec checks it (in C); the
        task list unparsed (``msgspec.Raw``) unless ``tasks``."""
        task_type = Union[list[dict[str, _Value]], None] if tasks else msgspec.Raw
        sample = msgspec.defstruct(
            "_SampleJSON", [("schema", str), ("v", int), ("guest", str), ("ts", _Number),
                            ("features", dict[str, _Number]), ("backend", str),
                            ("consistent", bool), ("seq", int, 0), ("flags", list[str], []),
                            ("tasks", task_type, None if tasks else msgspec.Raw()),
                            ("log", Union[list[str], None], None)], gc=False)
        return msgspec.defstruct("_SampleLine", [("topic", str), ("event", sample)],
                                 gc=False)

    _LINE_DECODERS = {t: msgspec.json.Decoder(_json_line_type(t)) for t in (False, True)}


def sample_line_reader(tasks: bool) -> Callable[[str], Sample | None] | None:
    """For recordings: a function from a line ``{"topic": "vmroc.samples", ...,
    "event": {...}}`` to its Sample, every field checked by msgspec in C, or None where
    it cannot tell (another topic, a value it refuses, not JSON): the caller's general
    path then reads that line and names what is wrong. ``tasks`` False: samples come
    without task lists (None), which are skipped unparsed. None without msgspec."""
    if msgspec is None:
        return None
    decode = _LINE_DECODERS[tasks].decode

    def read(line: str) -> Sample | None:
        try:
            row = decode(line)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        w = row.event
        if row.topic != Sample.topic or w.schema != Sample.schema or w.v != Sample.v:
            return None
        return _wire_sample(w, w.tasks if tasks else None)
    return read


def _task_rows(keys: list[str], raw: Any) -> list[dict[str, Any]]:
    """The records of a task table: checked and made dicts by msgspec (rows decoded as
    structs of those fields, then ``asdict``), or by ``zip`` for keys that cannot be
    field names."""
    decoder = _table_decoder(tuple(keys))
    try:
        if decoder is not None:
            return list(map(msgspec.structs.asdict, decoder.decode(raw)))
        rows = _ROWS.decode(raw)
    except msgspec.ValidationError as exc:
        why, _, where = str(exc).partition(" - at `$")
        why = why[:1].lower() + why[1:]
        raise SchemaError(f"sample.tasks{where.rstrip('`')}: {why}", "sample",
                          "tasks") from exc
    except msgspec.DecodeError as exc:
        raise SchemaError(f"sample.tasks: not a compact table ({exc})", "sample",
                          "tasks") from exc
    if rows and set(map(len, rows)) != {len(keys)}:
        raise SchemaError(f"sample.tasks: a row has not the table's {len(keys)} columns",
                          "sample", "tasks")
    return list(map(dict, map(zip, repeat(keys), rows)))


@functools.lru_cache(maxsize=64)
def _table_decoder(keys: tuple[str, ...]) -> Any:
    """A decoder of rows with these columns (a row of any other length is refused),
    or None if they cannot be field names; a sampler has one key set, so a few cached
    decoders serve all."""
    if len(set(keys)) != len(keys) or not all(
            k.isidentifier() and not k.startswith("__") for k in keys):
        return None
    try:
        row = msgspec.defstruct("_TaskRow", [(k, _Value) for k in keys], array_like=True,
                                forbid_unknown_fields=True, gc=False)
    except (TypeError, ValueError):
        return None
    return msgspec.msgpack.Decoder(list[row])


def _compact_error(cls: type, text: str, many: bool) -> SchemaError:
    """msgspec's ``Expected `int`, got `str` - at `$[7]``` as ``sample.seq: ...``."""
    why, _, where = text.partition(" - at `")
    why = why[:1].lower() + why[1:]
    steps = re.findall(r"\[([^]]*)\]", where)
    prefix = ""
    if many and steps:
        prefix = f"pack item {steps.pop(0)}: "
    short = re.match(r"expected `array` of at least length \d+, got (\d+)", why)
    if short and not steps and int(short[1]) < len(_WIRE_FIELDS):
        name = _WIRE_FIELDS[int(short[1])]
        return SchemaError(f"{prefix}sample: missing field {name!r}", cls.schema, name)
    if steps and steps[0].isdigit() and int(steps[0]) < len(_WIRE_FIELDS):
        name = _WIRE_FIELDS[int(steps[0])]
        path = f"sample.{name}" + "".join(f"[{x}]" for x in steps[1:])
        return SchemaError(f"{prefix}{path}: {why}", cls.schema, name)
    return SchemaError(f"{prefix}{cls.schema}: {why}", cls.schema)
