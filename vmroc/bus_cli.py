"""``vmroc tail TOPIC``: print the events on a topic (``vmroc broker`` is in
``vmroc.deploy.broker_cli``)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys

from . import bus
from .events import _Event, to_dict


def register(subparsers: argparse._SubParsersAction) -> None:
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


def _tail(args: argparse.Namespace) -> int:
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
