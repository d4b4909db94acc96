"""The scorecard (honest matching of faults to anomalies and incidents, AC@k, latencies,
false alarms), the baseline rankers and `vmroc eval`, on synthetic data built here:
real event classes, a fake ledger, samples of a made-up 3-guest lab."""

from __future__ import annotations

import json
import random

import pytest

from vmroc.events import Anomaly, Cause, FaultEvent, Incident, Sample, to_dict
from vmroc.rca.baselines import Baro, Dummy, FeatureSeries, NSigma
from vmroc.rca.errors import RCAError
from vmroc.rca.rankers import BASELINES, RANKERS, SUPERVISED, make_ranker
from vmroc.rca.scorecard import METRICS, rerank, score, scorecard, summarize

GUESTS = ["g1", "g2", "g3"]


def ledger(fault_id, kind, level, guests, start, end, effective=True):
    """A fault's ledger entries, as the injector writes them."""
    phases = [("injected", start)] + ([("effect-observed", start + 0.5)] if effective
                                      else [("ineffective", end)]) + [("recovered", end)]
    return [FaultEvent(fault_id=fault_id, kind=kind, level=level, phase=p, ts=t,
                       target={"lab": "t", "guests": guests}, campaign="c") for p, t in phases]


def anomaly(guest, onset, delay=0.6, **deviations):
    deviations = deviations or {"jiffies/s": 40.0}
    return Anomaly(guest=guest, ts=onset + delay, detector="robust", score=5.0, onset=onset,
                   features=list(deviations), deviations=deviations)


def incident(anomalies, *ranked):
    first = min(a.onset for a in anomalies)
    return Incident(id=f"inc-{first}", ts=max(a.ts for a in anomalies),
                    guests=sorted({a.guest for a in anomalies}), anomalies=anomalies,
                    causes=[Cause(component=c, score=1 / len(ranked)) for c in ranked])


def samples_over(seconds, guests=GUESTS):
    return [Sample(guest=g, ts=t, features={}, backend="test", consistent=True)
            for g in guests for t in (0.0, float(seconds))]


def test_a_fault_with_a_clear_anomaly_is_detected_and_ranked():
    faults = ledger("f1", "disk-eio", "disk", ["g2"], 100.0, 110.0)
    a = anomaly("g2", 101.0, **{"log_errors/s": 60.0})
    inc = incident([a], "g2/disk", "g2/cpu")
    card = scorecard(faults, [a], [inc], samples_over(3600))
    assert (card["faults"], card["effective"], card["detected"]) == (1, 1, 1)
    assert card["detection_rate"] == 1.0 and card["median_detection_latency_s"] == 1.6
    assert card["p90_detection_latency_s"] == 1.6
    assert card["median_localization_latency_s"] == 1.6  # the incident named it at once
    assert (card["ac1"], card["ac3"], card["avg5"]) == (1.0, 1.0, 1.0)
    assert card["false_alarms"] == 0 and card["false_alarms_per_hour"] == 0.0
    assert card["hours"] == 1.0
    assert card["per_kind"]["disk-eio"]["ac1"] == 1.0
    # ranked second: in the top 3, not first; Avg@5 = (0 + 1 + 1 + 1 + 1) / 5
    card = scorecard(faults, [a], [incident([a], "g2/cpu", "g2/disk")], samples_over(3600))
    assert (card["ac1"], card["ac3"], card["avg5"]) == (0.0, 1.0, 0.8)
    assert card["median_localization_latency_s"] is None


def test_the_truth_is_the_part_the_ledger_names_else_the_pre_v0_2_part():
    from dataclasses import replace
    a = anomaly("g2", 101.0)
    inc = incident([a], "g2/network", "g2/guest")
    old = ledger("f1", "net-partition", "cluster", ["g2"], 100.0, 110.0)  # no part: legacy
    assert score(old, [a], [inc]).rows[0]["truth"] == ["g2/network"]
    new = [replace(ev, part="guest") for ev in old]                       # as recorded
    row = score(new, [a], [inc]).rows[0]
    assert row["truth"] == ["g2/guest"] and row["rank"] == 2


