"""``vmroc serve``: the long-running monitor and its dashboard, in one process.

    vmroc serve [--host 127.0.0.1] [--port 8080] [--db URL] [--ranker heuristic]
                [--lab NAME | --depends g2:g1,...] [--group vmroc-serve] [--no-worker]

The worker (``service.worker``) consumes vmroc.samples and vmroc.faults, detects,
ranks, publishes anomalies and incidents and stores everything (``service.store``);
the dashboard (``service.app``) reads the store. Write actions need the token printed
at start (or ``$VMROC_TOKEN``).
"""

from __future__ import annotations

import os
import sys

from vmroc.detect import DEFAULT_MODEL, MODEL_NAMES
from vmroc.rca import DEFAULT_RANKER


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the monitoring service and its dashboard (detect, rank, store, show)",
        description="Consume vmroc.samples and vmroc.faults as one consumer group member, "
                    "detect anomalies and rank incidents in process, publish them to "
                    "vmroc.anomalies and vmroc.incidents, store everything (SQLite under the "
                    "vmroc home by default) and serve the dashboard, /api/, /healthz and "
                    "/metrics. Ctrl-C stops.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the dashboard)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0: any)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL (default sqlite:///$VMROC_HOME/service/vmroc.db; "
                        "postgresql://... also works)")
    p.add_argument("--ranker", default=DEFAULT_RANKER,
                   help=f"ranker from rca.rankers (default {DEFAULT_RANKER})")
    p.add_argument("--lab", default=os.environ.get("VMROC_LAB", "default"),
                   help="lab whose who-calls-whom RCA uses and the actions act on")
    p.add_argument("--depends", default=None, metavar="G:S,...",
                   help="who calls whom instead of the lab's, e.g. g2:g1,g3:g1")
    p.add_argument("--group", default="vmroc-serve", help="Kafka consumer group")
    p.add_argument("--from-beginning", action="store_true",
                   help="a new group starts at the oldest retained event (default: now)")
    p.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL)
    p.add_argument("--baseline", type=float, default=20.0, metavar="S",
                   help="seconds of each guest's samples to learn normal from (20)")
    p.add_argument("--silence", type=float, default=5.0, metavar="S",
                   help="a guest without samples for S s while others have them is an anomaly")
    p.add_argument("--window", type=float, default=10.0, metavar="S",
                   help="anomalies starting within S seconds belong together (10)")
    p.add_argument("--quiet", type=float, default=8.0, metavar="S",
                   help="an incident closes after S seconds without anomalies (8)")
    p.add_argument("--history", type=float, default=1.0, metavar="S",
                   help="one stored feature vector per guest every S seconds (1)")
    p.add_argument("--keep-hours", type=float, default=24.0, metavar="H",
                   help="feature history and log lines kept (24 h); incidents stay")
    p.add_argument("--no-worker", action="store_true",
                   help="only the dashboard over the store (another process consumes)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from vmroc.proc import stop_on_signals
    from vmroc.rca.cli import depends_of
    from vmroc.rca.rankers import check_ranker

    from .server import Service
    from .store import Store

    check_ranker(args.ranker)
    if args.verbose < 1:  # werkzeug logs every request at INFO
        import logging
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    store = Store(args.db)
    stop = stop_on_signals()
    options = None if args.no_worker else {
        "group": args.group, "from_beginning": args.from_beginning, "ranker": args.ranker,
        "depends": depends_of(args), "window_s": args.window, "quiet_s": args.quiet,
        "history_s": args.history, "model": args.model, "baseline_s": args.baseline,
        "silence_s": args.silence}
    svc = Service.start(store, host=args.host, port=args.port, lab=args.lab,
                        worker_options=options, stop=stop)
    print(f"vmroc: dashboard at {svc.url} (store {store._where()}); write actions need the "
          f"token {svc.token}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(600):
            if svc.status is not None and args.keep_hours > 0:
                span = store.span()
                if span:
                    store.prune(span[1] - args.keep_hours * 3600)
    finally:
        svc.stop()
    print("vmroc: serve stopped", file=sys.stderr)
    return 0
