"""Failover measured from etcd status lines (``inject.failover``) and its place in
``vmroc eval``, on timelines simulated here: 3 guests printing a status line per second
of uptime, read by the host a little later, each client writing every 0.3 s."""

from __future__ import annotations

import json
import random

import pytest

from vmroc.deploy.status import parse_line
from vmroc.events import FaultEvent
from vmroc.inject.failover import _offsets, measure, summarize, write_times

GUESTS = ("g1", "g2", "g3")
TICK = 0.1
BOOTED = {"g1": 1003, "g2": 2007, "g3": 505}  # uptime ticks at host time 0 (phases differ)


def simulate(seconds=30.0, *, lead=None, ok=None, paused=None, down=None, back=None,
             etcd=True, seed=1):
    """The lab, tick by tick of host time. ``lead(g, t)`` -> (leader index, term) as g
    sees it; ``ok(g, t)``: g's client can write and read; ``paused``/``down``: guest ->
    (start, end) host times its VM is frozen (uptime stops) / off (then boots: uptime and
    counters from 0); ``back``: guest -> host times its client sees a stale read.
    Returns the timeline and, per guest, the host times of its writes and errors."""
    lead = lead or (lambda g, t: (1, 2))
    ok = ok or (lambda g, t: True)
    rng = random.Random(seed)
    timeline, wrote, errors = {}, {}, {}
    for g in GUESTS:
        up, c = BOOTED[g], dict.fromkeys(("wok", "werr", "rok", "rerr", "back", "acked"), 0)
        wlast, lines, wrote[g], errors[g] = 0.0, [], [], []
        for k in range(round(seconds / TICK)):
            t = k * TICK
            a, b = (paused or {}).get(g, (-1, -1))
            if a <= t < b:
                continue
            a, b = (down or {}).get(g, (-1, -1))
            if a <= t < b:
                up, wlast, c = 0, 0.0, dict.fromkeys(c, 0)
                continue
            up += 1
            if any(abs(t - x) < TICK / 2 for x in (back or {}).get(g, ())):
                c["back"] += 1
            if up % 3 == 0:
                if ok(g, t):
                    c["wok"] += 1
                    c["acked"] += 1
                    wlast = up * TICK
                    wrote[g].append(t)
                else:
                    c["werr"] += 1
                    errors[g].append(t)
            elif up % 3 == 1:
                c["rok" if ok(g, t) else "rerr"] += 1
                if not ok(g, t):
                    errors[g].append(t)
            if up % 10 == 0:
                etc = ""
                if etcd:
                    ld, term = lead(g, t)
                    etc = (f"etcd_up={int(ld > 0)} etcd_lead={ld} etcd_term={term} "
                           f"etcd_wlast={wlast:.2f} "
                           + " ".join(f"etcd_{key}={n}" for key, n in c.items()))
                line = f"\x1b[0mVMROC1 name={g} up={up * TICK:.2f} load1=0.00 {etc} cpu_ops={k}"
                lines.append((t + rng.uniform(0.0, 0.08), parse_line(line)))
        timeline[g] = lines
    return timeline, wrote, errors


def assert_writes_mapped(timeline, wrote, paused_at=None):
    """Every write a guest's lines name is mapped to its host time (within the read
    delay of the status line), never after it; but a write made after a resume, before
    the guest's first line after it, is placed within a second after the pause began
    (``paused_at``: guest -> that time)."""
    for g, lines in timeline.items():
        for w in write_times(lines):
            at = (paused_at or {}).get(g)
            assert any(0 <= w - t <= 0.1 for t in wrote[g]) or (
                at is not None and at <= w < at + 1.1), (g, w)


def test_a_suspended_leader_is_replaced_and_writes_stop_until_then():
    # g1 (the leader) paused 8 s from t=10; g2 and g3 elect g2 at term 3 after 3 s, and
    # their clients write again from 13.5; g1's client fails from 10 until its resume
    def lead(g, t):
        return (2, 3) if t >= 13 and (g != "g1" or t >= 18) else (1, 2)

    def ok(g, t):
        return t < 10 or t >= (18 if g == "g1" else 13.5)

    timeline, wrote, errors = simulate(lead=lead, ok=ok, paused={"g1": (10, 18)})
    m = measure(timeline, t_inject=10.0, t_revert=18.0, targets=["g1"])
    assert (m["leader_before"], m["leader_after"], m["leader_changed"]) == ("g1", "g2", True)
    assert 3.0 <= m["election_s"] <= 4.1, m
    assert abs(m["unavailable_s"] - 3.5) < 1.0, m
    assert 3.5 <= m["writes_resumed_s"] <= 4.5, m
    assert 0.2 <= m["normal_gap_s"] <= 0.5, m
    assert m["client_errors"] == sum(map(len, errors.values())) > 30
    assert m["history_violations"] == 0
    assert m["lines"] == sum(map(len, timeline.values())) > 80
    json.dumps(m)
    assert_writes_mapped(timeline, wrote, paused_at={"g1": 10.0})
    # the fault targeted g1: a line of g1 naming a new leader is no election
    assert measure(timeline, t_inject=10.0, t_revert=18.0,
                   targets=["g1", "g2", "g3"])["election_s"] is None


