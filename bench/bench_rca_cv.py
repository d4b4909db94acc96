"""Cross-validation of the rankers inside training recordings (not a test).

    python3 bench/bench_rca_cv.py data/recordings/mixed-s1.jsonl.xz [--folds 3] [--json]

The recordings are replayed once; each one's effective faults are split by injection
time into ``--folds`` consecutive blocks; for each block the fingerprint model is trained
on the incidents of every other block of every recording, every incident is ranked by
it (and by the ensemble built on it: ``--members NAME:WEIGHT,...``, default the shipped
``ENSEMBLE_WEIGHTS``), and the block's faults are scored (``rca.scorecard``). The baselines and
the heuristic rank the same incidents. This is how a ranker is tuned without looking at
the held-out recording; the held-out numbers come from `make eval`.

``--quick`` (what the test suite runs): the first 8000 events of the first recording
(about 4 minutes, a dozen faults), 2 folds; the recordings default to the training ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recordings", nargs="*",
                    default=[str(ROOT / "data/recordings/mixed-s1.jsonl.xz"),
                             str(ROOT / "data/recordings/mixed-s3.jsonl.xz")])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--extra", nargs="*", default=[], metavar="RECORDING",
                    help="recordings whose incidents only train (every fold's model), "
                         "never scored: does more data of another kind help?")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fingerprint", default="", metavar="PARAM=VALUE,...",
                    help="Fingerprint parameters tried, e.g. n_estimators=300,per_fold=1")
    ap.add_argument("--members", default=None, metavar="NAME:WEIGHT,...",
                    help="the ensemble tried (default: rca.rankers.ENSEMBLE_WEIGHTS)")
    ap.add_argument("--window", type=float, default=None, metavar="S",
                    help="group anomalies into incidents with this window_s instead of the "
                         "correlator's default (rca.incidents.Correlator)")
    ap.add_argument("--quick", action="store_true",
                    help="the first 8000 events of the first recording, 2 folds")
    args = ap.parse_args()
    if args.quick:
        from _quick import recording_slice
        args.recordings = [str(recording_slice(args.recordings[0], 8000))]
        args.folds = min(args.folds, 2)

    from vmroc.rca.ensemble import Ensemble
    from vmroc.rca.fingerprint import Fingerprint, incident_examples
    from vmroc.rca.rankers import ENSEMBLE_WEIGHTS, make_ranker
    from vmroc.rca.replay import run_recording

    fp_params = {k: int(v) for k, v in (p.split("=") for p in args.fingerprint.split(",") if p)}
    weights = ENSEMBLE_WEIGHTS if not args.members else {
        name: float(w) for name, w in (m.split(":") for m in args.members.split(","))}
    from vmroc.rca.scorecard import _metrics, rerank, score

    names = ["fingerprint", "ensemble", "heuristic", "causal", "baro", "nsigma", "dummy"]
    rows_of = {n: [] for n in names}
    t0 = time.monotonic()
    runs = [run_recording(path, "heuristic") for path in args.recordings]
    extra = [run_recording(path, "heuristic") for path in args.extra]
    if args.window is not None:
        runs = [regroup(run, args.window) for run in runs]
        extra = [regroup(run, args.window) for run in extra]
    examples = [e for run in runs + extra for e in incident_examples(run)]
    for run in runs:
        where = {"guests": run.guests, "span": run.span}
        effective = sorted((r for r in score(run.faults, run.anomalies, run.incidents,
                                             **where).rows if r["effective"]),
                           key=lambda r: r["start"])
        folds = [effective[i * len(effective) // args.folds:
                           (i + 1) * len(effective) // args.folds] for i in range(args.folds)]
        fixed = {n: make_ranker(n, depends=run.depends, series=run.series, seed=args.seed)
                 for n in ("heuristic", "causal", "baro", "nsigma", "dummy")}
        for fold in folds:
            held = {r["fault_id"] for r in fold}
            # trained on every other fold of this recording and all of the others
            model = Fingerprint(seed=args.seed, **fp_params).fit(
                [e for e in examples if e.fault_id not in held]).using(run.series, run.depends)
            rankers = {"fingerprint": model,
                       "ensemble": Ensemble({name: model if name == "fingerprint" else
                                             fixed[name] for name in weights},
                                            weights=weights, depends=run.depends).fit(),
                       **fixed}
            for name, ranker in rankers.items():
                ranked = rerank(run.incidents, ranker)
                sure = getattr(ranker, "confidence", lambda causes: causes[0].score)
                top = {i.id: sure(i.causes) for i in ranked if i.causes}
                rows = score(run.faults, run.anomalies, ranked, **where).rows
                rows_of[name] += [dict(r, top=top.get(r["incident"])) for r in rows
                                  if r["fault_id"] in held]
    out = {}
    for name, rows in rows_of.items():
        m = _metrics(rows)
        kinds = sorted({r["kind"] for r in rows})
        out[name] = {"ac1": m["ac1"], "ac3": m["ac3"], "avg5": m["avg5"],
                     "ac1_ceiling": m["ac1_ceiling"],
                     "effective": m["effective"],
                     "per_kind_ac1": {k: _metrics([r for r in rows if r["kind"] == k])["ac1"]
                                      for k in kinds}}
    curve = abstention_curve(rows_of["ensemble"])
    if args.json:
        print(json.dumps({"folds": args.folds, "recordings": args.recordings, "rankers": out,
                          "ensemble_abstention": curve}, indent=1))
        return 0
    window = "" if args.window is None else f", incident window {args.window:g} s"
    trained = f"; also trained on {', '.join(args.extra)}" if args.extra else ""
    print(f"{args.folds}-fold cross-validation by time on {', '.join(args.recordings)}"
          f"{window}{trained} ({time.monotonic() - t0:.0f} s)")
    print(f"{'ranker':<12} {'AC@1':>5} {'AC@3':>5} {'Avg@5':>5}  faults")
    for name, m in out.items():
        print(f"{name:<12} {m['ac1']:>5.2f} {m['ac3']:>5.2f} {m['avg5']:>5.2f}  {m['effective']}")
    print(f"AC@1 ceiling of these incidents (one rank-1 cause each): "
          f"{out['fingerprint']['ac1_ceiling']:.2f}")
    kinds = sorted(out["fingerprint"]["per_kind_ac1"])
    print("AC@1 per kind:  " + "  ".join(f"{k}" for k in kinds))
    for name, m in out.items():
        print(f"{name:<12} " + " ".join(f"{m['per_kind_ac1'][k]:.2f}".rjust(len(k))
                                        for k in kinds))
    print("ensemble abstaining below a confidence of T (the fingerprint's probability of "
          "its rank-1 cause), detected faults:")
    print(f"{'T':>5} {'claimed':>8} {'AC@1 claimed':>13} {'AC@1 abstained':>15}")
    for c in curve:
        print(f"{c['below']:>5.2f} {c['claimed']:>8.2f} {_f(c['ac1_claimed']):>13} "
              f"{_f(c['ac1_abstained']):>15}")
    return 0


def regroup(run, window_s: float):
    """The run with its anomalies grouped again by a correlator of ``window_s`` (the
    incidents' causes are re-ranked per fold below, so none are ranked here)."""
    from dataclasses import replace

    from vmroc.rca.incidents import Correlator

    class Unranked:
        def rank(self, anomalies):
            return []

    corr = Correlator(Unranked(), window_s=window_s)
    ordered = sorted(run.anomalies, key=lambda a: a.ts)
    return replace(run, incidents=[i for a in ordered for i in corr.add(a)] + corr.flush())


def abstention_curve(rows: list[dict]) -> list[dict]:
    """For each threshold: the share of detected faults whose incident would claim a
    cause, and AC@1 among those claimed and those abstained (what abstaining is worth)."""
    detected = [r for r in rows if r["effective"] and r["detected"] and r["top"] is not None]
    out = []
    for below in (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        claimed = [r["rank"] == 1 for r in detected if r["top"] >= below]
        dropped = [r["rank"] == 1 for r in detected if r["top"] < below]
        out.append({"below": below, "claimed": len(claimed) / max(len(detected), 1),
                    "ac1_claimed": sum(claimed) / len(claimed) if claimed else None,
                    "ac1_abstained": sum(dropped) / len(dropped) if dropped else None})
    return out


def _f(x):
    return "-" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
