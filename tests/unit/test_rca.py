"""Root-cause ranking, incident grouping and scoring on synthetic anomalies."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vmroc.events import Anomaly, FaultEvent
from vmroc.rca import CausalRanker, Correlator, RCAError, feature_part, format_faults
from vmroc.rca.scorecard import score, summarize

TOPOLOGY = {"g2": ["g1"], "g3": ["g1"]}  # g2 and g3 call g1


def anomaly(guest, onset, **deviations) -> Anomaly:
    devs = {k.replace("__", "/"): v for k, v in deviations.items()}
    return Anomaly(guest=guest, ts=onset + 0.6, detector="robust", score=1.0,
                   features=list(devs), onset=onset, deviations=devs)


def test_features_and_faults_map_to_parts():
    assert [feature_part(f) for f in ("vda_wr/s", "eth0_rxp/s", "memfree_kb", "jiffies/s",
                                      "cpu_user_s/s", "log_errors/s", "samples/s",
                                      "log_disk/s", "log_memory/s", "log_cpu/s",
                                      "log_network/s")] == \
        ["disk", "network", "memory", "guest", "cpu", "guest", "guest", "disk", "memory",
         "cpu", "network"]
    for kind, level, part in (("disk-eio", "disk", "disk"), ("guest-suspend", "cluster", "guest"),
                              ("net-partition", "cluster", "network")):
        ev = FaultEvent(fault_id="f", kind=kind, level=level, phase="injected", ts=0)
        assert ev.broken_part() == part  # a ledger recorded before v0.2: no part in it
    ev = FaultEvent(fault_id="f", kind="net-partition", level="cluster", phase="injected", ts=0,
                    part="guest")
    assert ev.broken_part() == "guest"  # the part the ledger names wins


def test_the_guest_that_broke_first_is_the_cause_not_its_clients():
    ranker = CausalRanker(TOPOLOGY).fit()
    loud = {"eth0_rxp__s": 15, "eth0_txp__s": 15, "eth0_rxb__s": 15, "eth0_txb__s": 15}
    incident = [anomaly("g2", 101.0, **loud),  # the clients suffer later, and loudly,
                anomaly("g3", 101.5, **loud),
                anomaly("g1", 100.0, vda_ioms__s=9, vda_wr__s=9)]  # the server's disk first
    causes = ranker.rank(incident)
    assert causes[0].component == "g1/disk"
    assert causes[0].evidence["features"] == {"vda_ioms/s": 9, "vda_wr/s": 9}
    assert abs(sum(c.score for c in causes) - 1) < 1e-3
    unrelated = CausalRanker().fit().rank(incident)  # without the graph, the clients win
    assert unrelated[0].component in ("g2/network", "g3/network")


def test_several_moved_features_outvote_one_extreme_one():
    causes = CausalRanker().fit().rank([anomaly("g2", 0.0, tasks_zombie=60, rq_nr_running=11,
                                                tasks_running=10, vda_ioms__s=7)])
    assert [c.component for c in causes] == ["g2/cpu", "g2/disk"]


def test_a_component_noisy_in_history_needs_more_evidence():
    history = [anomaly("g1", t, eth0_rxp__s=9) for t in range(0, 100, 10)]
    incident = [anomaly("g1", 200.0, eth0_rxp__s=9, vda_wr__s=7)]
    assert CausalRanker().fit().rank(incident)[0].component == "g1/network"
    assert CausalRanker().fit(history).rank(incident)[0].component == "g1/disk"


def test_rank_before_fit_and_bad_settings_are_errors():
    with pytest.raises(RCAError, match="before fit"):
        CausalRanker().rank([anomaly("g1", 0, vda_wr__s=9)])
    with pytest.raises(RCAError, match="propagation"):
        CausalRanker(propagation=0).fit()


def fault(fid, kind, level, guest, phase, ts) -> FaultEvent:
    return FaultEvent(fault_id=fid, kind=kind, level=level, phase=phase, ts=ts,
                      target={"guests": [guest]}, campaign="c1")


def test_incidents_group_close_and_are_scored_by_the_scorecard():
    ledger = [fault("f1", "disk-eio", "disk", "g2", "injected", 100.0),
              fault("f1", "disk-eio", "disk", "g2", "effect-observed", 101.0),
              fault("f1", "disk-eio", "disk", "g2", "recovered", 112.0),
              fault("f2", "mem-pressure", "memory", "g3", "injected", 200.0),
              fault("f2", "mem-pressure", "memory", "g3", "recovered", 211.0),
              fault("f3", "net-drop", "network", "g3", "injected", 300.0),
              fault("f3", "net-drop", "network", "g3", "effect-observed", 300.5)]
    corr = Correlator(CausalRanker(TOPOLOGY).fit(), window_s=10, quiet_s=8)
    out = corr.add(anomaly("g2", 101.0, log_disk__s=20))
    out += corr.add(anomaly("g2", 104.0, vda_ioms__s=5, cpu_iowait_s__s=4))
    assert out == [] and corr.flush(108.0) == []           # still within quiet_s
    out += corr.flush(113.0)                                # quiet: closed
    out += corr.add(anomaly("g3", 200.7, memfree_kb=15))
    out += corr.add(anomaly("g1", 250.0, eth0_rxp__s=9))    # no fault then: a false alarm
    out += corr.flush()
    assert [i.guests for i in out] == [["g2"], ["g3"], ["g1"]]
    assert out[0].causes[0].component == "g2/disk" and len(out[0].anomalies) == 2
    scored = score(ledger, [], out, guests=["g1", "g2", "g3"], span=(90.0, 320.0))
    card = summarize(scored)
    # f2 had no observed effect: not scored; f3's window holds no anomaly: missed
    assert (card["faults"], card["effective"], card["detected"], card["ac1"]) == (3, 2, 1, 0.5)
    assert scored.false_alarms == [out[2].id]
    rows = {r["kind"]: r for r in scored.rows}
    assert rows["disk-eio"]["detection_latency_s"] == pytest.approx(1.6)
    assert rows["mem-pressure"]["incident"] == out[1].id and rows["mem-pressure"]["rank"] == 1
    assert rows["net-drop"]["detected"] is False and rows["net-drop"]["rank"] is None
    assert "disk-eio" in format_faults(scored.rows, card)


def test_an_incident_opened_by_noise_before_the_fault_is_still_the_faults():
    """The correlator knows nothing of the ledger: an incident a false alarm opened just
    before an injection, which the fault's anomalies then joined (the same guest's), is
    credited to the fault by the scorecard (and its ranking judged), not lost as a false
    alarm."""
    ledger = [fault("f1", "disk-eio", "disk", "g2", "injected", 100.0),
              fault("f1", "disk-eio", "disk", "g2", "effect-observed", 100.5),
              fault("f1", "disk-eio", "disk", "g2", "recovered", 110.0)]
    corr = Correlator(CausalRanker(TOPOLOGY).fit(), window_s=10, quiet_s=8)
    out = corr.add(anomaly("g2", 96.0, tasks_zombie=4))      # noise, 4 s before
    out += corr.add(anomaly("g2", 101.5, log_disk__s=20, vda_ioms__s=5))
    out += corr.flush()
    assert len(out) == 1 and out[0].guests == ["g2"] and len(out[0].anomalies) == 2
    scored = score(ledger, [], out, guests=["g1", "g2", "g3"], span=(90.0, 120.0))
    assert scored.false_alarms == [] and scored.rows[0]["incident"] == out[0].id
    assert scored.rows[0]["rank"] == 1


def test_concurrent_faults_on_two_guests_are_two_incidents_each_named():
    """Two faults injected together on different guests: one incident each, so each can
    have its own rank-1 cause (in one incident, one of them would have to be wrong)."""
    ledger = [fault("f1", "cpu-hog", "cpu", "g2", "injected", 100.0),
              fault("f1", "cpu-hog", "cpu", "g2", "effect-observed", 100.5),
              fault("f2", "disk-eio", "disk", "g3", "injected", 100.3),
              fault("f2", "disk-eio", "disk", "g3", "effect-observed", 100.8)]
    corr = Correlator(CausalRanker(TOPOLOGY).fit(), window_s=10, quiet_s=8)
    out = corr.add(anomaly("g2", 101.0, cpu_user_s__s=12, rq_nr_running=9))
    out += corr.add(anomaly("g3", 101.4, log_disk__s=20, vda_ioms__s=6))
    out += corr.flush()
    assert sorted(i.guests for i in out) == [["g2"], ["g3"]]
    card = summarize(score(ledger, [], out, guests=["g1", "g2", "g3"], span=(90.0, 120.0)))
    assert (card["ac1"], card["ac1_ceiling"], card["false_alarms"]) == (1.0, 1.0, 0)


def test_a_peers_symptoms_join_the_incident_of_the_guest_in_trouble():
    """A guest whose disk broke, and its clients timing out on it: one incident (the
    clients' network symptoms alone would be a false alarm of their own); a guest's
    own kernel line is never taken for a symptom. Symptoms on several guests with no
    cause of their own (a broken network) are one incident."""
    from vmroc.rca.incidents import group, is_symptom
    assert is_symptom("tcp_timeouts/s") and is_symptom("vda_ioms/s")
    assert not is_symptom("log_network/s") and not is_symptom("vda_rd/s")
    broken = anomaly("g1", 100.0, log_disk__s=20, tasks_blocked=5)
    clients = [anomaly("g2", 102.0, tcp_timeouts__s=4), anomaly("g3", 103.0, tcp_outrsts__s=3)]
    assert [sorted({a.guest for a in g}) for g in group([broken, *clients], 10.0)] == \
        [["g1", "g2", "g3"]]
    network = [anomaly("g1", 200.0, tcp_timeouts__s=4), anomaly("g2", 201.0, eth0_rxp__s=9),
               anomaly("g3", 260.0, tcp_timeouts__s=4)]       # a minute later: its own
    assert [sorted({a.guest for a in g}) for g in group(network, 10.0)] == \
        [["g1", "g2"], ["g3"]]
    own = anomaly("g2", 101.0, log_network__s=2, tcp_timeouts__s=4)  # a line of its own
    assert len(group([broken, own], 10.0)) == 2


def test_cli_bad_depends_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "rca", "run", "--depends", "g2"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("RCAError: bad --depends entry 'g2': use GUEST:SERVER, "
                                   "e.g. g2:g1")


def test_a_stopped_clock_explains_every_rate_of_the_guest():
    paused = anomaly("g2", 0.0, cpu_idle_s__s=10.6, jiffies__s=10.3, uptime_s__s=10.3,
                     rq_nr_switches__s=3.9, vm_pgfault__s=4.1, tasks_running=4)
    causes = CausalRanker().fit().rank([paused])
    assert causes[0].component == "g2/guest" and "cpu_idle_s/s" in causes[0].evidence["features"]
    busy = anomaly("g2", 0.0, cpu_user_s__s=10, rq_nr_switches__s=9, uptime_s__s=4)
    assert CausalRanker().fit().rank([busy])[0].component == "g2/cpu"  # clock fine: the CPU


def test_lost_packets_are_blamed_on_the_guest_whose_every_peer_suffers():
    # g3 loses packets: g3 and its server g1 retransmit; g1's other client g2 is fine
    both_ends = [anomaly("g1", 100.0, tcp_retrans__s=14, tcp_timeouts__s=12),
                 anomaly("g3", 100.4, tcp_retrans__s=12, tcp_timeouts__s=10)]
    assert CausalRanker(TOPOLOGY).fit().rank(both_ends)[0].component == "g3/network"


def test_a_kernel_error_line_outweighs_the_symptoms_around_it():
    # disk writes fail: the kernel logs an I/O error, and the failing writer busies the CPU
    eio = anomaly("g2", 0.0, log_disk__s=7, tasks_running=9, rq_nr_running=9,
                  cpu_system_s__s=5)
    assert CausalRanker().fit().rank([eio])[0].component == "g2/disk"
