"""CPU faults: machine checks and NMIs injected through QEMU, vCPU threads frozen,
limited by a CPU quota, or starved by host-side hogs on their core."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

from ..errors import ApplyError
from ..fault import Fault, rate
from ..registry import Param, register
from . import _common as c

CGROUP = Path("/sys/fs/cgroup")
MCE_LOG = re.compile(r"[^\n]*(?:Machine Check|Hardware Error|Memory failure)[^\n]*")
# MCi_STATUS: VAL(63) UC(61) EN(60) MISCV(59) ADDRV(58) S(56); MCACOD 0x0150.
MCE_STATUS = {"corrected": 0x9000000000000150, "uncorrected": 0xB100000000000150}
MCG_STATUS = {"corrected": 0x0, "uncorrected": 0x5}          # RIPV | MCIP


def mce_lines(fx: Fault) -> list[str]:
    return [s.strip() for s in MCE_LOG.findall(fx.log_since(fx.guest.name))]


@register
class CpuMce:
    name = "cpu-mce"
    level = "cpu"
    params = (Param("severity", str, "uncorrected", "corrected: bank status only, the "
                    "guest logs it at its next poll (up to 5 min); uncorrected: "
                    "recoverable #MC, logged at once", choices=("corrected", "uncorrected")),
              Param("bank", int, 1, "MCA bank", min=0, max=9),
              Param("cpu", int, 0, "vCPU index", min=0))
    effect = "the guest kernel logs `mce: [Hardware Error] ... Machine Check`"
    mechanism = ("HMP `mce CPU BANK STATUS MCG_STATUS 0 0` (corrected 0x9000000000000150, "
                 "uncorrected-recoverable 0xb100000000000150 with RIPV|MCIP) on an Intel "
                 "CPU model; nothing persists to revert")
    instant = True

    def invoke(fx: Fault) -> None:
        sev = fx.params["severity"]
        line = (f"mce {fx.params['cpu']} {fx.params['bank']} {MCE_STATUS[sev]:#x} "
                f"{MCG_STATUS[sev]:#x} 0 0")
        fx.state["hmp"] = line
        out = fx.hmp(line)
        if out.strip():
            raise ApplyError(f"cpu-mce: {out.strip()}", kind="cpu-mce", command=line, reply=out)

    def verify(fx: Fault) -> dict | None:
        lines = mce_lines(fx)
        return {"kernel_log": lines[:3]} if lines else None

    def teardown(fx: Fault) -> None:
        return None


@register
class CpuNmi:
    name = "cpu-nmi"
    level = "cpu"
    params = ()
    effect = "the guest kernel logs `NMI received for unknown reason`"
    mechanism = "QMP `inject-nmi` (NMI on every vCPU); nothing persists to revert"
    instant = True

    def invoke(fx: Fault) -> None:
        fx.cmd("inject-nmi")

    def verify(fx: Fault) -> dict | None:
        lines = re.findall(r"[^\n]*NMI received[^\n]*", fx.log_since(fx.guest.name))
        return {"kernel_log": [s.strip() for s in lines[:2]]} if lines else None

    def teardown(fx: Fault) -> None:
        return None


def _cgroup_dir(controller: str, fx: Fault) -> Path | None:
    root = CGROUP / controller
    if root.is_dir() and os.access(root, os.W_OK):
        return root / f"vmroc-{fx.lab.name}-{c.short_id(fx)}"
    return None


def _move_back(path: Path, tids: list[int]) -> None:
    for tid in tids:
        try:
            (path.parent / "tasks").write_text(str(tid))
        except OSError:
            pass  # thread gone
    try:
        path.rmdir()
    except FileNotFoundError:
        pass


@register
class CpuStall:
    name = "cpu-stall"
    level = "cpu"
    params = ()
    effect = "the guest prints no status line while QEMU itself still answers QMP"
    mechanism = ("vCPU threads (query-cpus-fast thread ids) moved into a cgroup-v1 "
                 "freezer cgroup set FROZEN; fallback SIGSTOP of the QEMU process")

    def invoke(fx: Fault) -> None:
        tids = fx.vcpu_tids()
        path = _cgroup_dir("freezer", fx)
        if path is not None:
            fx.state.update(freezer=str(path), tids=tids)
            fx.save()
            path.mkdir(exist_ok=True)
            for tid in tids:
                (path / "tasks").write_text(str(tid))
            (path / "freezer.state").write_text("FROZEN")
        else:
            fx.state.update(sigstop=fx.guest.pid)
            fx.save()
            os.kill(fx.guest.pid, signal.SIGSTOP)

    def verify(fx: Fault) -> dict | None:
        quiet = c.silent_for(fx, fx.guest.name, 2.5)
        if quiet is None:
            return None
        out = {"silent_s": quiet, "mechanism": "freezer" if "freezer" in fx.state else "sigstop"}
        if "freezer" in fx.state:
            out["qmp_status"] = c.run_state(fx)  # QEMU's main loop still answers
        return out

    def teardown(fx: Fault) -> None:
        if fx.state.get("freezer"):
            path = Path(fx.state["freezer"])
            if path.exists():
                (path / "freezer.state").write_text("THAWED")
                _move_back(path, fx.state.get("tids", []))
        if fx.state.get("sigstop") and c.start_time(fx.state["sigstop"]):
            os.kill(fx.state["sigstop"], signal.SIGCONT)


def _cpu_ops_drop(fx: Fault, ratio: float) -> dict | None:
    """cpu_ops/s from the last pre-fault line to the newest line, against the baseline."""
    g = fx.guest.name
    before = fx.base_rate(g, "cpu_ops")
    base = fx.baseline.get(g) or []
    new = fx.since(g)
    quiet = c.silent_for(fx, g, 3.0)
    if quiet is not None:  # starved so hard the status loop itself does not run
        return {"cpu_ops_per_s_before": round(before or 0, 2), "silent_s": quiet}
    if not base or not new or new[-1]["up"] - base[-1]["up"] < 2.5:
        return None
    during = rate([base[-1], new[-1]], "cpu_ops")
    if before and during is not None and during <= ratio * before:
        return {"cpu_ops_per_s_before": round(before, 2),
                "cpu_ops_per_s_during": round(during, 2), "status_lines": len(new)}
    return None


@register
class CpuThrottle:
    name = "cpu-throttle"
    level = "cpu"
    params = (Param("quota_pct", float, 2.0, "percent of one core the vCPU threads may use",
                    min=1, max=100),)
    effect = ("the guest's CPU worker slows: cpu_ops per second at most 60% of baseline "
              "(or no status line at all for 3 s)")
    mechanism = ("vCPU threads moved into a cgroup (v1 `cpu`: cfs_quota_us/cfs_period_us; "
                 "v2: cpu.max); moved back and the cgroup removed on heal")

    def invoke(fx: Fault) -> None:
        tids = fx.vcpu_tids()
        quota = int(fx.params["quota_pct"] * 1000)
        path = _cgroup_dir("cpu", fx)
        if path is None:
            raise ApplyError("cpu-throttle: no writable cgroup v1 cpu controller at "
                             f"{CGROUP}/cpu (cgroup v2 threaded mode is not supported yet)",
                             kind="cpu-throttle")
        fx.state.update(cgroup=str(path), tids=tids)
        fx.save()
        path.mkdir(exist_ok=True)
        (path / "cpu.cfs_period_us").write_text("100000")
        (path / "cpu.cfs_quota_us").write_text(str(quota))
        for tid in tids:
            (path / "tasks").write_text(str(tid))

    def verify(fx: Fault) -> dict | None:
        out = _cpu_ops_drop(fx, 0.6)
        if out:
            try:
                stat = (Path(fx.state["cgroup"]) / "cpu.stat").read_text().split()
                out["cgroup_cpu_stat"] = dict(zip(stat[::2], map(int, stat[1::2])))
            except (OSError, ValueError):
                pass
        return out

    def teardown(fx: Fault) -> None:
        if fx.state.get("cgroup"):
            path = Path(fx.state["cgroup"])
            if path.exists():
                _move_back(path, fx.state.get("tids", []))


def _schedstat(pid: int, tid: int) -> int | None:
    """Nanoseconds thread ``tid`` has waited on a run queue (schedstat field 2)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


