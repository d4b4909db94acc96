"""How long `vmroc doctor` takes, whole and per check (the checks run in parallel, so the
whole is about the slowest check plus Python's start).

Run: python bench/bench_doctor.py [--runs N] [--json]. Not a test: it prints numbers.
The timing used to be an assertion in tests/unit/test_doctor.py; on a CI machine whose
two cores were busy with the session's guests it took 7 s, so it is measured here.

``--quick`` (what the test suite runs): two runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from vmroc.deploy import doctor


def whole_runs(runs: int) -> list[float]:
    """Wall seconds of ``vmroc doctor --json`` as a user runs it (a new process)."""
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vmroc.cli", "doctor", "--json"],
                       capture_output=True, text=True, timeout=120)
        took.append(time.perf_counter() - started)
    return took


def per_check() -> dict[str, float]:
    """Seconds of each check alone, in this process, one after another."""
    out = {}
    for fn in doctor.CHECKS:
        started = time.perf_counter()
        check = fn()
        out[check.name] = round(time.perf_counter() - started, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs of the whole command (5)")
    p.add_argument("--quick", action="store_true", help="two runs")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = p.parse_args(argv)
    runs = 2 if args.quick else args.runs
    whole = whole_runs(runs)
    checks = per_check()
    result = {"runs": runs, "median_s": round(statistics.median(whole), 2),
              "max_s": round(max(whole), 2), "checks_s": checks}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"vmroc doctor: median {result['median_s']} s, max {result['max_s']} s "
          f"over {runs} runs")
    print("| check | seconds alone |")
    print("|---|---|")
    for name, s in sorted(checks.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {s:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