def test_a_partitioned_follower_causes_no_election_and_only_its_own_errors():
    # g3 cut off 10 s: it campaigns alone (no leader, rising term); g1 and g2 go on
    def lead(g, t):
        return (0, 2 + int(t - 9)) if g == "g3" and 10 <= t < 20 else (1, 2)

    def ok(g, t):
        return not (g == "g3" and 10 <= t < 20)

    timeline, wrote, errors = simulate(lead=lead, ok=ok)
    m = measure(timeline, t_inject=10.0, t_revert=20.0, targets=["g3"])
    assert (m["leader_before"], m["leader_after"], m["leader_changed"]) == ("g1", "g1", False)
    assert m["election_s"] is None
    assert m["unavailable_s"] < 1.5 and m["writes_resumed_s"] == 0, m
    assert m["client_errors"] == len(errors["g3"]) > 50
    assert not errors["g1"] and not errors["g2"]
    assert_writes_mapped(timeline, wrote)


def test_a_reboot_restarts_the_counters_and_nothing_counts_negative():
    # g2 off from 10 to 15, then boots with fresh counters; errors before the fault
    # (3-5 s) do not count, those after its boot (15-17 s) do; one stale read before
    # the fault and one after (the counter is 1 both times, yet it grew)
    def ok(g, t):
        return not (g == "g2" and (3 <= t < 5 or 15 <= t < 17))

    def lead(g, t):
        return (0, 0) if g == "g2" and t < 17 else (1, 2)

    timeline, wrote, errors = simulate(lead=lead, ok=ok, down={"g2": (10, 15)},
                                       back={"g2": (4.0, 20.0)})
    ups = [s["up"] for _, s in timeline["g2"]]
    assert min(ups[ups.index(max(ups)):]) < 3  # the uptime did restart
    m = measure(timeline, t_inject=10.0, t_revert=15.0, targets=["g2"])
    assert m["client_errors"] == len([t for t in errors["g2"] if t >= 10]) > 5
    assert m["history_violations"] == 1
    assert m["election_s"] is None and m["leader_changed"] is False
    assert_writes_mapped(timeline, wrote)


def test_a_paused_guest_gets_a_new_offset_and_its_old_writes_keep_their_time():
    # g2 paused 6 s; after its resume its client fails 3 s more, so its lines at 16-19
    # still name a write from before the pause, which must stay before the pause
    def ok(g, t):
        return not (g == "g2" and 10 <= t < 19)

    timeline, wrote, _ = simulate(ok=ok, paused={"g2": (10, 16)})
    offsets = _offsets(timeline["g2"])
    assert offsets[-1] - offsets[0] == pytest.approx(6.0, abs=0.1)
    g2 = write_times(timeline["g2"])
    assert not [w for w in g2 if 10 <= w < 19], g2
    assert_writes_mapped(timeline, wrote)
    m = measure(timeline, t_inject=10.0, t_revert=16.0, targets=["g2"])
    assert m["unavailable_s"] < 1.5 and m["election_s"] is None

    # a line the host read late (with the next one) is no pause: the offsets stay
    late = list(timeline["g1"])
    late[5] = (late[6][0], late[5][1])
    assert _offsets(late) == _offsets(timeline["g1"])
    assert max(_offsets(late)) - min(_offsets(late)) < 0.1


def test_writes_that_never_resume_have_no_resume_time():
    timeline, _, _ = simulate(ok=lambda g, t: t < 10, lead=lambda g, t: (1, 2))
    m = measure(timeline, t_inject=10.0, t_revert=20.0, targets=["g1"])
    assert m["writes_resumed_s"] is None and m["unavailable_s"] > 18, m
    # t_end cuts the timeline
    cut = measure(timeline, t_inject=10.0, t_revert=20.0, targets=["g1"], t_end=15.0)
    # (a gap still open at the last line counts up to a line period before it)
    assert cut["lines"] < m["lines"] and 2.5 < cut["unavailable_s"] < 4.5, cut


