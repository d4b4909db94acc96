"""``vmroc rca``: rank the causes of anomalies, and score them against the ledger.

    vmroc rca run [--lab NAME | --depends g2:g1,g3:g1] [--json]
    vmroc rca score [--campaign ID] [--json]
    vmroc rca train RECORDING... -o MODEL [--seed 0] [--json]
    vmroc rca rank --csv FILE --anomaly-start T [--top 5] [--ranker NAME] [--json]
"""

from __future__ import annotations

import json
import os
import sys
import time

from vmroc.events import to_dict
from vmroc.proc import stop_on_signals

CAMPAIGN_TAIL_S = 30.0  # `rca score`: incidents this long after the last ledger entry count


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rca", help="group anomalies into incidents with ranked causes; score them",
        description="`run` consumes vmroc.anomalies and vmroc.faults and publishes ranked "
                    "incidents to vmroc.incidents; `score` compares the incidents on the bus "
                    "with the fault ledger.")
    sub = p.add_subparsers(dest="rca_command", metavar="run|score|train|rank")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    run = sub.add_parser("run", help="incidents from anomalies, until Ctrl-C")
    run.add_argument("--lab", default=os.environ.get("VMROC_LAB", "default"),
                     help="take who-calls-whom from this lab (default: $VMROC_LAB or default)")
    run.add_argument("--depends", default=None, metavar="G:S,...",
                     help="who calls whom instead of the lab's, e.g. g2:g1,g3:g1")
    run.add_argument("--window", type=float, default=10.0, metavar="S",
                     help="anomalies starting within S seconds belong together (10)")
    run.add_argument("--quiet", type=float, default=8.0, metavar="S",
                     help="an incident closes after S seconds without anomalies (8)")
    run.add_argument("--group", default="vmroc-rca", help="Kafka consumer group")
    run.add_argument("--from-beginning", action="store_true",
                     help="start at the oldest retained anomaly (a new group only)")
    run.add_argument("--ranker", default="heuristic", metavar="NAME",
                     help="ranker by name in rca.rankers (heuristic; those that read the "
                          "feature series, such as baro or fingerprint, run in vmroc serve)")
    run.add_argument("--json", action="store_true", help="print incidents as JSON lines")
    run.set_defaults(func=cmd_run)
    score = sub.add_parser("score", help="score the incidents on the bus against the ledger")
    score.add_argument("--campaign", default=None, help="only the faults of this campaign id")
    score.add_argument("--idle", type=float, default=3.0, metavar="S",
                       help="stop reading a topic after S seconds without events (3)")
    score.add_argument("--json", action="store_true", help="print the report as JSON")
    score.set_defaults(func=cmd_score)
    train = sub.add_parser(
        "train", help="train the fingerprint ranker on recordings (labeled by their ledger)",
        description="Replay each recording through detection and correlation, label its "
                    "incidents with the injected faults of its own ledger, and fit the "
                    "fingerprint ranker on them. Keep held-out recordings out of this.")
    train.add_argument("recordings", nargs="+", metavar="RECORDING",
                       help="recordings made by `vmroc campaign run --record`")
    train.add_argument("-o", "--output", required=True, metavar="MODEL",
                       help="model file to write (joblib)")
    train.add_argument("--seed", type=int, default=0, help="random seed of the forests (0)")
    train.add_argument("--json", action="store_true", help="print the model's metadata")
    train.set_defaults(func=cmd_train)
    rank = sub.add_parser(
        "rank", help="rank the metrics of any table as root causes (no lab needed)",
        description="FILE is a wide CSV table as RCAEval's: a `time` column of epoch "
                    "seconds and one numeric column per metric. Rows before the anomaly "
                    "start are normal (at least 10); the metrics are ranked by how likely "
                    "each is where the anomaly began. Columns constant throughout come last.")
    rank.add_argument("--csv", required=True, metavar="FILE", help="the metric table")
    rank.add_argument("--anomaly-start", required=True, type=float, metavar="T",
                      help="epoch seconds of the first anomalous row")
    rank.add_argument("--top", type=int, default=5, metavar="N",
                      help="print the N likeliest metrics (5; 0 for all)")
    rank.add_argument("--ranker", default="residual", metavar="NAME",
                      help="residual (default), baro, nsigma or dummy")
    rank.add_argument("--json", action="store_true",
                      help='print [{"metric": ..., "score": ...}, ...]')
    rank.set_defaults(func=cmd_rank)


