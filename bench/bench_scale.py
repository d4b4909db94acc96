"""Scale without 100 guests: one process samples N RAM images at 10 Hz.

Run: python bench/bench_scale.py [--n 10,50,100] [--seconds 30] [--copies 10] [--quick]
[--json]. Boots its own 1-guest lab ("bench-sc") unless --lab names a running one, pauses
the guest (QMP stop), copies its RAM file (sparse) into --copies distinct files in /dev/shm,
then resumes it and, for a lab of its own, takes the lab down before measuring, so no guest
competes with the sampler for the host's cores. The copies are deleted at the end.

N samplers, each on its own mapping of image ``i % copies`` (N = 100 over 10 files: each
file is mapped by 10 samplers). Full copies for N = 100 would be 100 x 256 MiB (sparse: ~115
MiB each), more than /dev/shm and RAM can spare on a 24 GiB machine, so the cost measured is
the CPU cost of N samplers (their own mappings, page tables, page-walk caches and Python
state), not the cache misses of N distinct guests' memory: samplers on the same file read
the same physical pages. The images are frozen (a paused guest): every sample walks the same
tasks, and the kernel log has no new lines after the first sample (taken before timing).

Each tick (100 ms) samples all N in turn; a tick whose work overruns the period is a missed
tick (with the ticks skipped after it). Host CPU share is this process's CPU time over wall
time during the run (100 % = one core). The load average at the start is printed. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from vmroc.deploy import Lab
from vmroc.introspect.sampler import Sampler, symbols_for

SHM = Path("/dev/shm")
RATE = 10.0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(len(xs) * q), len(xs) - 1)]


def resident_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def make_copies(guest, copies: int, say) -> list[Path]:
    """Pause ``guest``, copy its RAM file ``copies`` times (sparse), resume it."""
    src = Path(guest.ram_path)
    need = resident_bytes(src) * copies
    free = shutil.disk_usage(SHM).free
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    if need > min(free, avail) // 2:  # leave half of what is free to everyone else
        raise SystemExit(f"{copies} copies need ~{need >> 20} MiB; {free >> 20} MiB free in "
                         f"{SHM}, {avail >> 20} MiB available: use fewer --copies")
    out = []
    with guest.qmp() as qmp:
        qmp.cmd("stop")
    try:
        for i in range(copies):
            dst = SHM / f"vmroc-benchscale-{os.getpid()}-{i}.ram"
            out.append(dst)
            subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    finally:
        with guest.qmp() as qmp:
            qmp.cmd("cont")
    say(f"{copies} copies of {src.name}: {sum(map(resident_bytes, out)) >> 20} MiB in {SHM}")
    return out


def run_n(n: int, images: list[Path], config: dict, files, seconds: float) -> dict:
    t = time.perf_counter()
    samplers = [Sampler(SimpleNamespace(name=f"img{i}", ram_path=images[i % len(images)],
                                        config=config), symbols=files) for i in range(n)]
    setup = time.perf_counter() - t
    try:
        for s in samplers:
            s.sample()  # warm: the first sample reads the whole kernel log
        per_sample: list[float] = []
        tick_work: list[float] = []
        tick_cpu: list[float] = []
        missed = inconsistent = 0
        period = 1.0 / RATE
        cpu0 = time.process_time()
        start = tick = time.monotonic()
        end = start + seconds
        while tick < end:
            t0, c0 = time.perf_counter(), time.process_time()
            for s in samplers:
                a = time.perf_counter()
                inconsistent += not s.sample().consistent
                per_sample.append(time.perf_counter() - a)
            tick_work.append(time.perf_counter() - t0)
            tick_cpu.append(time.process_time() - c0)
            tick += period
            delay = tick - time.monotonic()
            if delay < 0:  # overran: this tick's deadline and any skipped after it
                skipped = int(-delay // period) + 1
                missed += skipped
                tick += skipped * period
                delay = tick - time.monotonic()
            time.sleep(max(delay, 0))
        wall = time.monotonic() - start
        cpu = time.process_time() - cpu0
    finally:
        for s in samplers:
            s.close()
    return {"n": n, "files": min(n, len(images)), "setup_s": round(setup, 2),
            "ticks": len(tick_work), "samples": len(per_sample),
            "samples_per_s": round(len(per_sample) / wall, 1),
            "sample_median_ms": round(statistics.median(per_sample) * 1e3, 3),
            "sample_p95_ms": round(pct(per_sample, 0.95) * 1e3, 3),
            "tick_median_ms": round(statistics.median(tick_work) * 1e3, 2),
            "tick_p95_ms": round(pct(tick_work, 0.95) * 1e3, 2),
            "tick_max_ms": round(max(tick_work) * 1e3, 2),
            "tick_cpu_median_ms": round(statistics.median(tick_cpu) * 1e3, 2),
            "tick_cpu_max_ms": round(max(tick_cpu) * 1e3, 2),
            # ticks whose CPU time alone overran: missed even with a core to itself
            "cpu_overrun_ticks": sum(c > period for c in tick_cpu),
            "host_cpu_percent": round(cpu / wall * 100, 1), "missed_ticks": missed,
            "inconsistent": inconsistent}


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="10,50,100", help="numbers of images, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of sampling per N")
    ap.add_argument("--copies", type=int, default=10, help="distinct RAM copies (reused)")
    ap.add_argument("--lab", default=None, help="use this running lab instead of booting one")
    ap.add_argument("--quick", action="store_true", help="N = 2,5 for 4 s each, 2 copies")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n, args.seconds, args.copies = "2,5", 4.0, 2
    ns = [int(x) for x in args.n.split(",")]
    copies = max(1, min(args.copies, max(ns)))
    say = (lambda m: None) if args.json else print
    load = os.getloadavg()
    images: list[Path] = []
    signal.signal(signal.SIGTERM, _terminate)  # so `finally` deletes the copies
    lab = Lab(args.lab) if args.lab else Lab.up(1, name="bench-sc", accel="tcg")
    try:
        try:
            g = lab.guests[0]
            g.wait_for_status()
            time.sleep(2)  # a running workload in the picture, not a guest mid-boot
            files = symbols_for(g)
            config = dict(g.config)
            images = make_copies(g, copies, say)
        finally:
            if not args.lab:
                lab.down()
        rows = []
        for n in ns:
            rows.append(run_n(n, images, config, files, args.seconds))
            say(f"N={n} done")
    finally:
        for p in images:
            p.unlink(missing_ok=True)
    result = {"rate_hz": RATE, "seconds": args.seconds, "copies": copies,
              "loadavg_at_start": [round(x, 2) for x in load], "rows": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"N images sampled at {RATE:g} Hz from one process, {args.seconds:g} s per N, "
          f"{copies} distinct RAM copies reused (image i = copy i % {copies}); "
          f"host load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'N':>4} {'setup s':>8} {'samples/s':>9} {'sample ms':>9} {'p95':>7} "
          f"{'tick ms':>8} {'p95':>7} {'max':>7} {'tick CPU':>8} {'max':>7} {'CPU %':>6} "
          f"{'missed':>6} {'CPU>100ms':>9}")
    for r in rows:
        print(f"{r['n']:4} {r['setup_s']:8} {r['samples_per_s']:9} {r['sample_median_ms']:9} "
              f"{r['sample_p95_ms']:7} {r['tick_median_ms']:8} {r['tick_p95_ms']:7} "
              f"{r['tick_max_ms']:7} {r['tick_cpu_median_ms']:8} {r['tick_cpu_max_ms']:7} "
              f"{r['host_cpu_percent']:6} {r['missed_ticks']:6} {r['cpu_overrun_ticks']:9}")
    print("tick = wall time to sample all N once; tick CPU = this process's CPU time in it; "
          "CPU % = CPU time / wall (100 = one core);\nmissed = ticks whose work overran "
          "100 ms of wall time, plus ticks skipped after them; CPU>100ms = ticks whose CPU "
          "time alone overran\n(missed even on a core of its own); wall beyond CPU is time "
          "the process waited for a core (other load)")


if __name__ == "__main__":
    main()
