"""``vmroc eval``: score recordings, per fault kind and overall, against baselines.

    vmroc eval run1.jsonl.xz run2.jsonl [--ranker heuristic] [--json] [--html report.html]
"""

from __future__ import annotations

import json
import sys
from typing import Any

from vmroc.detect import DEFAULT_MODEL, MODEL_NAMES
from vmroc.rca import DEFAULT_RANKER


def register(subparsers) -> None:
    # rca.rankers is not imported here (scikit-learn: a second on every `vmroc` command)
    p = subparsers.add_parser(
        "eval", help="score recordings: detection, latency, AC@k per fault kind, vs baselines",
        description="Replay each recording through detection and RCA and score the incidents "
                    "against its ledger, per fault kind and overall: detection rate and "
                    "latency, time to the right rank-1 cause, AC@1, AC@3, Avg@5 (RCAEval) and "
                    "false alarms per hour. The baselines (dummy: a random order, nsigma, baro) "
                    "rank the same incidents. A fault is detected only by an anomaly on a guest "
                    "it touches, starting between its injection and its recovery + --grace; "
                    "faults without an observed effect are counted, not scored.")
    p.add_argument("recordings", nargs="+", metavar="RECORDING",
                   help="recordings made by `vmroc record` (.jsonl, .jsonl.xz, .jsonl.gz)")
    p.add_argument("--ranker", default=DEFAULT_RANKER, metavar="NAME",
                   help=f"the ranker scored, by its name in rca.rankers (default "
                        f"{DEFAULT_RANKER}); an unknown name lists them")
    p.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL,
                   help="detector model (robust)")
    p.add_argument("--rca-model", metavar="FILE", default=None,
                   help="trained model of the fingerprint ranker (default: $VMROC_RCA_MODEL "
                        "or the shipped one; make one with `vmroc rca train`)")
    p.add_argument("--baseline", type=float, default=20.0, metavar="S",
                   help="seconds of each guest's samples the detector learns normal from (20)")
    p.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="an anomaly starting up to S seconds after recovery still counts (10)")
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    p.add_argument("--html", metavar="OUT", default=None,
                   help="also write a self-contained HTML report with plots to OUT")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .evaluation import evaluate_recordings
    report, detail = evaluate_recordings(args.recordings, ranker=args.ranker,
                                         grace_s=args.grace, model=args.model,
                                         rca_model=args.rca_model,
                                         baseline_s=args.baseline)
    if args.html:
        from .report import write_html
        write_html(args.html, report, detail)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_scorecard(report))
    if args.html:
        print(f"vmroc: report written to {args.html}", file=sys.stderr)
    return 0


