"""Lab costs: boot time to first status line (1 and 3 guests), host CPU of idle guests.

Run: python bench/bench_lab.py [--json]. Uses its own lab name, so a running lab is
left alone. Not a test: it prints numbers.
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


def boot(n: int) -> dict:
    Lab("bench").down()
    t0 = time.monotonic()
    lab = Lab.up(n, name="bench", accel="tcg", wait=False)
    firsts = [g.wait_for_status() and time.monotonic() - t0 for g in lab.guests]
    result = {"guests": n, "first_status_s": [round(x, 2) for x in firsts]}
    if n == 3:
        time.sleep(10)  # let boot settle
        pids = [g.pid for g in lab.guests]
        c0 = [cpu_seconds(p) for p in pids]
        time.sleep(20)
        c1 = [cpu_seconds(p) for p in pids]
        result["idle_cpu_percent_per_guest"] = [round((b - a) / 20 * 100, 1)
                                                for a, b in zip(c0, c1)]
        result["ram_file_bytes"] = [g.ram_path.stat().st_size for g in lab.guests]
        result["ram_file_resident_kib"] = [
            int(os.popen(f"du -k {g.ram_path}").read().split()[0]) for g in lab.guests]
    lab.down()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [boot(1), boot(3)]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for r in results:
        print(f"{r['guests']} guest(s): first status line after {r['first_status_s']} s")
    r = results[1]
    print(f"3 idle guests: host CPU per guest {r['idle_cpu_percent_per_guest']} % of a core "
          f"(workload running: 1 HTTP GET/s, 64 KiB disk write+read/s, CPU worker)")
    print(f"RAM files: {r['ram_file_bytes']} bytes each, resident {r['ram_file_resident_kib']} KiB")


if __name__ == "__main__":
    main()
