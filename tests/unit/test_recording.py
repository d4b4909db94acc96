"""Recordings replayed offline: detection and RCA scored against the recorded ledger;
bad lines are counted, not fatal. (Recording from a real broker: tests/real/test_bus.py.)"""

from __future__ import annotations

import json

import pytest

from vmroc.service.recording import RecordingError, replay_offline
from vmroc.events import FaultEvent, to_dict

from .test_detect import guest_stream


def line(topic: str, event) -> str:
    return json.dumps({"topic": topic, "partition": 0, "offset": 0, "timestamp_ms": 0,
                       "event": to_dict(event)}) + "\n"


def test_replay_detects_ranks_and_scores_a_recorded_campaign(tmp_path):
    samples = sorted(guest_stream("g1", 0.0, 45, seed=1)
                     + guest_stream("g2", 0.0, 45, stalled_from=30.0, seed=2),
                     key=lambda s: s.ts)
    ledger = [FaultEvent(fault_id="f1", kind="guest-suspend", level="cluster", phase=phase,
                         ts=ts, target={"guests": ["g2"]}, campaign="c")
              for phase, ts in (("injected", 30.0), ("recovered", 40.0))]
    path = tmp_path / "run.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"vmroc_recording": 1, "depends": {"g2": ["g1"]}}) + "\n")
        f.writelines(line("vmroc.faults", e) for e in ledger)
        f.writelines(line("vmroc.samples", s) for s in samples)
        f.write('{"topic": "vmroc.samples", "event": {"schema": "sample"}}\n')  # torn
        f.write("not json at all\n")
    report = replay_offline(path, baseline_s=15)
    assert (report["faults"], report["detected"], report["top1"]) == (1, 1, 1), report
    assert report["rows"][0]["rank1"] == "g2/guest"
    assert 0 < report["rows"][0]["time_to_detect_s"] < 3
    assert report["skipped_lines"] == 2 and report["samples"] == len(samples)


def test_a_file_that_is_not_a_recording_is_one_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(RecordingError, match="not a vmroc recording"):
        replay_offline(path)
    with pytest.raises(RecordingError, match="cannot read recording"):
        replay_offline(tmp_path / "missing.jsonl")
