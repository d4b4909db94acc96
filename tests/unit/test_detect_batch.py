"""Batches give what one sample at a time gives: ``Detector.update_batch`` against
``Detector.update``, ``Featurizer.update_batch`` against ``Featurizer.update``, on a
synthetic stream (guests, a reboot, a silence, shifts, kernel lines, refits) and on a
slice of a shipped recording; and a recording read without task lists."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from vmroc.detect import Detector, Featurizer
from vmroc.events import FaultEvent, Sample, encode, to_dict

RECORDING = Path(__file__).parents[2] / "data" / "recordings" / "mixed-s2.jsonl.xz"


def stream(seed: int = 0) -> list[Sample]:
    """Three guests at 5-10 Hz for 150 s: g1 reboots at 70 s, g2 goes silent from 60 to
    75 s, g3's disk writes jump at 50 s and its I/O errors come at 100 s; every guest
    has noisy counters, a few gauges and a float counter."""
    rng = random.Random(seed)
    out = []
    for guest, hz in (("g1", 10), ("g2", 5), ("g3", 8)):
        jiffies, wr, up, lines, boot = 0, 0, 0.0, 0, 0.0
        for i in range(150 * hz):
            ts = 1000.0 + i / hz + rng.uniform(0, 0.01)
            if guest == "g2" and 60 <= ts - 1000 < 75:
                continue
            if guest == "g1" and boot == 0.0 and ts - 1000 >= 70:
                jiffies, wr, up, boot = 0, 0, 0.0, ts     # rebooted: counters restart
            jiffies += int(250 / hz * rng.uniform(0.9, 1.1))
            up += 1 / hz
            wr += rng.randint(0, 3) + (40 if guest == "g3" and 50 <= ts - 1000 < 58 else 0)
            log = None
            if guest == "g3" and 100 <= ts - 1000 < 102 and i % 3 == 0:
                log = ["blk_update_request: I/O error, dev vda, sector 8"]
            lines += rng.random() < 0.05
            out.append(Sample(guest=guest, ts=ts, backend="test", consistent=True, seq=i,
                              features={"jiffies": jiffies, "uptime_s": up, "vda_wr": wr,
                                        "cpu_user_s": up * 0.3 + rng.uniform(0, 0.01),
                                        "log_lines": int(lines % 2), "tasks": 50 + i % 2,
                                        "memfree_kb": 180000 + rng.randint(-500, 500)},
                              log=log))
    return sorted(out, key=lambda s: s.ts)


def per_sample(samples, **options) -> list[str]:
    det = Detector(**options)
    return [encode(a).decode() for s in samples for a in det.update(s)]


def batched(samples, size, **options) -> list[str]:
    det = Detector(**options)
    return [encode(a).decode() for i in range(0, len(samples), size)
            for a in det.update_batch(samples[i:i + size])]


OPTIONS = dict(baseline_s=10, silence_s=3, refit_s=15)


def test_the_synthetic_stream_has_what_the_batches_must_reproduce():
    got = per_sample(stream(), **OPTIONS)
    kinds = {(json.loads(a)["guest"], json.loads(a)["detector"]) for a in got}
    assert ("g2", "liveness") in kinds and ("g3", "robust") in kinds, got


@pytest.mark.parametrize("size", [2, 5, 64, 1000, 10**6])
def test_batches_of_any_size_give_the_same_anomalies_in_the_same_order(size):
    samples = stream()
    assert batched(samples, size, **OPTIONS) == per_sample(samples, **OPTIONS)


def test_batches_split_at_guest_boundaries_in_any_way():
    samples = stream(seed=1)
    rng = random.Random(5)
    det, got = Detector(**OPTIONS), []
    i = 0
    while i < len(samples):
        n = rng.randint(1, 300)
        got += [encode(a).decode() for a in det.update_batch(samples[i:i + n])]
        i += n
    assert got == per_sample(samples, **OPTIONS)


def test_lof_batches_match_too():
    samples = stream(seed=2)
    options = dict(OPTIONS, model="lof")
    assert batched(samples, 500, **options) == per_sample(samples, **options)


def test_featurizer_batches_give_update_s_vectors_and_state():
    samples = [s for s in stream() if s.guest == "g1"]
    one, many = Featurizer(), Featurizer()
    expected = [one.update(s) for s in samples]
    rows, has = [], []
    for a, b in itertools.pairwise(range(0, len(samples) + 97, 97)):
        x, ok, _ = many.update_batch(samples[a:b])
        rows += list(x)
        has += list(ok)
    assert has == [e is not None for e in expected]
    assert all(r.tolist() == e for r, e, h in zip(rows, expected, has) if h)
    assert one.restarts == many.restarts == 1
    assert list(one.recent) == list(many.recent) and list(one.logs) == list(many.logs)


def test_featurizer_batches_fall_back_where_floats_would_round():
    big = [Sample(guest="g", ts=float(i), backend="t", consistent=True,
                  features={"jiffies": 2**60 + 3 * i, "vda_wr": 2**53 + i}) for i in range(8)]
    one, many = Featurizer(), Featurizer()
    expected = [one.update(s) for s in big]
    x, ok, _ = many.update_batch(big)
    assert [r.tolist() for r, h in zip(x, ok) if h] == [e for e in expected if e is not None]


@pytest.fixture(scope="module")
def recorded() -> list[Sample]:
    """The first 6000 samples of a shipped recording, slimmed as a replay does."""
    from vmroc.detect.featurize import EVENTS, LEVELS, RATES
    from vmroc.rca.replay import _slim
    from vmroc.recordings import read_recording
    _, events = read_recording(RECORDING, tasks=False)
    samples = [_slim(ev, RATES + EVENTS + LEVELS) for _, ev in events
               if isinstance(ev, Sample)][:6000]
    return sorted(samples, key=lambda s: s.ts)


def test_a_shipped_recording_gives_the_same_anomalies_in_batches(recorded):
    expected = per_sample(recorded)
    assert expected  # the slice has anomalies to compare
    assert batched(recorded, 777) == expected


def test_a_recording_read_without_task_lists_is_the_same_otherwise(tmp_path):
    from vmroc.recordings import read_recording
    tasks = [{"pid": 1, "comm": 'x], "log": ["y'}, {"pid": 2, "comm": "sh", "nested": [1]}]
    rows = [Sample(guest="g", ts=1.0, backend="t", consistent=True, features={"a": 1},
                   tasks=tasks, log=["a line"]),
            Sample(guest="g", ts=2.0, backend="t", consistent=True, features={"a": 2}),
            FaultEvent(fault_id="f", kind="cpu-hog", level="cpu", phase="injected", ts=1.5,
                       params={"tasks": [1, 2], "log": 3})]
    path = tmp_path / "run.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"vmroc_recording": 1}) + "\n")
        for ev in rows:
            f.write(json.dumps({"topic": ev.topic, "event": to_dict(ev)}) + "\n")
        f.write('{"topic": "vmroc.samples", "event": {"tasks": [}}\n')  # broken: skipped
    full, fast = {}, {}
    whole = [e for _, e in read_recording(path, full)[1]]
    cut = [e for _, e in read_recording(path, fast, tasks=False)[1]]
    assert cut == [dataclasses.replace(e, tasks=None) if isinstance(e, Sample) else e
                   for e in whole]
    assert whole[0].tasks == tasks and full["skipped"] == fast["skipped"] == 1


def test_scores_of_a_batch_are_the_rows_scores():
    det = Detector(**OPTIONS)
    det.update_batch(stream()[:2000])
    g = det.guests["g1"]
    X = np.random.default_rng(0).normal(size=(50, len(Featurizer.names))) * 10
    assert g.abnormalities(X).tolist() == [g.abnormality(list(x)) for x in X]


def test_feature_series_in_batches_holds_the_same_rows(recorded):
    from vmroc.rca.baselines import FeatureSeries
    one, batched_series = FeatureSeries(), FeatureSeries()
    for s in recorded:
        one.add(s)
    for i in range(0, len(recorded), 700):
        batched_series.add_batch(recorded[i:i + 700])
    assert one.guests == batched_series.guests and len(one) == len(batched_series) > 0
    for guest in one.guests:
        (ta, xa), (tb, xb) = one._rows(guest), batched_series._rows(guest)
        assert np.array_equal(ta, tb) and np.array_equal(xa, xb), guest
