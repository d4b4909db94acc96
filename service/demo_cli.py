"""``vmroc demo``: the demo campaign through the service, its scorecard, the dashboard.

    vmroc demo [--lab NAME] [--campaign FILE] [--port 8080] [--exit] [--json]

Starts what is missing (the broker through ``vmroc.bus.bootstrap``, the lab), runs the
service (``service.server.Service``: worker + dashboard, a fresh store per run under the
vmroc home unless ``--db``), samples every guest onto the bus, waits until the service
has learned every guest's baseline, runs the campaign (default: the shipped demo, one
fault per level), waits for the last incident to close, and prints the scorecard from
the service's store: per fault its kind, whether it took effect, whether and how fast it
was detected, the rank-1 cause and whether it was right; then AC@1, AC@3 and Avg@5.
Then the dashboard's URL, serving until Ctrl-C (``--exit``: stop after the scorecard).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from vmroc.rca import DEFAULT_RANKER


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the demo campaign through the service; scorecard; dashboard",
        description="Broker and lab (started if down), `vmroc serve` in process, every "
                    "guest sampled onto the bus, the demo campaign, then the scorecard of "
                    "what the service detected and ranked, and the dashboard until Ctrl-C.")
    p.add_argument("--lab", default=os.environ.get("VMROC_LAB", "default"),
                   help="lab to run on (started with --guests if down)")
    p.add_argument("--guests", type=int, default=3)
    p.add_argument("--campaign", default=None, metavar="FILE",
                   help="campaign file (default: the shipped deploy/campaigns/demo.yaml)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--db", default=None, metavar="URL",
                   help="database (default: a new SQLite file for this run under the "
                        "vmroc home)")
    p.add_argument("--rate", type=float, default=5.0, metavar="HZ",
                   help="samples per second per guest (5)")
    p.add_argument("--baseline", type=float, default=25.0, metavar="S",
                   help="seconds of each guest's samples to learn normal from (25)")
    p.add_argument("--ranker", default=DEFAULT_RANKER,
                   help=f"ranker from rca.rankers (default {DEFAULT_RANKER})")
    p.add_argument("--exit", action="store_true", help="stop after the scorecard")
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    p.set_defaults(func=cmd_demo)


ASSIGN_S = 60.0  # the service's consumer joins its group and learns where the topics end


def cmd_demo(args) -> int:
    import logging

    from vmroc.bus import Producer, bootstrap, ensure_topics
    from vmroc.deploy import Lab
    from vmroc.deploy.broker import embedded
    from vmroc.errors import VmrocError
    from vmroc.home import subdir
    from vmroc.inject.campaign import Campaign, run_campaign
    from vmroc.inject.ledger import Ledger
    from vmroc.introspect.stream import stream
    from vmroc.proc import stop_on_signals
    from vmroc.rca.rankers import check_ranker

    from .app import shipped_campaigns
    from .server import Service
    from .store import Store
    from .views import faults_view

    if args.verbose < 1:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    check_ranker(args.ranker)

    def say(msg: str) -> None:
        print(f"vmroc demo: {msg}", file=sys.stderr, flush=True)

    campaign = Campaign.load(args.campaign or shipped_campaigns()["demo"])
    stop = stop_on_signals()
    servers = bootstrap(start_broker=embedded)
    ensure_topics(servers)
    lab = Lab(args.lab)
    if not lab.is_up or not all(g.alive() for g in lab.guests):
        say(f"starting lab {args.lab} ({args.guests} guests)")
        lab = Lab.up(guests=args.guests, name=args.lab, progress=say)
    run = time.strftime("%Y%m%dT%H%M%S")
    store = Store(args.db or f"sqlite:///{subdir('service') / f'demo-{run}.db'}")
    svc = Service.start(store, host=args.host, port=args.port, lab=lab.name, stop=stop,
                        worker_options={"group": f"vmroc-demo-{run}", "ranker": args.ranker,
                                        "depends": lab.dependencies(),
                                        "baseline_s": args.baseline})
    say(f"dashboard at {svc.url} (live during the run; write actions need the token "
        f"{svc.token})")
    producer = Producer(servers)
    sent: dict[str, int] = {}    # samples the sampler handed to the bus, per guest

    def publish(sample) -> None:
        producer.send(sample)
        sent[sample.guest] = sent.get(sample.guest, 0) + 1

    sample_stop = threading.Event()
    sampler = threading.Thread(target=stream, args=(lab.guests, publish),
                               kwargs={"rate": args.rate, "stop": sample_stop}, daemon=True)
    result = None
    try:
        # the service reads from the end of the topics: sample once it knows where that is
        deadline = time.monotonic() + ASSIGN_S
        while not svc.status.assigned and not svc.status.error and not stop.wait(0.2):
            if time.monotonic() > deadline:
                raise VmrocError(f"the service's consumer got no partitions from the broker "
                                 f"in {ASSIGN_S:g} s ({_seen(svc.status, sent)})")
        sampler.start()
        say(f"sampling {', '.join(g.name for g in lab.guests)} at {args.rate:g} Hz; the "
            f"service learns each guest's normal ({args.baseline:g} s)")
        deadline = time.monotonic() + args.baseline + 90
        names = {g.name for g in lab.guests}
        while not stop.wait(1.0):
            learned = svc.worker.processor.detector.guests
            if names <= {n for n, g in learned.items() if g.fitted}:
                break
            if svc.status.error or time.monotonic() > deadline:
                missing = sorted(names - {n for n, g in learned.items() if g.fitted})
                raise VmrocError(f"the service learned no baseline for {missing} in time "
                                 f"({_seen(svc.status, sent)})"
                                 + (f": {svc.status.error}" if svc.status.error else ""))
        if stop.is_set():
            return 130
        ledger = Ledger(servers=servers)
        try:
            result = run_campaign(campaign, lab, ledger, progress=say, stop=stop)
        finally:
            ledger.close()
        if not result.interrupted:
            say("waiting for the last incident to close")
            stop.wait(svc.worker.processor.quiet_s + 4.0)
    finally:
        sample_stop.set()
        if sampler.ident is not None:
            sampler.join(timeout=30)
        producer.close()
    if result is None or result.interrupted:
        svc.stop()
        return 130
    deadline = time.monotonic() + 15   # the ledger's last entries reach the store
    view = faults_view(store, campaign=result.id)
    while len(view["faults"]) < len(result.runs) and time.monotonic() < deadline:
        time.sleep(1)
        view = faults_view(store, campaign=result.id)
    rows = [r for r in view["faults"] if r.get("campaign") == result.id]
    card = view["scorecard"] or {}
    if args.json:
        print(json.dumps({"campaign": result.id, "faults": rows, "scorecard": card,
                          "dashboard": svc.url}, indent=1, default=str))
    else:
        print_scorecard(result.id, rows, card)
        print(f"dashboard: {svc.url}  (write actions need the token {svc.token})")
    if args.exit:
        svc.stop()
        return 0
    print("serving until Ctrl-C", file=sys.stderr, flush=True)
    stop.wait()
    svc.stop()
    return 0


def _seen(status, sent: dict[str, int]) -> str:
    """What the sampler sent and the service's consumer read: where a stream stopped."""
    from vmroc.events import Sample
    text = (f"sampler sent {sum(sent.values())} samples "
            f"({', '.join(f'{g}: {n}' for g, n in sorted(sent.items())) or 'none'}); the "
            f"service reads {status.assigned} partitions and read "
            f"{status.consumed.get(Sample.topic, 0)} samples")
    return text + (f"; broker: {status.broker_error}" if status.broker_error else "")


