"""The service on synthetic data: the processor (order-independent, restartable), the
store (idempotent), the dashboard and its JSON twins through Flask's test client.
(With a real broker, a killed process and a real browser: tests/real/test_service.py.)"""

from __future__ import annotations

import re

import pytest

from vmroc.bus import FAULTS, SAMPLES, Message
from vmroc.events import FaultEvent, Sample
from vmroc.service.app import create_app
from vmroc.service.store import Store
from vmroc.service.worker import Processor

from .synthetic_lab import DEPENDS, events

T0 = 1_700_000_000.0
PARTITION = {"g1": 0, "g2": 1, "g3": 2}


def messages(evs) -> list[Message]:
    """Bus messages as Kafka would number them: one offset sequence per partition."""
    out, next_offset = [], {}
    for e in evs:
        tp = (SAMPLES, PARTITION[e.guest]) if isinstance(e, Sample) else (FAULTS, 0)
        off = next_offset.get(tp, 0)
        next_offset[tp] = off + 1
        out.append(Message(tp[0], tp[1], off, None, 0, e))
    return out


def processor() -> Processor:
    return Processor(depends=DEPENDS, baseline_s=20)


def run(proc: Processor, msgs, store: Store | None = None) -> list:
    """Feed everything at wall time 0, release what is safe, then drain."""
    for m in msgs:
        proc.feed(m, wall=0.0)
    proc.release(wall=0.0)
    proc.release(wall=100.0)
    proc.idle(wall=1000.0)
    out, batch = proc.take()
    if store is not None:
        store.write(batch)
    return out


def incident_keys(out) -> list[tuple]:
    return [(i.id, tuple(c.component for c in i.causes)) for i in out
            if i.schema == "incident"]


@pytest.fixture(scope="module")
def reference():
    """The incidents of the stream read in time order."""
    return incident_keys(run(processor(), messages(events(T0))))


def test_the_stream_gives_one_incident_per_fault_ranked_right(reference):
    assert [causes[0] for _, causes in reference] == ["g2/guest", "g3/disk"], reference
    assert [int(i.split("-")[1]) - T0 for i, _ in reference] == [40, 80]  # onsets


def test_partitions_read_one_after_another_give_the_same_incidents(reference):
    msgs = messages(events(T0))
    by_partition = sorted(msgs, key=lambda m: (m.topic, m.partition))  # worst catch-up
    assert incident_keys(run(processor(), by_partition)) == reference


def test_a_first_poll_of_one_guest_waits_for_the_guests_the_lab_names(reference):
    """A fresh service whose first polls hold one partition only (a backlog, big packs):
    the guests that who-calls-whom names get ``hold_s`` to show up, as after a restart."""
    msgs = sorted(messages(events(T0)), key=lambda m: (m.topic, m.partition))
    proc = processor()
    for i in range(0, len(msgs), 500):              # polls, released as they come
        for m in msgs[i:i + 500]:
            proc.feed(m, wall=0.0)
        proc.release(wall=0.0)
    proc.release(wall=100.0)
    proc.idle(wall=1000.0)
    assert incident_keys(proc.take()[0]) == reference


def test_a_restart_from_the_stored_state_loses_nothing_and_stores_nothing_twice(reference):
    store = Store("sqlite://")
    msgs = messages(events(T0))
    cut = len(msgs) * 3 // 5                       # after the first incident
    first = processor()
    for m in msgs[:cut]:
        first.feed(m, wall=0.0)
    first.release(wall=0.0)
    positions = {(m.topic, m.partition): m.offset + 1 for m in msgs[:cut]}
    committed = first.offsets(positions)
    out, batch = first.take()
    store.write(batch)
    assert incident_keys(out) == reference[:1]
    # killed; a new processor from the stored state, the bus from the committed offsets
    second = processor()
    assert second.restore(store.load_state("processor"))
    again = [m for m in msgs if m.offset >= committed.get((m.topic, m.partition), 0)]
    assert len(again) > len(msgs) - cut            # queued samples come again
    out = run(second, again, store)
    assert incident_keys(out) == reference[1:]
    assert [r["id"] for r in reversed(store.incidents())] == [i for i, _ in reference]
    assert len(store.ledger_rows()) == 6
    once = store.counts()
    store.write(batch)                             # the same batch again: nothing changes
    assert store.counts() == once


@pytest.fixture(scope="module")
def app():
    store = Store("sqlite://")
    run(processor(), messages(events(T0)), store)
    healed = []
    started = []

    def start(name):
        started.append(name)
        return {"campaign": name, "lab": "nolab", "pid": 1}
    app = create_app({"STORE": store, "TOKEN": "s3cret", "TESTING": True,
                      "HEAL": lambda: healed.append(1) or [{"fault_id": "x", "healed": True}],
                      "START_CAMPAIGN": start})
    app.healed, app.started = healed, started
    return app


