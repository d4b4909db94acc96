"""Failover of a real etcd cluster per fault kind: how long until a new leader, how long
writes were unavailable, what clients saw, and whether any acknowledged write was lost.

    python bench/bench_failover.py [--tries 5] [--kinds guest-suspend,net-partition,...]
        [--target leader|follower] [--duration 15] [--etcd-lab NAME] [--quick] [--json]

Boots a 3-guest etcd lab (``vmroc lab up --workload etcd``, name ``bench-etcd``) unless
``--etcd-lab`` names one that is up, and removes the one it booted. Each try waits for
the cluster to agree on a leader, injects the kind into the current leader (or into a
follower), holds it ``--duration`` seconds, reverts it and reads the failover the fault
recorded (``inject.failover.measure`` over every guest's status lines; acknowledged
writes read back through every member). Times are seconds from injection; "election" is
counted over the tries where a new leader was elected. Not a test: the numbers depend
on TCG and on the host's load, printed at the start.
``--quick``: one try of guest-suspend for 8 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from vmroc.deploy import Lab
from vmroc.errors import VmrocError
from vmroc.inject import FaultSpec, Ledger, run
from vmroc.inject.failover import summarize

KINDS = "guest-suspend,guest-crash,net-partition,net-link-down,cpu-stall"
LAB_WIDE = {"bridge-down"}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_try(lab: Lab, kind: str, target: str, duration: float, ledger: Ledger) -> dict:
    leader = lab.wait_cluster(timeout=120)
    guests = [] if kind in LAB_WIDE else (
        [leader] if target == "leader" else [next(g.name for g in lab.guests
                                                  if g.name != leader)])
    fault = run(FaultSpec(kind, guests, duration=duration), lab, ledger)
    recovered = [e for e in fault.entries if e.phase == "recovered"]
    fo = recovered[-1].evidence.get("failover") if recovered else None
    writes = (fo or {}).get("writes") or {}
    return {"kind": kind, "target": guests, "effective": bool(fault.effective),
            "recovered": bool(fault.recovered), "failover": fo,
            "lost_writes": len(writes.get("lost", [])),
            "stale_reads": len(writes.get("stale", [])),
            "members_agree": writes.get("agree")}


def table(summary: dict) -> str:
    head = ("| kind | tries | elections | election median / max s | unavailable median / max s "
            "| writes resumed median / max s | client errors | lost writes | stale reads "
            "| client history violations |")
    out = [head, "|" + " --- |" * 10]

    def pair(m: dict, name: str) -> str:
        med, mx = m.get(f"{name}_median_s"), m.get(f"{name}_max_s")
        return "-" if med is None else f"{med:.1f} / {mx:.1f}"

    for kind, m in summary.items():
        out.append(f"| {kind} | {m['n']} | {m['elections']} | {pair(m, 'election')} | "
                   f"{pair(m, 'unavailable')} | {pair(m, 'writes_resumed')} | "
                   f"{m['client_errors']} | {m['lost_writes']} | {m['stale_reads']} | "
                   f"{m['history_violations']} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tries", type=int, default=5, help="tries per kind (default 5)")
    ap.add_argument("--kinds", default=KINDS, help=f"comma-separated (default {KINDS})")
    ap.add_argument("--target", choices=["leader", "follower"], default="leader")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds each fault holds")
    ap.add_argument("--etcd-lab", default=None, help="a running etcd lab to use")
    ap.add_argument("--quick", action="store_true", help="one try of guest-suspend for 8 s")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.tries, args.kinds, args.duration = 1, "guest-suspend", 8.0
    load = os.getloadavg()
    lab = Lab(args.etcd_lab) if args.etcd_lab else Lab.up(3, name="bench-etcd",
                                                           workload="etcd", progress=say)
    if lab.workload != "etcd":
        raise SystemExit(f"lab {lab.name} runs {lab.workload}, not etcd")
    ledger = Ledger("/tmp/bench-failover-ledger.jsonl", kafka=False)
    rows = []
    try:
        for kind in [k for k in args.kinds.split(",") if k]:
            for i in range(args.tries):
                try:
                    row = one_try(lab, kind, args.target, args.duration, ledger)
                except VmrocError as exc:  # counted, and the next try waits for the cluster
                    say(f"{kind} [{i + 1}/{args.tries}]: {exc}")
                    rows.append({"kind": kind, "error": str(exc), "failover": None,
                                 "lost_writes": 0, "stale_reads": 0})
                    continue
                fo = row["failover"] or {}
                say(f"{kind} [{i + 1}/{args.tries}] on {','.join(row['target']) or 'lab'}: "
                    f"election {fo.get('election_s')} s, unavailable {fo.get('unavailable_s')}"
                    f" s, lost writes {row['lost_writes']}, stale reads {row['stale_reads']}")
                rows.append(row)
    finally:
        if not args.etcd_lab:
            lab.down()
    summary = summarize(rows)
    if args.json:
        print(json.dumps({"target": args.target, "duration_s": args.duration,
                          "tries": args.tries, "loadavg_at_start": load,
                          "per_kind": summary, "faults": rows}, indent=1))
        return 0
    print(f"etcd failover: {args.tries} tries per kind, faults on the {args.target} for "
          f"{args.duration:g} s, TCG guests, host load average at start {load[0]:.2f}")
    print(table(summary))
    lost = sum(r["lost_writes"] for r in rows)
    print(f"acknowledged writes lost: {lost}; stale reads: "
          f"{sum(r.get('stale_reads', 0) for r in rows)}; client history violations: "
          f"{sum(m['history_violations'] for m in summary.values())}; tries that failed: "
          f"{sum('error' in r for r in rows)}; not recovered: "
          f"{sum(r.get('recovered') is False for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
