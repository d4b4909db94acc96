"""The etcd workload's host side without guests: choosing it, what the guests are told,
the status timeline, and the cluster-health wait."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from vmroc.deploy import LabError
from vmroc.deploy import lab as lab_mod
from vmroc.deploy.etcd import check_writes
from vmroc.deploy.image import BUSYBOX
from vmroc.deploy.status import StatusTimeline


def _line(name: str, up: float, **kv) -> str:
    extra = " ".join(f"{k}={v}" for k, v in kv.items())
    return f"VMROC1 name={name} up={up:.2f} {extra} http_ok=1 disk_ok=1 cpu_ops=1\r\n"


def _fake_lab(tmp_path, monkeypatch, workload: str = "etcd", n: int = 3) -> lab_mod.Lab:
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    lab = lab_mod.Lab("fake")
    ips = [f"10.77.0.{10 + i}" for i in range(1, n + 1)]
    lab.state = {"name": "fake", "accel": "tcg", "net": "socket", "mcast": "230.77.0.1:2",
                 "workload": workload, "guests": [
                     {"name": f"g{i}", "index": i, "ip": ips[i - 1],
                      "peer": ips[1] if i == 1 else ips[0], "mac": "52:54:00:77:00:11",
                      "tap": f"tap-g{i}", "ram_mb": 256, "vcpus": 1, "kernel": "k",
                      "initrd": "i", "disk": "d", "release": "r", "flavour": "generic",
                      "ram_path": str(tmp_path / f"g{i}.ram")} for i in range(1, n + 1)]}
    lab.save()
    return lab


def test_unknown_workload_and_too_small_a_cluster_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    with pytest.raises(LabError, match=r"^unknown workload 'redis'; use one of web, etcd$"):
        lab_mod.Lab.up(3, name="x", workload="redis")
    with pytest.raises(LabError, match="etcd needs at least 3 guests"):
        lab_mod.Lab.up(2, name="x", workload="etcd")
    assert not (tmp_path / "run" / "lab-x").exists()  # refused before anything was made


def test_etcd_guests_are_told_the_cluster_and_depend_on_every_member(tmp_path, monkeypatch):
    lab = _fake_lab(tmp_path, monkeypatch)
    append = lab.guest("g2").qemu_command()[lab.guest("g2").qemu_command().index("-append") + 1]
    assert "vmroc.workload=etcd" in append
    assert "vmroc.cluster=g1=10.77.0.11,g2=10.77.0.12,g3=10.77.0.13" in append
    assert lab.dependencies() == {"g1": ["g2", "g3"], "g2": ["g1", "g3"], "g3": ["g1", "g2"]}
    web = _fake_lab(tmp_path, monkeypatch, workload="web")
    assert "workload" not in web.guest("g1").qemu_command()[-1]
    assert not any("vmroc.workload" in a for a in web.guest("g1").qemu_command())
    assert web.dependencies() == {"g1": ["g2"], "g2": ["g1"], "g3": ["g1"]}
    assert check_writes(lab) is None  # socket network: the host has no path to the members


def test_cluster_wait_names_the_guests_without_a_leader(tmp_path, monkeypatch):
    lab = _fake_lab(tmp_path, monkeypatch)
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(lab_mod.Guest, "alive", lambda self: True)
    for i, lead in ((1, 2), (2, 2), (3, 0)):
        (lab.run_dir / f"g{i}.serial.log").write_text(
            _line(f"g{i}", 5, etcd_lead=lead, etcd_wok=3))
    with pytest.raises(LabError, match=r"did not become healthy in 1s \(g3 sees leader none\)"):
        lab.wait_cluster(timeout=1)
    (lab.run_dir / "g3.serial.log").write_text(_line("g3", 6, etcd_lead=2, etcd_wok=1))
    assert lab.wait_cluster(timeout=1) == "g2"


def test_status_timeline_times_lines_as_read_and_follows_a_relaunch(tmp_path):
    log = tmp_path / "g1.serial.log"
    log.write_text("".join(_line("g1", up) for up in (1, 2, 3)))
    t0 = time.time()
    timeline = StatusTimeline({"g1": log}, interval=0.02, history=2).start()
    history = list(timeline.lines["g1"])
    assert [s["up"] for _, s in history] == [2, 3]
    assert history[1][0] - history[0][0] == pytest.approx(1.0, abs=0.01)  # timed back by uptime
    time.sleep(0.1)
    with log.open("a") as f:
        f.write(_line("g1", 4)[:20])  # half a line: not taken until it is complete
        f.flush()
        time.sleep(0.1)
        assert [s["up"] for _, s in timeline.lines["g1"]] == [2, 3]
        f.write(_line("g1", 4)[20:])
    time.sleep(0.1)
    log.write_text(_line("g1", 0.5))  # relaunched: a new, shorter log
    lines = timeline.stop()["g1"]
    assert [s["up"] for _, s in lines] == [2, 3, 4, 0.5]
    assert all(ts >= t0 + 0.05 for ts, _ in lines[2:])
    assert [ts for ts, _ in lines] == sorted(ts for ts, _ in lines)


def test_a_campaign_names_its_workload_and_refuses_another_lab(tmp_path, monkeypatch):
    from vmroc.inject.campaign import Campaign
    from vmroc.inject.errors import SpecError

    plan = {"name": "c", "workload": "etcd",
            "faults": [{"at": "0s", "kind": "guest-suspend", "guest": "g1", "duration": "5s"}]}
    campaign = Campaign.from_dict(plan)
    assert campaign.workload == "etcd" and campaign.plan()["workload"] == "etcd"
    web = _fake_lab(tmp_path, monkeypatch, workload="web")
    with pytest.raises(SpecError, match=r"needs a lab with the etcd workload; lab fake runs web "
                                        r"\(`vmroc lab up --workload etcd`\)"):
        campaign.prepare(web, ledger=None)
    with pytest.raises(SpecError, match="unknown workload 'mysql'; use one of web, etcd"):
        Campaign.from_dict({**plan, "workload": "mysql"})


def test_a_cluster_that_never_becomes_healthy_takes_the_lab_down(tmp_path, monkeypatch):
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    calls = []

    def create(self, n, ram_mb, vcpus, image, accel, say, kernel_args=""):
        self.state = _fake_lab(tmp_path, monkeypatch).state
        self.save()

    def never(self, timeout=0):
        raise LabError("lab x: the etcd cluster did not become healthy in 1s (g2 sees leader "
                       "none)")

    monkeypatch.setattr(lab_mod, "_check_memory", lambda *a: None)
    monkeypatch.setattr(lab_mod, "build_image", lambda *a, **k: type(
        "I", (), {"workload": "etcd"})())
    monkeypatch.setattr(lab_mod, "_choose_accel", lambda *a: "tcg")
    monkeypatch.setattr(lab_mod.Lab, "_create", create)
    monkeypatch.setattr(lab_mod.Guest, "alive", lambda self: self.name in calls)
    monkeypatch.setattr(lab_mod.Guest, "launch", lambda self: calls.append(self.name))
    monkeypatch.setattr(lab_mod.Guest, "wait_for_status", lambda self, *a, **k: None)
    monkeypatch.setattr(lab_mod.Lab, "wait_cluster", never)
    monkeypatch.setattr(lab_mod.Lab, "down", lambda self, progress=None: calls.append("down"))
    with pytest.raises(LabError, match="g2 sees leader none"):
        lab_mod.Lab.up(3, name="x", workload="etcd")
    assert calls[-1] == "down" and calls[:3] == ["g1", "g2", "g3"]


class _FakeCluster:
    """Members answering etcd's range calls from a history of (revision, key, value):
    each member serves the store as of its own revision; None = not answering."""

    def __init__(self, history, at):
        self.history, self.at, self.calls = history, at, []

    def __call__(self, lab, member, path, body, timeout=5.0):
        import base64
        self.calls.append((member, body.get("revision")))
        if path == "/v3/maintenance/status":
            return {"leader": "1"}
        if path == "/v3/cluster/member/list":
            return {"members": [{"ID": "1", "name": "g1"}]}
        at = self.at[member].pop(0) if isinstance(self.at[member], list) else self.at[member]
        if at is None:
            return None
        rev = int(body.get("revision") or at)
        if rev > at:
            return None  # etcd refuses a revision beyond its history
        store = {}
        for r, key, value in self.history:
            if r <= rev:
                store[key] = value
        b64 = lambda t: base64.b64encode(str(t).encode()).decode()  # noqa: E731
        return {"header": {"revision": str(rev)},
                "kvs": [{"key": b64(k), "value": b64(v)} for k, v in sorted(store.items())]}


def test_writes_check_tells_a_stale_read_from_a_lost_write(tmp_path, monkeypatch):
    from vmroc.deploy import etcd

    lab = _fake_lab(tmp_path, monkeypatch)
    lab.state["net"] = "tap"
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    for g, acked, rev in (("g1", 481, 30), ("g2", 7, 31), ("g3", 0, 0)):
        (lab.run_dir / f"{g}.serial.log").write_text(
            _line(g, 5, etcd_acked=acked, etcd_arev=rev))
    history = [(10, "/vmroc/g1", 477), (20, "/vmroc/g2", 5), (30, "/vmroc/g1", 481),
               (31, "/vmroc/g2", 7), (32, "/vmroc/g1", 482)]
    # g2 answers from before the acknowledged writes (a stale read); g3 answers on its
    # third call (just resumed); g1 is current
    fake = _FakeCluster(history, {"g1": 32, "g2": 25, "g3": [None, None, 32]})
    monkeypatch.setattr(etcd, "member_call", fake)
    check = etcd.check_writes(lab, settle_s=5)
    assert check["lost"] == [] and check["unreachable"] == [] and check["unverified"] == []
    assert check["stale"] == [
        {"member": "g2", "key": "/vmroc/g1", "value": 477, "acked": 481, "revision": 25,
         "acked_revision": 30},
        {"member": "g2", "key": "/vmroc/g2", "value": 5, "acked": 7, "revision": 25,
         "acked_revision": 31}]
    assert check["checked"] == 9 and check["agree"] is True
    assert ("g1", "30") in fake.calls and ("g1", "31") in fake.calls  # read at the history
    # a write whose revision holds another value was lost, even though a later write of
    # the same key (482) would make the current value look fine
    history[2] = (30, "/vmroc/g3", 1)
    fake = _FakeCluster(history, {"g1": 32, "g2": 32, "g3": None})
    monkeypatch.setattr(etcd, "member_call", fake)
    check = etcd.check_writes(lab, settle_s=1)
    assert check["stale"] == [] and check["unreachable"] == ["g3"]
    assert check["lost"] == [{"key": "/vmroc/g1", "acked": 481, "acked_revision": 30,
                              "value": 477}]
    # when no member answers, a write is unverified, not lost
    monkeypatch.setattr(etcd, "member_call", _FakeCluster(history, dict.fromkeys(
        ("g1", "g2", "g3"))))
    check = etcd.check_writes(lab, settle_s=0.6)
    assert check["lost"] == [] and check["unverified"] == ["/vmroc/g1", "/vmroc/g2"]
    assert check["unreachable"] == ["g1", "g2", "g3"]


def test_writes_check_reports_a_cluster_that_lost_its_history_once(tmp_path, monkeypatch):
    from vmroc.deploy import etcd

    lab = _fake_lab(tmp_path, monkeypatch)
    lab.state["net"] = "tap"
    lab.run_dir.mkdir(parents=True, exist_ok=True)

    def status(acked, rev):
        for g in ("g1", "g2", "g3"):
            (lab.run_dir / f"{g}.serial.log").write_text(
                _line(g, 5, etcd_acked=acked if g == "g1" else 0, etcd_arev=rev))

    status(481, 30)
    monkeypatch.setattr(etcd, "member_call", _FakeCluster(
        [(30, "/vmroc/g1", 481)], {"g1": 32, "g2": 32, "g3": 32}))
    assert etcd.check_writes(lab, settle_s=1)["lost"] == []
    # every member lost its RAM at once: a new cluster, whose client started again at 1
    status(3, 5)
    monkeypatch.setattr(etcd, "member_call", _FakeCluster(
        [(3, "/vmroc/g1", 1), (5, "/vmroc/g1", 3)], {"g1": 6, "g2": 6, "g3": 6}))
    check = etcd.check_writes(lab, settle_s=1)
    assert check["lost"] == [{"key": "/vmroc/g1", "acked": 481, "acked_revision": 30,
                              "value": None}]  # the history ends before revision 30
    assert check["stale"] == [] and check["unverified"] == []
    assert etcd.check_writes(lab, settle_s=1)["lost"] == []  # reported once
    # a client that fell back while its earlier write is still in the history: not lost
    status(481, 30)
    monkeypatch.setattr(etcd, "member_call", _FakeCluster(
        [(30, "/vmroc/g1", 481), (31, "/vmroc/g1", 470)], {"g1": 31, "g2": 31, "g3": 31}))
    etcd.check_writes(lab, settle_s=1)
    status(470, 31)
    assert etcd.check_writes(lab, settle_s=1)["lost"] == []


# -- the guest's member loop (deploy/guest/init.sh), run by busybox sh with stubs ---------
INIT_SH = Path(__file__).resolve().parents[2] / "deploy" / "guest" / "init.sh"


def _member_loop(tmp_path, runs: int, seconds_per_run: int) -> list[tuple[str, list[str]]]:
    """(start state, data files seen) of each of ``runs`` starts of ``etcd_member`` whose
    etcd stub writes a WAL file and exits after ``seconds_per_run`` (a fake clock)."""
    assert BUSYBOX.exists(), f"{BUSYBOX} (the guest's shell) is missing: bash deploy/setup.sh"
    text = INIT_SH.read_text()
    start = text.index("etcd_member() {")
    body = text[start:text.index("\n}\n", start) + 3]
    script = f"""
