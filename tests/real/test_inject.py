"""Every non-destructive fault kind against the shared lab's real guests: applied,
effect observed, recorded, reverted, guest back to normal. Plus kill -9 + heal and the
ledger on a real Kafka broker. Destructive kinds: test_inject_destructive.py."""

from __future__ import annotations

import json
import mmap
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from vmroc.deploy.status import DISK_CANARY_OFFSET, MEM_CANARY_MARKER
from vmroc.inject import FaultSpec, Ledger, TargetError, apply, run
from vmroc.inject.lease import leases

pytestmark = pytest.mark.real

# kind -> (target guests, params, duration s). g3 is nobody's server, so hurting it
# leaves the other guests' traffic alone; disk kinds target g2.
CASES = {
    "cpu-mce": (["g3"], {"severity": "uncorrected"}, 0),
    "cpu-nmi": (["g3"], {}, 0),
    "cpu-stall": (["g3"], {}, 3),
    "cpu-throttle": (["g3"], {"quota_pct": 2}, 4),
    "cpu-hog": (["g3"], {"hogs": 2}, 3),
    "mem-mce": (["g3"], {}, 0),
    "mem-pressure": (["g3"], {"keep_mb": 128}, 3),
    "disk-eio": (["g2"], {"iotype": "write"}, 3),
    "disk-slow": (["g2"], {"iops": 5}, 3),
    "disk-hang": (["g2"], {}, 3),
    "disk-corrupt": (["g2"], {"length": 4096}, 0),
    "net-drop": (["g3"], {"loss": 50}, 3),
    "net-corrupt": (["g3"], {"pct": 50}, 3),
    "net-delay": (["g3"], {"delay_ms": 200}, 3),
    "net-slow": (["g3"], {"kbytes": 8}, 3),
    "net-link-down": (["g3"], {}, 3),
    "net-flood": (["g3"], {"pps": 2000}, 3),
    "guest-suspend": (["g3"], {}, 3),
    "net-partition": (["g3"], {}, 4),
}


def assert_normal(lab, names, timeout=40):
    """Guests run, and their HTTP client, disk worker and CPU worker all advance."""
    for name in names:
        g = lab.guest(name)
        assert g.state() == "running", f"{name}: {g.state()}"
        first = g.last_status()
        line = g.wait_for_status(timeout, where=lambda s: s["http_ok"] > first["http_ok"]
                                 and s["disk_ok"] > first["disk_ok"]
                                 and s["cpu_ops"] > first["cpu_ops"])
        assert line["up"] > first["up"]
        assert (line["disk_bad"], line["mem_bad"]) == (first["disk_bad"], first["mem_bad"]), \
            f"{name}: a canary changed"


@pytest.mark.parametrize("kind", list(CASES))
def test_kind_bites_and_is_reverted(lab, kind, tmp_path):
    guests, params, duration = CASES[kind]
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    fault = run(FaultSpec(kind, guests, params, duration=duration, seed=1), lab, ledger)
    r = fault.result()
    assert r["effective"], f"{kind}: no effect: {r['evidence']}"
    phases = [e["phase"] for e in r["entries"]]
    assert phases == ["injected", "effect-observed", "recovered"], phases
    observed = r["entries"][1]
    assert observed["fault_id"] == fault.id and observed["kind"] == kind
    assert observed["target"]["guests"] == guests and observed["evidence"]
    assert r["recovered"], f"{kind}: not back to baseline: {fault.recovery}"
    back = r["entries"][2]["evidence"]  # every target was watched until its counters ran
    assert set(guests) <= set(back["guests"]) == set(back["checked"]), back
    assert all(back["checked"].values()), back
    # two status lines after the teardown at least (the guest prints one a second)
    assert 0.9 <= back["time_to_recover"] == max(back["guests"].values()), back
    assert [e.phase for e in ledger.events(fault.id)] == phases     # JSONL has them too
    assert fault.id not in {lease.fault_id for lease in leases()}
    assert_normal(lab, [g.name for g in lab.guests])


