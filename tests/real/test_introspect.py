"""The sampler against real guests: values match the guest's own view; backends agree."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import threading
import time

import pytest

from vmroc.deploy import Lab
from vmroc.events import Sample
from vmroc.introspect.features import read_tasks
from vmroc.introspect.kernel import GuestKernel, KernelMismatchError, NotAGuestError
from vmroc.introspect.sampler import Sampler, symbols_for
from vmroc.introspect.stream import stream
from vmroc.introspect.symbols import SymbolTable

pytestmark = pytest.mark.real

COUNTERS = ["vda_rd", "vda_rsec", "vda_wr", "vda_wsec", "eth0_rxp", "eth0_txp",
            "eth0_rxb", "eth0_txb"]


@contextlib.contextmanager
def paused(guest):
    """The guest stopped over QMP for the block: every reader sees the same moment."""
    with guest.qmp() as qmp:
        qmp.cmd("stop")
        # stop returns once the vCPUs are paused; QEMU's own word for it before any read
        assert qmp.cmd("query-status")["running"] is False
    try:
        yield
    finally:
        with guest.qmp() as qmp:
            qmp.cmd("cont")


def next_status(guest, after_up: float):
    return guest.wait_for_status(timeout=30, where=lambda s: s["up"] > after_up)


@pytest.mark.parametrize("backend", ["accel", "mmap"])  # the C reader and its Python twin
def test_features_match_the_guests_own_status_line(lab, backend):
    g = lab.guest("g2")
    before = next_status(g, 0)
    with Sampler(g, backend=backend) as s:
        sample = s.sample()
    after = next_status(g, next_status(g, before["up"])["up"])  # two lines later: read after us
    f = sample.features
    assert sample.consistent, sample.flags
    assert len(f) >= 30
    for name in COUNTERS:  # monotonic counters: bracketed by the lines around the sample
        assert before[name] <= f[name] <= after[name], (name, before[name], f[name], after[name])
    assert abs(f["tasks"] - before["tasks"]) <= 4
    assert abs(f["memfree_kb"] - before["memfree_kb"]) <= 4096
    assert abs(f["load1"] - before["load1"]) <= 0.35
    assert abs(f["uptime_s"] - (before["up"] + after["up"]) / 2) <= 5
    pids = {t["pid"]: t for t in sample.tasks}
    assert pids[1]["comm"] == "init" and pids[2]["comm"] == "kthreadd"
    assert any(t["comm"] == "httpd" for t in sample.tasks)


def test_kernel_log_lines_written_in_the_guest_appear(lab):
    g = lab.guest("g1")
    with Sampler(g) as s:
        s.sample()  # everything up to now
        line = g.wait_for_status(timeout=30)
        new: list[str] = []
        deadline = time.monotonic() + 45  # a heartbeat every 5 status lines (slower under load)
        beats: list[str] = []
        while len(beats) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            new += s.sample().log
            beats = [x for x in new if "vmroc-guest: heartbeat" in x and "name=g1" in x]
    assert len(beats) >= 2, new
    assert len(set(new)) == len(new), "a log line was returned twice"
    numbers = [int(b.split("heartbeat ")[1].split()[0]) for b in beats]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    # the guest writes heartbeat k after its 5k-th status line of this boot: the newest
    # one read from RAM is within a few of what the serial console has printed so far
    lines = g.status_lines()
    boot = max((i for i in range(1, len(lines)) if lines[i]["up"] < lines[i - 1]["up"]),
               default=0)
    n = int(beats[-1].split("heartbeat ")[1].split()[0])
    assert (len(lines) - boot) // 5 - 3 <= n <= (len(lines) - boot) // 5 + 1, \
        (n, len(lines) - boot, line["up"])


def test_tcp_counters_see_packet_loss_the_nic_does_not(lab, tmp_path):
    """Frames dropped on the bridge never reach eth0's counters; TCP retransmits them."""
    from vmroc.inject import FaultSpec, Ledger, run
    g = lab.guest("g3")
    lossy = ("tcp_retrans", "tcp_timeouts")
    with Sampler(g) as s:
        before = s.sample().features
        run(FaultSpec("net-drop", ["g3"], {"loss": 100}, duration=4), lab,
            Ledger(tmp_path / "ledger.jsonl", kafka=False))
        after = s.sample().features
    assert sum(after[k] - before[k] for k in lossy) >= 1, {k: (before[k], after[k]) for k in lossy}
    assert after["eth0_rxdrop"] == before["eth0_rxdrop"]