HOG = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


@register
class CpuHog:
    name = "cpu-hog"
    level = "cpu"
    params = (Param("hogs", int, 2, "busy host processes on the vCPU's core", min=1, max=16),
              Param("nice", int, -10, "their nice value (negative: they win)", min=-20,
                    max=19))
    effect = ("the vCPU thread waits for its core (run-queue delay from schedstat >= "
              "100 ms/s), or the guest's cpu_ops/s falls to 75% of baseline")
    mechanism = ("vCPU threads pinned to one host core (sched_setaffinity, old mask kept "
                 "in the lease) and niced busy-loop processes pinned there with taskset "
                 "(their autogroup niced too); the hogs stop by themselves after the "
                 "fault's time bound")

    def invoke(fx: Fault) -> None:
        tids = fx.vcpu_tids()
        core = min(os.sched_getaffinity(0))
        try:
            with open(f"/proc/{fx.guest.pid}/task/{tids[0]}/stat") as f:
                core = int(f.read().rsplit(")", 1)[1].split()[36])
        except (OSError, IndexError, ValueError):
            pass
        fx.state.update(core=core, affinity={str(t): sorted(os.sched_getaffinity(t))
                                             for t in tids})
        fx.save()
        for t in tids:
            os.sched_setaffinity(t, {core})
        fx.state["schedstat"] = {str(t): (time.monotonic(), _schedstat(fx.guest.pid, t) or 0)
                                 for t in tids}
        bound = fx.spec.duration + fx.kind.window + 5
        for _ in range(fx.params["hogs"]):
            pid = c.spawn(fx, ["nice", "-n", str(fx.params["nice"]), "taskset", "-c",
                               str(core), sys.executable, "-c", HOG.format(s=bound)])
            # with sched_autogroup each session is its own group: nice the group too
            try:
                Path(f"/proc/{pid}/autogroup").write_text(str(fx.params["nice"]))
            except OSError:
                pass

    def verify(fx: Fault) -> dict | None:
        out = _cpu_ops_drop(fx, 0.75) or {}
        waits = []
        for tid, (t0, wait0) in (fx.state.get("schedstat") or {}).items():
            now = _schedstat(fx.guest.pid, int(tid))
            if now is not None and time.monotonic() - t0 >= 1.5:
                waits.append((now - wait0) / 1e6 / (time.monotonic() - t0))
        if waits and max(waits) >= 100:
            out["vcpu_run_delay_ms_per_s"] = round(max(waits))
        if out:
            out["core"] = fx.state["core"]
        return out or None

    def teardown(fx: Fault) -> None:
        c.kill_spawned(fx)
        for tid, mask in (fx.state.get("affinity") or {}).items():
            try:
                os.sched_setaffinity(int(tid), set(mask))
            except (ProcessLookupError, OSError):
                pass
