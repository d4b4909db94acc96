"""Cost of sampling to the guest: the guest's fixed work timed from its status lines while
sampling alternates between off, 10 Hz, 100 Hz and 1000 Hz every few seconds in one run.

Run: python bench/bench_overhead.py [--cycles 24] [--segment 5] [--quick] [--json]. Boots its
own 1-guest lab ("bench-o") unless --lab names a running one (its first guest is measured).
Sampling runs in this process (a thread running ``stream``, default backend, the sampler
opened once). Not a test.

The measured work runs in the guest (deploy/guest/init.sh). The bench's own lab boots with
``vmroc.busy=1``: its worker repeats, without rest, a fixed unit of CPU- and memory-bound
work (1000 rounds of shell arithmetic, then a 24 MiB file in RAM copied to /dev/null); its
count ``cpu_ops`` and the guest's uptime ``up`` are on the status line once a second.

The run is ``--cycles`` cycles of six segments of ``--segment`` seconds: off, 10 Hz, off,
100 Hz, off, 1000 Hz. The guest's speed wanders (units per second move 15 % from one second
to the next and 10 % between 10 s windows on this host, itself a VM, with nothing else
running), so each sampling segment is compared with the mean of the two "off" segments
around it, and a mode's slowdown is the mean over cycles of those paired ratios with its
95 % confidence interval. A segment's rate is the units done between its first and last
status line over their uptime difference; lines within ``SETTLE_S`` of a switch are left
out. A status line is placed in host time by its uptime plus the least delay with which
the host read any line (``StatusTimeline``).

That interval is a few percent wide with any run length that fits in a session, wider than
the 1 % goal at 10 Hz. So the bench also measures the slowdown where it is largest: at
1000 Hz the sampler takes about 3 times the host CPU it takes at 100 Hz and 25 times what
it takes at 10 Hz. The
slowdown at 10 and 100 Hz is then that one scaled by the sampler's CPU share in the mode
(``scaled`` columns; sampler CPU = the bench's CPU less its CPU in the off segments, the
status poller): the sampler can only slow the guest through the host CPU and memory it
uses, and scaling by its CPU rather than its sample rate charges the slower rates with
their higher cost per sample. A goal is met when the scaled interval's upper end is within it.

Under TCG the guest's vCPU is a host thread, so host CPU the sampler takes from it (and from
QEMU's other threads) is part of what is measured: there is no other path by which reading the
RAM file can slow the guest (no exits, no pause).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
import time

from vmroc.deploy import Lab
from vmroc.deploy.status import StatusTimeline
from vmroc.introspect.sampler import Sampler, symbols_for
from vmroc.introspect.stream import stream

USLEEP_S = 0.2  # the CPU worker's rest after each chunk (init.sh), unless vmroc.busy=1
BUSY_ARGS = "vmroc.busy=1"  # the bench lab's guest: a worker without rest (init.sh)
CYCLE = (("off", 0), ("10hz", 10), ("off", 0), ("100hz", 100), ("off", 0), ("1000hz", 1000))
DOSE = "1000hz"  # the mode whose slowdown is large enough to measure, scaled to the others
GOALS = {"10hz": 1.0, "100hz": 3.0}  # issue 14: slowdown at most, percent
SETTLE_S = 0.3  # status lines this close after a switch belong to neither segment


def qemu_cpu_s(pid: int | None) -> float:
    """utime + stime of the guest's QEMU process, seconds."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Keep(Sampler):
    """The sampler, kept open across segments (stream closes what it was given)."""

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        super().close()


def run_segment(guest, sampler: Sampler, hz: int, seconds: float) -> dict:
    """Sample at ``hz`` (0: not at all) for ``seconds``; host times and costs of the segment."""
    stop = threading.Event()
    stats: dict = {}
    thread = None
    if hz:
        def run() -> None:
            stats["s"] = stream([guest], lambda s: None, rate=hz, stop=stop,
                                make_sampler=lambda g: sampler)
        thread = threading.Thread(target=run, daemon=True)
    t0, cpu0, q0 = time.time(), time.process_time(), qemu_cpu_s(guest.pid)
    if thread:
        thread.start()
    time.sleep(seconds)
    stop.set()
    if thread:
        thread.join()
    t1 = time.time()
    st = stats.get("s")
    return {"start": t0, "end": t1, "bench_cpu_s": time.process_time() - cpu0,
            "qemu_cpu_s": qemu_cpu_s(guest.pid) - q0,
            "samples": sum(st.samples.values()) if st else 0,
            "late_ticks": st.late_ticks if st else 0}


