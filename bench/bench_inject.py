"""Per-kind injector report: mechanism, effect observed over N tries, time to apply,
time to recover. Runs against a lab that is up (default: `vmroc lab up --name bench`).

    python3 bench/bench_inject.py [--lab NAME] [--tries 3] [--guest g2] [--kinds a,b]
        [--json] [--quick]

Prints a Markdown table on stdout; progress on stderr. Every fault is reverted.
``--quick`` (what the test suite runs on its shared lab): one try of cpu-throttle (one
guest's CPU quota, for 2 s) unless ``--kinds`` names others.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from vmroc.deploy import Lab
from vmroc.inject import FaultSpec, Ledger, all_kinds, run

DURATION = {"cpu-mce": 0, "cpu-nmi": 0, "mem-mce": 0, "mem-bitflip": 0, "disk-corrupt": 0,
            "guest-reboot": 0}
PARAMS = {"cpu-mce": {"severity": "uncorrected"}, "mem-bitflip": {"count": 1}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lab", default="bench")
    p.add_argument("--tries", type=int, default=3)
    p.add_argument("--guest", default="g2")
    p.add_argument("--kinds", default="", help="comma-separated subset")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="one try of cpu-throttle for 2 s (unless --kinds), nothing lab-wide")
    args = p.parse_args()
    if args.quick:
        args.tries, args.duration = 1, min(args.duration, 2.0)
        args.kinds = args.kinds or "cpu-throttle"
    booted = not Lab(args.lab).is_up
    # a lab that is up is used as it is (make bench brings up 3 guests for the campaign)
    lab = Lab.up(2, name=args.lab, accel="tcg") if booted else Lab(args.lab)
    for g in lab.guests:
        g.wait_for_status(120, where=lambda s: s["http_ok"] >= 2)
    ledger = Ledger("/tmp/bench-inject-ledger.jsonl", kafka=False)
    wanted = [k for k in args.kinds.split(",") if k]
    rows = []
    for kind in all_kinds():
        if wanted and kind.name not in wanted:
            continue
        guests = [] if kind.name == "bridge-down" else [args.guest]
        res = []
        for i in range(args.tries):
            spec = FaultSpec(kind.name, guests, PARAMS.get(kind.name, {}),
                             duration=DURATION.get(kind.name, args.duration), seed=i)
            t0 = time.monotonic()
            try:
                f = run(spec, lab, ledger)
                res.append(f.result())
            except Exception as exc:  # noqa: BLE001 - a bench row, not a crash
                res.append({"effective": False, "error": str(exc)})
            print(f"{kind.name} try {i + 1}: effective={res[-1].get('effective')} "
                  f"recover={res[-1].get('time_to_recover')} "
                  f"{res[-1].get('error', '')} "
                  f"({time.monotonic() - t0:.1f}s)", file=sys.stderr, flush=True)
        eff = sum(bool(r.get("effective")) for r in res)
        ap = [r["apply_s"] for r in res if r.get("apply_s") is not None]
        rec = [r["time_to_recover"] for r in res if r.get("time_to_recover") is not None]
        rows.append({"kind": kind.name, "level": kind.level, "mechanism": kind.mechanism,
                     "effective": eff, "tries": len(res),
                     "apply_s": round(statistics.median(ap), 3) if ap else None,
                     "recover_s": round(statistics.median(rec), 2) if rec else None,
                     "recovered": sum(bool(r.get("recovered")) for r in res)})
    ledger.close()
    if booted:
        lab.down()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| kind | level | mechanism | effect observed | apply (median) | recover (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mech = r["mechanism"].split(";")[0][:90]
        print(f"| {r['kind']} | {r['level']} | {mech} | {r['effective']}/{r['tries']} | "
              f"{r['apply_s']} s | {r['recover_s']} s ({r['recovered']}/{r['tries']} back) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
