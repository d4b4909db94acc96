"""Recordings replayed offline: detection and RCA scored against the recorded ledger;
bad lines are counted, not fatal. (Recording from a real broker: tests/real/test_bus.py.)"""

from __future__ import annotations

import json

import pytest

from vmroc.events import FaultEvent, to_dict
from vmroc.service.recording import RecordingError, replay_offline

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
              for phase, ts in (("injected", 30.0), ("effect-observed", 30.5),
                                ("recovered", 40.0))]
    path = tmp_path / "run.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"vmroc_recording": 1, "depends": {"g2": ["g1"]}}) + "\n")
        f.writelines(line("vmroc.faults", e) for e in ledger)
        f.writelines(line("vmroc.samples", s) for s in samples)
        f.write('{"topic": "vmroc.samples", "event": {"schema": "sample"}}\n')  # torn
        f.write("not json at all\n")
    report = replay_offline(path, baseline_s=15)
    assert (report["effective"], report["detected"], report["ac1"]) == (1, 1, 1.0), report
    assert report["rows"][0]["rank1"] == "g2/guest"
    assert 0 < report["rows"][0]["detection_latency_s"] < 3
    assert report["skipped_lines"] == 2 and report["samples"] == len(samples)


def test_a_file_that_is_not_a_recording_is_one_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(RecordingError, match="not a vmroc recording"):
        replay_offline(path)
    with pytest.raises(RecordingError, match="cannot read recording"):
        replay_offline(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("suffix", [".jsonl.xz", ".jsonl.gz"])
def test_a_compressed_recording_cut_short_keeps_the_lines_before_the_cut(tmp_path, suffix):
    from vmroc.service.recording import open_for_writing, read_recording
    samples = guest_stream("g1", 0.0, 400, seed=3)
    path = tmp_path / f"run{suffix}"
    with open_for_writing(path) as f:
        f.write(json.dumps({"vmroc_recording": 1}) + "\n")
        f.writelines(line("vmroc.samples", s) for s in samples)
    whole: dict = {}
    _, events = read_recording(path, whole)
    assert len(list(events)) == len(samples) and "truncated" not in whole
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])        # a writer killed mid-stream
    stats: dict = {}
    _, events = read_recording(path, stats)
    kept = list(events)
    assert 0 < len(kept) < len(samples)
    assert [e.seq for _, e in kept] == [s.seq for s in samples[:len(kept)]]
    assert stats["truncated"] >= len(kept) + 1


ODD_SAMPLES = [  # (why, event object): each the fast reader must read as the general path
    ("ints and floats", {"features": {"a": 1, "b": 2.5, "big": 2**70}}),
    ("a bool feature", {"features": {"a": True}}),
    ("a string feature", {"features": {"a": "1"}}),
    ("not finite", {"features": {"a": float("nan")}}),
    ("an unknown field", {"extra": [1, 2]}),
    ("no seq, flags", {"drop": ["seq", "flags"]}),
    ("seq a float", {"seq": 3.0}),
    ("another version", {"v": 2}),
    ("another schema", {"schema": "fault"}),
    ("tasks bad", {"tasks": [{"pid": 1}, 7]}),
    ("tasks with NaN", {"tasks": [{"pid": 1, "x": float("nan")}]}),
    ("log not strings", {"log": [1]}),
    ("no guest", {"drop": ["guest"]}),
]


def odd_line(change: dict) -> str:
    event = {"schema": "sample", "v": 1, "guest": "g1", "ts": 5.0, "features": {"a": 1},
             "backend": "test", "consistent": True, "seq": 4, "flags": [],
             "tasks": [{"pid": 1, "comm": "init"}], "log": ["x"]}
    change = dict(change)
    for name in change.pop("drop", ()):
        del event[name]
    event.update(change)
    return json.dumps({"topic": "vmroc.samples", "partition": 0, "offset": 0,
                       "timestamp_ms": 0, "event": event}) + "\n"


@pytest.mark.parametrize("tasks", [True, False])
def test_samples_read_fast_are_what_the_general_path_reads(tmp_path, monkeypatch, tasks):
    """Samples lines go through msgspec (``sample_line_reader``); whatever it refuses
    falls back to the general path: the events, their types and the skips are the same."""
    from vmroc import recordings
    path = tmp_path / "odd.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"vmroc_recording": 1}) + "\n")
        f.writelines(odd_line(change) for _, change in ODD_SAMPLES)
        f.writelines(line("vmroc.samples", s) for s in guest_stream("g1", 0.0, 5, seed=4))
        f.write(line("vmroc.faults", FaultEvent(fault_id="f", kind="disk-eio", level="disk",
                                                phase="injected", ts=1.0)))
        f.write('{"topic": "vmroc.samples", "event": {"schema": "sample"\n')  # torn

    def read() -> tuple[list, dict]:
        stats: dict = {}
        events = list(recordings.read_recording(path, stats, tasks=tasks)[1])
        return [(topic, type(e), to_dict(e), {k: type(x) for k, x in
                 getattr(e, "features", {}).items()}) for topic, e in events], stats

    fast = read()
    monkeypatch.setattr(recordings, "sample_line_reader", lambda tasks: None)
    general = read()
    assert fast == general
    assert fast[1]["skipped"] >= 8  # the odd lines the schema refuses, and the torn one
