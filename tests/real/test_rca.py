"""The whole chain on real parts: guests sampled at 5 Hz onto a real Kafka broker, the
detector and RCA workers consuming it, a campaign injecting faults on the ledger; each
fault becomes an incident that ranks the injected cause first or second (first at least
once), and `vmroc rca score` says the same from what is on the bus. The RCA worker never
reads the ledger: the scorecard joins incidents to faults, as `vmroc eval` does."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from vmroc.bus import ANOMALIES, Producer
from vmroc.detect import Detector, run_detector
from vmroc.inject import Ledger
from vmroc.inject.campaign import Campaign, run_campaign
from vmroc.introspect.stream import stream
from vmroc.rca import format_faults, run_rca
from vmroc.rca.scorecard import score, summarize

from .test_detect import wait_for

pytestmark = pytest.mark.real

CAMPAIGN = """
name: rca
baseline: 1s
cooldown: 1s
faults:
  - {at: 0s, kind: disk-eio, guest: g2, duration: 4s, params: {iotype: write}}
  - {at: 20s, kind: mem-pressure, guest: g3, duration: 4s}
"""


def joined(servers: str, group: str, topic: str) -> bool:
    """Whether ``group`` holds a committed offset on ``topic``: a member commits where it
    begins as soon as it is assigned (``Consumer``), so it reads what is sent from now on
    (right after a broker restart a new group can take a while to join)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError
    admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=3000)
    try:
        got = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError:  # no such group yet
        return False
    finally:
        admin.close()
    return any(tp.topic == topic and om.offset >= 0 for tp, om in got.items())


def test_injected_faults_lead_the_ranked_causes(lab, broker, tmp_path):
    stop = threading.Event()
    detector = Detector(baseline_s=15)
    incidents: list = []
    producer = Producer(broker.bootstrap)
    suffix = time.time_ns()
    threads = [
        threading.Thread(target=stream, args=(lab.guests, producer.send),
                         kwargs={"rate": 5, "stop": stop}),
        threading.Thread(target=run_detector, args=(broker.bootstrap,),
                         kwargs={"stop": stop, "group": f"detect-{suffix}",
                                 "detector": detector}),
        threading.Thread(target=run_rca, args=(broker.bootstrap,),
                         kwargs={"stop": stop, "group": f"rca-{suffix}", "quiet_s": 6,
                                 "depends": lab.dependencies(),
                                 "on_incident": incidents.append}),
    ]
    for t in threads:
        t.start()
    path = tmp_path / "rca.yaml"
    path.write_text(CAMPAIGN)
    ledger = Ledger(tmp_path / "ledger.jsonl", servers=broker.bootstrap)
    try:
        wait_for(lambda: len(detector.guests) == 3 and
                 all(g.fitted for g in detector.guests.values()), 90, "three baselines")
        wait_for(lambda: joined(broker.bootstrap, f"rca-{suffix}", ANOMALIES), 60,
                 "the RCA worker's group to join")
        result = run_campaign(Campaign.load(path), lab, ledger)
        deadline = time.monotonic() + 40  # for an incident for each fault
        while not all(r["incident"] for r in score(
                ledger.events(), [], list(incidents),
                guests=[g.name for g in lab.guests]).rows) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        producer.close()
        ledger.close()
    scored = score(ledger.events(), [], incidents, guests=[g.name for g in lab.guests])
    card = summarize(scored)
    table = format_faults(scored.rows, card)
    rows = {r["kind"]: r for r in scored.rows}
    assert all(r["incident"] for r in scored.rows), (
        f"no incident for each fault within 40 s of the campaign's end:\n{table}\n"
        f"anomalies per guest: {({g: d.anomalies for g, d in detector.guests.items()})}; "
        f"incidents: {[(i.ts, [(a.guest, a.onset) for a in i.anomalies]) for i in incidents]}")
    # ranking is a judgement: the truth must lead once and never fall below rank 2
    assert card["effective"] == card["detected"] == 2 and card["ac1"] >= 0.5, table
    assert rows["disk-eio"]["rank"] <= 2 and rows["mem-pressure"]["rank"] <= 2, table
    assert all(0 < r["detection_latency_s"] < 10 for r in scored.rows), table

    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "rca", "score", "--campaign",
                           result.id, "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    on_bus = json.loads(proc.stdout)
    assert (on_bus["effective"], on_bus["detected"], on_bus["ac1"]) == (2, 2, card["ac1"]), \
        (on_bus, table)