def test_task_lists_agree_across_backends_on_a_paused_guest(lab):
    g = lab.guest("g3")
    samplers = {b: Sampler(g, backend=b) for b in ("accel", "mmap", "libvmi", "volatility")}
    try:
        with paused(g):
            lists = {b: sorted((t["pid"], t["ppid"], t["comm"]) for t in s.sample().tasks)
                     for b, s in samplers.items()}
    finally:
        for s in samplers.values():
            s.close()
    assert len(lists["mmap"]) > 20
    assert lists["accel"] == lists["mmap"] == lists["libvmi"] == lists["volatility"]


def typed(d: dict) -> list:
    return [(k, type(v), v) for k, v in d.items()]


def test_accel_reads_exactly_what_mmap_reads(lab):
    """The C reader is a faster copy of the Python one: the whole sample (every feature,
    in the same order and of the same type, the task table, the new log lines) is made
    in C and equals the pure-Python sample of the paused guest, also for a second sample
    that only reads what is new."""
    g = lab.guest("g2")
    with Sampler(g) as fast, Sampler(g, backend="mmap") as slow:
        assert fast.backend == "accel"  # the default once built
        assert [step[0] for step in fast.schedule] == ["c"]  # every group in one C call
        for first in (True, False):
            with paused(g):
                a, b = fast.sample(), slow.sample()
            assert a.consistent and b.consistent, (a.flags, b.flags)
            assert typed(a.features) == typed(b.features) and len(a.features) >= 30
            assert len(a.tasks) == len(b.tasks) > 20
            assert [typed(t) for t in a.tasks] == [typed(t) for t in b.tasks]
            assert a.log == b.log and (a.log or not first)  # first: the whole ring
            assert (a.seq, a.flags, a.guest) == (b.seq, b.flags, b.guest)
            checked = Sample(**{f.name: getattr(a, f.name) for f in dataclasses.fields(a)})
            assert checked == a  # what C built passes the event's own checks
            time.sleep(0.3)


def test_libvmi_backend_gives_the_same_features(lab):
    g = lab.guest("g3")
    with Sampler(g, backend="libvmi") as lv, Sampler(g, backend="mmap") as mm:
        with paused(g):  # one pause around both reads: the same moment for both
            a, b = lv.sample(), mm.sample()
    assert set(a.features) == set(b.features)
    differ = {k: (a.features[k], b.features[k]) for k in a.features
              if a.features[k] != b.features[k]}
    assert not differ, differ  # the same paused RAM read twice: every feature, exactly
    assert a.tasks == b.tasks and a.log == b.log


def test_pause_mode_leaves_the_guest_running(lab):
    g = lab.guest("g2")
    with Sampler(g, pause=True) as s:
        assert s.sample().consistent
    assert g.state() == "running"


def test_streaming_three_guests_at_10hz(lab):
    got: list = []
    stats = stream(lab.guests, got.append, rate=10, count=30)
    assert {s.guest for s in got} == {"g1", "g2", "g3"} and len(got) >= 90
    assert stats.rate() >= 8.0, stats.to_json()
    assert sum(stats.down.values()) == 0


