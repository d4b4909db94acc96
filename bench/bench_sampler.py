"""Sampler costs per backend on the same live guest, and streaming cost for 3 guests.

Run: python bench/bench_sampler.py [--n 1000] [--json]. Boots its own 3-guest lab
("bench-s") unless --lab names a running one. Prints a table with ratios against the
reference readers (LibVMI, volatility3) measured in the same run. Not a test.

``--quick`` (what the test suite runs, with ``--lab``): 20 samples per backend (volatility:
3), 2 s of streaming.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from vmroc.deploy import Lab
from vmroc.introspect.sampler import Sampler, symbols_for
from vmroc.introspect.stream import stream


def time_samples(sampler: Sampler, n: int) -> list[float]:
    sampler.sample()  # warm: first sample reads the whole kernel log
    out = []
    for _ in range(n):
        t = time.perf_counter()
        sampler.sample()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000, help="samples per backend (volatility: n/20)")
    ap.add_argument("--lab", default=None, help="use this running lab instead of booting one")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="20 samples per backend (volatility: 3), 2 s of streaming")
    args = ap.parse_args()
    if args.quick:
        args.n = min(args.n, 20)
    reference_n = 3 if args.quick else max(args.n // 20, 10)
    ticks = 20 if args.quick else 100
    lab = Lab(args.lab) if args.lab else Lab.up(3, name="bench-s", accel="tcg")
    try:
        g = lab.guests[0]
        t = time.perf_counter()
        files = symbols_for(g)
        symbols_s = time.perf_counter() - t
        rows = {}
        for backend, n in (("accel", args.n), ("mmap", args.n), ("libvmi", args.n),
                           ("volatility", reference_n)):
            t = time.perf_counter()
            s = Sampler(g, backend=backend, symbols=files)
            setup = time.perf_counter() - t
            times = time_samples(s, n)
            features = len(s.sample().features)
            s.close()
            median, p95 = statistics.median(times), sorted(times)[int(n * 0.95)]
            rows[backend] = {"setup_s": round(setup, 3), "n": n, "features": features,
                             "median_ms": round(median * 1e3, 4),
                             "p95_ms": round(p95 * 1e3, 4),
                             "p95_over_median": round(p95 / median, 2)}
        for r in rows.values():  # how many times faster than each reference reader
            r["vs_libvmi"] = round(rows["libvmi"]["median_ms"] / r["median_ms"], 2)
            r["vs_volatility"] = round(rows["volatility"]["median_ms"] / r["median_ms"], 1)
        ready = {g.name: Sampler(g) for g in lab.guests}  # default reader; set-up not counted
        cpu0, t0 = time.process_time(), time.monotonic()
        stats = stream(lab.guests, lambda s: None, rate=10, count=ticks,
                       make_sampler=lambda g: ready[g.name])
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        result = {"symbols_build_or_cache_s": round(symbols_s, 3), "backends": rows,
                  "stream_3_guests_10hz": {**stats.to_json(),
                                           "host_cpu_percent": round(cpu / wall * 100, 1)}}
    finally:
        if not args.lab:
            lab.down()
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"symbol files: {result['symbols_build_or_cache_s']} s (cache hit after the first build)")
    print("speed-up = reference median / this median (same guest, same run); volatility "
          "reads tasks + log only")
    print(f"{'backend':11} {'setup s':>8} {'features':>8} {'n':>5} {'median ms':>10} "
          f"{'p95 ms':>8} {'p95/med':>8} {'vs libvmi':>10} {'vs volatility':>14}")
    for b, r in rows.items():
        print(f"{b:11} {r['setup_s']:8} {r['features']:8} {r['n']:5} {r['median_ms']:10} "
              f"{r['p95_ms']:8} {r['p95_over_median']:8} {r['vs_libvmi']:9}x "
              f"{r['vs_volatility']:13}x")
    st = result["stream_3_guests_10hz"]
    print(f"streaming 3 guests at 10 Hz: {st['rate_per_guest']} samples/s per guest, "
          f"host CPU {st['host_cpu_percent']} % of one core, late ticks {st['late_ticks']}")


if __name__ == "__main__":
    main()
