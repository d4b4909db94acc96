"""Destructive fault kinds on a small lab of their own ("tinj", 2 guests): the QEMU
process killed and relaunched, the guest reset, kernel memory flipped, the bridge
removed. Each must be observed and the lab must come back."""

from __future__ import annotations

import threading
import time

import pytest

from vmroc.inject import FaultSpec, Ledger, run

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def tlab():
    from vmroc.deploy import Lab
    Lab("tinj").down()
    lab = Lab.up(2, name="tinj", ram_mb=160, accel="tcg")
    try:
        for g in lab.guests:
            g.wait_for_status(120, where=lambda s: s["http_ok"] >= 2)
        yield lab
    finally:
        lab.down()


@pytest.mark.parametrize("kind,guests,params,duration", [
    ("guest-crash", ["g2"], {}, 2),
    ("guest-reboot", ["g2"], {}, 0),
    ("mem-bitflip", ["g2"], {"mode": "kernel", "count": 4}, 0),
    ("bridge-down", [], {}, 3),
])
def test_destructive_kind(tlab, kind, guests, params, duration, tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    fault = run(FaultSpec(kind, guests, params, duration=duration, seed=3), tlab, ledger)
    r = fault.result()
    assert r["effective"], r["evidence"]
    assert [e["phase"] for e in r["entries"]] == ["injected", "effect-observed", "recovered"]
    assert r["recovered"], fault.recovery
    for g in tlab.guests:
        assert g.state() == "running"
        last = g.last_status()
        g.wait_for_status(60, where=lambda s: s["http_ok"] > last["http_ok"]
                          and s["disk_ok"] > last["disk_ok"])


def test_bitflip_in_a_named_process(tlab, tmp_path):
    """mode=process: the flips land in httpd's own pages, found from outside by walking
    its page tables; the evidence names the process and its virtual addresses."""
    from vmroc.introspect.kernel import GuestKernel
    from vmroc.introspect.procmem import user_pages
    from vmroc.introspect.sampler import symbols_for
    from vmroc.introspect.symbols import SymbolTable

    g = tlab.guest("g2")
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    fault = run(FaultSpec("mem-bitflip", ["g2"], {"mode": "process", "process": "httpd",
                                                   "count": 1}, duration=0, seed=5),
                tlab, ledger)
    r = fault.result()
    assert r["effective"], r["evidence"]
    assert r["evidence"]["process"] == "httpd" and r["evidence"]["read_back_flipped"] == 1
    flipped = int(r["evidence"]["first"][0]["addr"], 16)
    k = GuestKernel(g.ram_path, SymbolTable.load(symbols_for(g).isf), g.name)
    try:
        frames = {p for _, p in user_pages(k, "httpd")}
    finally:
        k.close()
    assert flipped & ~0xFFF in frames  # the physical page belongs to httpd
    if not r["recovered"]:  # one bit in httpd may kill it: give the next tests a whole lab
        with g.qmp() as qmp:
            qmp.cmd("system_reset")
        g.wait_for_status(120, where=lambda s: s["up"] < 30 and s["http_ok"] >= 1)


def test_a_stream_reads_a_rebooted_guest_again(tlab, tmp_path):
    """After a reboot the guest's kernel lays out memory anew (page_offset_base, per-CPU
    areas): the stream opens it again and its samples are whole again. (On this module's
    own lab: a reboot of the shared lab's guest would change what later tests see.)"""
    from vmroc.inject import apply
    from vmroc.introspect.stream import stream
    g2 = tlab.guest("g2")
    got: list = []
    stop = threading.Event()
    stats: list = []
    worker = threading.Thread(target=lambda: stats.append(
        stream([g2], got.append, rate=10, stop=stop)))
    worker.start()
    try:
        time.sleep(2)
        with apply(FaultSpec("guest-reboot", ["g2"], {}, duration=1), tlab,
                   Ledger(tmp_path / "ledger.jsonl", kafka=False)) as fault:
            fault.hold()
        assert fault.effective and fault.recovered, fault.evidence
        time.sleep(8)
    finally:
        stop.set()
        worker.join(timeout=60)
    recent = [s for s in got if s.ts > time.time() - 5]
    assert len(recent) > 30 and all(s.consistent for s in recent), \
        [s.flags for s in recent if not s.consistent][:3]
    # reopened, and not over and over: a reopen tried while the new kernel still boots
    # fails its walks and is followed by a second one (seen under load), so 1 or 2
    reopened = stats[0].reopened.get("g2", 0)
    assert 1 <= reopened <= 2 or stats[0].down.get("g2"), stats[0].to_json()