def format_scorecard(report: dict[str, Any]) -> str:
    """Per kind, overall, then the rankers side by side, as a person reads it."""
    head = (f"{'kind':<16} {'faults':>6} {'eff':>4} {'det':>4} {'rate':>5} {'lat50':>6} "
            f"{'lat90':>6} {'loc50':>6} {'AC@1':>5} {'AC@3':>5} {'Avg@5':>5}")
    lines = [head]
    for kind, m in report["per_kind"].items():
        lines.append(_row(kind, m))
    lines.append(_row("overall", report))
    fa = report["false_alarms_per_hour"]
    lines.append(f"abstained (no credible cause): {report['abstained']} of {report['detected']} "
                 f"detected faults; AC@1 where a cause was claimed: "
                 f"{_f(report['ac1_answered'])}")
    lines.append(f"AC@1 ceiling (one rank-1 cause per incident, overlapping faults share one): "
                 f"{_f(report['ac1_ceiling'])}")
    lines.append(f"false alarms: {report['false_alarms']} of {report['incidents']} incidents in "
                 f"{report['hours']:.2f} h recorded ({'-' if fa is None else f'{fa:.2f}'}/h); "
                 "lat = injection to detection, loc = injection to the right rank-1 cause (s)")
    lines += _named_table(report.get("named"))
    rankers = {f"{report['ranker']} *": report, **report["baselines"]}
    lines.append("")
    lines.append("rankers on the same incidents (* the one scored above); AC@1 per kind:")
    kinds = {k: max(len(k), 5) for k in report["per_kind"]}
    lines.append(f"{'ranker':<14} {'AC@1':>5} {'AC@3':>5} {'Avg@5':>5} {'loc50':>6}   "
                 + " ".join(f"{k:>{w}}" for k, w in kinds.items()))
    for name, m in rankers.items():
        per = " ".join(f"{_f(m['per_kind'].get(k, {}).get('ac1')):>{w}}"
                       for k, w in kinds.items())
        lines.append(f"{name:<14} {_f(m['ac1']):>5} {_f(m['ac3']):>5} {_f(m['avg5']):>5} "
                     f"{_f(m['median_localization_latency_s']):>6}   {per}")
    lines += _failover_table(report.get("failover"))
    lines.append("")
    for r in report["recordings"]:
        cut = (f", compressed stream cut after line {r['truncated_after_line']}"
               if r.get("truncated_after_line") else "")
        lines.append(f"{r['path']} ({r.get('workload', 'web')}): {r['samples']} samples, "
                     f"{r['hours']:.2f} h, {r['faults']} "
                     f"faults, {r['anomalies']} anomalies, {r['incidents']} incidents, "
                     f"{r['skipped_lines']} bad lines skipped{cut}")
    return "\n".join(lines)


def _named_table(named: dict[str, dict[str, int]] | None) -> list[str]:
    """What rank 1 named per broken part (``rca.scorecard.named``): where misses go."""
    if not named:
        return []
    from vmroc.rca.scorecard import NAMED
    widths = {c: max(len(c), 3) for c in NAMED}
    lines = ["", "what the rank-1 cause named, per broken part (effective faults):",
             f"{'part':<8} {'faults':>6} " + " ".join(f"{c:>{w}}" for c, w in widths.items())]
    for part, counts in named.items():
        lines.append(f"{part:<8} {sum(counts.values()):>6} "
                     + " ".join(f"{counts.get(c, 0):>{w}}" for c, w in widths.items()))
    return lines


def _failover_table(per_kind: dict[str, dict[str, Any]] | None) -> list[str]:
    """The etcd failover per fault kind (``inject.failover.summarize``), if any."""
    if not per_kind:
        return []
    lines = ["", "failover per kind (etcd; s = seconds from injection, el = to a new "
                 "leader, unav = longest stretch without a write, cerr = client errors, "
                 "hviol = client reads below what it had acknowledged or read, stale = "
                 "member reads below an acknowledged write after recovery, lost = "
                 "acknowledged writes missing from the history):",
             f"{'kind':<16} {'n':>4} {'elect':>5} {'el50':>6} {'elmax':>6} {'unav50':>6} "
             f"{'unavmax':>7} {'cerr':>6} {'hviol':>5} {'stale':>5} {'lost':>4}"]
    for kind, m in per_kind.items():
        lines.append(f"{kind[:16]:<16} {m['n']:>4} {m['elections']:>5} "
                     f"{_f(m['election_median_s']):>6} {_f(m['election_max_s']):>6} "
                     f"{_f(m['unavailable_median_s']):>6} {_f(m['unavailable_max_s']):>7} "
                     f"{m['client_errors']:>6} {m['history_violations']:>5} "
                     f"{m.get('stale_reads', 0):>5} {m.get('lost_writes', 0):>4}")
    return lines


def _row(name: str, m: dict[str, Any]) -> str:
    return (f"{name[:16]:<16} {m['faults']:>6} {m['effective']:>4} {m['detected']:>4} "
            f"{_f(m['detection_rate']):>5} {_f(m['median_detection_latency_s']):>6} "
            f"{_f(m['p90_detection_latency_s']):>6} {_f(m['median_localization_latency_s']):>6} "
            f"{_f(m['ac1']):>5} {_f(m['ac3']):>5} {_f(m['avg5']):>5}")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
