"""Throughput of ``sample`` events through vmroc.bus (kafka-python) on one machine.

For each producer setting (batching, compression) it measures, with the real
encode/decode of vmroc.events included:

- produce: one producer process sending N samples and flushing (acks=all); the
  samples are built before the clock starts (that is the sampler's cost, not the bus's);
- end to end: a consumer group member decoding them while they are produced
  (N / time from the first send to the last receive) and the latency, p50 / p99
  (``send()`` -> decoded by the consumer, from the record's CreateTime; in the paced
  row from the sample's own time, so a pack's wait counts);
- consume: a second group member reading the same N as a backlog afterwards.

Rows with "pack" in the name and the "defaults" rows pack samples (``bus.Producer``'s
default: up to 50 samples of one partition a Kafka message); the others send one a
message.
The ratio lines compare rows of the same run: compact / JSON samples, and the defaults
/ one sample a message.

    python3 bench/bench_bus.py [--count 50000] [--features 30] [--json] [--quick]

``--quick`` (what the test suite runs): 500 samples through the ratio lines' three rows.

Samples go in the compact form (the bus default) except in the "json" row, the
previous encoding, measured in the same run; the size column is each row's own.
Encoding alone, without a broker: ``bench/bench_encoding.py``.

Uses VMROC_KAFKA if set (creates consumer groups there, deletes nothing), else
starts a throw-away embedded broker on free ports and stops it at the end.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmroc import bus  # noqa: E402
from vmroc.events import Sample, encode  # noqa: E402

SETTINGS = [
    # name, producer options (``pack=1``: one sample a Kafka message)
    ("unbatched, none", dict(linger_ms=0, batch_size=16384, compression_type=None, pack=1)),
    ("batched, none", dict(linger_ms=20, batch_size=256 * 1024, compression_type=None, pack=1)),
    ("batched, gzip", dict(linger_ms=20, batch_size=256 * 1024, compression_type="gzip",
                           pack=1)),
    ("batched, lz4", dict(linger_ms=20, batch_size=256 * 1024, compression_type="lz4", pack=1)),
    ("batched, lz4, json", dict(linger_ms=20, batch_size=256 * 1024, compression_type="lz4",
                                compact=False, pack=1)),
    ("batched, zstd", dict(linger_ms=20, batch_size=256 * 1024, compression_type="zstd",
                           pack=1)),
    # vmroc.bus defaults: lz4, 10 ms batches, packs of 50 samples per partition
    ("defaults (pack 50)", dict()),
    ("defaults, pack 10", dict(pack=10)),
    # the defaults at the target load: 100 guests at 10 Hz
    ("defaults, paced 1000/s", dict(rate=1000)),
]
NEEDS = {"lz4": "lz4", "zstd": "zstandard"}
QUICK = ("batched, lz4", "batched, lz4, json", "defaults (pack 50)")  # the ratios' rows


def make_sample(i: int, features: int, guests: int) -> Sample:
    """Like a real sample: mostly integer counters, one in five a float (load, ratio)."""
    values = {f"feature_{k:02d}": (i * 7919 + k * 104729) % 10_000_000 if k % 5
              else ((i + k) % 4096) / 2048 for k in range(features)}
    return Sample(guest=f"bench-g{i % guests:03d}", ts=time.time(), backend="mmap",
                  consistent=True, seq=i, features=values)


def produce(servers: str, options: dict, count: int, features: int, guests: int, out) -> None:
    """Child process: send ``count`` samples, flush, report (start, end)."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    samples = [make_sample(i, features, guests) for i in range(count)]  # sampler's work
    # A sampler holds one sample at a time, not N: keep the N out of the collector's
    # walks (each full collection would visit them all, a cost no sampler has).
    gc.freeze()
    options = dict(options)
    rate = options.pop("rate", None)
    producer = bus.Producer(servers, **options)
    start = time.time()
    for i, sample in enumerate(samples):
        if rate:  # paced: the sample is taken now (its ts is when the sampler made it)
            if i % 10 == 0:
                time.sleep(max(0.0, start + i / rate - time.time()))
            sample = make_sample(i, features, guests)
        producer.send(sample)
    producer.flush()
    end = time.time()
    producer.close()
    out.send((start, end))


def joined(servers: str, group: str, tries: int = 3, wait: float = 15) -> bus.Consumer:
    """A group member that has its partitions and positions (at the end) already. A
    member that got none within ``wait`` s (kafka-python now and then never finishes a
    join on a busy machine) is closed and a new group tried."""
    for attempt in range(1, tries + 1):
        name = group if attempt == 1 else f"{group}-{attempt}"
        consumer = bus.Consumer(bus.SAMPLES, servers, group=name, from_beginning=False)
        deadline = time.monotonic() + wait
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        if consumer.assignment():
            consumer.poll(0.2)
            return consumer
        consumer.close()
        print(f"consumer group {name} got no partitions within {wait:.0f} s", file=sys.stderr)
    raise SystemExit(f"consumer group {group}: no partitions in {tries} tries of {wait:.0f} s")