def print_scorecard(campaign: str, rows: list[dict], card: dict) -> None:
    def yes(v) -> str:
        return "yes" if v else "no"
    print(f"== scorecard of campaign {campaign} (from the service's store)")
    print(f"  {'kind':<15} {'guests':<8} {'effective':<10} {'detected':<9} {'after':>7}  "
          f"{'rank-1 cause':<15} right?")
    for r in sorted(rows, key=lambda r: r["start"]):
        after = f"{r['detection_latency_s']:.1f}s" if r["detected"] else "-"
        right = "-" if not r["detected"] else yes(r["rank"] == 1) + (
            f" (truth at rank {r['rank']})" if r["rank"] not in (1, None) else "")
        print(f"  {r['kind']:<15} {','.join(r['guests']) or 'lab':<8} "
              f"{yes(r['effective']):<10} {yes(r['detected']):<9} {after:>7}  "
              f"{r['rank1'] or '-':<15} {right}")
    if card:
        def pct(v) -> str:
            return "-" if v is None else f"{v:.2f}"
        print(f"  AC@1 {pct(card.get('ac1'))}  AC@3 {pct(card.get('ac3'))}  "
              f"Avg@5 {pct(card.get('avg5'))}  ({card.get('effective')} effective of "
              f"{card.get('faults')} faults, {card.get('detected')} detected, median "
              f"{card.get('median_detection_latency_s')} s to detect; "
              f"{card.get('false_alarms')} false alarm(s))")