def test_an_anomaly_on_an_unrelated_guest_is_no_detection_but_a_false_alarm():
    faults = ledger("f1", "disk-eio", "disk", ["g2"], 100.0, 110.0)
    a = anomaly("g1", 101.0)                     # during the fault, on another guest
    card = scorecard(faults, [a], [incident([a], "g1/guest")], samples_over(1800))
    assert (card["effective"], card["detected"], card["detection_rate"]) == (1, 0, 0.0)
    assert card["ac1"] == 0.0 and card["median_detection_latency_s"] is None
    assert card["false_alarms"] == 1 and card["false_alarms_per_hour"] == 2.0


def test_a_network_fault_is_seen_by_its_peers_and_only_inside_its_window():
    faults = ledger("f1", "net-drop", "network", ["g3"], 100.0, 110.0)
    peer = anomaly("g1", 102.0, **{"tcp_retrans/s": 30.0})   # the server retransmits
    late = anomaly("g1", 121.0)                             # after recovery + 10 s grace
    early = anomaly("g3", 99.0)                             # before the injection
    incs = [incident([early], "g3/guest"), incident([peer], "g1/network"),
            incident([late], "g1/cpu")]
    rows = score(faults, [early, peer, late], incs, guests=GUESTS, span=(0, 3600)).rows
    assert rows[0]["detected"] and rows[0]["detection_latency_s"] == 2.6
    assert rows[0]["incident"] == "inc-102.0" and rows[0]["rank"] is None  # truth is g3
    card = scorecard(faults, [early, peer, late], incs, samples_over(3600))
    assert card["false_alarms"] == 2 and card["ac1"] == 0.0


def test_an_ineffective_fault_is_counted_not_scored():
    faults = (ledger("f1", "mem-pressure", "memory", ["g3"], 100.0, 110.0, effective=False)
              + ledger("f2", "cpu-hog", "cpu", ["g2"], 200.0, 210.0))
    a = anomaly("g3", 101.0, **{"memfree_kb": 50.0})
    b = anomaly("g2", 200.5, **{"rq_nr_running": 20.0})
    card = scorecard(faults, [a, b], [incident([a], "g3/memory"), incident([b], "g2/cpu")],
                     samples_over(3600))
    assert (card["faults"], card["effective"], card["detected"]) == (2, 1, 1)
    assert card["detection_rate"] == 1.0 and card["ac1"] == 1.0
    assert card["per_kind"]["mem-pressure"]["effective"] == 0
    assert card["per_kind"]["mem-pressure"]["detection_rate"] is None
    assert card["false_alarms"] == 0  # the incident of the ineffective fault is its own


def test_an_unmatched_incident_is_a_false_alarm():
    faults = ledger("f1", "guest-suspend", "cluster", ["g2"], 100.0, 108.0)
    a = anomaly("g2", 100.4)
    stray = anomaly("g1", 500.0, **{"memfree_kb": 12.0})
    card = scorecard(faults, [a, stray], [incident([a], "g2/guest"),
                                          incident([stray], "g1/memory")],
                     samples_over(7200))
    assert card["incidents"] == 2 and card["false_alarms"] == 1
    assert card["false_alarms_per_hour"] == 0.5 and card["ac1"] == 1.0


def test_overlapping_faults_share_an_incident_and_each_count():
    faults = (ledger("f1", "disk-eio", "disk", ["g2"], 100.0, 110.0)
              + ledger("f2", "mem-pressure", "memory", ["g3"], 101.0, 111.0))
    a2, a3 = anomaly("g2", 100.5), anomaly("g3", 102.0)
    inc = incident([a2, a3], "g2/disk", "g3/cpu", "g3/memory")
    rows = score(faults, [a2, a3], [inc], guests=GUESTS, span=(0, 3600)).rows
    assert [(r["fault_id"], r["detected"], r["incident"], r["rank"]) for r in rows] == [
        ("f1", True, inc.id, 1), ("f2", True, inc.id, 3)]
    card = summarize(score(faults, [a2, a3], [inc], guests=GUESTS, span=(0, 3600)))
    assert card["false_alarms"] == 0 and (card["ac1"], card["ac3"]) == (0.5, 1.0)


