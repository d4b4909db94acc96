"""JSON Schemas (draft 2020-12) of what vmroc writes and reads, generated from the code.

    event_schema("sample")                  # from the Sample dataclass of vmroc.events
    EVENT_NAMES                             # ("anomaly", "fault", "incident", "sample")

A bus event's schema comes from the same declarations ``vmroc.events`` checks values
against: the dataclass fields and their type hints (``JSON_TYPES`` maps each scalar
that checker knows to its JSON type), the comment after each field as its
description, the class docstring as the schema's. An event is one JSON object with
``schema`` and ``v`` first; the anomalies and causes inside an incident carry neither
(``$defs``). Unknown extra fields are allowed, as ``decode`` ignores them.

``vmroc schema NAME`` prints one; the command line adds what stages own (the campaign
file from ``vmroc.inject.campaign_schema``, the feature catalog inside the sample's
schema), since this module sits below every stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union

from . import events
from .errors import VmrocError

__all__ = ["DIALECT", "JSON_TYPES", "EVENT_NAMES", "event_schema", "type_schema",
           "register"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Every scalar the event checker accepts (events._SCALARS) as its JSON type. JSON
# Schema's "number" and "integer" exclude booleans, as the checker does.
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
              type(None): "null"}
EVENT_NAMES = tuple(sorted(events.SCHEMAS))


def type_schema(tp: Any, defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of values of the type hint ``tp``; nested events go into
    ``defs`` (referenced as ``#/$defs/<schema>``)."""
    defs = {} if defs is None else defs
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return {}
    if tp in JSON_TYPES:
        return {"type": JSON_TYPES[tp]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        alts = [type_schema(a, defs) for a in args]
        if all(set(a) == {"type"} for a in alts):
            return {"type": [a["type"] for a in alts]}
        return {"anyOf": alts}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0], defs)}
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"JSON object keys are strings, not {args[0]!r}")
        values = type_schema(args[1], defs)
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    if isinstance(tp, type) and issubclass(tp, events._Event):
        if tp.schema not in defs:
            defs[tp.schema] = {}                # placeholder: a recursive event ends here
            defs[tp.schema] = _object(tp, defs, header=False)
        return {"$ref": f"#/$defs/{tp.schema}"}
    raise TypeError(f"no JSON Schema for the type {tp!r}")


def event_schema(name: str | type, *, features: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The schema of a bus event (schema name or class). ``features``: the sample's
    feature catalog (``introspect.catalog.as_dict()``), kept as ``x-features``."""
    cls = name if isinstance(name, type) else events.SCHEMAS.get(name)
    if cls is None:
        raise VmrocError(f"no event schema {name!r}: known {', '.join(EVENT_NAMES)}")
    defs: dict[str, Any] = {}
    body = _object(cls, defs, header=True)
    out: dict[str, Any] = {
        "$schema": DIALECT,
        "title": f"vmroc {cls.schema} event, version {cls.v}",
        "description": (f"{body.pop('description')} Published on the topic {cls.topic}, "
                        "one event per Kafka message or a JSON array of events of one key "
                        "(a pack). Fields this version does not name are ignored."),
        "x-topic": cls.topic,
        "x-version": cls.v,
        **body,
    }
    if defs:
        out["$defs"] = defs
    if features is not None:
        prop = out["properties"]["features"]
        prop["description"] = "; ".join(filter(None, [
            prop.get("description"),
            "each name is declared in the feature catalog (x-features): its kind, the part "
            "of the guest it measures, its unit and whether the detector watches it"]))
        out["x-features"] = dict(features)
    return out


def _object(cls: type, defs: dict[str, Any], header: bool) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    notes = _field_comments(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    if header:
        props["schema"] = {"const": cls.schema, "description": "which event this is"}
        props["v"] = {"const": cls.v, "description": "the schema's version"}
        required += ["schema", "v"]
    for f in dataclasses.fields(cls):
        prop = type_schema(hints[f.name], defs)
        if f.name in notes:
            prop = {"description": notes[f.name], **prop}
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = f.default_factory()
        else:
            required.append(f.name)
        props[f.name] = prop
    doc = inspect.cleandoc(cls.__doc__ or cls.__name__)
    return {"description": " ".join(doc.split()), "type": "object", "properties": props,
            "required": required}


_COMMENTED = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+?)\s*$")


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment written after it in the class body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m[1]: m[2] for m in map(_COMMENTED.match, source.splitlines()) if m}


# -- command line -------------------------------------------------------------------------
Sources = Mapping[str, Callable[[], dict]]


def register(subparsers, sources: Sources) -> None:
    """``vmroc schema [NAME] [--out FILE]``; ``sources``: name -> function making it."""
    names = sorted(sources)
    p = subparsers.add_parser(
        "schema", help="print the JSON Schema of a campaign file or a bus event",
        description="Print a JSON Schema (draft 2020-12), generated from the code that "
                    "reads the file or checks the event: for editors, other producers "
                    "and consumers of the bus, and CI. Without NAME: list the names.")
    p.add_argument("name", nargs="?", choices=names, metavar="NAME",
                   help=f"one of: {', '.join(names)}")
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of printing it")
    p.add_argument("--json", action="store_true", help="list the names as JSON")
    p.set_defaults(func=lambda args: cmd_schema(args, sources))


def cmd_schema(args: argparse.Namespace, sources: Sources) -> int:
    if args.name is None:
        titles = {name: make().get("title", "") for name, make in sorted(sources.items())}
        if args.json:
            print(json.dumps([{"name": n, "title": t} for n, t in titles.items()], indent=1))
        else:
            width = max(map(len, titles))
            for name, title in titles.items():
                print(f"{name:<{width}}  {title}")
        return 0
    text = json.dumps(sources[args.name](), indent=2) + "\n"
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            raise VmrocError(f"cannot write {args.out}: {exc.strerror}") from exc
        print(f"vmroc: wrote the {args.name} schema to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