def test_incidents_page_and_api_show_the_rank1_cause_and_whether_it_was_right(app):
    c = app.test_client()
    data = c.get("/api/incidents").get_json()
    rows = data["incidents"]
    assert [r["rank1"] for r in rows] == ["g3/disk", "g2/guest"]  # newest first
    assert [f["kind"] for f in rows[0]["faults"]] == ["disk-eio"]
    assert rows[0]["faults"][0]["right"] and rows[1]["faults"][0]["rank"] == 1
    page = c.get("/incidents").get_data(as_text=True)
    assert "g3/disk" in page and "disk-eio" in page and 'class="ok">yes' in page


def test_incident_page_has_causes_evidence_logs_and_plot_data(app):
    c = app.test_client()
    inc_id = c.get("/api/incidents").get_json()["incidents"][0]["id"]
    d = c.get(f"/api/incidents/{inc_id}").get_json()
    assert d["causes"][0]["component"] == "g3/disk" and d["causes"][0]["part"] == "disk"
    assert "vda_wsec/s" in d["causes"][0]["features"]
    assert any("I/O error" in line["line"] for line in d["logs"])
    series = {s["feature"]: s for s in d["plot"]["series"]}
    assert len(series["vda_wsec/s"]["points"]) > 60
    assert [w["kind"] for w in d["plot"]["windows"]] == ["disk-eio"]
    page = c.get(f"/incidents/{inc_id}").get_data(as_text=True)
    assert 'id="plot"' in page and "I/O error" in page and "g3/disk" in page


