"""``vmroc sample``: one sample of a guest's kernel state, or a stream to Kafka."""

from __future__ import annotations

import json
import os
import sys

from vmroc.events import to_dict
from vmroc.proc import stop_on_signals

from .backends import BACKENDS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="read guest kernel state from guest RAM (no agent)",
        description="Print one sample of a guest's kernel state, or stream samples of "
                    "several guests to vmroc.samples with --publish.")
    p.add_argument("--guest", action="append", default=[],
                   help="guest name (repeat or comma-separate; default: all lab guests)")
    p.add_argument("--lab", default=os.environ.get("VMROC_LAB", "default"),
                   help="lab name (default: $VMROC_LAB or 'default')")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="memory reader: accel (C, the default when built), mmap (pure "
                        "Python), libvmi, volatility (tasks and log only)")
    p.add_argument("--pause", action="store_true",
                   help="pause the guest (QMP stop/cont) around each read for an exact snapshot")
    p.add_argument("--json", action="store_true", help="print samples as JSON lines")
    p.add_argument("--rate", type=float, default=None,
                   help="sample continuously at this many Hz (default 10 with --publish)")
    p.add_argument("--count", type=int, default=None, help="stop after N samples per guest")
    p.add_argument("--publish", action="store_true", help="publish to Kafka vmroc.samples")
    p.set_defaults(func=cmd_sample)


def _guests(args):
    from vmroc.deploy import Lab
    lab = Lab(args.lab)
    names = [n for arg in args.guest for n in arg.split(",") if n]
    return [lab.guest(n) for n in names] if names else lab.guests


def _print_human(sample) -> None:
    state = "consistent" if sample.consistent else "INCONSISTENT: " + "; ".join(sample.flags)
    print(f"{sample.guest} seq {sample.seq} via {sample.backend} ({state})")
    for name, value in sorted(sample.features.items()):
        print(f"  {name:32} {value:g}" if isinstance(value, float) else f"  {name:32} {value}")
    tasks = sorted(sample.tasks or [], key=lambda t: -(t.get("utime", 0) + t.get("stime", 0)))
    if tasks:
        print(f"  {'PID':>6} {'PPID':>6} S {'CPU s':>7}  COMM  (top 10 of {len(tasks)})")
    for t in tasks[:10]:
        print(f"  {t['pid']:>6} {t['ppid']:>6} {t.get('state', '?')} "
              f"{t.get('utime', 0) + t.get('stime', 0):7.2f}  {t['comm']}")
    for line in sample.log or []:
        print(f"  log: {line}")


def cmd_sample(args) -> int:
    from .sampler import Sampler
    from .stream import stream

    guests = _guests(args)
    make = lambda g: Sampler(g, backend=args.backend, pause=args.pause)  # noqa: E731
    if args.rate is None and not args.publish:
        for g in guests:
            with make(g) as s:
                for _ in range(args.count or 1):
                    sample = s.sample()
                    if args.json:
                        print(json.dumps(to_dict(sample)), flush=True)
                    else:
                        _print_human(sample)
        return 0

    producer = None
    if args.publish:
        from vmroc.bus import Producer
        producer = Producer()
    stop = stop_on_signals()

    def handle(sample) -> None:
        if producer is not None:
            producer.send(sample)
        if args.json and producer is None:
            print(json.dumps(to_dict(sample)), flush=True)

    rate = args.rate or 10.0
    print(f"vmroc: sampling {', '.join(g.name for g in guests)} at {rate:g} Hz"
          f"{' to vmroc.samples' if producer else ''}; Ctrl-C stops", file=sys.stderr)
    try:
        stats = stream(guests, handle, rate=rate, stop=stop, count=args.count, make_sampler=make)
    except KeyboardInterrupt:
        stats = None
    finally:
        if producer is not None:
            producer.close()
    if stats is not None:
        report = stats.to_json()
        print(json.dumps(report) if args.json else
              f"vmroc: {report['rate_per_guest']} samples/s per guest over "
              f"{report['elapsed_s']} s; inconsistent {report['inconsistent']}; "
              f"down {report['down']}; late ticks {report['late_ticks']}", file=sys.stderr)
    return 0