def test_recordings_add_up():
    one = score(ledger("f1", "disk-eio", "disk", ["g2"], 100.0, 110.0), [], [],
                guests=GUESTS, span=(0, 1800))
    a = anomaly("g2", 101.0)
    two = score(ledger("f2", "disk-eio", "disk", ["g2"], 100.0, 110.0), [a],
                [incident([a], "g2/disk")], guests=GUESTS, span=(0, 1800))
    card = summarize(one + two)
    assert (card["faults"], card["detected"], card["ac1"], card["hours"]) == (2, 1, 0.5, 1.0)


# -- baselines -----------------------------------------------------------------------------

def lab_stream(seconds=120, hz=5, effects=(), seed=0):
    """Samples of a 3-guest lab: clocks ticking, disks writing, memory steady, TCP calm.
    ``effects`` are (guest, start, end, what) with what one of "pause" (the clock
    stops), "eio" (kernel error lines), "memory" (free memory drops)."""
    rng = random.Random(seed)
    out = []
    for g in GUESTS:
        jiffies = vda_wr = 0.0
        for i in range(int(seconds * hz)):
            ts = i / hz
            now = {what for guest, t0, t1, what in effects if guest == g and t0 <= ts < t1}
            if "pause" not in now:
                jiffies += 250 / hz * rng.uniform(0.95, 1.05)
                vda_wr += rng.choice((0, 1))
            error = "eio" in now and rng.random() < 0.6
            out.append(Sample(guest=g, ts=ts, backend="test", consistent=True, features={
                "jiffies": int(jiffies), "uptime_s": jiffies / 250, "vda_wr": vda_wr,
                "tasks": 50 + rng.randint(0, 1),
                "memfree_kb": (60000 if "memory" in now else 180000) + rng.randint(-400, 400),
                "log_errors": int(error)},
                log=["I/O error, dev vda, sector 400 op 0x1:(WRITE)"] if error else None))
    return sorted(out, key=lambda s: s.ts)


def test_baselines_rank_the_component_whose_features_moved():
    samples = lab_stream(effects=[("g3", 70, 85, "memory")])
    series = FeatureSeries.from_samples(samples)
    assert series.guests == GUESTS and len(series) > 3 * 500
    anomalies = [anomaly("g3", 70.2, **{"memfree_kb": 300.0}), anomaly("g1", 71.0)]
    for ranker in (NSigma().fit(series), Baro().fit(series)):
        causes = ranker.rank(anomalies)
        assert causes[0].component == "g3/memory", causes[:3]
        assert {c.component for c in causes} == {f"{g}/{p}" for g in ("g1", "g3") for p in
                                                 ("cpu", "memory", "disk", "network", "guest")}
        assert "memfree_kb" in causes[0].evidence["features"]
    dummy = Dummy(seed=3).fit()
    first, again = dummy.rank(anomalies), dummy.rank(anomalies)
    assert [c.component for c in first] == [c.component for c in again]  # seeded
    assert len(first) == 10
    with pytest.raises(RCAError, match="feature series"):
        NSigma().fit(None)


def test_every_registered_ranker_ranks_an_incident_and_unknown_names_fail():
    series = FeatureSeries.from_samples(lab_stream(effects=[("g2", 60, 70, "pause")]))
    anomalies = [anomaly("g2", 60.4, **{"jiffies/s": 90.0, "uptime_s/s": 90.0})]
    assert set(BASELINES) <= set(RANKERS) and "heuristic" in RANKERS
    for name in set(RANKERS) - set(SUPERVISED):  # those learn from a lab: test_fingerprint
        causes = make_ranker(name, depends={"g2": ["g1"]}, series=series).rank(anomalies)
        assert causes and all(c.component.startswith("g2/") for c in causes), name
        if name != "dummy":
            assert causes[0].component == "g2/guest", (name, causes[:2])
    inc = incident(anomalies, "g2/cpu")
    (again,) = rerank([inc], make_ranker("baro", series=series))
    assert again.anomalies == inc.anomalies and again.causes[0].component == "g2/guest"
    with pytest.raises(RCAError, match="unknown ranker 'oracle'; use one of heuristic"):
        make_ranker("oracle")


