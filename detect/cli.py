"""``vmroc detect``: turn the samples on the bus into anomalies, until Ctrl-C.

    vmroc detect [--model robust|forest|lof] [--baseline 20] [--target-fa-per-hour 1]
                 [--threshold T] [--json]
"""

from __future__ import annotations

import json
import sys
import time

from vmroc.detect import DEFAULT_MODEL, MODEL_NAMES
from vmroc.events import to_dict
from vmroc.proc import stop_on_signals


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "detect", help="detect anomalies in vmroc.samples, publish them to vmroc.anomalies",
        description="Consume vmroc.samples (as a member of a consumer group: run several to "
                    "split the guests), learn each guest's normal from its first samples, "
                    "and publish an anomaly when a guest leaves it. Ctrl-C stops.")
    p.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL,
                   help="robust: per-feature robust z-scores, names the features (default); "
                        "forest: IsolationForest; lof: LocalOutlierFactor")
    p.add_argument("--baseline", type=float, default=20.0, metavar="S",
                   help="seconds each guest is watched to learn normal (default 20)")
    p.add_argument("--target-fa-per-hour", type=float, default=1.0, metavar="N",
                   help="each guest's threshold is calibrated from its baseline for N false "
                        "alarms an hour (default 1; robust and lof)")
    p.add_argument("--threshold", type=float, default=None,
                   help="robust model: a fixed number of deviations from normal that count "
                        "as abnormal, instead of the calibrated threshold")
    p.add_argument("--silence", type=float, default=5.0, metavar="S",
                   help="a guest without samples for S seconds while others have them is an "
                        "anomaly (default 5)")
    p.add_argument("--group", default="vmroc-detect", help="Kafka consumer group")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest retained sample (a new group only)")
    p.add_argument("--idle", type=float, default=None, metavar="S",
                   help="stop after S seconds without samples")
    p.add_argument("--json", action="store_true", help="print anomalies as JSON lines")
    p.set_defaults(func=cmd_detect)


def cmd_detect(args) -> int:
    from .worker import run_detector
    options = {"model": args.model, "baseline_s": args.baseline, "silence_s": args.silence,
               "target_fa_per_hour": args.target_fa_per_hour}
    if args.model == "robust" and args.threshold is not None:
        options["threshold"] = args.threshold
    stop = stop_on_signals()

    def show(a) -> None:
        if args.json:
            print(json.dumps(to_dict(a)), flush=True)
            return
        late = f", {a.ts - a.onset:.1f}s after onset" if a.onset is not None else ""
        print(f"{time.strftime('%H:%M:%S', time.localtime(a.ts))} {a.guest}: anomaly "
              f"({a.detector}, score {a.score:g}{late}): {', '.join(a.features)}", flush=True)

    print(f"vmroc: detecting ({args.model}, baseline {args.baseline:g}s per guest) on "
          "vmroc.samples -> vmroc.anomalies; Ctrl-C stops", file=sys.stderr)
    detector = run_detector(stop=stop, group=args.group, from_beginning=args.from_beginning,
                            on_anomaly=show, idle_timeout=args.idle, **options)
    summary = {g: d.anomalies for g, d in detector.guests.items()}
    print(f"vmroc: anomalies per guest: {summary or 'no samples seen'}", file=sys.stderr)
    return 0
