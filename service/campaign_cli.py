"""``vmroc campaign``: check, plan, run and generate fault campaign files.

    vmroc campaign check FILE [--lab NAME] [--json]
    vmroc campaign plan FILE [--json]                     # no lab needed
    vmroc campaign run FILE [--lab NAME] [--json] [--no-kafka] [--ledger PATH] [-q]
    vmroc campaign generate --faults N --seed S [--kinds all|K1,K2] [--guests 3]
                            [--groups F] [--cascades F] [--flip-flops F] [--gap 15s]
                            [--max-duration 35m] -o FILE

``cmd_run`` is ``setup_run`` (campaign, lab, ledger, progress, stop event), then
``run_campaign``, then ``report_run``; a variant (e.g. one that records the bus
meanwhile) swaps the middle step.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vmroc.deploy import Lab
from vmroc.inject.campaign import Campaign, CampaignResult, Step, hms, run_campaign
from vmroc.inject.errors import SpecError
from vmroc.inject.ledger import Ledger


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "campaign", help="run a timed plan of faults (a campaign file)",
        description="A campaign is a YAML/JSON file of faults with start times (plain, or "
                    "composed: group, cascade, flip-flop); every fault is validated first, "
                    "applied at its time, verified, reverted and recorded in the fault "
                    "ledger with the campaign id. See deploy/campaigns/ and docs/inject.md.")
    sub = p.add_subparsers(dest="campaign_command", metavar="check|plan|run|generate")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    for name, helptext, func in (
            ("check", "validate a campaign file against the fault kinds and the lab", cmd_check),
            ("plan", "print the resolved schedule of a campaign file (no lab needed)",
             cmd_plan),
            ("run", "run a campaign: baseline, faults at their times, cooldown", cmd_run)):
        c = sub.add_parser(name, help=helptext, description=helptext)
        c.add_argument("file", help="campaign file (YAML or JSON)")
        if name != "plan":
            c.add_argument("--lab", "--name", dest="lab", default=None,
                           help="lab name (default: the file's `lab`, $VMROC_LAB or "
                                "'default')")
        c.add_argument("--json", action="store_true", help="print the result as JSON")
        c.set_defaults(func=func)
        if name == "run":
            c.add_argument("--ledger", default=None, help="local ledger file "
                           "(default: $VMROC_LEDGER or $VMROC_HOME/inject/ledger.jsonl)")
            c.add_argument("--no-kafka", action="store_true",
                           help="keep the ledger local (sent later by any ledger flush)")
            c.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
            c.add_argument("--record", metavar="OUT", default=None,
                           help="also sample every guest and record samples + ledger to OUT "
                                "(.jsonl.xz compresses); starts the broker and the lab if "
                                "they are not up; `vmroc eval OUT` scores it")
            c.add_argument("--rate", type=float, default=10.0, metavar="HZ",
                           help="with --record: samples per second per guest (10)")
            c.add_argument("--guests", type=int, default=3,
                           help="with --record: guests of a lab it starts (3)")
    g = sub.add_parser(
        "generate", help="write a seeded campaign file (same arguments, same bytes)",
        description="Draw a campaign: kinds (each at least once when there are enough "
                    "faults), targets among g1..gN, parameters that produce each kind's "
                    "effect, durations of 8-15 s with a gap after each, and groups, "
                    "cascades and flip-flops as shares of the faults. The file is a plain "
                    "campaign file for `vmroc campaign run`.")
    g.add_argument("--faults", type=int, required=True, metavar="N",
                   help="number of faults (a group or cascade of k counts k, a flip-flop 1)")
    g.add_argument("--seed", type=int, required=True, help="random seed")
    g.add_argument("--kinds", default="all",
                   help="`all` (every registered kind) or a comma-separated list")
    g.add_argument("--guests", type=int, default=3, help="lab size: targets among g1..gN")
    g.add_argument("--groups", type=float, default=0.25, metavar="F",
                   help="share of the faults in groups (several at once; default 0.25)")
    g.add_argument("--cascades", type=float, default=0.25, metavar="F",
                   help="share of the faults in cascades (one after another; default 0.25)")
    g.add_argument("--flip-flops", dest="flip_flops", type=float, default=0.1, metavar="F",
                   help="share of the faults that flip-flop (default 0.1)")
    g.add_argument("--gap", default="15s",
                   help="quiet time after each entry's window (doubled after a destructive "
                        "kind; default 15s)")
    g.add_argument("--baseline", default="30s", help="quiet time before the first fault")
    g.add_argument("--cooldown", default="30s", help="quiet time after the last fault")
    g.add_argument("--max-duration", default=None,
                   help="refuse a plan longer than this (e.g. 35m)")
    g.add_argument("--name", default=None,
                   help="campaign name (default: the output file's name)")
    g.add_argument("--workload", choices=["web", "etcd"], default=None,
                   help="the lab workload the campaign needs (written as `workload:`)")
    g.add_argument("-o", "--out", required=True,
                   help="output file (`-` for standard output)")
    g.add_argument("--json", action="store_true",
                   help="print what was written as JSON (with `-o -`, the file in `text`)")
    g.set_defaults(func=cmd_generate)


def _lab(args, campaign: Campaign) -> Lab:
    return Lab(args.lab or campaign.lab or os.environ.get("VMROC_LAB", "default"))


def _composed(step: Step) -> str:
    if step.group is not None:
        return step.group
    if step.cascade is not None:
        how = {"after": f" +{step.delay:g}s", "effect": " on effect"}.get(step.trigger, "")
        return f"{step.cascade}#{step.part + 1}{how}"
    if step.flip_flop is not None:
        return f"{step.flip_flop}#{step.part + 1}"
    return "-"


def _table(campaign: Campaign, resolved: bool = False) -> None:
    print(f"  {'at':>6}  {'kind':<14} {'guests':<9} {'held':>5}  {'composed':<24} params")
    for step in campaign.steps:
        s = step.spec
        params = step.plan()["params"] if resolved else s.params
        text = " ".join(f"{k}={v}" for k, v in params.items() if v is not None)
        print(f"  +{step.at:>5g}s {s.kind:<14} {','.join(s.guests) or '(lab)':<9} "
              f"{s.duration:>4g}s  {_composed(step):<24} {text}".rstrip())


def cmd_check(args) -> int:
    campaign = Campaign.load(args.file)
    lab = _lab(args, campaign)
    campaign.prepare(lab, Ledger(kafka=False))  # what `run` checks before applying anything
    if args.json:
        print(json.dumps({"ok": True, "lab": lab.name, **campaign.to_dict()}, indent=1))
        return 0
    print(f"campaign {campaign.name} ({campaign.source}): {len(campaign.steps)} fault(s) on "
          f"lab {lab.name}, ~{hms(campaign.planned_s)} planned")
    print(f"  baseline {campaign.baseline:g}s, cooldown {campaign.cooldown:g}s; times after "
          "the baseline")
    _table(campaign)
    return 0


def cmd_plan(args) -> int:
    campaign = Campaign.load(args.file)
    plan = campaign.plan()
    if args.json:
        print(json.dumps(plan, indent=1))
        return 0
    composed = ", ".join(f"{v} {k}(s)" for k, v in plan["composed"].items() if v)
    print(f"campaign {campaign.name} ({campaign.source}): {len(campaign.steps)} fault(s)"
          f"{f' ({composed})' if composed else ''}, planned {hms(campaign.planned_s)} "
          f"({campaign.planned_s:.0f} s)")
    print(f"  baseline {campaign.baseline:g}s, cooldown {campaign.cooldown:g}s"
          + (f", at least {hms(campaign.duration)} in all" if campaign.duration else "")
          + "; times after the baseline, parameters with their defaults")
    if campaign.steps:
        _table(campaign, resolved=True)
    return 0


@dataclass
class RunSetup:
    """What a campaign run needs, built from the command line."""

    campaign: Campaign
    lab: Lab
    ledger: Ledger
    progress: Callable[[str], None]
    stop: threading.Event


def setup_run(args) -> RunSetup:
    """Campaign (validated), lab, ledger, progress printer and stop event from ``args``."""
    campaign = Campaign.load(args.file)
    say = (lambda msg: None) if args.quiet else (
        lambda msg: print(f"campaign: {msg}", file=sys.stderr, flush=True))
    return RunSetup(campaign, _lab(args, campaign),
                    Ledger(args.ledger, kafka=False if args.no_kafka else None), say,
                    threading.Event())


def cmd_run(args) -> int:
    run = setup_run(args)
    extra = None
    try:
        if args.record:
            from .campaign_record import run_recorded
            result, extra = run_recorded(run.campaign, args.record, lab_name=run.lab.name,
                                         guests=args.guests, rate=args.rate,
                                         ledger=run.ledger, progress=run.progress,
                                         stop=run.stop)
        else:
            result = run_campaign(run.campaign, run.lab, run.ledger, progress=run.progress,
                                  stop=run.stop)
    finally:
        run.ledger.close()
    code = report_run(result, args.json, extra)
    if extra and not args.json:
        rec = extra["recording"]
        print(f"recording: {rec['path']} ({rec['written']} events, {rec['bytes'] / 1e6:.1f} MB); "
              f"score it with `vmroc eval {rec['path']}`")
    return code


def report_run(result: CampaignResult, as_json: bool, extra: dict[str, Any] | None = None
               ) -> int:
    """Save the result, print it (table or JSON, with ``extra``); the exit status."""
    path = result.save()
    out = result.to_dict()
    if as_json:
        print(json.dumps({**out, **(extra or {}), "result_file": str(path)}, indent=1,
                         default=str))
    else:
        print(f"{'at':>7} {'kind':<14} {'guests':<10} {'composed':<13} {'state':<8} "
              f"{'effective':<9} {'apply s':>7} {'recover s':>9}")
        for step in out["steps"]:
            ids = step["group"] or step["cascade"] or step["flip_flop"] or "-"
            print(f"{step['at']:>6g}s {step['kind']:<14} {','.join(step['guests']):<10} "
                  f"{ids:<13} {step['state']:<8} {str(step.get('effective', '-')):<9} "
                  f"{_num(step.get('apply_s')):>7} {_num(step.get('time_to_recover')):>9}")
        print(f"{out['effective']}/{out['faults']} effective, {out['recovered']}/{out['faults']} "
              f"recovered{' (interrupted)' if out['interrupted'] else ''}; result: {path}")
    return 130 if result.interrupted else 0


def cmd_generate(args) -> int:
    from vmroc.inject.generate import generate
    to_stdout = args.out == "-"
    name = args.name or ("generated" if to_stdout else Path(args.out).stem)
    gen = generate(args.faults, args.seed, kinds=args.kinds, guests=args.guests,
                   groups=args.groups, cascades=args.cascades, flip_flops=args.flip_flops,
                   gap=args.gap, baseline=args.baseline, cooldown=args.cooldown,
                   max_duration=args.max_duration, name=name, out=args.out,
                   workload=args.workload)
    if not to_stdout:
        try:
            Path(args.out).write_text(gen.text)
        except OSError as exc:
            raise SpecError(f"cannot write {args.out}: {exc.strerror}") from exc
    if args.json:
        c = gen.campaign
        print(json.dumps({"out": args.out, "name": c.name, "seed": c.seed,
                          "summary": gen.summary(), "command": gen.command,
                          "steps": len(c.steps), "composed": c.composed(),
                          "kinds": sorted({s.spec.kind for s in c.steps}),
                          "planned_s": round(c.planned_s, 1),
                          **({"text": gen.text} if to_stdout else {})}, indent=1))
    elif to_stdout:
        sys.stdout.write(gen.text)
        print(gen.summary(), file=sys.stderr)
    else:
        print(f"wrote {args.out}: {gen.summary()}")
    return 0


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"
