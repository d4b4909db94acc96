"""The JSON Schema (draft 2020-12) of a campaign file, generated from what the loader
declares: its key lists (``campaign.CAMPAIGN_KEYS``, ``STEP_KEYS``, ``GROUP_KEYS``, ...),
the id and duration syntax it accepts, and every registered fault kind with its
parameters (type, limits, choices, default), so a new kind or parameter needs nothing
here. ``KEYS`` gives each key its JSON type once; a key the loader learns without an
entry there makes ``campaign_schema()`` raise (and a unit test fail).

    schema = campaign_schema()       # `vmroc schema campaign`
    jsonschema.validate(load_yaml(text, "x"), schema)

What the schema cannot say and only ``Campaign.load`` checks: overlapping faults that
share a mechanism, a kind's number of target guests, a duration string's range, and
parameters written as strings (``"0x1000"``, ``"yes"``), which the loader coerces and
the schema asks to be written as JSON numbers and booleans.
"""

from __future__ import annotations

from typing import Any

from vmroc.deploy.image import WORKLOADS
from vmroc.schema import DIALECT, JSON_TYPES

from . import campaign
from .registry import Param, all_kinds
from .spec import _DURATION

__all__ = ["campaign_schema", "KEYS", "MAX_DURATION_S"]

MAX_DURATION_S = 24 * 3600          # spec.parse_duration's upper bound
_REF = "#/$defs/"

# Every key of every campaign entry, with its JSON type (where a key means one thing).
KEYS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "description": "campaign name (default: the file's name)"},
    "lab": {"type": ["string", "null"], "description": "lab name; `--lab` wins"},
    "workload": {"enum": [*WORKLOADS, None],
                 "description": "the lab workload the campaign needs (default: any)"},
    "baseline": {"$ref": _REF + "duration",
                 "description": "quiet time before the first fault (default 10s)"},
    "cooldown": {"$ref": _REF + "duration",
                 "description": "quiet time after the last fault (default 10s)"},
    "seed": {"type": ["integer", "null"],
             "description": "makes random choices (addresses, bits) reproducible"},
    "at": {"$ref": _REF + "duration",
           "description": "start, after the baseline (default 0s)"},
    "kind": {"$ref": _REF + "kind"},
    "guest": {"$ref": _REF + "guests", "description": "target guest (or several, a,b)"},
    "guests": {"$ref": _REF + "guests", "description": "target guests"},
    "params": {"type": ["object", "null"],
               "description": "the kind's parameters (`vmroc inject list`)"},
    "addr": {"type": ["array", "null"], "prefixItems": [
                 {"type": "integer", "minimum": 0}, {"type": "integer", "minimum": 1}],
             "minItems": 2, "maxItems": 2,
             "description": "[start, length] in the kind's address space"},
    "device": {"type": ["string", "null"], "description": "target device, e.g. vda"},
    "id": {"type": "string", "pattern": campaign._ID.pattern,
           "description": "id of the composed entry (default group-1, cascade-1, ...)"},
    "after": {"$ref": _REF + "duration",
              "description": "start this long after the previous step started"},
    "timeout": {"$ref": _REF + "duration",
                "description": "with `on: effect`: start at the latest this long after "
                               "the previous step (default: its kind's verify window)"},
    "off": {"$ref": _REF + "duration", "description": "time between cycles (default 5s)"},
    "times": {"type": "integer", "minimum": 1, "maximum": 1000,
              "description": "number of cycles (default 3)"},
}
# Keys that mean something else in one place.
_CAMPAIGN = {"duration": {"$ref": _REF + "duration",
                          "description": "the whole run lasts at least this long "
                                         "(baseline included); needed with `faults: []`"},
             "faults": {"type": "array", "items": {"$ref": _REF + "entry"},
                        "description": "plain faults and composed entries"}}
_FAULT = {"duration": {"$ref": _REF + "duration",
                       "description": "how long the fault is held (default 10s)"}}
_GROUP = {"faults": {"type": "array", "minItems": 2, "items": {"$ref": _REF + "member"},
                     "description": "faults started together (at least two)"}}
_CASCADE = {"steps": {"type": "array", "minItems": 2,
                      "prefixItems": [{"$ref": _REF + "firstStep"}],
                      "items": {"$ref": _REF + "laterStep"},
                      "description": "faults started one after another (at least two)"}}
_CASCADE_STEP = {"on": {"const": "effect",
                        "description": "start when the previous step's effect is seen"}}
_FLIP_FLOP = {"on": {"$ref": _REF + "duration",
                     "description": "how long each cycle holds the fault (default 5s)"}}


