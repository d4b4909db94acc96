"""``vmroc broker up|down|status``: the embedded Kafka broker.

``register`` also hands the embedded broker to ``vmroc.bus.use_broker``, so every
``vmroc`` command that needs Kafka and has no ``VMROC_KAFKA`` finds it (and starts it
if it is down)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from vmroc import bus

from .broker import Broker, BrokerError, embedded


def register(subparsers: argparse._SubParsersAction) -> None:
    bus.use_broker(embedded)
    broker = subparsers.add_parser(
        "broker", help="the embedded Apache Kafka broker (unused when VMROC_KAFKA is set)",
        description="Run a single-node Apache Kafka broker on 127.0.0.1 for this machine. "
                    "Set VMROC_KAFKA=host:port[,...] to use an existing cluster instead.")
    sub = broker.add_subparsers(dest="broker_command", metavar="ACTION", required=True)

    up = sub.add_parser("up", help="start the broker (fetches its jars on first use)",
                        description="Start the broker and wait until it serves produce and "
                                    "fetch; create the vmroc topics. Data survives `down`.")
    up.add_argument("--port", type=int, help="broker port on 127.0.0.1 (default 9092, "
                                              "or the port of the last start)")
    up.add_argument("--controller-port", type=int, help="KRaft controller port (default "
                                                        "port+1)")
    up.add_argument("--samples-partitions", type=int, default=None,
                    help="partitions of vmroc.samples (default $VMROC_SAMPLES_PARTITIONS or 4)")
    up.add_argument("--timeout", type=float, default=90, help="seconds to wait (default 90)")
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop the broker",
                          description="Stop the broker cleanly; its data is kept.")
    down.add_argument("--wipe", action="store_true", help="also delete its data and log")
    down.add_argument("--json", action="store_true", help="print the result as JSON")
    down.set_defaults(func=_down)

    status = sub.add_parser("status", help="pid, port, version, data dir",
                            description="Show the broker's state; exit status 3 if it is "
                                        "not running.")
    status.add_argument("--json", action="store_true", help="print as JSON")
    status.set_defaults(func=_status)


def _broker(**kwargs) -> Broker:
    if os.environ.get("VMROC_KAFKA", "").strip():
        raise BrokerError(f"VMROC_KAFKA={os.environ['VMROC_KAFKA']} is set, so vmroc uses "
                          f"that cluster and runs no broker: unset it to use the embedded one")
    return Broker(**kwargs)


def _up(args: argparse.Namespace) -> int:
    broker = _broker(port=args.port, controller_port=args.controller_port)
    status = broker.start(timeout=args.timeout,
                          progress=lambda line: print(f"broker: {line}", file=sys.stderr))
    topics = bus.ensure_topics(status.bootstrap, partitions=args.samples_partitions)
    _show(dataclasses.asdict(status) | {"topics": topics}, args.json)
    return 0


def _down(args: argparse.Namespace) -> int:
    broker = _broker()
    was_running = broker.stop(wipe=args.wipe)
    result = {"stopped": was_running, "wiped": args.wipe, "state_dir": str(broker.state_dir)}
    if args.json:
        _show(result, True)
    else:
        print(("stopped" if was_running else "not running")
              + (f"; removed {broker.state_dir}" if args.wipe else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    servers = os.environ.get("VMROC_KAFKA", "").strip()
    if servers:
        info = {"external": True, "bootstrap": servers}
        try:
            info["topics"] = bus.describe_topics(servers)
            info["reachable"] = True
        except bus.BusError as exc:
            info |= {"reachable": False, "error": str(exc)}
        _show(info, args.json)
        return 0 if info["reachable"] else 3
    status = _broker().status()
    _show(dataclasses.asdict(status), args.json)
    return 0 if status.running else 3


def _show(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
