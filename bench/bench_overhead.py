"""Cost of sampling to the guest: the guest's fixed CPU work timed from its status line with
sampling off, at 10 Hz and at 100 Hz, in alternating rounds of one run.

Run: python bench/bench_overhead.py [--rounds 3] [--seconds 20] [--quick] [--json]. Boots its
own 1-guest lab ("bench-o") unless --lab names a running one (its first guest is measured).
Sampling runs in this process (a thread, default backend, sampler opened once). Not a test.

The measured work runs in the guest (deploy/guest/init.sh). The bench's own lab boots with
``vmroc.busy=1``: its worker repeats, without rest, a fixed unit of CPU- and memory-bound
work (1000 rounds of shell arithmetic, then a 24 MiB file in RAM copied to /dev/null); its
count ``cpu_ops`` and the guest's uptime ``up`` are on the status line once a second. Per
round and mode the rate is the least-squares slope of ``cpu_ops`` over ``up``; the time of
one unit is 1/rate, and its slowdown against the same round's "off" is the guest's
slowdown. (A lab given with ``--lab`` has the normal CPU worker, a small chunk then 200 ms
of rest: its busy time is ``1/rate - 0.2 s``, which magnifies noise about 17 times.) The
status loop's own period beyond its ``sleep 1`` (``up`` step - 1 s) is a second piece of
work, reported the same way.

Under TCG the guest's vCPU is a host thread, so host CPU the sampler takes from it (and from
QEMU's other threads) is part of what is measured: there is no other path by which reading the
RAM file can slow the guest (no exits, no pause). Other processes on the host add noise; the
load average at the start is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

from vmroc.deploy import Lab
from vmroc.introspect.sampler import Sampler, symbols_for
from vmroc.introspect.stream import stream

USLEEP_S = 0.2  # the CPU worker's rest after each chunk (init.sh), unless vmroc.busy=1
BUSY_ARGS = "vmroc.busy=1"  # the bench lab's guest: a worker without rest (init.sh)
MIN_LINES = 3  # status lines a mode needs for a slope of cpu_ops over uptime
MODES = (("off", 0), ("10hz", 10), ("100hz", 100))


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def qemu_cpu_s(pid: int | None) -> float:
    """utime + stime of the guest's QEMU process, seconds."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(guest, sampler: Sampler | None, rate: int, seconds: float, rest_s: float) -> dict:
    """One mode for ``seconds``: status lines printed meanwhile -> work rates."""
    start = len(guest.status_lines())
    stop = threading.Event()
    stats: dict = {}
    thread = None
    if sampler is not None:
        def run() -> None:
            stats["s"] = stream([guest], lambda s: None, rate=rate, stop=stop,
                                make_sampler=lambda g: sampler)
        # stream closes its samplers when it ends: hand it one that ignores close
        thread = threading.Thread(target=run, daemon=True)
    cpu0, q0, t0 = time.process_time(), qemu_cpu_s(guest.pid), time.monotonic()
    if thread:
        thread.start()
    time.sleep(seconds)
    # a loaded host slows the guest's status loop: wait (bounded) for enough lines to fit
    # a slope rather than failing; the mode then runs longer, which the rate allows for
    deadline = time.monotonic() + max(30.0, 4 * seconds)
    while len(guest.status_lines()) - start < MIN_LINES + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    if thread:
        thread.join()
    wall = time.monotonic() - t0
    cpu, qcpu = time.process_time() - cpu0, qemu_cpu_s(guest.pid) - q0
    lines = guest.status_lines()[start + 1:]  # the first may predate the mode
    lines = lines[:-1] if len(lines) > 3 else lines  # the last may follow it
    if len(lines) < MIN_LINES:
        raise RuntimeError(f"guest {guest.name}: {len(lines)} status lines in "
                           f"{time.monotonic() - t0:.1f} s")
    up = [s["up"] for s in lines]
    ops = [s["cpu_ops"] for s in lines]
    rate_ops = slope(up, ops)
    steps = [b - a for a, b in zip(up, up[1:])]
    st = stats.get("s")
    return {"lines": len(lines), "cpu_ops_per_s": rate_ops,
            "chunk_busy_ms": (1 / rate_ops - rest_s) * 1e3,
            "status_work_ms": (statistics.fmean(steps) - 1.0) * 1e3,
            "samples_per_s": round(sum(st.samples.values()) / wall, 2) if st else 0.0,
            "late_ticks": st.late_ticks if st else 0,
            "bench_cpu_percent": cpu / wall * 100, "qemu_cpu_percent": qcpu / wall * 100}


