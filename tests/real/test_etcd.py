"""A real etcd cluster on three real guests (``vmroc lab up --workload etcd``): it comes
up with one leader; suspending the leader elects a new one and writes resume during the
fault; a partitioned follower leaves the majority writing; after each heal the members
agree and every acknowledged write is read back through every member.

The session's web lab (if up) is paused meanwhile (``session_lab_paused``)."""

from __future__ import annotations

import pytest

from vmroc.deploy import Lab
from vmroc.deploy.etcd import check_writes
from vmroc.inject import FaultSpec, Ledger, run

from ..fixtures_lab import LAB_NAME, require, session_lab_paused

pytestmark = pytest.mark.real

ETCD_LAB = f"{LAB_NAME}-etcd"


@pytest.fixture(scope="module")
def etcd_lab():
    require("qemu-system-x86_64", "qemu-system-x86")
    with session_lab_paused():
        Lab(ETCD_LAB).down()
        lab = Lab.up(3, name=ETCD_LAB, workload="etcd")  # waits for an agreed leader
        try:
            yield lab
        finally:
            lab.down()


def _leader(lab: Lab) -> str:
    return lab.wait_cluster(timeout=60)


def _assert_whole(lab: Lab) -> dict:
    check = check_writes(lab)
    assert check is not None, "the etcd lab has no network namespace to read from"
    assert check["unreachable"] == [], check
    assert check["agree"], f"members disagree on the leader: {check['leaders']}"
    assert check["checked"] == 9 and check["stale"] == [], check
    assert check["lost"] == [] and check["unverified"] == [], check
    return check


def test_cluster_comes_up_with_one_leader_and_keeps_every_write(etcd_lab):
    leader = _leader(etcd_lab)
    check = _assert_whole(etcd_lab)
    assert set(check["leaders"].values()) == {leader}
    for g in etcd_lab.guests:
        line = g.last_status()
        assert line["etcd_wok"] > 0 and line["etcd_rok"] > 0 and line["etcd_back"] == 0
        assert line["etcd_arev"] > 0  # the revision of its last acknowledged write


def test_suspended_leader_is_replaced_and_writes_resume(etcd_lab, tmp_path):
    old = _leader(etcd_lab)
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    duration = 25.0
    fault = run(FaultSpec("guest-suspend", [old], duration=duration), etcd_lab, ledger)
    assert fault.effective and fault.recovered, fault.result()
    recovered = [e for e in ledger.events(fault.id) if e.phase == "recovered"][0]
    fo = recovered.evidence["failover"]
    assert fo["leader_before"] == old
    assert fo["leader_changed"] and fo["leader_after"] not in (None, old), fo
    assert fo["election_s"] is not None and 0 < fo["election_s"] < duration, fo
    # the majority wrote again while the old leader was still suspended
    assert fo["writes_resumed_s"] < duration, fo
    # 3 s after the resume, every acknowledged write is in the history (read at the
    # revision its put returned). Reads right then may still be stale (etcd 3.4.23 after
    # a paused process: etcd-io/etcd#20418): 1 run in 3 here saw a client read below what
    # it had acknowledged. Stale reads are measured by bench/bench_failover.py and
    # discussed in docs/etcd.md, not asserted here.
    assert fo["writes"]["lost"] == [] and fo["writes"]["unverified"] == [], fo
    # once the resumed member has caught up (every guest names the new leader), every
    # acknowledged write reads back through every member
    new = _leader(etcd_lab)
    assert new != old
    _assert_whole(etcd_lab)


def test_partitioned_follower_leaves_the_majority_writing(etcd_lab, tmp_path):
    leader = _leader(etcd_lab)
    follower = next(g.name for g in etcd_lab.guests if g.name != leader)
    majority = [g for g in etcd_lab.guests if g.name != follower]
    before = {g.name: g.last_status() for g in etcd_lab.guests}
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    duration = 15.0
    fault = run(FaultSpec("net-partition", [follower], duration=duration), etcd_lab, ledger)
    assert fault.effective and fault.recovered, fault.result()
    fo = [e for e in ledger.events(fault.id) if e.phase == "recovered"][0].evidence["failover"]
    assert fo["leader_before"] == leader and not fo["leader_changed"], fo
    assert fo["writes_resumed_s"] < duration, fo  # no outage as long as the fault
    for g in majority:  # each majority client kept writing through the partition
        assert g.last_status()["etcd_wok"] - before[g.name]["etcd_wok"] >= 5
    assert fo["client_errors"] > 0, f"the cut-off member's client saw no error: {fo}"
    assert fo["history_violations"] == 0 and fo["writes"]["lost"] == [], fo
    assert fo["writes"]["stale"] == [], fo
    assert _leader(etcd_lab) == leader
    _assert_whole(etcd_lab)