def segment_rate(seg: dict, lines: list[tuple[float, dict]]) -> float | None:
    """Units per second in ``seg`` from the status lines placed inside it, or None."""
    inside = [s for t, s in lines if seg["start"] + SETTLE_S <= t <= seg["end"]]
    if len(inside) < 2 or inside[-1]["up"] <= inside[0]["up"]:
        return None
    rate = (inside[-1]["cpu_ops"] - inside[0]["cpu_ops"]) / (inside[-1]["up"] - inside[0]["up"])
    return rate if rate > 0 else None


def mean_ci(xs: list[float]) -> tuple[float, float, float]:
    """Mean and its 95 % confidence interval (normal approximation)."""
    m = statistics.fmean(xs)
    half = 1.96 * statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return m, m - half, m + half


def analyse(segments: list[dict], lines: list[tuple[float, dict]], rest_s: float) -> dict:
    """Per sampling mode: the paired slowdowns against the off segments around each."""
    for seg in segments:
        seg["rate"] = segment_rate(seg, lines)
    out: dict = {}
    offs = [s["rate"] for s in segments if s["mode"] == "off" and s["rate"]]
    for name in ("off", "10hz", "100hz", DOSE):
        mine = [s for s in segments if s["mode"] == name]
        wall = sum(s["end"] - s["start"] for s in mine) or float("nan")
        rates = [s["rate"] for s in mine if s["rate"]]
        unit_ms = [(1 / r - rest_s) * 1e3 for r in rates]
        m = {"segments": len(mine), "measured": len(rates),
             "unit_ms_median": round(statistics.median(unit_ms), 3) if unit_ms else None,
             "samples_per_s": round(sum(s["samples"] for s in mine) / wall, 2),
             "late_ticks": sum(s["late_ticks"] for s in mine),
             "bench_cpu_percent": round(sum(s["bench_cpu_s"] for s in mine) / wall * 100, 3),
             "qemu_cpu_percent": round(sum(s["qemu_cpu_s"] for s in mine) / wall * 100, 1)}
        if name != "off":
            pairs = []
            for i, s in enumerate(segments):
                if s["mode"] != name or not s["rate"] or i == 0 or i + 1 >= len(segments):
                    continue
                before, after = segments[i - 1]["rate"], segments[i + 1]["rate"]
                if before and after:  # unit time with sampling / without, around it
                    off_unit = 1 / ((before + after) / 2) - rest_s
                    pairs.append(((1 / s["rate"] - rest_s) / off_unit - 1) * 100)
            if pairs:
                mean, lo, hi = mean_ci(pairs)
                m.update(pairs=len(pairs), slowdown_percent=round(mean, 2),
                         ci95=[round(lo, 2), round(hi, 2)],
                         median_percent=round(statistics.median(pairs), 2),
                         pair_spread=[round(min(pairs), 2), round(max(pairs), 2)],
                         ci95_half=round((hi - lo) / 2, 2))
        out[name] = m
    for m in out.values():  # the bench's own CPU without sampling (its status poller) aside
        m["sampler_cpu_percent"] = round(max(0.0, m["bench_cpu_percent"]
                                             - out["off"]["bench_cpu_percent"]), 3)
    dose = out[DOSE]
    for name, goal in GOALS.items():  # the dose's slowdown, scaled by the sampler's CPU
        m = out[name]
        if "ci95" not in dose or not dose["sampler_cpu_percent"]:
            continue
        k = m["sampler_cpu_percent"] / dose["sampler_cpu_percent"]
        m.update(cpu_vs_dose=round(k, 4), scaled_percent=round(dose["slowdown_percent"] * k, 3),
                 scaled_ci95=[round(dose["ci95"][0] * k, 3), round(dose["ci95"][1] * k, 3)],
                 goal_percent=goal, goal_met=bool(dose["ci95"][1] * k <= goal))
    out["off"]["rate_spread"] = ([round(min(offs), 3), round(max(offs), 3)] if offs else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=24,
                    help="cycles of off / 10 Hz / off / 100 Hz / off / 1000 Hz (default 24)")
    ap.add_argument("--segment", type=float, default=5.0, help="seconds per segment (5)")
    ap.add_argument("--lab", default=None, help="use this running lab instead of booting one")
    ap.add_argument("--quick", action="store_true", help="1 cycle of 4 s segments")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.cycles, args.segment = 1, 4.0
    load = os.getloadavg()
    lab = Lab(args.lab) if args.lab else Lab.up(1, name="bench-o", accel="tcg",
                                                kernel_args=BUSY_ARGS)
    busy = BUSY_ARGS in lab.state.get("kernel_args", "")
    rest_s = 0.0 if busy else USLEEP_S
    sampler = None
    timeline = None
    segments: list[dict] = []
    try:
        g = lab.guests[0]
        g.wait_for_status()
        sampler = _Keep(g, symbols=symbols_for(g))
        sampler.sample()  # warm: the first sample reads the whole kernel log
        time.sleep(10 if busy else 3)  # let the workers settle after boot (busy: its file)
        timeline = StatusTimeline({g.name: g.serial_path}, interval=0.05, history=0).start()
        # a closing off segment, so the last sampling segment has one after it too
        schedule = list(CYCLE) * args.cycles + [("off", 0)]
        for n, (name, hz) in enumerate(schedule):
            seg = run_segment(g, sampler, hz, args.segment)
            seg["mode"] = name
            segments.append(seg)
            if not args.json and n % 8 == 7:
                print(f"  {n + 1}/{len(schedule)} segments", flush=True)
        time.sleep(1.5)  # the last segment's closing status line
        seen = timeline.stop()[g.name]
        timeline = None
        accel = lab.state.get("accel")
    finally:
        if timeline is not None:
            timeline.stop()
        if sampler is not None:
            sampler.really_close()
        if not args.lab:
            lab.down()
    # a line's host time: its uptime plus the least delay with which any line was read
    offset = min(t - s["up"] for t, s in seen)
    lines = [(s["up"] + offset, s) for _, s in seen]
    modes = analyse(segments, lines, rest_s)
    result = {"cycles": args.cycles, "segment_s": args.segment, "accel": accel,
              "loadavg_at_start": [round(x, 2) for x in load], "busy_worker": busy,
              "modes": modes}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"guest overhead: {args.cycles} cycle(s) of off/10/off/100/off/1000 Hz, "
          f"{args.segment:g} s per segment, {accel}, host load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    work = ("the busy worker's unit: 1000 rounds of arithmetic + 24 MiB copied (ms = "
            "1/cpu_ops rate)" if busy else "the CPU worker's chunk (busy ms = 1/cpu_ops rate "
            "- 200 ms rest; the bench's own lab runs the busy worker)")
    print(f"work = {work};\nslowdown = a sampling segment's unit time against the off "
          "segments around it, mean over cycles (95 % CI);\nscaled = the 1000 Hz slowdown "
          "times this mode's sampler CPU / 1000 Hz's (bench CPU less off's);\nmet = the "
          "scaled CI's upper end <= goal")
    print(f"{'mode':6} {'unit ms':>7} {'pairs':>5} {'slowdown %':>10} {'95% CI':>14} "
          f"{'scaled %':>8} {'scaled 95% CI':>15} {'goal %':>6} {'met':>4} {'samples/s':>9} "
          f"{'sampler CPU%':>12} {'QEMU CPU%':>9}")
    for name, m in modes.items():
        unit = f"{m['unit_ms_median']:7.2f}" if m["unit_ms_median"] else f"{'-':>7}"
        cols = f"{'-':>5} {'-':>10} {'-':>14}"
        if "pairs" in m:
            ci = f"{m['ci95'][0]:.2f}..{m['ci95'][1]:.2f}"
            cols = f"{m['pairs']:5d} {m['slowdown_percent']:10.2f} {ci:>14}"
        scaled = f"{'-':>8} {'-':>15} {'-':>6} {'-':>4}"
        if "scaled_ci95" in m:
            ci = f"{m['scaled_ci95'][0]:.3f}..{m['scaled_ci95'][1]:.3f}"
            scaled = (f"{m['scaled_percent']:8.3f} {ci:>15} {m['goal_percent']:6.1f} "
                      f"{'yes' if m['goal_met'] else 'no':>4}")
        print(f"{name:6} {unit} {cols} {scaled} {m['samples_per_s']:9.1f} "
              f"{m['sampler_cpu_percent']:12.2f} {m['qemu_cpu_percent']:9.1f}")
    spread = modes["off"]["rate_spread"]
    if spread:
        print(f"off segments' rate: {spread[0]:.3f}..{spread[1]:.3f} units/s (the wander the "
              "pairing cancels)")

if __name__ == "__main__":
    main()