def drain(consumer: bus.Consumer, count: int, timeout: float,
          producer: mp.Process | None = None, paced: bool = False) -> tuple[float, float, list]:
    """Poll until ``count`` samples came; returns (start, last receive time, latencies)."""
    got, first, lat = 0, time.time(), []
    deadline = time.monotonic() + timeout
    while got < count and time.monotonic() < deadline:
        if producer is not None and producer.exitcode:
            raise SystemExit(f"the producer process failed (exit {producer.exitcode})")
        batch = consumer.poll(0.5, max_records=5000)
        now = time.time()
        # paced: from the sample's own time (a pack's CreateTime is when it was sent);
        # at full speed the samples were made before the clock: from Kafka's CreateTime
        lat += [now - (m.event.ts if paced else m.timestamp_ms / 1000) for m in batch[::50]]
        got += len(batch)
        consumer.commit()
    if got < count:
        raise SystemExit(f"only {got}/{count} samples arrived within {timeout:.0f} s "
                         f"(dead letters: {consumer.stats['dead']})")
    return first, time.time(), lat


def run_setting(servers: str, name: str, options: dict, args) -> dict:
    tag = uuid.uuid4().hex[:6]
    count = min(args.count, 5 * options["rate"]) if "rate" in options else args.count
    e2e, backlog = joined(servers, f"bench-e2e-{tag}"), joined(servers, f"bench-backlog-{tag}")
    size = len(encode(make_sample(0, args.features, args.guests),
                      compact=options.get("compact", True)))
    recv, send = mp.Pipe(duplex=False)
    child = mp.get_context("fork").Process(
        target=produce, args=(servers, options, count, args.features, args.guests, send))
    child.start()
    _, last, lat = drain(e2e, count, timeout=120, producer=child, paced="rate" in options)
    p_start, p_end = recv.recv()
    child.join()
    first_b, last_b, _ = drain(backlog, count, timeout=120)
    e2e.close()
    backlog.close()
    lat.sort()
    mb = count * size / 1e6
    return {"setting": name, "msg_bytes": size,
            "produce_msg_s": count / (p_end - p_start),
            "produce_MB_s": mb / (p_end - p_start),
            "e2e_msg_s": count / (last - p_start),
            "e2e_MB_s": mb / (last - p_start),
            "consume_msg_s": count / (last_b - first_b),
            "consume_MB_s": mb / (last_b - first_b),
            "latency_p50_ms": 1000 * lat[len(lat) // 2],
            "latency_p99_ms": 1000 * lat[int(len(lat) * 0.99)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50000, help="samples per setting")
    parser.add_argument("--features", type=int, default=30, help="features per sample")
    parser.add_argument("--guests", type=int, default=100, help="distinct guests (keys)")
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="500 samples, the two rows of the compact / json ratio only")
    args = parser.parse_args()
    settings = SETTINGS
    if args.quick:
        args.count = min(args.count, 500)
        settings = [s for s in SETTINGS if s[0] in QUICK]
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    load = os.getloadavg()[0]

    broker = None
    servers = os.environ.get("VMROC_KAFKA", "").strip()
    if not servers:
        from vmroc.deploy.broker import Broker, free_ports
        port, cport = free_ports(2)
        broker = Broker(tempfile.mkdtemp(prefix="vmroc-bench-kafka-"), port=port,
                        controller_port=cport)
        t0 = time.monotonic()
        broker.start(progress=lambda line: print(f"broker: {line}", file=sys.stderr))
        print(f"broker: Kafka {broker.version} up in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
        servers = broker.bootstrap
    try:
        bus.ensure_topics(servers)
        rows = []
        for name, options in settings:
            codec = options.get("compression_type")
            if codec in NEEDS and not importlib.util.find_spec(NEEDS[codec]):
                print(f"skip {name}: pip install {NEEDS[codec]}", file=sys.stderr)
                continue
            rows.append(run_setting(servers, name, options, args))
            print(f"done: {name}", file=sys.stderr)
    finally:
        if broker:
            broker.stop(wipe=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.count} samples ({args.features} features, {args.guests} guests), "
          f"kafka-python, acks=all, {os.cpu_count()} CPUs, load average at start {load:.1f}")
    head = ("setting", "bytes", "produce samples/s", "MB/s", "e2e samples/s", "MB/s",
            "consume samples/s", "MB/s", "p50 ms", "p99 ms")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['setting']} | {r['msg_bytes']} | {r['produce_msg_s']:,.0f} | "
              f"{r['produce_MB_s']:.1f} | "
              f"{r['e2e_msg_s']:,.0f} | {r['e2e_MB_s']:.1f} | {r['consume_msg_s']:,.0f} | "
              f"{r['consume_MB_s']:.1f} | {r['latency_p50_ms']:.0f} | "
              f"{r['latency_p99_ms']:.0f} |")
    by_name = {r["setting"]: r for r in rows}
    compact, plain = by_name.get("batched, lz4"), by_name.get("batched, lz4, json")
    if compact and plain:
        print("compact / json (batched, lz4): " + ", ".join(
            f"{k} {compact[k] / plain[k]:.2f}x" for k in
            ("msg_bytes", "produce_msg_s", "e2e_msg_s", "consume_msg_s")))
    packed = by_name.get("defaults (pack 50)")
    if compact and packed:
        print("defaults (pack 50) / one sample a message (batched, lz4): " + ", ".join(
            f"{k} {packed[k] / compact[k]:.2f}x" for k in
            ("produce_msg_s", "e2e_msg_s", "consume_msg_s")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