def _object(keys: tuple[str, ...], where: str, *overrides: dict[str, Any],
            required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A closed object of ``keys`` (unknown keys are an error, as in the loader)."""
    props = {}
    for key in keys:
        for table in (*overrides, KEYS):
            if key in table:
                props[key] = table[key]
                break
        else:
            raise KeyError(f"campaign key {key!r} ({where}) has no JSON type: add it to "
                           f"inject/campaign_schema.py KEYS")
    out: dict[str, Any] = {"type": "object", "properties": props,
                           "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def _param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"description": p.help}
    if p.type in JSON_TYPES:
        out["type"] = JSON_TYPES[p.type]
    if p.choices is not None:
        out["enum"] = list(p.choices)
    if p.min is not None:
        out["minimum"] = p.min
    if p.max is not None:
        out["maximum"] = p.max
    if p.default is not None:
        out["default"] = p.default
    return out


def _kind_params() -> dict[str, Any]:
    """Each kind's own parameters: `if kind is K then params has K's parameters`."""
    rules = []
    for kind in all_kinds():
        params = {p.name: _param(p) for p in kind.params}
        rules.append({
            "if": {"properties": {"kind": {"const": kind.name}}, "required": ["kind"]},
            "then": {"properties": {"params": {"properties": params,
                                               "additionalProperties": False}}}})
    return {"allOf": rules}


def _with_params(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "allOf": [{"$ref": _REF + "kindParams"}]}


def _only(key: str, body: dict[str, Any]) -> dict[str, Any]:
    """A composed entry: a mapping with the one key ``key``."""
    return {"type": "object", "properties": {key: body}, "required": [key],
            "additionalProperties": False}


def campaign_schema() -> dict[str, Any]:
    """The schema of a campaign file (after YAML parsing: ``campaign.load_yaml``)."""
    c = campaign
    kinds = all_kinds()
    step = _object(c.CASCADE_STEP_KEYS, "cascade step", _CASCADE_STEP, _FAULT,
                   required=("kind",))
    defs = {
        "duration": {
            "description": f"seconds, or a string such as 10s, 500ms, 2m, 1h "
                           f"(0 to {MAX_DURATION_S // 3600}h)",
            "anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
                      {"type": "string", "pattern": _DURATION.pattern}]},
        "guests": {"anyOf": [{"type": "string", "minLength": 1},
                             {"type": "array", "items": {"type": "string", "minLength": 1}}]},
        "kind": {"enum": [k.name for k in kinds],
                 "description": "fault kind (`vmroc inject list`): "
                                + ", ".join(k.name for k in kinds)},
        "kindParams": _kind_params(),
        "plain": _with_params(_object(c.STEP_KEYS, "fault", _FAULT, required=("kind",))),
        "member": _with_params(_object(c.MEMBER_KEYS, "group member", _FAULT,
                                       required=("kind",))),
        "firstStep": {"allOf": [
            _with_params(step),
            {"not": {"anyOf": [{"required": [k]} for k in ("after", "on", "timeout")]},
             "description": "the first step starts at the cascade's `at`"}]},
        "laterStep": {"allOf": [
            _with_params(step),
            {"oneOf": [{"required": ["after"]}, {"required": ["on"]}],
             "dependentRequired": {"timeout": ["on"]},
             "description": "`after: 5s` or `on: effect` (with an optional `timeout`)"}]},
        "group": _only("group", _object(c.GROUP_KEYS, "group", _GROUP,
                                        required=("faults",))),
        "cascade": _only("cascade", _object(c.CASCADE_KEYS, "cascade", _CASCADE,
                                            required=("steps",))),
        "flip-flop": _only("flip-flop", _with_params(_object(
            c.FLIP_FLOP_KEYS, "flip-flop", _FLIP_FLOP, required=("kind",)))),
    }
    composed = [k for k in c.COMPOSED if k not in defs]
    if composed:
        raise KeyError(f"composed entries {composed} have no schema in "
                       f"inject/campaign_schema.py")
    defs["entry"] = {"oneOf": [{"$ref": _REF + k} for k in ("plain", *c.COMPOSED)]}
    return {
        "$schema": DIALECT,
        "title": "vmroc campaign file",
        "description": "A timed plan of faults on one lab (YAML or JSON): `vmroc campaign "
                       "check|plan|run FILE`; docs/inject.md. Times are after the baseline.",
        **_object(c.CAMPAIGN_KEYS, "campaign", _CAMPAIGN, required=("faults",)),
        "if": {"properties": {"faults": {"maxItems": 0}}, "required": ["faults"]},
        "then": {"required": ["duration"],
                 "description": "a run without faults needs a duration"},
        "$defs": defs,
    }