def test_a_web_timeline_has_no_failover():
    timeline, _, _ = simulate(etcd=False)
    assert timeline["g1"] and "etcd_lead" not in timeline["g1"][0][1].values
    assert measure(timeline, t_inject=10.0, t_revert=20.0, targets=["g1"]) is None
    assert measure({}, t_inject=10.0, t_revert=20.0, targets=[]) is None


def fo(election, unavailable, resumed, errors=0, violations=0):
    return {"leader_before": "g1", "leader_after": "g2" if election else "g1",
            "leader_changed": election is not None, "election_s": election,
            "unavailable_s": unavailable, "writes_resumed_s": resumed, "normal_gap_s": 0.3,
            "client_errors": errors, "history_violations": violations, "lines": 90}


def test_summarize_per_kind():
    rows = [{"kind": "guest-suspend", "failover": fo(2.0, 3.0, 3.5, 10)},
            {"kind": "guest-suspend", "failover": fo(4.0, 5.0, 5.5, 20, 1)},
            {"kind": "guest-suspend", "failover": {
                **fo(None, 1.0, 0.0, 3), "writes": {
                    "lost": [{"key": "/vmroc/g1", "value": 4, "acked": 5}],
                    "stale": [{"member": "g2", "key": "/vmroc/g1", "value": 4, "acked": 5},
                              {"member": "g3", "key": "/vmroc/g1", "value": 4, "acked": 5}]}}},
            {"kind": "net-partition", "failover": fo(None, 0.5, 0.0, 7)},
            {"kind": "disk-eio", "failover": None}, {"kind": "disk-eio", "failover": {}}]
    out = summarize(rows)
    assert list(out) == ["guest-suspend", "net-partition"]
    s = out["guest-suspend"]
    assert (s["n"], s["elections"], s["election_median_s"], s["election_max_s"]) == (
        3, 2, 3.0, 4.0)
    assert (s["unavailable_median_s"], s["unavailable_max_s"]) == (3.0, 5.0)
    assert (s["writes_resumed_median_s"], s["writes_resumed_max_s"]) == (3.5, 5.5)
    assert (s["client_errors"], s["history_violations"], s["lost_writes"]) == (33, 1, 1)
    assert s["stale_reads"] == 2
    p = out["net-partition"]
    assert p["lost_writes"] == 0 and p["stale_reads"] == 0
    assert (p["n"], p["elections"], p["election_median_s"], p["election_max_s"]) == (
        1, 0, None, None)
    assert summarize([]) == {}


# -- vmroc eval ------------------------------------------------------------------------------

def test_eval_reports_failover_per_kind_from_the_recovered_events(tmp_path, capsys):
    from vmroc.cli import main
    from vmroc.service.eval_cli import format_scorecard
    from vmroc.service.evaluation import failover_rows

    from .test_scorecard import lab_stream, ledger, write_recording

    def recovered(fault_id, kind, failover):
        return FaultEvent(fault_id=fault_id, kind=kind, level="cluster", phase="recovered",
                          ts=60.0, target={"lab": "t", "guests": ["g1"]},
                          evidence={"failover": failover, "recovered_s": 1.0})

    faults = (ledger("f1", "guest-suspend", "cluster", ["g1"], 40.0, 50.0)[:-1]
              + [recovered("f1", "guest-suspend", fo(2.0, 3.0, 3.5, 10, 1))]
              + ledger("f2", "net-partition", "network", ["g2"], 70.0, 80.0)[:-1]
              + [recovered("f2", "net-partition", fo(None, 0.5, 0.0, 7))])
    assert [r["kind"] for r in failover_rows(faults)] == ["guest-suspend", "net-partition"]
    path = tmp_path / "run.jsonl"
    write_recording(path, lab_stream(seconds=100), faults)
    assert main(["eval", str(path), "--baseline", "15", "--ranker", "heuristic",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failover"]["guest-suspend"]["election_median_s"] == 2.0
    assert report["failover"]["net-partition"]["client_errors"] == 7
    text = format_scorecard(report).splitlines()
    at = next(i for i, line in enumerate(text) if line.startswith("failover per kind"))
    assert text[at + 1].split()[:3] == ["kind", "n", "elect"]
    assert text[at + 2].split() == ["guest-suspend", "1", "1", "2.00", "2.00", "3.00",
                                    "3.00", "10", "1", "0", "0"]
    assert text[at + 3].split() == ["net-partition", "1", "0", "-", "-", "0.50", "0.50",
                                    "7", "0", "0", "0"]
    # no failover evidence (a web lab): no key, no table
    del report["failover"]
    assert "failover per kind" not in format_scorecard(report)
    assert failover_rows(ledger("f3", "disk-eio", "disk", ["g1"], 1.0, 2.0)) == []
