"""Campaigns on the shared lab: faults at their times (overlapping ones at once), each
verified, reverted and on the Kafka ledger with the campaign id; Ctrl-C reverts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from vmroc.inject import Ledger
from vmroc.inject.campaign import Campaign, run_campaign
from vmroc.inject.lease import leases

from .test_inject import assert_normal, blkdebug_nodes, inj_tables, wait_for_active_lease

pytestmark = pytest.mark.real

SHORT = """
name: short
baseline: 2s
cooldown: 1s
faults:
  - {at: 0s, kind: disk-eio, guest: g2, duration: 3s, params: {iotype: write}}
  - {at: 1s, kind: net-drop, guest: g3, duration: 3s, params: {loss: 100}}
  - {at: 6s, kind: cpu-nmi, guest: g1, duration: 0s}
"""


def test_campaign_runs_every_fault_at_its_time(lab, broker, tmp_path):
    from vmroc.bus import FAULTS, Consumer
    path = tmp_path / "short.yaml"
    path.write_text(SHORT)
    ledger = Ledger(tmp_path / "ledger.jsonl", servers=broker.bootstrap)
    lines: list[str] = []
    result = run_campaign(Campaign.load(path), lab, ledger, progress=lines.append)
    ledger.close()
    out = result.to_dict()
    assert not out["interrupted"] and out["effective"] == out["recovered"] == 3, out
    starts = [s["started_s"] for s in out["steps"]]
    assert [round(x) for x in starts] == [2, 3, 8], starts  # baseline + at, to the second
    events = ledger.events()
    assert {e.campaign for e in events} == {result.id}
    first_recovery = min(e.ts for e in events if e.phase == "recovered")
    injected = {e.kind: e.ts for e in events if e.phase == "injected"}
    assert injected["net-drop"] < first_recovery  # the two overlapped
    assert any("[3/3]" in line for line in lines)
    saved = json.loads((result.save()).read_text())
    assert saved["campaign_id"] == result.id and len(saved["steps"]) == 3
    seen = []
    with Consumer(FAULTS, broker.bootstrap, group=None, from_beginning=True, dlq=False) as c:
        deadline = time.monotonic() + 30
        while len(seen) < len(events) and time.monotonic() < deadline:
            seen += [m.event for m in c.poll(1.0) if m.event.campaign == result.id]
    assert sorted((e.fault_id, e.phase) for e in seen) == sorted((e.fault_id, e.phase)
                                                                 for e in events)
    assert_normal(lab, ["g2", "g3"])


def test_ctrl_c_stops_the_campaign_and_reverts(lab, tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("""
name: long
baseline: 1s
faults:
  - {kind: disk-eio, guest: g2, duration: 120s, params: {iotype: write}}
  - {at: 1s, kind: net-drop, guest: g3, duration: 120s}
  - {at: 100s, kind: cpu-nmi, guest: g1, duration: 0s}
""")
    proc = subprocess.Popen([sys.executable, "-m", "vmroc.cli", "campaign", "run", str(path),
                             "--lab", lab.name, "--no-kafka", "--json",
                             "--ledger", str(tmp_path / "ledger.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_active_lease(proc.pid)
        deadline = time.monotonic() + 30
        while not (blkdebug_nodes(lab.guest("g2")) and inj_tables(lab)):
            assert time.monotonic() < deadline, "the campaign did not apply both faults"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # an impatient second Ctrl-C changes nothing
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    result = json.loads(out)
    states = [(s["kind"], s["state"]) for s in result["steps"]]
    assert result["interrupted"] and states == [("disk-eio", "done"), ("net-drop", "done"),
                                                ("cpu-nmi", "skipped")], states
    assert all(s["recovered"] for s in result["steps"][:2]), result["steps"]
    assert blkdebug_nodes(lab.guest("g2")) == [] and inj_tables(lab) == []
    assert not [x for x in leases() if x.data.get("owner_pid") == proc.pid]
    assert "still reverting" in err or "reverted" in err
    assert_normal(lab, ["g2", "g3"])
