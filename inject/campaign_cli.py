"""``vmroc campaign``: check and run a fault campaign file.

    vmroc campaign check FILE [--lab NAME] [--json]
    vmroc campaign run FILE [--lab NAME] [--json] [--no-kafka] [--ledger PATH]
"""

from __future__ import annotations

import json
import os
import sys

from vmroc.deploy import Lab

from .campaign import Campaign, run_campaign
from .ledger import Ledger


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "campaign", help="run a timed plan of faults (a campaign file)",
        description="A campaign is a YAML/JSON file of faults with start times; every fault "
                    "is validated first, applied at its time, verified, reverted and recorded "
                    "in the fault ledger with the campaign id. See deploy/campaigns/.")
    sub = p.add_subparsers(dest="campaign_command", metavar="check|run")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    for name, helptext, func in (
            ("check", "validate a campaign file against the fault kinds and the lab", cmd_check),
            ("run", "run a campaign: baseline, faults at their times, cooldown", cmd_run)):
        c = sub.add_parser(name, help=helptext, description=helptext)
        c.add_argument("file", help="campaign file (YAML or JSON)")
        c.add_argument("--lab", "--name", dest="lab", default=None,
                       help="lab name (default: the file's `lab`, $VMROC_LAB or 'default')")
        c.add_argument("--json", action="store_true", help="print the result as JSON")
        c.set_defaults(func=func)
        if name == "run":
            c.add_argument("--ledger", default=None, help="local ledger file "
                           "(default: $VMROC_LEDGER or $VMROC_HOME/inject/ledger.jsonl)")
            c.add_argument("--no-kafka", action="store_true",
                           help="keep the ledger local (sent later by any ledger flush)")
            c.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def _lab(args, campaign: Campaign) -> Lab:
    return Lab(args.lab or campaign.lab or os.environ.get("VMROC_LAB", "default"))


def cmd_check(args) -> int:
    campaign = Campaign.load(args.file)
    lab = _lab(args, campaign)
    campaign.prepare(lab, Ledger(kafka=False))  # what `run` checks before applying anything
    if args.json:
        print(json.dumps({"ok": True, "lab": lab.name, **campaign.to_dict()}, indent=1))
        return 0
    print(f"campaign {campaign.name} ({campaign.source}): {len(campaign.steps)} fault(s) on "
          f"lab {lab.name}, ~{campaign.planned_s:.0f}s planned")
    print(f"  baseline {campaign.baseline:g}s, cooldown {campaign.cooldown:g}s")
    for step in campaign.steps:
        s = step.spec
        params = " ".join(f"{k}={v}" for k, v in s.params.items())
        print(f"  +{step.at:>6g}s  {s.kind:<14} {','.join(s.guests):<10} "
              f"{s.duration:g}s {params}".rstrip())
    return 0


def cmd_run(args) -> int:
    campaign = Campaign.load(args.file)
    lab = _lab(args, campaign)
    ledger = Ledger(args.ledger, kafka=False if args.no_kafka else None)
    say = (lambda msg: None) if args.quiet else (
        lambda msg: print(f"campaign: {msg}", file=sys.stderr, flush=True))
    try:
        result = run_campaign(campaign, lab, ledger, progress=say)
    finally:
        ledger.close()
    path = result.save()
    out = result.to_dict()
    if args.json:
        print(json.dumps({**out, "result_file": str(path)}, indent=1, default=str))
    else:
        print(f"{'at':>7} {'kind':<14} {'guests':<10} {'state':<8} {'effective':<9} "
              f"{'apply s':>7} {'recover s':>9}")
        for step in out["steps"]:
            print(f"{step['at']:>6g}s {step['kind']:<14} {','.join(step['guests']):<10} "
                  f"{step['state']:<8} {str(step.get('effective', '-')):<9} "
                  f"{_num(step.get('apply_s')):>7} {_num(step.get('time_to_recover')):>9}")
        print(f"{out['effective']}/{out['faults']} effective, {out['recovered']}/{out['faults']} "
              f"recovered{' (interrupted)' if out['interrupted'] else ''}; result: {path}")
    return 130 if result.interrupted else 0


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"
