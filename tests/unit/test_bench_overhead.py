"""bench_overhead's analysis: paired slowdowns and their scaling by the sampler's CPU."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_overhead", Path(__file__).parents[2] / "bench" / "bench_overhead.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

SLOWER = {"off": 0.0, "10hz": 0.02, "100hz": 0.05, "1000hz": 0.10}  # unit time + x
CPU = {"off": 0.01, "10hz": 0.02, "100hz": 0.04, "1000hz": 0.21}  # bench CPU s per segment


def timeline(cycles: int, wander: float = 0.0):
    """Segments of 5 s in the bench's schedule and status lines once a second of a guest
    doing 20 units/s off, slowed per mode; ``wander``: off rate change per segment."""
    schedule = list(bench.CYCLE) * cycles + [("off", 0)]
    segments, lines, t, ops = [], [], 0.0, 0.0
    for i, (mode, _) in enumerate(schedule):
        rate = (20.0 + wander * i) / (1 + SLOWER[mode])
        segments.append({"start": t, "end": t + 5, "mode": mode, "samples": 0,
                         "late_ticks": 0, "bench_cpu_s": CPU[mode], "qemu_cpu_s": 5.0})
        for _ in range(5):
            t += 1.0
            ops += rate
            lines.append((t - 0.5, {"up": t - 0.5, "cpu_ops": ops}))
    return segments, lines


def test_paired_slowdowns_are_each_modes_unit_time_against_the_off_around_it():
    segments, lines = timeline(cycles=3, wander=0.3)  # the off rate drifts 30 % a run
    modes = bench.analyse(segments, lines, rest_s=0.0)
    for mode in ("10hz", "100hz", "1000hz"):
        assert modes[mode]["pairs"] == 3
        # a drift between the off segments around it is averaged, not taken as slowdown
        assert modes[mode]["slowdown_percent"] == pytest.approx(SLOWER[mode] * 100, abs=0.3)


def test_the_1000hz_slowdown_is_scaled_by_the_samplers_cpu_to_judge_the_goals():
    segments, lines = timeline(cycles=3)
    modes = bench.analyse(segments, lines, rest_s=0.0)
    k = (CPU["10hz"] - CPU["off"]) / (CPU["1000hz"] - CPU["off"])  # 0.05
    assert modes["10hz"]["cpu_vs_dose"] == pytest.approx(k)
    assert modes["10hz"]["scaled_percent"] == pytest.approx(10.0 * k, abs=0.02)
    assert modes["10hz"]["goal_met"] is True      # 0.5 % against 1 %
    assert modes["100hz"]["scaled_percent"] == pytest.approx(10.0 * 0.15, abs=0.05)
    assert modes["100hz"]["goal_met"] is True     # 1.5 % against 3 %
    heavy = [dict(s, bench_cpu_s=0.20) if s["mode"] == "100hz" else s for s in segments]
    assert bench.analyse(heavy, lines, rest_s=0.0)["100hz"]["goal_met"] is False  # 9.5 %


def test_a_segment_without_two_status_lines_is_not_measured():
    segments, lines = timeline(cycles=1)
    lines = [(t, s) for t, s in lines if not segments[1]["start"] <= t <= segments[1]["end"]]
    modes = bench.analyse(segments, lines, rest_s=0.0)
    assert modes["10hz"]["measured"] == 0 and "pairs" not in modes["10hz"]
    assert modes["100hz"]["pairs"] == 1
