"""``vmroc inject``: list kinds, apply one fault, heal what a killed injector left.

    vmroc inject list [--json | --markdown]
    vmroc inject KIND --guest g1 [--duration 10s] [--param k=v ...] [--json]
    vmroc inject heal [--all] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import SpecError
from .registry import all_kinds


def _progress(args) -> object:
    if getattr(args, "quiet", False):
        return lambda msg: None
    return lambda msg: print(f"inject: {msg}", file=sys.stderr, flush=True)


def _lab_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", "--lab", dest="lab", default=os.environ.get("VMROC_LAB", "default"),
                   help="lab name (default: $VMROC_LAB or 'default')")
    p.add_argument("--ledger", default=None,
                   help="local ledger file (default: $VMROC_LEDGER or "
                        "$VMROC_HOME/inject/ledger.jsonl)")
    p.add_argument("--no-kafka", action="store_true",
                   help="keep the ledger local (sent later by any ledger flush)")


def register(subparsers) -> None:
    inject = subparsers.add_parser(
        "inject", help="break lab guests on purpose (and always revert)",
        description="Apply one fault to running lab guests, verify its effect, revert it, "
                    "and record everything in the fault ledger (vmroc.faults + JSONL).")
    sub = inject.add_subparsers(dest="inject_command", metavar="KIND|list|heal")

    def one_line_error(message: str) -> None:  # e.g. an unknown kind: one line, exit 1
        if "invalid choice" in message:
            bad = message.split("invalid choice: ", 1)[-1].split(" (", 1)[0]
            message = (f"unknown fault kind {bad}; see `vmroc inject list` "
                       f"({len(all_kinds())} kinds)")
        print(f"SpecError: {message}", file=sys.stderr)
        sys.exit(1)
    inject.error = one_line_error
    inject.set_defaults(func=lambda args: (inject.print_help(), 2)[1])

    ls = sub.add_parser("list", help="fault kinds with level, part, parameters, expected "
                                     "effect")
    how = ls.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print as JSON")
    how.add_argument("--markdown", action="store_true",
                     help="print the kind table of docs/inject.md (Markdown)")
    ls.set_defaults(func=cmd_list)

    heal = sub.add_parser("heal", help="revert every fault left behind by a killed injector")
    heal.add_argument("--all", action="store_true",
                      help="also revert faults whose injector is still running")
    heal.add_argument("--json", action="store_true", help="print the result as JSON")
    heal.add_argument("--name", "--lab", dest="lab", default=None,
                      help="only faults of this lab (default: every lab)")
    heal.add_argument("--ledger", default=None, help="local ledger file")
    heal.add_argument("--no-kafka", action="store_true", help="keep the ledger local")
    heal.set_defaults(func=cmd_heal)

    for kind in all_kinds():
        params = "; ".join(f"{p.name} ({p.type.__name__}, default {p.default}): {p.help}"
                           for p in kind.params) or "none"
        p = sub.add_parser(kind.name, help=f"[{kind.level}] {kind.effect}".replace("%", "%%"),
                           description=f"{kind.name} ({kind.level}). Mechanism: "
                                       f"{kind.mechanism}. Expected effect: {kind.effect}. "
                                       f"Parameters: {params}.")
        p.add_argument("--guest", "-g", action="append", default=[],
                       help="target guest (repeat or comma-separate for several)")
        p.add_argument("--duration", "-d", default="10s",
                       help="how long the fault is held, e.g. 5s, 500ms (default 10s)")
        p.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                       help="kind parameter (repeatable): " + (
                           ", ".join(q.name for q in kind.params) or "none"))
        p.add_argument("--addr", default=None, metavar="START[:LENGTH]",
                       help="target address range (guest physical for memory kinds, disk "
                            "bytes for disk kinds); hex or decimal")
        p.add_argument("--seed", type=int, default=None, help="seed for random choices")
        p.add_argument("--json", action="store_true",
                       help="print the result (ledger entries, effective) as JSON")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
        _lab_arg(p)
        p.set_defaults(func=cmd_inject, kind=kind.name)


def _parse_params(items: list[str], kind: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"{kind}: bad --param {item!r}: use KEY=VALUE", kind=kind)
        out[key.strip()] = value.strip()
    return out


def _parse_addr(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, _, length = text.partition(":")
    try:
        return int(start, 0), int(length, 0) if length else 1
    except ValueError:
        raise SpecError(f"bad --addr {text!r}: use START[:LENGTH], e.g. 0x1000000:4096") \
            from None


def _ledger(args):
    from .ledger import Ledger
    return Ledger(args.ledger, kafka=False if args.no_kafka else None)


def cmd_list(args) -> int:
    kinds = [k.describe() for k in all_kinds()]
    if args.json:
        print(json.dumps(kinds, indent=1))
        return 0
    if args.markdown:
        print(markdown(kinds), end="")
        return 0
    for k in kinds:
        params = ", ".join(f"{p['name']}={p['default']}" for p in k["params"]) or "-"
        print(f"{k['kind']:<14} {k['level']:<8} {k['part']:<8} {params}")
        print(f"{'':<32} effect: {k['effect']}")
    return 0


def markdown(kinds: list[dict]) -> str:
    """The kind table of docs/inject.md, from ``Kind.describe()`` dicts."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def params(k: dict) -> str:
        out = []
        for p in k["params"]:
            choices = f" ({', '.join(map(str, p['choices']))})" if "choices" in p else ""
            out.append(f"`{p['name']}`={p['default']}{choices}")
        return ", ".join(out) or "-"

    def mechanism(k: dict) -> str:
        out = k["mechanism"]
        if k["shared_mechanism"]:
            out += (f"; shared mechanism `{k['shared_mechanism']}`: one fault using it per "
                    "guest at a time")
        if k["lab_wide"]:
            out += "; lab-wide: one at a time in the lab"
        return out

    lines = ["| kind | level | part | parameters | mechanism | expected effect (verified) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k in kinds:
        lines.append(f"| `{k['kind']}` | {k['level']} | {k['part']} | {cell(params(k))} | "
                     f"{cell(mechanism(k))} | {cell(k['effect'])} |")
    return "\n".join(lines) + "\n"


def cmd_inject(args) -> int:
    from vmroc.deploy import Lab

    from .runner import run
    from .spec import FaultSpec, Target, parse_duration

    guests = tuple(g for item in args.guest for g in item.split(",") if g)
    spec = FaultSpec(args.kind, Target(guests, addr=_parse_addr(args.addr)),
                     _parse_params(args.param, args.kind), parse_duration(args.duration),
                     args.seed)
    ledger = _ledger(args)
    try:
        fault = run(spec, Lab(args.lab), ledger, progress=_progress(args))
    finally:
        ledger.close()
    result = fault.result()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        verdict = "effective" if result["effective"] else "INEFFECTIVE"
        rec = (f"recovered in {result['time_to_recover']}s" if result["recovered"]
               else "NOT recovered")
        print(f"{result['fault_id']}: {verdict}; {rec}")
    return 0 if result["recovered"] is not False else 1


def cmd_heal(args) -> int:
    from .lease import heal
    ledger = _ledger(args)
    try:
        done = heal(lab=args.lab, all=args.all, ledger=ledger,
                    progress=None if args.json else _progress(args))
    finally:
        ledger.close()
    if args.json:
        print(json.dumps({"healed": done}, indent=1, default=str))
    else:
        print(f"healed {sum(d['healed'] for d in done)} fault(s)"
              + (f", {sum(not d['healed'] for d in done)} failed" if any(not d["healed"]
                                                                     for d in done) else ""))
    return 0 if all(d["healed"] for d in done) else 1
