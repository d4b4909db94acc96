"""Root causes on metric tables: the default table ranker against BARO, n-sigma and a
random order, on seeded synthetic tables with a known root. Not a test.

    python3 bench/bench_rank_table.py [--cases 40] [--seed 0] [--before 120,300]
        [--lags 1,3] [--ar 0,0.9] [--sigma 3,8] [--tails DF] [--ranker residual] [--json]
        [--quick]

Each case is ``rca.synthetic.synthetic_case(seed + i)``: a random lagged linear
structural model of 8-20 metrics (lags 1-3 rows, autoregression, Gaussian noise, each
metric at its own scale), one root with children given a level shift, a spike or a
variance change of 3-8 of its normal standard deviations at the anomaly start; the
kinds take turns (``--tails DF``: Student-t noise, heavy tails, instead of Gaussian).
Every ranker ranks the same tables through ``rca.rank_table``.
Reported as in RCAEval: AC@k (the root within the first k), Avg@5 (the mean of AC@1..5),
AC@1 per fault kind, milliseconds per table, and the chosen ranker's ratio to BARO.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmroc.rca.synthetic import KINDS, synthetic_cases  # noqa: E402
from vmroc.rca.table import TABLE_RANKERS, rank_table  # noqa: E402

BASELINES = ("baro", "nsigma", "dummy")


def pair(text: str, kind=float) -> tuple:
    lo, _, hi = text.partition(",")
    return kind(lo), kind(hi or lo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40, help="number of tables (40)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first table (0)")
    ap.add_argument("--before", default="120,300", metavar="LO,HI",
                    help="normal rows per table (120,300)")
    ap.add_argument("--lags", default="1,3", metavar="LO,HI", help="edge lags in rows (1,3)")
    ap.add_argument("--ar", default="0,0.9", metavar="LO,HI",
                    help="autoregression of each metric (0,0.9)")
    ap.add_argument("--sigma", default="3,8", metavar="LO,HI",
                    help="fault size in the root's normal std (3,8)")
    ap.add_argument("--tails", type=float, default=None, metavar="DF",
                    help="Student-t noise with DF degrees of freedom (default: Gaussian)")
    ap.add_argument("--ranker", default="residual", choices=list(TABLE_RANKERS),
                    help="the ranker compared with the baselines (residual)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="4 tables (what the test suite runs)")
    args = ap.parse_args()
    if args.quick:
        args.cases = min(args.cases, 4)
    cases = synthetic_cases(args.cases, seed=args.seed, before=pair(args.before, int),
                            lags=pair(args.lags, int), ar=pair(args.ar),
                            sigma=pair(args.sigma), tails=args.tails)
    rankers = [args.ranker] + [b for b in BASELINES if b != args.ranker]
    result = {"cases": len(cases), "seed": args.seed, "generator": {
        "before": args.before, "lags": args.lags, "ar": args.ar, "sigma": args.sigma,
        "tails": args.tails,
        "kinds": {k: sum(c.kind == k for c in cases) for k in KINDS}}, "rankers": {}}
    for name in rankers:
        ranks, spent = [], 0.0
        for c in cases:
            t0 = time.perf_counter()
            ranked = [m for m, _ in rank_table(c.table, c.anomaly_start, ranker=name)]
            spent += time.perf_counter() - t0
            ranks.append(ranked.index(c.root) + 1)
        r = np.array(ranks)
        kinds = np.array([c.kind for c in cases])
        result["rankers"][name] = {
            "AC@1": round(float(np.mean(r <= 1)), 3),
            "AC@3": round(float(np.mean(r <= 3)), 3),
            "Avg@5": round(float(np.mean([np.mean(r <= k) for k in range(1, 6)])), 3),
            "AC@1 by kind": {k: round(float(np.mean(r[kinds == k] <= 1)), 3)
                             for k in KINDS if (kinds == k).any()},
            "ms_per_table": round(spent / len(cases) * 1000, 1),
        }
    ours, baro = result["rankers"][args.ranker], result["rankers"]["baro"]
    result["ratio_to_baro"] = {k: round(ours[k] / baro[k], 2) if baro[k] else None
                               for k in ("AC@1", "AC@3", "Avg@5")}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    g = result["generator"]
    print(f"{len(cases)} synthetic tables from seed {args.seed} (normal rows {g['before']}, "
          f"lags {g['lags']}, autoregression {g['ar']}, fault {g['sigma']} sigma, "
          f"{'t(' + format(g['tails'], 'g') + ')' if g['tails'] else 'Gaussian'} noise; "
          + ", ".join(f"{n} {k}" for k, n in g["kinds"].items()) + ")")
    print(f"{'ranker':9} {'AC@1':>5} {'AC@3':>5} {'Avg@5':>6}  "
          + " ".join(f"{'@1 ' + k:>11}" for k in KINDS) + f" {'ms/table':>9}")
    for name, m in result["rankers"].items():
        print(f"{name:9} {m['AC@1']:5.3f} {m['AC@3']:5.3f} {m['Avg@5']:6.3f}  "
              + " ".join(f"{m['AC@1 by kind'].get(k, float('nan')):11.3f}" for k in KINDS)
              + f" {m['ms_per_table']:9.1f}")
    print(f"{args.ranker} / baro: " + ", ".join(
        f"{k} x{v}" for k, v in result["ratio_to_baro"].items()))


if __name__ == "__main__":
    main()