def mem_canary_page(guest) -> int:
    """Guest physical address of ``guest``'s memory canary: the page-aligned page in its
    RAM file that begins with the canary's marker line of this boot (the newest boot's
    marker wins if an older page was not reused yet)."""
    marker = re.compile(re.escape(MEM_CANARY_MARKER + guest.name.encode())
                        + rb" boot=([0-9.]+)\n")
    with open(guest.ram_path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        pages = [(float(x.group(1)), x.start()) for x in marker.finditer(m)
                 if x.start() % 4096 == 0]
    assert pages, f"{guest.name}: no memory canary page in its RAM"
    return max(pages)[1]


@pytest.mark.parametrize("kind", ["disk-corrupt", "mem-bitflip"])
def test_a_corruption_shows_inside_the_guest_until_healed(lab, kind, tmp_path):
    """The guest itself notices: its canary's checksum fails while the fault is applied
    and passes again once the fault's teardown put the original bytes back."""
    g = lab.guest("g2")
    if kind == "disk-corrupt":
        counter, spec = "disk_bad", FaultSpec(kind, {"guests": ["g2"], "addr": [
            DISK_CANARY_OFFSET + 1024, 16]}, duration=6, seed=2)
    else:
        counter, spec = "mem_bad", FaultSpec(kind, {"guests": ["g2"], "addr": [
            mem_canary_page(g) + 1024, 1024]}, {"count": 3}, duration=6, seed=2)
    before = g.wait_for_status(30)
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    with apply(spec, lab, ledger):
        bad = g.wait_for_status(30, where=lambda s: s[counter] > before[counter])
    healed = g.wait_for_status(30, where=lambda s: s["up"] > bad["up"] + 2)
    later = g.wait_for_status(30, where=lambda s: s["up"] > healed["up"] + 3)
    assert later[counter] == healed[counter], f"{kind}: the guest still reads it corrupted"
    other = "mem_bad" if counter == "disk_bad" else "disk_bad"
    assert later[other] == before[other], f"{kind} changed the other canary too"


def test_two_faults_at_once_on_two_guests(lab, tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    with apply(FaultSpec("disk-eio", ["g2"], {"iotype": "write"}, 3), lab, ledger) as a, \
            apply(FaultSpec("net-drop", ["g3"], {"loss": 60}, 3), lab, ledger) as b:
        a.hold()
        b.hold()
    assert a.effective and b.effective and a.recovered and b.recovered
    assert "I/O error" in json.dumps(a.evidence)


def test_bad_input_applies_nothing(lab, tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    before = {lease.fault_id for lease in leases()}
    with pytest.raises(TargetError, match="outside guest RAM"):
        run(FaultSpec("mem-mce", ["g3"], {"addr": 1 << 40}), lab, ledger)
    with pytest.raises(TargetError, match="unknown guest 'g7'"):
        run(FaultSpec("net-drop", ["g7"]), lab, ledger)
    with pytest.raises(TargetError, match="outside"):
        run(FaultSpec("disk-eio", ["g2"], {"sector": 1 << 40}), lab, ledger)
    assert ledger.events() == [] and {lease.fault_id for lease in leases()} == before


def vmroc(*args, env, check=True):
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def blkdebug_nodes(guest) -> list[str]:
    """disk-eio/disk-hang insert a blkdebug node into the guest's block graph."""
    with guest.qmp() as q:
        return [n["node-name"] for n in q.cmd("query-named-block-nodes") if n["drv"] == "blkdebug"]


def inj_tables(lab) -> list[str]:
    """Network kinds add nftables tables named inj_* in the lab namespace."""
    out = subprocess.run(lab.netns_prefix() + ["nft", "list", "tables"], capture_output=True,
                         text=True).stdout
    return [line for line in out.splitlines() if "inj_" in line]


def wait_for_active_lease(pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(x.data.get("owner_pid") == pid and x.data.get("phase") == "active"
                  for x in leases()):
        assert time.monotonic() < deadline, f"injector {pid} did not apply its fault"
        time.sleep(0.2)


def test_kill9_injector_then_heal(lab, tmp_path):
    env = {**os.environ, "VMROC_LEDGER": str(tmp_path / "ledger.jsonl")}
    procs = [subprocess.Popen([sys.executable, "-m", "vmroc.cli", "inject", kind, "--name",
                               lab.name, "-g", guest, "--duration", "120s", "--no-kafka",
                               *extra], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
             for kind, guest, extra in (("disk-eio", "g2", ["-p", "iotype=write"]),
                                        ("net-drop", "g3", ["-p", "loss=100"]))]
    try:
        for p in procs:
            wait_for_active_lease(p.pid)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    g2 = lab.guest("g2")
    assert blkdebug_nodes(g2) and inj_tables(lab), "faults should survive the killed injector"
    time.sleep(2)
    assert "I/O error" in g2.serial_text()
    out = json.loads(vmroc("inject", "heal", "--name", lab.name, "--json", "--no-kafka",
                           env=env).stdout)
    healed = {h["kind"] for h in out["healed"] if h["healed"]}
    assert {"disk-eio", "net-drop"} <= healed, out
    assert blkdebug_nodes(g2) == [] and inj_tables(lab) == []
    assert not [x for x in leases() if x.data.get("owner_pid") in {p.pid for p in procs}]
    events = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert sum(e["phase"] == "recovered" and e["evidence"].get("healed_by") == "vmroc inject heal"
               for e in events) == 2
    assert_normal(lab, ["g1", "g2", "g3"])


def test_ctrl_c_reverts_the_fault_before_exit(lab, tmp_path):
    """SIGINT (Ctrl-C) mid-fault: the injector tears down, records recovery, exits 130."""
    ledger = tmp_path / "ledger.jsonl"
    g2 = lab.guest("g2")
    proc = subprocess.Popen([sys.executable, "-m", "vmroc.cli", "inject", "disk-eio", "--name",
                             lab.name, "-g", "g2", "--duration", "120s", "--no-kafka",
                             "-p", "iotype=write", "--ledger", str(ledger)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_active_lease(proc.pid)
        assert blkdebug_nodes(g2)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert blkdebug_nodes(g2) == []
    assert not [x for x in leases() if x.data.get("owner_pid") == proc.pid]
    phases = [json.loads(x)["phase"] for x in ledger.read_text().splitlines()]
    assert phases[0] == "injected" and phases[-1] == "recovered", phases
    assert_normal(lab, ["g2"])


def test_ledger_reaches_kafka(lab, broker, tmp_path):
    from vmroc.bus import FAULTS, Consumer
    ledger = Ledger(tmp_path / "ledger.jsonl", servers=broker.bootstrap)
    fault = run(FaultSpec("cpu-nmi", ["g3"], duration=0), lab, ledger)
    assert ledger.pending() == 0
    ledger.close()
    seen = []
    with Consumer(FAULTS, broker.bootstrap, group=None, from_beginning=True, dlq=False) as c:
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            seen += [m.event for m in c.poll(1.0) if m.event.fault_id == fault.id]
    assert [e.phase for e in seen] == ["injected", "effect-observed", "recovered"]
    assert seen[1].evidence["kernel_log"]