def test_unknown_ids_are_404_and_bad_input_400(app):
    c = app.test_client()
    assert c.get("/api/incidents/nope").status_code == 404
    assert c.get("/api/incidents/nope").get_json()["error"]
    assert c.get("/incidents/nope").status_code == 404
    assert c.get("/api/guests/g9/timeline").status_code == 404
    r = c.get("/api/incidents?limit=many")
    assert r.status_code == 400 and "limit" in r.get_json()["error"]
    r = c.post("/api/campaigns", data="{", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400
    r = c.post("/api/campaigns", json={"name": "nope"}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400 and "smoke" in r.get_json()["error"]


def test_guests_timeline_and_faults(app):
    c = app.test_client()
    assert [g["name"] for g in c.get("/api/guests").get_json()["guests"]] == ["g1", "g2", "g3"]
    t = c.get("/api/guests/g2/timeline").get_json()
    assert t["features"][0] == "jiffies/s" and len(t["points"]) > 60
    assert [w["kind"] for w in t["windows"]] == ["guest-suspend"]
    assert [a["detector"] for a in t["anomalies"]] == ["robust"]
    assert c.get("/guests/g2").status_code == 200
    f = c.get("/api/faults").get_json()
    rows = {r["kind"]: r for r in f["faults"]}
    assert rows["disk-eio"]["detected"] and rows["disk-eio"]["rank"] == 1
    assert rows["disk-eio"]["time_to_recover_s"] == 1.5
    assert f["scorecard"]["campaign"] == "synthetic" and f["scorecard"]["ac1"] == 1.0
    page = c.get("/faults").get_data(as_text=True)
    assert "Scorecard of campaign synthetic" in page and "Log in</a> to heal" in page


def test_writes_need_the_token_and_forms_their_csrf_token(app):
    c = app.test_client()
    assert c.post("/api/faults/heal").status_code == 401
    assert c.post("/api/faults/heal", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.post("/actions/heal").status_code == 401
    assert not app.healed
    r = c.post("/api/faults/heal", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.get_json()["healed"][0]["healed"] and app.healed
    r = c.post("/api/campaigns", json={"name": "smoke"},
               headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 202 and app.started == ["smoke"]
    # the browser: a login form with a CSRF token, then forms carrying it
    page = c.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert c.post("/login", data={"token": "s3cret"}).status_code == 400   # no CSRF token
    assert c.post("/login", data={"token": "bad", "csrf": csrf}).status_code == 401
    assert c.post("/login", data={"token": "s3cret", "csrf": csrf}).status_code == 302
    assert c.post("/actions/heal").status_code == 401                     # no CSRF token
    assert c.post("/actions/heal", data={"csrf": csrf}).status_code == 401  # rotated at login
    page = c.get("/faults").get_data(as_text=True)
    assert "Heal all faults" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/actions/heal", data={"csrf": csrf}, follow_redirects=True)
    assert r.status_code == 200 and "healed 1 fault(s)" in r.get_data(as_text=True)


def test_health_and_metrics(app):
    from vmroc.service.worker import Status
    c = app.test_client()
    h = c.get("/healthz")
    assert h.status_code == 200 and h.get_json()["store"]["ok"]
    text = c.get("/metrics").get_data(as_text=True)
    assert 'vmroc_stored_rows{table="incidents"} 2.0' in text
    status = Status(running=True, broker_ok=False, broker_error="BusError: no broker")
    app.config["STATUS"] = status
    try:
        h = c.get("/healthz")
        assert h.status_code == 503 and "broker unreachable" in h.get_json()["problems"]
        status.broker_ok, status.consumed = True, {"vmroc.samples": 7}
        status.rca_ms.extend([2.0, 3.0])
        assert c.get("/healthz").status_code == 200
        text = c.get("/metrics").get_data(as_text=True)
        assert 'vmroc_events_consumed_total{topic="vmroc.samples"} 7.0' in text
        assert "vmroc_rca_seconds_count 2.0" in text
    finally:
        app.config["STATUS"] = None


def test_a_fault_event_alone_is_stored_once():
    store = Store("sqlite://")
    proc = processor()
    ev = FaultEvent(fault_id="f", kind="disk-eio", level="disk", phase="injected", ts=T0)
    for offset in (0, 0, 1):
        proc.feed(Message(FAULTS, 0, offset, None, 0, ev))
        store.write(proc.take()[1])
    assert store.ledger_rows() == [("f", "injected", T0)]


def test_a_store_that_refuses_a_batch_pauses_and_commits_nothing_until_it_is_stored(
        monkeypatch):
    import threading

    from vmroc.service.store import StoreError
    from vmroc.service.worker import Worker
    store = Store("sqlite://")
    worker = Worker(store, depends=DEPENDS, baseline_s=20)
    msgs = messages(events(T0))[:300]
    for m in msgs:
        worker.processor.feed(m, wall=0.0)
    worker.processor.release(wall=100.0)
    seen, write = [], store.write

    class Bus:
        committed = None

        def positions(self):
            return {(m.topic, m.partition): m.offset + 1 for m in msgs}

        def commit(self, offsets):
            self.committed = offsets

        def send(self, event):
            pass

        def flush(self):
            pass

    bus = Bus()

    def refusing_once(batch, owner=None):
        seen.append((worker.status.paused, bus.committed))
        if len(seen) == 1:
            raise StoreError("cannot write: database is locked")
        write(batch, owner=owner)
    monkeypatch.setattr(store, "write", refusing_once)
    worker._commit(bus, bus, threading.Event())
    assert seen == [(False, None), (True, None)]     # paused, nothing committed meanwhile
    assert not worker.status.paused and worker.status.store_ok
    assert sum(g["samples"] for g in store.guests()) == 300 - worker.processor.queued()
    assert sum(bus.committed.values()) == 300 - worker.processor.queued()


def test_the_demo_scorecard_reads_the_store(app, capsys):
    from vmroc.service.demo_cli import print_scorecard
    from vmroc.service.views import faults_view
    view = faults_view(app.config["STORE"], campaign="synthetic")
    print_scorecard("synthetic", view["faults"], view["scorecard"])
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:6] == ["guest-suspend", "g2", "yes", "yes", "1.2s", "g2/guest"]
    assert out[3].split()[-2:] == ["g3/disk", "yes"]
    assert out[4].startswith("  AC@1 1.00  AC@3 1.00  Avg@5 1.00  (2 effective of 2 faults")


@pytest.mark.parametrize("ranker, keeps_series", [("heuristic", False), ("baro", True)])
def test_any_registered_ranker_ranks_and_only_one_that_reads_the_series_keeps_it(
        ranker, keeps_series):
    proc = Processor(ranker=ranker, depends=DEPENDS, baseline_s=20)
    assert (proc.series is not None) == keeps_series
    out = run(proc, messages(events(T0)))
    assert [causes[0] for _, causes in incident_keys(out)] == ["g2/guest", "g3/disk"]


def test_a_second_worker_on_the_same_store_takes_over_and_the_first_stops():
    import threading

    from vmroc.service.store import OwnerError
    from vmroc.service.worker import Worker
    store = Store("sqlite://")
    first = Worker(store, depends=DEPENDS)
    Worker(store, depends=DEPENDS)                   # started later: the store is its own

    class Bus:
        def positions(self):
            return {}

        def commit(self, offsets):
            raise AssertionError("no offsets may be committed")

        def send(self, event):
            pass

        def flush(self):
            pass
    first.processor.feed(messages(events(T0))[0], wall=0.0)
    with pytest.raises(OwnerError, match="another vmroc serve"):
        first._commit(Bus(), Bus(), threading.Event())


def test_incident_page_says_why_a_network_cause_was_moved_to_a_link():
    from vmroc.events import Anomaly, Cause, Incident
    from vmroc.service.store import Batch
    store = Store("sqlite://")
    a = Anomaly(guest="g2", ts=T0 + 1, detector="robust", score=9.0, onset=T0,
                features=["tcp_timeouts/s"], deviations={"tcp_timeouts/s": 9.0})
    why = "its link explains the network anomalies better than g2's"
    inc = Incident(id="inc-link", ts=T0 + 1, guests=["g2"], anomalies=[a], causes=[
        Cause(component="g1/network", score=0.9, evidence={"link": why, "features": {}}),
        Cause(component="g2/network", score=0.5, evidence={"features": {}})])
    store.write(Batch(anomalies=[a], incidents=[(inc, 5.0)]))
    c = create_app({"STORE": store, "TOKEN": "t", "TESTING": True}).test_client()
    assert c.get("/api/incidents/inc-link").get_json()["causes"][0]["link"] == why
    page = c.get("/incidents/inc-link").get_data(as_text=True)
    assert f"(ranked first: {why})" in page.replace("&#39;", "'")
    assert page.count("ranked first:") == 1
