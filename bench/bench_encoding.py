"""Size and speed of a sample's two encodings, JSON and compact, measured in one run.

For the first N samples of a recording (real samples: ~95 features, the task table,
kernel log lines on some) it measures, per encoding:

- bytes per sample: the message as sent, and after lz4 over batches of 100 messages
  (what Kafka's lz4 batches roughly see);
- encode samples/s: ``encode(sample)`` / ``encode(sample, compact=True)``;
- decode samples/s: ``decode("vmroc.samples", data)``, checks included;

then the ratios compact / JSON from the same run. Runs alternate between the
encodings and the best of ``--repeat`` is kept, so a busy machine hurts both alike.
No broker needed.

    nice python3 bench/bench_encoding.py [--recording data/recordings/mixed-s2.jsonl.xz]
        [--count 5000] [--repeat 5] [--json] [--quick]

``--quick`` (what the test suite runs): 300 samples, one run each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vmroc import events  # noqa: E402
from vmroc.events import Sample, decode, encode  # noqa: E402
from vmroc.recordings import read_recording  # noqa: E402


def load(path: Path, count: int) -> list[Sample]:
    _, stream = read_recording(path)
    return list(itertools.islice((e for _, e in stream if isinstance(e, Sample)), count))


def best_rate(fn, items, repeat_times: list[float]) -> None:
    start = time.perf_counter()
    for x in items:
        fn(x)
    repeat_times.append(time.perf_counter() - start)


def lz4_size(blobs: list[bytes], batch: int = 100) -> float:
    import lz4.frame
    total = sum(len(lz4.frame.compress(b"".join(blobs[i:i + batch])))
                for i in range(0, len(blobs), batch))
    return total / len(blobs)


def measure(samples: list[Sample], repeat: int) -> dict[str, dict[str, float]]:
    forms = {"json": lambda s: encode(s), "compact": lambda s: encode(s, compact=True)}
    blobs = {name: [enc(s) for s in samples] for name, enc in forms.items()}
    # what each decodes must be the sample it encoded
    for name, data in blobs.items():
        assert all(decode("vmroc.samples", b) == s for b, s in zip(data, samples)), name
    times = {name: {"encode": [], "decode": []} for name in forms}
    for _ in range(repeat):
        for name, enc in forms.items():
            best_rate(enc, samples, times[name]["encode"])
            best_rate(lambda b: decode("vmroc.samples", b), blobs[name], times[name]["decode"])
    n = len(samples)
    out = {}
    for name in forms:
        sizes = [len(b) for b in blobs[name]]
        out[name] = {"bytes": statistics.mean(sizes), "bytes_max": max(sizes),
                     "lz4_bytes": lz4_size(blobs[name]),
                     "encode_per_s": n / min(times[name]["encode"]),
                     "decode_per_s": n / min(times[name]["decode"])}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recording", type=Path,
                        default=ROOT / "data/recordings/mixed-s2.jsonl.xz")
    parser.add_argument("--count", type=int, default=5000, help="samples to encode")
    parser.add_argument("--repeat", type=int, default=5, help="runs per encoding (best kept)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quick", action="store_true", help="300 samples, one run each")
    args = parser.parse_args()
    if args.quick:
        args.count, args.repeat = min(args.count, 300), 1
    if not events.COMPACT:
        print("the compact form needs msgspec: pip install msgspec", file=sys.stderr)
        return 2
    samples = load(args.recording, args.count)
    if not samples:
        print(f"no samples in {args.recording}", file=sys.stderr)
        return 2
    load_avg = os.getloadavg()[0]
    rows = measure(samples, args.repeat)
    j, c = rows["json"], rows["compact"]
    ratios = {"bytes": c["bytes"] / j["bytes"], "lz4_bytes": c["lz4_bytes"] / j["lz4_bytes"],
              "encode_per_s": c["encode_per_s"] / j["encode_per_s"],
              "decode_per_s": c["decode_per_s"] / j["decode_per_s"]}
    if args.json:
        print(json.dumps({"recording": str(args.recording), "samples": len(samples),
                          "load": load_avg, **rows, "compact/json": ratios}, indent=1))
        return 0
    features = statistics.mean(len(s.features) for s in samples)
    tasks = statistics.mean(len(s.tasks or ()) for s in samples)
    print(f"{len(samples)} samples of {args.recording.name} ({features:.0f} features, "
          f"{tasks:.0f} task records on average), best of {args.repeat}, "
          f"{os.cpu_count()} CPUs, load average at start {load_avg:.1f}")
    print("| encoding | bytes/sample | max | lz4 bytes/sample | encode samples/s | "
          "decode samples/s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['bytes']:,.0f} | {r['bytes_max']:,} | {r['lz4_bytes']:,.0f} | "
              f"{r['encode_per_s']:,.0f} | {r['decode_per_s']:,.0f} |")
    print(f"| compact / json | {ratios['bytes']:.2f}x | | {ratios['lz4_bytes']:.2f}x | "
          f"{ratios['encode_per_s']:.1f}x | {ratios['decode_per_s']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
