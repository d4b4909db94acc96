"""The ``vmroc`` command.

Each stage owns its subcommands in a ``cli`` module exposing ``register(subparsers)``;
this module only assembles them (and the JSON Schemas of ``vmroc schema``, which come
from several stages), sets up logging and turns ``VmrocError`` into a one-line message
and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import signal
import sys
from typing import Callable

from . import schema
from .errors import VmrocError

# Modules that add subcommands, in the order `vmroc --help` lists them.
COMMAND_MODULES = [
    "vmroc.deploy.cli",
    "vmroc.deploy.doctor",
    "vmroc.deploy.broker_cli",
    "vmroc.bus_cli",
    "vmroc.introspect.cli",
    "vmroc.introspect.sample_cli",
    "vmroc.inject.cli",
    "vmroc.service.campaign_cli",
    "vmroc.detect.cli",
    "vmroc.rca.cli",
    "vmroc.service.cli",
    "vmroc.service.eval_cli",
    "vmroc.service.serve_cli",
    "vmroc.service.demo_cli",
]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vmroc")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmroc",
        description="Break VMs on purpose, watch them from outside, name the cause.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=f"vmroc {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not written yet
                continue
            raise
        module.register(subparsers)
    schema.register(subparsers, schema_sources())
    _verbose_everywhere(parser)
    return parser


def schema_sources() -> dict[str, Callable[[], dict]]:
    """What `vmroc schema NAME` publishes: every bus event (``vmroc.schema``), the
    sample's with the feature catalog (``introspect.catalog``), and the campaign file
    (``inject.campaign_schema``). Stages are imported only when a schema is made."""
    def sample() -> dict:
        from vmroc.introspect.catalog import as_dict
        return schema.event_schema("sample", features=as_dict())

    def campaign() -> dict:
        from vmroc.inject.campaign_schema import campaign_schema
        return campaign_schema()

    out: dict[str, Callable[[], dict]] = {
        name: functools.partial(schema.event_schema, name) for name in schema.EVENT_NAMES}
    return out | {"sample": sample, "campaign": campaign}


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after any subcommand too (``vmroc inject list -v``).

    argparse parses each subcommand into a fresh namespace and copies it over the
    parent's, so a shared ``verbose`` would be reset at each level: every subparser
    counts into its own hidden dest (absent unless given) and ``_merge_verbose`` adds
    them up after parsing."""
    seen: set[int] = set()
    stack = list(_subparsers(parser))
    while stack:
        sub = stack.pop()
        if id(sub) in seen:               # aliases share one parser
            continue
        seen.add(id(sub))
        if "-v" not in sub._option_string_actions:
            sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                             dest=f"{_VERBOSE_PREFIX}{len(seen)}",
                             help="more logging (-vv for debug)")
        stack.extend(_subparsers(sub))


_VERBOSE_PREFIX = "_verbose_"


def _merge_verbose(args: argparse.Namespace) -> None:
    for key in [k for k in vars(args) if k.startswith(_VERBOSE_PREFIX)]:
        args.verbose += getattr(args, key)
        delattr(args, key)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `vmroc ... | head` ends quietly
    parser = build_parser()
    args = parser.parse_args(argv)
    _merge_verbose(args)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose < 2:  # kafka-python logs every failed connection attempt
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VmrocError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