def test_sample_cli_json_and_unknown_guest(lab):
    cmd = [sys.executable, "-m", "vmroc.cli", "sample", "--lab", lab.name]
    out = subprocess.run(cmd + ["--guest", "g1", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    sample = json.loads(out.stdout)
    assert sample["guest"] == "g1" and sample["features"]["tasks"] > 20
    assert {"pid", "ppid", "comm", "state"} <= set(sample["tasks"][0])
    bad = subprocess.run(cmd + ["--guest", "g9"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"GuestError: unknown guest 'g9'; lab {lab.name} has g1, g2, g3"]


def test_ram_file_that_is_not_a_guest(tmp_path, lab):
    fake = tmp_path / "zeros.ram"
    with open(fake, "wb") as f:
        f.truncate(64 << 20)
    table = SymbolTable.load(symbols_for(lab.guest("g1")).isf)
    with pytest.raises(NotAGuestError, match="no kernel matching"):
        GuestKernel(fake, table, "fake")


@pytest.fixture(scope="module")
def big_cloud_guest():
    """One cloud-kernel guest with 3 GiB RAM: q35 puts its top GiB above 4 GiB."""
    lab = Lab.up(1, name="tbig", ram_mb=3072, flavour="cloud", accel="tcg")
    try:
        yield lab.guests[0]
    finally:
        lab.down()


def test_big_cloud_guest_gives_a_correct_task_list(big_cloud_guest):
    g = big_cloud_guest
    line = g.wait_for_status(timeout=120)
    with Sampler(g) as s, Sampler(g, backend="mmap") as reference:
        with paused(g):
            sample, same = s.sample(), reference.sample()
        ram = s.kernel.ram
    assert ram.high == 1 << 30  # the layout really is split
    assert sample.consistent, sample.flags
    assert sample.backend == "accel" and (sample.tasks, sample.features) == (same.tasks,
                                                                             same.features)
    assert abs(sample.features["tasks"] - line["tasks"]) <= 4
    comms = {t["pid"]: t["comm"] for t in sample.tasks}
    assert comms[1] == "init" and "httpd" in comms.values()
    assert abs(sample.features["memfree_kb"] - line["memfree_kb"]) <= 8192


def test_symbols_of_another_kernel_are_refused(big_cloud_guest, lab):
    generic = SymbolTable.load(symbols_for(lab.guest("g1")).isf)
    with pytest.raises(KernelMismatchError, match="symbols are for"):
        GuestKernel(big_cloud_guest.ram_path, generic, "tbig-g1")


def test_kaslr_is_found_without_vmcoreinfo_too(lab):
    """The banner + page-table probe finds the same KASLR offset and the same tasks."""
    g = lab.guest("g1")
    symbols = SymbolTable.load(symbols_for(g).isf)
    tasks_of = lambda k: sorted((t["pid"], t["comm"]) for t in read_tasks(k)[1])  # noqa: E731
    with paused(g):
        note = GuestKernel(g.ram_path, symbols, "g1")
        probe = GuestKernel(g.ram_path, symbols, "g1", use_vmcoreinfo=False)
        assert (note.source, probe.source) == ("vmcoreinfo", "banner-probe")
        assert probe.kaslr == note.kaslr and probe.mem.phys_base == note.mem.phys_base
        assert tasks_of(probe) == tasks_of(note) and len(tasks_of(note)) > 20


def test_stream_marks_a_dead_guest_down_and_goes_on(lab):
    """g3 is killed mid-stream and relaunched: g1 keeps flowing, g3 comes back."""
    victim = lab.guest("g3")
    got: list = []
    stop = threading.Event()
    killed_at: list[int] = []

    def kill_relaunch_stop():
        time.sleep(1.0)
        victim.kill()
        time.sleep(0.5)
        killed_at.append(sum(s.guest == "g3" for s in got))
        victim.launch()
        victim.wait_for_status(timeout=120)
        time.sleep(3.0)
        stop.set()

    helper = threading.Thread(target=kill_relaunch_stop)
    helper.start()
    try:
        stats = stream([lab.guest("g1"), victim], got.append, rate=10, stop=stop,
                       retry_down_s=1.0)
    finally:
        stop.set()
        helper.join()
    assert stats.down["g3"] >= 1
    assert stats.samples["g1"] >= 50, stats.to_json()  # g1 kept going throughout
    assert stats.samples["g3"] > killed_at[0] + 5, stats.to_json()  # g3 was picked up again
    assert victim.state() == "running"


def test_sample_publish_puts_samples_on_the_bus(lab, broker):
    """`vmroc sample --publish` streams every guest to vmroc.samples, keyed by guest."""
    from vmroc.bus import SAMPLES, Consumer

    with Consumer(SAMPLES, group=None, from_beginning=False) as inp:
        inp.poll(timeout=1.0)  # assigned at the current end: only what follows is read
        proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "sample", "--lab", lab.name,
                               "--publish", "--rate", "10", "--count", "5", "--json"],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stderr.strip().splitlines()[-1])
        assert report["samples"] == {"g1": 5, "g2": 5, "g3": 5}
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 15 and time.monotonic() < deadline:
            got += inp.poll(timeout=1.0)
    by_guest = {}
    for m in got:
        assert m.key == m.event.guest
        by_guest.setdefault(m.event.guest, []).append(m.event.seq)
    assert {g: sorted(s) for g, s in by_guest.items()} == {g: [1, 2, 3, 4, 5]
                                                           for g in ("g1", "g2", "g3")}