def depends_of(args) -> dict[str, list[str]]:
    """Who calls whom: ``--depends g2:g1,...``, else the lab's (``--lab``) if it is up."""
    if args.depends:
        out: dict[str, list[str]] = {}
        for pair in args.depends.split(","):
            guest, _, server = pair.partition(":")
            if not guest or not server:
                from .errors import RCAError
                raise RCAError(f"bad --depends entry {pair!r}: use GUEST:SERVER, e.g. g2:g1")
            out.setdefault(guest, []).append(server)
        return out
    from vmroc.deploy import Lab
    lab = Lab(args.lab)
    return lab.dependencies() if lab.is_up else {}


def cmd_run(args) -> int:
    from .rankers import make_ranker
    from .worker import run_rca
    depends = depends_of(args)
    make_ranker(args.ranker, depends=depends)  # an unknown or series-only ranker: one line
    stop = stop_on_signals()

    def show(i) -> None:
        if args.json:
            print(json.dumps(to_dict(i)), flush=True)
            return
        when = time.strftime("%H:%M:%S", time.localtime(i.ts))
        print(f"{when} incident {i.id} on {','.join(i.guests)}", flush=True)
        for rank, c in enumerate(i.causes[:3], 1):
            feats = ", ".join((c.evidence or {}).get("features", {}))
            print(f"  {rank}. {c.component:<14} {c.score:5.2f}  {feats}", flush=True)

    print(f"vmroc: ranking causes (depends: {depends or 'none'}); Ctrl-C stops",
          file=sys.stderr)
    run_rca(stop=stop, depends=depends, group=args.group, from_beginning=args.from_beginning,
            on_incident=show, window_s=args.window, quiet_s=args.quiet, ranker=args.ranker)
    return 0


def cmd_score(args) -> int:
    from vmroc.bus import FAULTS, INCIDENTS, Consumer

    from .scorecard import format_faults, score, summarize

    def read(topic):
        events = []
        with Consumer(topic, group=None, from_beginning=True, dlq=False) as c:
            c.run(lambda m: events.append(m.event), idle_timeout=args.idle)
        return events

    faults = [e for e in read(FAULTS) if args.campaign in (None, e.campaign)]
    incidents = read(INCIDENTS)
    times = [e.ts for e in faults] + ([] if args.campaign else [i.ts for i in incidents])
    span = (min(times), max(times) + CAMPAIGN_TAIL_S) if times else None
    if span:  # a campaign's incidents: those of its time span
        incidents = [i for i in incidents if span[0] <= i.ts <= span[1]]
    scored = score(faults, [], incidents, span=span)
    card = summarize(scored)
    if args.json:
        print(json.dumps({**card, "rows": scored.rows}, indent=1))
    else:
        print(format_faults(scored.rows, card))
    return 0


def cmd_train(args) -> int:
    from .train import train
    say = (lambda msg: None) if args.json else (
        lambda msg: print(f"rca train: {msg}", file=sys.stderr, flush=True))
    model = train(args.recordings, args.output, seed=args.seed, progress=say)
    if args.json:
        print(json.dumps({"model": args.output, **model.meta_}, indent=1, default=str))
    return 0


def cmd_rank(args) -> int:
    from .table import rank_table
    ranked = rank_table(args.csv, args.anomaly_start, ranker=args.ranker)
    if args.top > 0:
        ranked = ranked[:args.top]
    if args.json:
        print(json.dumps([{"metric": m, "score": round(s, 4)} for m, s in ranked]))
        return 0
    width = max(len(m) for m, _ in ranked)
    for i, (metric, score) in enumerate(ranked, 1):
        print(f"{i:>3}. {metric:<{width}}  {score:10.3f}")
    return 0
