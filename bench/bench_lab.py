"""Lab costs: boot time to first status line (1 and 3 guests), host CPU of idle guests.

Run: python bench/bench_lab.py [--name bench] [--json] [--quick]. Uses its own lab name
(``--name``), so a running lab is left alone. Not a test: it prints numbers.

``--quick`` (what the test suite runs): one guest booted, its idle CPU over 3 s after
2 s of settling, instead of 1 then 3 guests and 20 s after 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from vmroc.deploy import Lab


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def boot(n: int, name: str = "bench", idle: bool | None = None, settle: float = 10,
         window: float = 20) -> dict:
    Lab(name).down()
    t0 = time.monotonic()
    lab = Lab.up(n, name=name, accel="tcg", wait=False)
    try:
        return measure(lab, n, t0, idle, settle, window)
    finally:
        lab.down()


def measure(lab: Lab, n: int, t0: float, idle: bool | None, settle: float,
            window: float) -> dict:
    firsts = [g.wait_for_status() and time.monotonic() - t0 for g in lab.guests]
    result = {"guests": n, "first_status_s": [round(x, 2) for x in firsts]}
    if n == 3 if idle is None else idle:
        time.sleep(settle)  # let boot settle
        pids = [g.pid for g in lab.guests]
        c0 = [cpu_seconds(p) for p in pids]
        time.sleep(window)
        c1 = [cpu_seconds(p) for p in pids]
        result["idle_cpu_percent_per_guest"] = [round((b - a) / window * 100, 1)
                                                for a, b in zip(c0, c1)]
        result["ram_file_bytes"] = [g.ram_path.stat().st_size for g in lab.guests]
        result["ram_file_resident_kib"] = [
            int(os.popen(f"du -k {g.ram_path}").read().split()[0]) for g in lab.guests]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", default="bench", help="the lab's name (bench)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="one guest only, idle CPU over 3 s (what the test suite runs)")
    args = ap.parse_args()
    if args.quick:
        results = [boot(1, args.name, idle=True, settle=2, window=3)]
    else:
        results = [boot(1, args.name), boot(3, args.name)]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for r in results:
        print(f"{r['guests']} guest(s): first status line after {r['first_status_s']} s")
    r = results[-1]
    print(f"{r['guests']} idle guest(s): host CPU per guest {r['idle_cpu_percent_per_guest']} % "
          f"of a core (workload running: 1 HTTP GET/s, 64 KiB disk write+read/s, CPU worker)")
    print(f"RAM files: {r['ram_file_bytes']} bytes each, resident {r['ram_file_resident_kib']} KiB")


if __name__ == "__main__":
    main()
