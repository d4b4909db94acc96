"""`vmroc campaign run --record` on the shared lab: the smoke campaign (one fault per
level) sampled at 10 Hz and recorded with its ledger, then scored by `vmroc eval` with
the default ranker; Ctrl-C mid-campaign heals every fault and leaves a readable
recording."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from vmroc.events import FaultEvent, Sample
from vmroc.recordings import read_recording

from .test_inject import assert_normal, blkdebug_nodes, wait_for_active_lease

pytestmark = pytest.mark.real

SMOKE = Path(__file__).resolve().parents[2] / "deploy" / "campaigns" / "smoke.yaml"
VMROC = [sys.executable, "-m", "vmroc.cli"]


def recorded(path: Path) -> tuple[dict, list[Sample], list[FaultEvent], dict]:
    stats: dict = {}
    header, events = read_recording(path, stats)
    samples, faults = [], []
    for _, ev in events:
        (samples if isinstance(ev, Sample) else faults).append(ev)
    return header, samples, faults, stats


def test_smoke_campaign_is_recorded_and_scored(lab, broker, tmp_path):
    out = tmp_path / "smoke.jsonl.xz"
    proc = subprocess.run([*VMROC, "campaign", "run", str(SMOKE), "--lab", lab.name,
                           "--record", str(out), "--json",
                           "--ledger", str(tmp_path / "ledger.jsonl")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    steps = {s["kind"]: s for s in result["steps"]}
    assert set(steps) == {"cpu-throttle", "mem-pressure", "disk-eio", "net-drop",
                          "guest-suspend"}  # cpu, memory, disk, network, cluster
    assert all(s["effective"] and s["recovered"] for s in steps.values()), result["steps"]
    assert result["recording"]["written"] > 0 and out.stat().st_size < 20e6

    header, samples, faults, stats = recorded(out)
    assert header["campaign"] == "smoke" and header["rate_hz"] == 10
    assert stats == {"skipped": 0}
    per_guest = Counter(s.guest for s in samples)
    span = max(s.ts for s in samples) - min(s.ts for s in samples)
    assert set(per_guest) == {"g1", "g2", "g3"}
    assert all(n / span > 7 for n in per_guest.values()), (per_guest, span)  # ~10 Hz
    phases = Counter((e.kind, e.phase) for e in faults if e.campaign == result["campaign_id"])
    for kind in steps:
        assert phases[(kind, "injected")] == phases[(kind, "recovered")] == 1, phases
        assert phases[(kind, "effect-observed")] == 1, phases

    ev = subprocess.run([*VMROC, "eval", str(out), "--json"], capture_output=True, text=True,
                        timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    card = json.loads(ev.stdout)
    assert (card["faults"], card["effective"]) == (5, 5), card
    assert set(card["per_kind"]) == set(steps)
    assert card["detection_rate"] >= 0.8, card  # a smoke run notices (nearly) every level
    assert {"heuristic", "dummy", "nsigma", "baro"} <= set(card["baselines"])
    # the default ranker (the ensemble) names the injected part of every noticed level in
    # its top 3, and at rank 1 for most (measured on two smoke runs: 4 of 5 at rank 1
    # each, the miss a fault whose anomaly joined the previous fault's incident)
    assert card["ranker"] == "ensemble"
    noticed = {k: m for k, m in card["per_kind"].items() if m["detected"]}
    assert all(m["ac3"] == 1.0 for m in noticed.values()), card["per_kind"]
    assert card["ac1"] >= 0.6, card["per_kind"]
    # where the misses go: every effective fault once, under the part it broke
    named = card["named"]
    assert set(named) == {"cpu", "memory", "disk", "network", "guest"}, named
    assert sum(n for counts in named.values() for n in counts.values()) == 5, named
    assert sum(c["right"] for c in named.values()) == round(card["ac1"] * 5), named
    text = subprocess.run([*VMROC, "eval", str(out)], capture_output=True, text=True,
                          timeout=300).stdout
    assert text.splitlines()[0].split()[:3] == ["kind", "faults", "eff"]
    assert any(line.startswith("overall") for line in text.splitlines())


def test_ctrl_c_heals_and_keeps_the_recording_readable(lab, broker, tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("""
name: long
baseline: 3s
faults:
  - {kind: disk-eio, guest: g2, duration: 120s, params: {iotype: write}}
  - {at: 100s, kind: cpu-nmi, guest: g1, duration: 0s}
""")
    out = tmp_path / "long.jsonl.xz"
    proc = subprocess.Popen([*VMROC, "campaign", "run", str(path), "--lab", lab.name,
                             "--record", str(out), "--json",
                             "--ledger", str(tmp_path / "ledger.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_active_lease(proc.pid, timeout=120)
        deadline = time.monotonic() + 30
        while not blkdebug_nodes(lab.guest("g2")):
            assert time.monotonic() < deadline, "the campaign did not apply disk-eio"
            time.sleep(0.2)
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    result = json.loads(stdout)
    assert result["interrupted"] and [s["state"] for s in result["steps"]] == ["done", "skipped"]
    assert blkdebug_nodes(lab.guest("g2")) == []
    header, samples, faults, stats = recorded(out)
    assert header["campaign"] == "long" and "truncated" not in stats
    assert {s.guest for s in samples} == {"g1", "g2", "g3"}
    phases = [e.phase for e in faults if e.kind == "disk-eio"]
    assert phases[0] == "injected" and phases[-1] == "recovered", phases
    assert_normal(lab, ["g2"])
