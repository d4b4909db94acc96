"""``vmroc record`` and ``vmroc replay``: keep what the bus carried, and run it again.

    vmroc record -o run.jsonl [--topics vmroc.samples,vmroc.faults] [--idle 5] [--live] [--json]
    vmroc replay run.jsonl [--model robust|forest|lof] [--json]     # detect + RCA offline
    vmroc replay run.jsonl --publish                            # back onto the bus
"""

from __future__ import annotations

import json
import os
import sys

from vmroc.detect import DEFAULT_MODEL, MODEL_NAMES
from vmroc.rca import DEFAULT_RANKER


def register(subparsers) -> None:
    rec = subparsers.add_parser(
        "record", help="write events from the bus to a file (samples and the ledger by default)",
        description="Read topics from their oldest retained event (or, with --live, from "
                    "now) and write them to a JSON-lines recording, until Ctrl-C or --idle.")
    rec.add_argument("-o", "--output", required=True, help="recording file to write")
    rec.add_argument("--topics", default="vmroc.samples,vmroc.faults",
                     help="comma-separated topics (default: vmroc.samples,vmroc.faults)")
    rec.add_argument("--idle", type=float, default=None, metavar="S",
                     help="stop after S seconds without events")
    rec.add_argument("--live", action="store_true", help="start at the end, not the oldest")
    rec.add_argument("--json", action="store_true",
                     help="print what was written as JSON (file, topics, counts) at the end")
    rec.add_argument("--lab", default=os.environ.get("VMROC_LAB", "default"),
                     help="store this lab's who-calls-whom for replays (if it is up here)")
    rec.set_defaults(func=cmd_record)
    rep = subparsers.add_parser(
        "replay", help="run detection and RCA on a recording, or publish it again",
        description="Without --publish: the recording's samples go through the detector and "
                    "RCA offline and the incidents are scored against the recorded ledger. "
                    "With --publish: every event goes back onto the bus, in order.")
    rep.add_argument("file", help="recording made by `vmroc record`")
    rep.add_argument("--publish", action="store_true", help="publish instead of analysing")
    rep.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL,
                     help="detector model (robust)")
    rep.add_argument("--ranker", default=DEFAULT_RANKER, metavar="NAME",
                     help=f"ranker by name in rca.rankers ({DEFAULT_RANKER})")
    rep.add_argument("--rca-model", metavar="FILE", default=None,
                     help="trained model of the fingerprint ranker (`vmroc rca train`)")
    rep.add_argument("--baseline", type=float, default=20.0, metavar="S",
                     help="seconds of each guest's samples to learn normal from (20)")
    rep.add_argument("--json", action="store_true", help="print the result as JSON")
    rep.set_defaults(func=cmd_replay)


def cmd_record(args) -> int:
    from vmroc.deploy import Lab
    from vmroc.proc import stop_on_signals

    from .recording import record
    lab = Lab(args.lab)
    depends = lab.dependencies() if lab.is_up else {}
    stop = stop_on_signals()
    print(f"vmroc: recording {args.topics} to {args.output}; Ctrl-C stops", file=sys.stderr)
    topics = [t for t in args.topics.split(",") if t]
    stats = record(args.output, topics, stop=stop,
                   idle_s=args.idle, from_beginning=not args.live, depends=depends)
    if args.json:
        print(json.dumps({"output": args.output, "topics": topics, **stats}))
    else:
        print(f"vmroc: {stats['written']} events written, {stats['skipped']} undecodable "
              "skipped", file=sys.stderr)
    return 0


def cmd_replay(args) -> int:
    from .recording import replay_offline, replay_publish
    if args.publish:
        stats = replay_publish(args.file)
        print(json.dumps(stats) if args.json else
              f"vmroc: {stats['sent']} events published, {stats['skipped']} bad lines skipped")
        return 0
    from vmroc.rca import format_faults
    report = replay_offline(args.file, model=args.model, baseline_s=args.baseline,
                            ranker=args.ranker, rca_model=args.rca_model)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(format_faults(report["rows"], report))
    print(f"({report['samples']} samples, {report['anomalies']} anomalies, "
          f"{report['skipped_lines']} bad lines skipped)")
    return 0
