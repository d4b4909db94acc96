"""Calibrated thresholds, count floors, refit after a restart, the LOF detector."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vmroc.detect import MODEL_NAMES, MODELS, Detector, RobustZScore, lof
from vmroc.detect.calibrate import calibrated_cut, episode_levels, episode_starts

from .test_detect import guest_stream, sample


def smoothed_stream(n: int, rng, features: int = 8) -> np.ndarray:
    """Rows at 10 Hz like window rates: Gaussian noise averaged over 3 s, plus a count
    of rare events (one a minute) over the same window."""
    noise = rng.normal(size=(n + 29, features))
    box = np.ones(30) / np.sqrt(30)
    X = np.column_stack([np.convolve(noise[:, j], box, "valid") for j in range(features)])
    events = np.convolve(rng.poisson(1 / 600, size=n + 29), np.ones(30), "valid") / 3.0
    return np.column_stack([X * 5 + 100, events])


UNIT = [0.0] * 8 + [1 / 3]


def episodes_an_hour(cut: float, baseline: np.ndarray, hour: np.ndarray) -> int:
    model = RobustZScore(threshold=cut, unit=UNIT).fit(baseline)
    return episode_starts(episode_levels(-model.score_samples(hour), 3), cut)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_calibrated_cut_gives_about_the_target_rate(seed):
    rng = np.random.default_rng(seed)
    baseline, hour = smoothed_stream(200, rng), smoothed_stream(36000, rng)
    model = RobustZScore(unit=UNIT)
    rare = calibrated_cut(model, baseline, seconds=20, target_per_hour=1)
    often = calibrated_cut(model, baseline, seconds=20, target_per_hour=60)
    assert often < rare
    assert episodes_an_hour(rare, baseline, hour) <= 5
    assert 10 <= episodes_an_hour(often, baseline, hour) <= 300


def count_stream(events: dict[float, int], seconds: float = 60, hz: int = 10):
    """A ticking guest whose TCP retransmissions counter grows by ``events[t]`` at t."""
    out, total = [], 0
    for s in guest_stream("g", 0.0, seconds, hz=hz):
        total += sum(n for t, n in events.items() if s.ts <= t < s.ts + 1 / hz)
        out.append(sample("g", s.ts, **s.features, tcp_retrans=total))
    return out


def anomalies_of(samples, **options):
    det = Detector(baseline_s=20, **options)
    return [a for s in samples for a in det.update(s)], det


def test_one_count_event_after_a_quiet_baseline_is_no_anomaly():
    found, _ = anomalies_of(count_stream({30.0: 1, 45.0: 2}))
    assert found == []


def test_a_sustained_burst_of_count_events_is_an_anomaly():
    burst = {40 + k / 10: 3 for k in range(50)}  # 30 retransmissions a second for 5 s
    found, _ = anomalies_of(count_stream(burst))
    assert len(found) == 1 and found[0].features[0] == "tcp_retrans/s"
    assert 40 <= found[0].onset <= 42


def test_a_restart_relearns_the_baseline(caplog):
    before = guest_stream("g", 0.0, 30, seed=1)
    after = guest_stream("g", 30.0, 70, stalled_from=90.0, seed=2)  # counters from 0
    with caplog.at_level(logging.INFO, logger="vmroc.detect"):
        found, det = anomalies_of(before + after, settle_s=10)
    g = det.guests["g"]
    assert g.refits == 1 and g.fitted
    assert "g: restarted" in caplog.text
    assert g.featurizer.restarts == 1
    # learned again from 40 s to 60 s, then the clock stops at 90 s
    assert len(found) == 1 and 90.0 <= found[0].onset <= 92.5


def test_the_calibrated_threshold_is_per_guest_and_floored():
    found, det = anomalies_of(guest_stream("g", 0.0, 30))
    g = det.guests["g"]
    assert g.cut is not None and g.cut >= g.min_cut and g.model.threshold == g.cut
    _, fixed = anomalies_of(guest_stream("g", 0.0, 30), threshold=8.0)
    assert fixed.guests["g"].cut is None and fixed.guests["g"].model.threshold == 8.0


def test_lof_flags_a_shifted_feature_and_not_normal_rows():
    rng = np.random.default_rng(3)
    X = rng.normal([10, 100, 0], [1, 5, 1], size=(300, 3))
    model = lof(unit=[0, 0, 0]).fit(X)
    normal = rng.normal([10, 100, 0], [1, 5, 1], size=(200, 3))
    assert (model.predict(normal) == 1).mean() >= 0.95
    shifted = normal[:50].copy()
    shifted[:, 2] += 10  # ten deviations on one feature
    assert (model.predict(shifted) == -1).all()
    assert (model.decision_function(shifted) < 0).all()


def test_lof_detects_a_stalled_guest_through_the_detector():
    found, _ = anomalies_of(guest_stream("g2", 0.0, 50, stalled_from=35.0), model="lof")
    assert len(found) == 1 and found[0].detector == "lof"
    assert 35.0 <= found[0].onset <= found[0].ts <= 37.5
    assert found[0].features[0] in ("jiffies/s", "uptime_s/s")


def test_every_model_has_a_name_on_the_command_line():
    assert MODEL_NAMES == tuple(MODELS)


def wobbly_guest(burst_at: float, drop_at: float, seed: int = 3):
    """Free memory flat for 20 s, then wobbling by up to 10 % (clearly normal: within
    half the cut of the first baseline), a 40 % dip for 10 s at ``burst_at`` (the size
    of the wobble's rare extremes, not yet seen), and a 90 % sustained drop at ``drop_at``."""
    rng = np.random.default_rng(seed)
    out = []
    for s in guest_stream("g", 0.0, drop_at + 20):
        free = 1_000_000 + int(rng.integers(-500, 500))
        if s.ts >= 20:
            free += int(100_000 * np.sin(s.ts / 7.0) * rng.uniform(0.8, 1.0))
        if burst_at <= s.ts < burst_at + 10:
            free -= 400_000
        if s.ts >= drop_at:
            free -= 900_000
        out.append(sample("g", s.ts, **{**s.features, "memfree_kb": free}))
    return out


def test_normal_keeps_being_learned_but_not_what_was_abnormal():
    stream = wobbly_guest(burst_at=150.0, drop_at=200.0)
    frozen, _ = anomalies_of(stream, refit_s=None)
    learning, det = anomalies_of(stream)
    # the first baseline never saw the wobble: the dip and the drop are alarms
    assert [round(a.onset) // 10 for a in frozen][:2] == [15, 20], frozen
    # having learned two minutes of wobble, the dip is within normal; the drop is not
    assert [round(a.onset) // 10 for a in learning] == [20], learning
    g = det.guests["g"]
    assert g.fitted_at is not None and g.fitted_at >= 100  # learned again since
    assert all(-g.model.score_samples(np.asarray([x]))[0] < 6.5 for _, x in g.normal)


@pytest.mark.parametrize("n", [1, 2, 3, 50, 51])
def test_column_medians_are_numpys_medians(n):
    from vmroc.detect.models import column_medians
    X = np.random.default_rng(n).gamma(2, size=(n, 7))
    X[:, 1] = 0.0
    X[:, 2] = np.round(X[:, 2])  # ties
    assert np.array_equal(column_medians(X), np.median(X, axis=0))


def test_held_out_scores_of_the_robust_model_are_a_fitted_clones():
    """The calibration scores RobustZScore's blocks without cloning it: the same numbers."""
    from sklearn.base import clone

    from vmroc.detect.calibrate import out_of_sample_abnormality
    X = np.random.default_rng(5).gamma(2, size=(103, 6))
    model = RobustZScore(unit=[0.5, 0, 0, 1, 0, 0])
    got = out_of_sample_abnormality(model, X)
    for held, a in zip(np.array_split(np.arange(len(X)), 4), got):
        rest = np.setdiff1d(np.arange(len(X)), held)
        assert np.array_equal(a, -clone(model).fit(X[rest]).score_samples(X[held]))
    # the calibration leaves the first block unscored: the others are the same numbers
    later = out_of_sample_abnormality(model, X, first=1)
    assert len(later) == 3 and all(np.array_equal(a, b) for a, b in zip(later, got[1:]))
