"""kill -9 of every vmroc process during a campaign (bench/bench_resilience.py, short):
nothing lost, nothing duplicated, nothing left applied. Asserts the histories the bench
checks (ledger JSONL vs vmroc.faults vs serve's store, samples on the bus vs the
recording and the sampler's sequence numbers, committed offsets across restarts, the
lab's fault mechanisms after `vmroc inject heal`), never timings. Besides the kills, a
guest dies under the sampler and the disk of vmroc's state fills up for a while.

The bench runs its own Kafka broker (it kills it), so the session broker is untouched;
the smoke campaign runs on the session lab (3 guests), whose faults are healed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
# Seed 55 draws, for its first 8 kills: sampler, campaign, detect, broker, serve, rca,
# campaign, sampler: every process type at least once.
SEED, KILLS = 55, 8


def test_kill9_every_process_loses_nothing(lab, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "bench/bench_resilience.py", "--lab", lab.name,
                           "--seed", str(SEED), "--kills", str(KILLS), "--minutes", "5",
                           "--keep", str(tmp_path / "run"), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.stdout.strip(), proc.stderr[-4000:]
    rep = json.loads(proc.stdout)
    s = rep["summary"]
    assert s["kills"] == KILLS, rep["kills"]
    assert set(rep["kills_per_process"]) == {"campaign", "sampler", "detect", "rca", "serve",
                                             "broker"}, rep["kills_per_process"]
    # the run did something worth checking: faults applied, samples and ledger on the bus
    assert s["ledger_events"] > 0 and rep["samples"]["on_bus"] > 1000, s
    assert rep["left_applied"] == [], rep["left_applied"]
    assert not rep["heal_failures"], rep["heal_failures"]
    led = rep["ledger"]
    for key in ("lost_on_bus", "duplicated_on_bus", "on_bus_not_in_jsonl", "lost_in_store",
                "duplicated_in_store", "twice_in_jsonl"):
        assert led[key] == [], (key, led[key])
    assert rep["samples"]["on_bus_not_recorded"] == 0, rep["samples"]
    assert rep["samples"]["duplicated_on_bus"] == 0, rep["samples"]
    assert rep["samples"]["seq_holes"] == [], rep["samples"]["seq_holes"]
    assert rep["samples"]["unexplained_gaps"] == [], rep["samples"]["unexplained_gaps"]
    sampler_gaps = [g for g in rep["kill_gaps"] if g["victim"] == "sampler"]
    assert sampler_gaps and all(g["ok"] for g in sampler_gaps), sampler_gaps
    assert [r for r in rep["resumes"] if not r["resumed"]] == [], rep["resumes"]
    assert rep["serve_skipped"] == [], rep["serve_skipped"]
    # a guest killed under the sampler: the sampler went on and read it again once booted
    death = rep["guest_death"]
    assert death["read_again_s"] is not None and death["sampler_exits"] == [], death
    # the state disk full for a while: the ledger file stays readable line by line (its
    # events on the bus and in the store: checked above), nothing left applied
    assert rep["disk_full"]["filler_mb"] > 0, rep["disk_full"]
    assert rep["disk_full"]["ledger_lines_unreadable"] == 0, rep["disk_full"]
    # `vmroc inject` meanwhile: refused with a one-line error as its last line (logged
    # warnings before it name the guest and fault), no traceback, no fault applied
    by_hand = rep["disk_full"]["inject_by_hand"]
    assert by_hand["code"] != 0 and by_hand["stderr"], by_hand
    assert not any("Traceback" in line for line in by_hand["stderr"]), by_hand
    assert "No space left on device" in by_hand["stderr"][-1], by_hand
    assert not by_hand["stderr"][-1].startswith("20"), by_hand   # the error, not a log line
    assert lab.is_up and all(g.state() == "running" for g in lab.guests)
