"""Detectors on synthetic samples: the scikit-learn contract, window rates, episodes,
silence. (Against real guests and a real broker: tests/real/test_detect.py.)"""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator

from vmroc.detect import Detector, Featurizer, RobustZScore, forest
from vmroc.detect.errors import DetectError
from vmroc.events import Sample

NAMES = ["a", "b", "c"]


def test_robust_z_follows_the_scikit_learn_contract():
    by_design = "a threshold detector finds no outliers in its own baseline, by design"
    check_estimator(RobustZScore(), expected_failed_checks={
        "check_outliers_fit_predict": by_design, "check_outliers_train": by_design})


def test_robust_z_flags_and_names_the_feature_that_moved():
    rng = np.random.default_rng(0)
    X = rng.normal([10, 100, 0], [1, 5, 0.0], size=(200, 3))
    model = RobustZScore(threshold=8)
    with pytest.raises(NotFittedError):
        model.predict(X[:1])
    assert model.fit(X) is model and model.median_.shape == (3,)
    assert (model.predict(X) == 1).all()
    odd = np.array([[10, 100, 3.0], [10, 400, 0], [10.5, 101, 0]])
    assert model.predict(odd).tolist() == [-1, -1, 1]
    assert model.decision_function(odd)[2] > 0 > model.decision_function(odd)[0]
    assert model.explain(odd[0], NAMES) == ["c"] and model.explain(odd[1], NAMES) == ["b"]


def test_forest_is_a_scikit_learn_outlier_detector():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, size=(300, 3))
    model = forest().fit(X)
    assert model.predict(np.array([[0, 0, 0], [40, -40, 40]])).tolist() == [1, -1]


def sample(guest: str, ts: float, **features) -> Sample:
    return Sample(guest=guest, ts=ts, features=features, backend="test", consistent=True)


def test_featurizer_takes_rates_over_a_window_and_restarts_on_reboot():
    f = Featurizer(window_s=2.0)
    assert f.update(sample("g", 100.0, jiffies=0, vda_wr=0, tasks=50)) is None
    names = f.names
    for i in range(1, 11):  # 5 Hz; one write burst of 10 per second, at whole seconds
        x = f.update(sample("g", 100 + i / 5, jiffies=50 * i, vda_wr=10 * (i // 5), tasks=50,
                            log_errors=int(i == 9)))
    v = dict(zip(names, x))
    assert v["jiffies/s"] == pytest.approx(250) and v["vda_wr/s"] == pytest.approx(10)
    assert v["tasks"] == 50 and v["log_errors/s"] == pytest.approx(0.5)  # 1 line in 2 s
    assert f.update(sample("g", 103.0, jiffies=5, vda_wr=0, tasks=20)) is None  # rebooted
    assert f.restarts == 1


def guest_stream(guest, t0, seconds, hz=5, stalled_from=None, seed=0):
    """Samples of a guest ticking at 250 jiffies/s with noise; the clock stops (the
    guest is paused) from ``stalled_from`` on."""
    rng = random.Random(seed)
    jiffies, out = 0.0, []
    for i in range(int(seconds * hz)):
        ts = t0 + i / hz
        if stalled_from is None or ts < stalled_from:
            jiffies += 250 / hz * rng.uniform(0.9, 1.1)
        out.append(sample(guest, ts, jiffies=int(jiffies), uptime_s=jiffies / 250,
                          tasks=50 + rng.randint(0, 1),
                          memfree_kb=180000 + rng.randint(-500, 500)))
    return out


def test_an_episode_raises_one_anomaly_with_onset_and_features():
    det = Detector(baseline_s=10)
    samples = guest_stream("g2", 0.0, 40, stalled_from=25.0)
    anomalies = [a for s in samples for a in det.update(s)]
    assert len(anomalies) == 1, anomalies
    a = anomalies[0]
    assert a.guest == "g2" and a.detector == "robust" and a.score > 0
    assert 25.0 <= a.onset <= a.ts <= 27.5  # noticed within 2.5 s
    assert a.features[0] in ("jiffies/s", "uptime_s/s")


def test_a_quiet_guest_raises_nothing_and_a_silent_one_does():
    det = Detector(baseline_s=10, silence_s=3)
    g1 = guest_stream("g1", 0.0, 40, seed=1)
    g3 = guest_stream("g3", 0.0, 20, seed=2)  # its samples stop at 20 s
    merged = sorted(g1 + g3, key=lambda s: s.ts)
    anomalies = [a for s in merged for a in det.update(s)]
    assert [(a.guest, a.detector) for a in anomalies] == [("g3", "liveness")]
    assert anomalies[0].ts == pytest.approx(anomalies[0].onset + 3, abs=0.3)


def test_unknown_model_is_one_line():
    with pytest.raises(DetectError, match="unknown model 'svm'; use one of robust, forest"):
        Detector(model="svm")


def test_kernel_lines_count_for_the_part_they_name():
    from vmroc.introspect.logparts import part_of
    assert [part_of(line) for line in (
        "blk_update_request: I/O error, dev vda, sector 400 op 0x1:(WRITE)",
        "mce: [Hardware Error]: Machine check events logged",
        "Memory failure: 0x3f21: recovery action for clean LRU page: Recovered",
        "Uhhuh. NMI received for unknown reason 3c on CPU 0.",
        "INFO: task sh:123 blocked for more than 120 seconds.",
        "NETDEV WATCHDOG: eth0 (virtio_net): transmit queue 0 timed out",
        "vmroc-guest: heartbeat 12 name=g1")] == \
        ["disk", "cpu", "memory", "cpu", "disk", "network", None]
    f = Featurizer(window_s=2.0)
    f.update(sample("g", 100.0, jiffies=0))
    f.update(Sample(guest="g", ts=100.5, features={"jiffies": 125}, backend="test",
                    consistent=True, log=["I/O error, dev vda, sector 8", "heartbeat 3"]))
    v = dict(zip(f.names, f.update(sample("g", 101.0, jiffies=250))))
    assert v["log_disk/s"] == pytest.approx(1.0) and v["log_memory/s"] == 0  # 1 line in 1 s
