"""``vmroc broker up|down|status`` (the embedded Kafka broker) and ``vmroc tail TOPIC``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import sys

from . import bus
from .events import _Event, to_dict


def register(subparsers: argparse._SubParsersAction) -> None:
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

    tail = subparsers.add_parser(
        "tail", help="print the events on a topic",
        description=f"Print events as they arrive on TOPIC ({', '.join(bus.TOPICS)}; the "
                    f"'vmroc.' prefix may be left out). Reads without joining a group and "
                    f"commits nothing. Ctrl-C stops.")
    tail.add_argument("topic", metavar="TOPIC")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the oldest retained event instead of new ones")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("-n", "--max", type=int, default=None, help="stop after N events")
    tail.add_argument("--idle", type=float, default=None,
                      help="stop after this many seconds without events")
    tail.set_defaults(func=_tail)


def _quiet_kafka(args: argparse.Namespace) -> None:
    """kafka-python logs every failed connection attempt; vmroc reports failures in
    one line itself, so show kafka-python's log only with -vv."""
    if getattr(args, "verbose", 0) < 2:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _broker(args: argparse.Namespace, **kwargs):
    from vmroc.deploy.broker import Broker, BrokerError

    _quiet_kafka(args)
    if os.environ.get("VMROC_KAFKA", "").strip():
        raise BrokerError(f"VMROC_KAFKA={os.environ['VMROC_KAFKA']} is set, so vmroc uses "
                          f"that cluster and runs no broker: unset it to use the embedded one")
    return Broker(**kwargs)


def _up(args: argparse.Namespace) -> int:
    broker = _broker(args, port=args.port, controller_port=args.controller_port)
    status = broker.start(timeout=args.timeout,
                          progress=lambda line: print(f"broker: {line}", file=sys.stderr))
    topics = bus.ensure_topics(status.bootstrap, partitions=args.samples_partitions)
    _show(dataclasses.asdict(status) | {"topics": topics}, args.json)
    return 0


def _down(args: argparse.Namespace) -> int:
    broker = _broker(args)
    was_running = broker.stop(wipe=args.wipe)
    result = {"stopped": was_running, "wiped": args.wipe, "state_dir": str(broker.state_dir)}
    if args.json:
        _show(result, True)
    else:
        print(("stopped" if was_running else "not running")
              + (f"; removed {broker.state_dir}" if args.wipe else ""))
    return 0


def _status(args: argparse.Namespace) -> int:
    _quiet_kafka(args)
    servers = os.environ.get("VMROC_KAFKA", "").strip()
    if servers:
        info = {"external": True, "bootstrap": servers}
        try:
            info["topics"] = _describe(servers)
            info["reachable"] = True
        except bus.BusError as exc:
            info |= {"reachable": False, "error": str(exc)}
        _show(info, args.json)
        return 0 if info["reachable"] else 3
    status = _broker(args).status()
    _show(dataclasses.asdict(status), args.json)
    return 0 if status.running else 3


def _describe(servers: str) -> dict[str, int]:
    """Partitions of each vmroc topic on a cluster, without creating any."""
    admin = bus._connect("admin", servers, 10.0)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics()
                if t["name"] in bus.TOPICS and not t["error_code"]}
    finally:
        admin.close()


def _tail(args: argparse.Namespace) -> int:
    _quiet_kafka(args)
    topic = args.topic if args.topic.startswith("vmroc.") else f"vmroc.{args.topic}"
    shown = 0
    with bus.Consumer(topic, group=None, from_beginning=args.from_beginning,
                      dlq=False) as consumer:
        def show(msg: bus.Message) -> None:
            nonlocal shown
            shown += 1
            print(_format(msg, args.json), flush=True)
        consumer.run(show, max_messages=args.max, idle_timeout=args.idle)
        if consumer.stats["dead"]:
            print(f"tail: {consumer.stats['dead']} undecodable message(s) skipped "
                  f"(see the log with -v)", file=sys.stderr)
    return 0


def _format(msg: bus.Message, as_json: bool) -> str:
    event = msg.event
    if isinstance(event, _Event):
        body = to_dict(event)
    else:                           # DeadLetter
        body = dataclasses.asdict(event)
        body["value"] = (event.value or b"").decode("utf-8", errors="backslashreplace")
    if as_json:
        return json.dumps({"topic": msg.topic, "partition": msg.partition,
                           "offset": msg.offset, "key": msg.key, "event": body})
    when = datetime.datetime.fromtimestamp(msg.timestamp_ms / 1000).strftime("%H:%M:%S.%f")
    fields = " ".join(f"{k}={_short(v)}" for k, v in body.items() if k not in ("v",))
    return f"{when[:-3]} {msg.topic}/{msg.partition}@{msg.offset} {fields}"


def _short(value: object) -> str:
    if isinstance(value, dict):
        return f"{{{len(value)}}}" if len(json.dumps(value)) > 60 else json.dumps(value)
    if isinstance(value, list):
        return f"[{len(value)}]" if len(json.dumps(value)) > 60 else json.dumps(value)
    return str(value)


def _show(info: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