class _Keep(Sampler):
    """The sampler, kept open across modes (stream closes what it was given)."""

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        super().close()


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}..{max(xs):.2f}" if len(xs) > 1 else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of off / 10 Hz / 100 Hz")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per mode and round")
    ap.add_argument("--lab", default=None, help="use this running lab instead of booting one")
    ap.add_argument("--quick", action="store_true", help="1 round of 6 s per mode")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 6.0
    load = os.getloadavg()
    lab = Lab(args.lab) if args.lab else Lab.up(1, name="bench-o", accel="tcg",
                                                kernel_args=BUSY_ARGS)
    busy = BUSY_ARGS in lab.state.get("kernel_args", "")
    rest_s = 0.0 if busy else USLEEP_S
    sampler = None
    try:
        g = lab.guests[0]
        g.wait_for_status()
        sampler = _Keep(g, symbols=symbols_for(g))
        sampler.sample()  # warm: the first sample reads the whole kernel log
        time.sleep(10 if busy else 3)  # let the workers settle after boot (busy: its file)
        rounds = []
        for r in range(args.rounds):
            row = {}
            # rotate the order so no mode always follows the same one
            for k in range(len(MODES)):
                name, hz = MODES[(k + r) % len(MODES)]
                row[name] = run_mode(g, sampler if hz else None, hz, args.seconds, rest_s)
            rounds.append(row)
        accel = lab.state.get("accel")
    finally:
        if sampler is not None:
            sampler.really_close()
        if not args.lab:
            lab.down()
    modes = {}
    for name, _ in MODES:
        per = [r[name] for r in rounds]
        out = {k: round(statistics.median(p[k] for p in per), 3)
               for k in ("cpu_ops_per_s", "chunk_busy_ms", "status_work_ms", "samples_per_s",
                         "bench_cpu_percent", "qemu_cpu_percent")}
        out["late_ticks"] = sum(p["late_ticks"] for p in per)
        out["rounds"] = [{k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()}
                         for p in per]
        if name != "off":  # slowdown against the "off" of the same round
            for key, label in (("chunk_busy_ms", "slowdown"), ("status_work_ms",
                                                               "status_slowdown")):
                s = [(r[name][key] / r["off"][key] - 1) * 100 for r in rounds]
                out[f"{label}_percent"] = round(statistics.median(s), 2)
                out[f"{label}_percent_rounds"] = [round(x, 2) for x in s]
            s = [(1 - r[name]["cpu_ops_per_s"] / r["off"]["cpu_ops_per_s"]) * 100 for r in rounds]
            out["ops_rate_drop_percent"] = round(statistics.median(s), 2)
        modes[name] = out
    result = {"rounds": args.rounds, "seconds_per_mode": args.seconds, "accel": accel,
              "loadavg_at_start": [round(x, 2) for x in load], "modes": modes,
              "busy_worker": busy}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"guest overhead: {args.rounds} round(s) x {args.seconds:g} s per mode, {accel}, "
          f"host load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    work = ("the busy worker's unit: 1000 rounds of arithmetic + 24 MiB copied (ms = "
            "1/cpu_ops rate)" if busy else "the CPU worker's chunk (busy ms = 1/cpu_ops rate "
            "- 200 ms rest; the bench's own lab runs the busy worker)")
    print(f"work = {work}; status = the status loop's work per line;\nslowdown vs off of "
          "the same round, median (min..max over rounds); the sampler's host CPU competes "
          "with the TCG vCPU")
    print(f"{'mode':6} {'ops/s':>7} {'work ms':>8} {'slowdown %':>11} {'spread':>13} "
          f"{'status ms':>9} {'slowdown %':>11} {'spread':>13} {'samples/s':>9} "
          f"{'bench CPU%':>10} {'QEMU CPU%':>9}")
    for name, m in modes.items():
        on = name != "off"
        cols = []
        for key in ("slowdown", "status_slowdown"):
            cols.append(f"{m[key + '_percent']:11.2f}" if on else f"{'-':>11}")
            cols.append(f"{spread(m[key + '_percent_rounds']) if on else '-':>13}")
        print(f"{name:6} {m['cpu_ops_per_s']:7.3f} {m['chunk_busy_ms']:8.2f} {cols[0]} "
              f"{cols[1]} {m['status_work_ms']:9.1f} {cols[2]} {cols[3]} "
              f"{m['samples_per_s']:9.1f} {m['bench_cpu_percent']:10.2f} "
              f"{m['qemu_cpu_percent']:9.1f}")


if __name__ == "__main__":
    main()