NAME=g1; IP=10.0.0.1; CLUSTER="g1=10.0.0.1,g2=10.0.0.2"; ETCD_DATA={tmp_path}/data
LOG={tmp_path}/log; CLOCK={tmp_path}/clock; echo 0 > $CLOCK
etcd_join() {{ echo new; }}
etcd_log() {{ cat > /dev/null; }}
date() {{ cat $CLOCK; }}
sleep() {{ [ $(wc -l < $LOG) -ge {runs} ] && exit 0; }}
etcd() {{
    while [ "$1" != --initial-cluster-state ]; do shift; done
    echo "$2 $(ls $ETCD_DATA/member 2>/dev/null | tr '\\n' ' ')" >> $LOG
    mkdir -p $ETCD_DATA/member; touch $ETCD_DATA/member/wal-$(wc -l < $LOG)
    echo $(($(cat $CLOCK) + {seconds_per_run})) > $CLOCK
}}
touch $LOG
{body}
etcd_member > /dev/null
"""
    subprocess.run([str(BUSYBOX), "sh", "-c", script], check=True, timeout=30)
    rows = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    return [(row[0], row[1:]) for row in rows]


def test_a_member_restarted_after_its_process_died_keeps_its_data(tmp_path):
    """An OOM kill used to wipe the member's data before the restart: a mem-pressure group
    on every member then started a new history and lost acknowledged writes."""
    starts = _member_loop(tmp_path, runs=4, seconds_per_run=60)
    assert starts == [("new", []), ("existing", ["wal-1"]), ("existing", ["wal-1", "wal-2"]),
                      ("existing", ["wal-1", "wal-2", "wal-3"])]


def test_data_that_keeps_failing_fast_is_dropped_and_the_member_rejoins(tmp_path):
    starts = _member_loop(tmp_path, runs=7, seconds_per_run=1)
    states = [s for s, _ in starts]
    assert states == ["new", "existing", "existing", "existing", "existing", "new", "existing"]
    assert starts[5][1] == [] and starts[6][1] == ["wal-6"]