# -- vmroc eval ------------------------------------------------------------------------------

def write_recording(path, samples, faults, depends=None):
    with open(path, "w") as f:
        f.write(json.dumps({"vmroc_recording": 1, "depends": depends or {}}) + "\n")
        for topic, events in (("vmroc.faults", faults), ("vmroc.samples", samples)):
            for e in events:
                f.write(json.dumps({"topic": topic, "partition": 0, "offset": 0,
                                    "timestamp_ms": 0, "event": to_dict(e)}) + "\n")


@pytest.fixture
def campaign(tmp_path):
    """A recorded campaign: g2 paused, g3's disk failing while g2 is still paused (a
    group), a balloon on g1 with no effect, then g1's memory dropping with no fault at
    all (a false alarm); the last line torn."""
    samples = lab_stream(seconds=130, effects=[("g2", 40, 50, "pause"),
                                               ("g3", 46, 56, "eio"),
                                               ("g1", 110, 116, "memory")])
    faults = (ledger("f1", "guest-suspend", "cluster", ["g2"], 40.0, 50.0)
              + ledger("f2", "disk-eio", "disk", ["g3"], 46.0, 56.0)
              + ledger("f3", "mem-pressure", "memory", ["g1"], 80.0, 90.0, effective=False))
    path = tmp_path / "run.jsonl"
    write_recording(path, samples, faults, {"g2": ["g1"], "g3": ["g1"]})
    with open(path, "a") as f:
        f.write('{"topic": "vmroc.samples", "event": {"schema": "sample"')  # torn last line
    return path


