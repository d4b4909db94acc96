"""The lab against real QEMU guests: boot, talk, report state, clean up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmroc.deploy import GuestError, Lab
from vmroc.proc import alive as pid_alive

pytestmark = pytest.mark.real


def vmroc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", *args],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def leftovers(lab_name: str, ram_paths: list[str], pids: list[int]) -> list[str]:
    """Everything of a lab that should be gone after `down`, as readable strings."""
    left = [f"pid {p}" for p in pids if pid_alive(p)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += [f"netns {n}" for n in netns.split() if n == f"vmroc-{lab_name}"]
    left += [f"ram {r}" for r in ram_paths if Path(r).exists()]
    left += [f"qemu {line}" for line in subprocess.run(
        ["pgrep", "-af", f"vmroc:{lab_name}:"], capture_output=True, text=True).stdout.splitlines()]
    return left


def test_three_guests_boot_serve_and_run(lab):
    for g in lab.guests:
        assert g.state() == "running"
        first = g.wait_for_status()
        assert first.name == g.name and first["tasks"] > 20
    # clients call g1 (and g1 calls g2) over the lab bridge: requests succeed now
    # (counters are cumulative since boot and other tests break guests: compare deltas)
    for g in lab.guests:
        start = g.wait_for_status()
        line = g.wait_for_status(timeout=60, where=lambda s: s["http_ok"] >= start["http_ok"] + 3
                                 and s["disk_ok"] >= start["disk_ok"] + 1)
        assert line["http_err"] == start["http_err"], f"{g.name}: {line.values}"
        assert line["disk_err"] == start["disk_err"], f"{g.name}: {line.values}"
        assert line["eth0_rxp"] > start["eth0_rxp"] and line["eth0_txp"] > start["eth0_txp"]
        assert line["vda_wr"] > start["vda_wr"]
    # the server saw the clients' traffic on its NIC
    g1 = lab.guest("g1").last_status()
    assert g1["eth0_rxb"] > 10_000


def test_status_json_lists_every_guest(lab):
    out = json.loads(vmroc("lab", "status", "--name", lab.name, "--json").stdout)
    assert out["lab"] == lab.name
    assert [g["name"] for g in out["guests"]] == ["g1", "g2", "g3"]
    for g in out["guests"]:
        assert g["state"] == "running"
        assert Path(f"/proc/{g['pid']}").exists()
        assert os.path.getsize(g["ram_file"]) == g["ram_mb"] << 20
        assert Path(g["qmp_socket"]).exists() and Path(g["serial_log"]).exists()
        assert g["uptime"] > 0


def test_qmp_client_and_unknown_guest(lab):
    with lab.guest("g2").qmp() as qmp:
        assert qmp.cmd("query-status")["status"] == "running"
        assert "data" in json.dumps(qmp.cmd("query-named-block-nodes"))
    with pytest.raises(GuestError, match="unknown guest 'g9'.*g1, g2, g3"):
        lab.guest("g9")


def test_up_twice_is_harmless(lab):
    pids = [g.pid for g in lab.guests]
    again = Lab.up(3, name=lab.name)
    assert [g.pid for g in again.guests] == pids


def test_killed_guest_and_killed_manager_are_cleaned_up():
    """SIGKILL the `lab up` process mid-boot and one QEMU: status says dead, down cleans."""
    name = "tkill"
    vmroc("lab", "down", "--name", name)
    manager = subprocess.Popen([sys.executable, "-m", "vmroc.cli", "lab", "up", "--name", name,
                                "--guests", "2", "--ram", "128", "--accel", "tcg"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab = Lab(name)
        deadline = time.monotonic() + 60
        while not (lab.is_up and all(g.alive() for g in lab.guests)):
            assert time.monotonic() < deadline, "lab up did not launch two guests"
            time.sleep(0.2)
            lab = Lab(name)
    finally:
        manager.kill()
        manager.wait()
    pids = [g.pid for g in lab.guests]
    rams = [str(g.ram_path) for g in lab.guests]
    lab.guest("g1").kill(signal.SIGKILL)
    time.sleep(0.5)

    out = json.loads(vmroc("lab", "status", "--name", name, "--json").stdout)
    states = {g["name"]: g["state"] for g in out["guests"]}
    assert states == {"g1": "dead", "g2": "running"}
    text = vmroc("lab", "status", "--name", name).stdout
    assert "g1" in text and "dead" in text
    for command in (["sample", "--lab", name, "--guest", "g1"],
                    ["inject", "net-drop", "--name", name, "-g", "g1", "--no-kafka",
                     "--ledger", os.devnull]):
        proc = vmroc(*command, check=False)  # the dead guest: one line, nothing applied
        assert proc.returncode == 1 and "g1 is dead" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    vmroc("lab", "down", "--name", name)
    assert leftovers(name, rams, pids) == []
    vmroc("lab", "down", "--name", name)  # twice is harmless
    assert "is down" in vmroc("lab", "status", "--name", name).stdout


def test_cloud_flavour_boots_to_the_workload():
    lab = Lab.up(1, name="tcloud", ram_mb=192, flavour="cloud", accel="tcg")
    try:
        g = lab.guests[0]
        assert "cloud" in g.config["release"]
        line = g.wait_for_status(timeout=60, where=lambda s: s["disk_ok"] >= 1)
        assert line["cpu_ops"] > 0 and line["tasks"] > 20
        assert g.state() == "running"
    finally:
        lab.down()
    assert leftovers("tcloud", [str(g.ram_path)], []) == []


def test_socket_network_fallback_when_namespaces_are_not_used(monkeypatch):
    """VMROC_LAB_NET=socket (what the lab falls back to without netns): guests still talk."""
    monkeypatch.setenv("VMROC_LAB_NET", "socket")
    lab = Lab.up(2, name="tsock", ram_mb=128, accel="tcg")
    try:
        assert lab.state["net"] == "socket" and lab.netns_prefix() == []
        # g2's first request may go out before g1's server is up (they boot together):
        # from its first answer on, every request is answered
        g2 = lab.guest("g2")
        start = g2.wait_for_status(timeout=60, where=lambda s: s["http_ok"] >= 1)
        line = g2.wait_for_status(timeout=60, where=lambda s: s["http_ok"] >= start["http_ok"] + 2)
        assert line["http_err"] == start["http_err"], line.values
    finally:
        lab.down()
    assert leftovers("tsock", [], []) == []


def test_guest_panic_is_a_qmp_event_and_a_state_not_a_reboot():
    """A fatal machine check panics the guest kernel: pvpanic reports it, QEMU pauses."""
    lab = Lab.up(1, name="tpanic", ram_mb=128, accel="tcg")
    try:
        g = lab.guests[0]
        g.wait_for_status(timeout=60)
        with g.event_monitor() as events:
            with g.qmp() as qmp:  # PCC + UC, no RIPV: the kernel must panic
                qmp.hmp("mce 0 1 0xb200000000000000 0x4 0 0")
            seen = []
            deadline = time.monotonic() + 30
            while "GUEST_PANICKED" not in seen and time.monotonic() < deadline:
                seen += [e["event"] for e in events.events(wait=1.0)]
        assert "GUEST_PANICKED" in seen
        out = json.loads(vmroc("lab", "status", "--name", "tpanic", "--json").stdout)
        assert out["guests"][0]["state"] == "guest-panicked"
        up = g.last_status()["up"]
        time.sleep(2)
        assert g.last_status()["up"] == up  # no silent reboot: the guest stays stopped
    finally:
        lab.down()
