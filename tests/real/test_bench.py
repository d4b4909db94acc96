"""Benchmarks that cannot rot: every ``bench/bench_*.py`` runs here in its quick mode
(``--quick``: few samples, one try, a slice of a recording) against the session's lab and
broker, and must exit 0 having printed its table. A new benchmark is picked up by the
glob; one without ``--quick`` fails until it has one (or is listed in SLOW with why).

Benchmarks that take ``--lab`` are given the session lab (they leave it up; the faults
they inject there are one guest's, reverted); ``VMROC_KAFKA`` names the session broker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..fixtures_lab import session_lab_paused

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))

# Benchmarks too slow for the suite even in a quick mode: only their --help runs.
SLOW: dict[str, str] = {
    # 2 minutes of kills plus its own broker, catch-up and checks: over TIMEOUT; its short
    # run with assertions is tests/real/test_resilience.py
    "bench_resilience.py": "--quick takes 3-4 min; test_resilience.py runs it",
}

# Each run's arguments besides --quick (a benchmark with subcommands runs once per one).
RUNS = {
    "bench_service.py": [["pages"], ["live"]],
    "bench_lab.py": [["--name", "test-bench-lab"]],  # boots (and removes) one guest
}

# Benchmarks that boot a lab of their own beside the session's: the session lab is paused
# meanwhile (bench_failover's etcd cluster needs its heartbeats on time; bench_overhead
# times its guest's busy worker, which only its own lab runs: vmroc.busy=1).
OWN_LAB = {"bench_failover.py", "bench_overhead.py"}

# What each prints when it worked: its table's header or its ratio line.
EXPECT = {
    "bench_bus.py": ("compact / json (batched, lz4):", "defaults (pack 50) / one sample a message"),
    "bench_campaign.py": "effective faults detected",
    "bench_detect.py": "update_batch / update:",
    "bench_doctor.py": "| check | seconds alone |",
    "bench_encoding.py": "| compact / json |",
    "bench_failover.py": "| kind | tries | elections |",
    "bench_inject.py": "| kind | level | mechanism |",
    "bench_lab.py": "idle guest(s): host CPU per guest",
    "bench_overhead.py": "work = the busy worker",
    "bench_rank_table.py": "residual / baro:",
    "bench_rca_cv.py": "ranker        AC@1",
    "bench_sampler.py": "vs libvmi",
    "bench_service.py": ("median ms", '"serve_cpu_pct"'),
    "bench_symbols.py": "build_total_s",
}

TIMEOUT = 240  # one run, seconds


def run(args: list[str], env: dict, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else exc.stdout or ""
        err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) \
            else exc.stderr or ""
        pytest.fail(f"{' '.join(args)} took more than {timeout} s\nstdout:\n{out[-2000:]}\n"
                    f"stderr:\n{err[-3000:]}", pytrace=False)


def test_every_bench_is_checked():
    assert SCRIPTS, "no bench/bench_*.py found"
    assert set(SLOW) <= set(SCRIPTS), set(SLOW) - set(SCRIPTS)


@pytest.mark.real
@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_quick(script, lab, broker):
    env = dict(os.environ, VMROC_KAFKA=broker.bootstrap, PYTHONUNBUFFERED="1")
    path = f"bench/{script}"
    for extra in RUNS.get(script, [[]]):
        words = [w for w in extra if not w.startswith("-")]  # a subcommand
        helped = run([path, *words, "--help"], env, timeout=60)
        assert helped.returncode == 0, helped.stderr[-3000:]
        if script in SLOW:
            continue
        assert "--quick" in helped.stdout, (
            f"{path} {' '.join(words)} has no --quick mode: give it one (few samples, one "
            f"try) or list it in SLOW with the reason")
        args = [path, *extra, "--quick"]
        if "--lab" in helped.stdout and script not in OWN_LAB:
            args += ["--lab", lab.name]
        started = time.monotonic()
        with session_lab_paused() if script in OWN_LAB else contextlib.nullcontext():
            done = run(args, env)
        took = time.monotonic() - started
        print(f"{' '.join(args)}: {took:.1f} s")
        assert done.returncode == 0, (f"{' '.join(args)} exited {done.returncode}\n"
                                      f"stdout:\n{done.stdout[-2000:]}\n"
                                      f"stderr:\n{done.stderr[-3000:]}")
        expect = EXPECT.get(script, ())
        expect = (expect,) if isinstance(expect, str) else expect
        assert any(e in done.stdout for e in expect) if expect else done.stdout.strip(), (
            f"{' '.join(args)} did not print its table ({expect or 'anything'}):\n"
            f"{done.stdout[-2000:]}")
    assert lab.is_up, f"{script} took the session lab down"