def test_eval_json_has_exactly_the_documented_keys(campaign, capsys):
    from vmroc.cli import main
    assert main(["eval", str(campaign), "--baseline", "15", "--ranker", "heuristic",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    overall = {*METRICS, "incidents", "false_alarms", "hours", "false_alarms_per_hour"}
    assert set(report) == overall | {"ranker", "per_kind", "baselines", "recordings",
                                     "ranking_ms_median", "ranking_ms_p90", "named"}
    assert {p: c["right"] for p, c in report["named"].items()} == {"disk": 1, "guest": 1}
    assert sum(n for c in report["named"].values() for n in c.values()) == 2
    assert 0 < report["ranking_ms_median"] <= report["ranking_ms_p90"]
    assert set(report["baselines"]) == {"dummy", "nsigma", "baro"}
    for card in (report, *report["baselines"].values()):
        assert set(card) >= overall | {"per_kind"}
        assert set(card["per_kind"]) == {"guest-suspend", "disk-eio", "mem-pressure"}
        assert all(set(m) == set(METRICS) for m in card["per_kind"].values())
    assert (report["faults"], report["effective"], report["detected"]) == (3, 2, 2), report
    # the group's faults are on two guests: an incident each, both named at rank 1
    assert (report["ac1"], report["ac1_ceiling"], report["ac3"]) == (1.0, 1.0, 1.0), report
    assert report["false_alarms"] == 1 and report["incidents"] == 3, report
    assert report["per_kind"]["mem-pressure"]["effective"] == 0
    assert report["baselines"]["baro"]["detected"] == 2  # the same incidents
    (rec,) = report["recordings"]
    assert rec["path"] == str(campaign) and rec["skipped_lines"] == 1
    assert rec["samples"] == 3 * 650 and 0.035 < rec["hours"] < 0.037


def test_the_ac1_ceiling_counts_one_right_fault_per_rank_1_cause():
    """Overlapping faults on different parts in one incident: at most one can be right."""
    from vmroc.rca.scorecard import _metrics
    row = dict(effective=True, detected=True, detection_latency_s=1.0,
               localization_latency_s=None, abstained=False, rank=1)
    rows = [dict(row, incident="i1", truth=["g1/cpu"]),
            dict(row, incident="i1", truth=["g2/disk"], rank=2),
            dict(row, incident="i2", truth=["g3/memory"]),
            dict(row, incident="i2", truth=["g3/memory"])]
    assert _metrics(rows)["ac1_ceiling"] == 0.75
    assert _metrics(rows[:2])["ac1_ceiling"] == 0.5


def test_named_says_where_each_miss_went():
    from vmroc.rca.scorecard import named
    row = dict(effective=True, detected=True, truth=["g1/network"])
    rows = [dict(row, rank1="g1/network"), dict(row, rank1="g2/network"),
            dict(row, rank1="g1/cpu"), dict(row, rank1="g1/guest"), dict(row, rank1=None),
            dict(row, detected=False, rank1=None),
            dict(row, effective=False, rank1="g3/disk"),              # not scored
            dict(row, truth=["g1/disk", "g2/disk"], rank1="g2/disk")]   # any target is right
    out = named(rows)
    assert list(out) == ["disk", "network"]                            # in PARTS order
    assert out["disk"]["right"] == 1 and sum(out["disk"].values()) == 1
    net = {k: v for k, v in out["network"].items() if v}
    assert net == {"right": 1, "other guest": 1, "cpu": 1, "guest": 1, "none": 1,
                   "undetected": 1}


def test_eval_scores_the_default_ensemble_with_the_heuristic_as_a_contestant(campaign, capsys):
    from vmroc.cli import main
    assert main(["eval", str(campaign), "--baseline", "15", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ranker"] == "ensemble"
    assert set(report["baselines"]) == {"heuristic", "dummy", "nsigma", "baro"}
    assert report["baselines"]["heuristic"]["detected"] == report["detected"] == 2


def test_eval_prints_tables_and_writes_an_html_report_with_plots(campaign, tmp_path, capsys):
    from vmroc.cli import main
    out = tmp_path / "report.html"
    assert main(["eval", str(campaign), "--baseline", "15", "--ranker", "heuristic",
                 "--html", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:4] == ["kind", "faults", "eff", "det"]
    assert any(line.startswith("overall") for line in text.splitlines())
    assert "heuristic *" in text and "baro" in text and "nsigma" in text
    assert "what the rank-1 cause named, per broken part" in text
    page = out.read_text()
    assert "<h2>What the rank-1 cause named</h2>" in page and "class='named'" in page
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3
    for plot in ("AC@1 per fault kind", "detection latency", "timeline"):
        assert f"aria-label='{plot}'" in page
    assert "a group of 2 faults active at once" in page
    assert "src=" not in page and "<script" not in page  # self-contained


def test_eval_of_a_file_that_is_not_a_recording_is_one_line(tmp_path, capsys):
    from vmroc.cli import main
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    assert main(["eval", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("RecordingError: ") and "not a vmroc recording" in err
    assert "\n" not in err


def test_eval_sums_recordings_and_keeps_what_a_cut_compressed_one_holds(campaign, tmp_path,
                                                                         capsys):
    import lzma

    from vmroc.cli import main
    whole = lzma.compress(campaign.read_bytes())
    cut = tmp_path / "cut.jsonl.xz"
    cut.write_bytes(whole[:len(whole) * 2 // 3])   # the writer was killed
    assert main(["eval", str(campaign), str(cut), "--baseline", "15", "--ranker", "baro",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    first, second = report["recordings"]
    assert second["path"] == str(cut) and second["truncated_after_line"] > 1000
    assert 0 < second["samples"] < first["samples"]
    assert report["ranker"] == "baro"
    assert set(report["baselines"]) == {"heuristic", "dummy", "nsigma"}
    assert report["faults"] == 6
    assert report["hours"] == pytest.approx(first["hours"] + second["hours"], abs=2e-4)
