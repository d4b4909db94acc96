"""The causal ranker (rca.causal): a known root on synthetic lagged causal graphs."""

from __future__ import annotations

from array import array

import numpy as np
import pytest
from sklearn.base import clone

from vmroc.events import Anomaly
from vmroc.rca.baselines import Dummy, FeatureSeries
from vmroc.rca.causal import CausalGraphRanker, _walk
from vmroc.rca.components import PARTS, component, feature_part
from vmroc.rca.errors import RCAError
from vmroc.rca.rankers import make_ranker
from vmroc.rca.synthetic import KINDS, synthetic_case

GUESTS = ("g1", "g2", "g3")
CASES = 24


def lab_series(case, seed: int) -> tuple[FeatureSeries, str]:
    """A synthetic case's metrics as features of three guests (the rest independent
    noise), and the component its root landed in."""
    rng = np.random.default_rng(seed)
    names = list(FeatureSeries.names)
    slots = [(g, n) for g in GUESTS for n in names if feature_part(n) != "other"]
    metrics = [m for m in case.table if m != "time"]
    picks = rng.choice(len(slots), size=len(metrics), replace=False)
    where = {m: slots[int(k)] for m, k in zip(metrics, picks)}
    t = case.table["time"]
    series = FeatureSeries()
    for g in GUESTS:
        x = rng.normal(10.0, 1.0, (len(t), len(names)))
        for m, (guest, name) in where.items():
            if guest == g:
                x[:, names.index(name)] = case.table[m]
        series._ts[g], series._x[g] = array("d", t), array("d", x.ravel())
    guest, name = where[case.root]
    return series, component(guest, feature_part(name))


def incident(case) -> list[Anomaly]:
    start = case.anomaly_start
    return [Anomaly(guest=g, ts=start + 5, detector="test", score=5.0, onset=start)
            for g in GUESTS]


def rank_of(ranker, case, seed: int) -> int:
    series, truth = lab_series(case, seed)
    comps = [c.component for c in ranker.fit(series).rank(incident(case))]
    assert sorted(comps) == sorted(component(g, p) for g in GUESTS for p in PARTS)
    return comps.index(truth) + 1


def test_root_first_in_most_synthetic_cases_and_better_than_random():
    causal, dummy = [], []
    for i in range(CASES):
        case = synthetic_case(i, kind=KINDS[i % len(KINDS)])
        causal.append(rank_of(CausalGraphRanker(), case, i))
        dummy.append(rank_of(Dummy(seed=i), case, i))
    causal, dummy = np.array(causal), np.array(dummy)
    ac1 = (causal == 1).mean()
    avg5 = np.mean([(causal <= k).mean() for k in range(1, 6)])
    assert ac1 >= 0.6, f"AC@1 {ac1:.2f}, ranks {causal.tolist()}"
    assert ac1 > (dummy == 1).mean() + 0.3
    assert avg5 > np.mean([(dummy <= k).mean() for k in range(1, 6)]) + 0.3


def test_walk_goes_from_effects_to_the_cause():
    graph = np.zeros((3, 3))
    graph[0, 1] = graph[1, 2] = 1.0  # 0 -> 1 -> 2, all equally anomalous
    visits = _walk(graph, np.ones(3), restart=0.5, backward=0.2)
    assert visits.argmax() == 0 and visits[0] > visits[1] > 0
    assert abs(visits.sum() - 1) < 1e-9


def test_a_guest_whose_samples_stop_is_the_cause():
    case = synthetic_case(3, kind="shift")
    series, _ = lab_series(case, 3)
    t = np.frombuffer(series._ts["g2"])
    keep = int(np.searchsorted(t, case.anomaly_start))
    x = np.frombuffer(series._x["g2"]).reshape(len(t), -1)
    series._ts["g2"], series._x["g2"] = array("d", t[:keep]), array("d", x[:keep].ravel())
    causes = CausalGraphRanker().fit(series).rank(incident(case))
    assert causes[0].component == "g2/guest"


def test_get_params_clone_and_errors():
    ranker = CausalGraphRanker(lags=3, restart=0.3)
    again = clone(ranker)
    assert again.get_params() == ranker.get_params() and again is not ranker
    assert again.get_params()["lags"] == 3
    with pytest.raises(RCAError, match="before fit"):
        again.rank(incident(synthetic_case(0)))
    with pytest.raises(RCAError, match="series"):
        again.fit(None)
    with pytest.raises(RCAError):
        CausalGraphRanker(restart=1.5).fit(FeatureSeries())
    with pytest.raises(RCAError, match="no parameter"):
        again.set_params(nope=1)


def test_registry_builds_it_fitted_and_a_short_series_waits_for_data():
    case = synthetic_case(1)
    series, _ = lab_series(case, 1)
    ranker = make_ranker("causal", series=series)
    assert isinstance(ranker, CausalGraphRanker)
    assert ranker.graph_.shape == (15, 15) and ranker.graph_.sum() > 0
    assert ranker.rank(incident(case))[0].evidence["onset"] == case.anomaly_start
    short = CausalGraphRanker(min_steps=10_000).fit(series)
    assert short.graph_.size == 0  # not learnt yet; ranks by the deviations alone
    assert len(short.rank(incident(case))) == 15


def test_baros_scaler_gives_scikit_learns_robust_scaler_numbers():
    """BARO's median / interquartile range, every column at once: the same numbers as
    RobustScaler's column by column (odd and even rows, ties, constant columns), and
    RobustScaler itself for data with NaN."""
    import numpy as np
    from sklearn.preprocessing import RobustScaler

    from vmroc.rca.baselines import _IQRScaler
    rng = np.random.default_rng(11)
    for rows in (5, 6, 61, 600, 601):
        X = np.round(rng.gamma(1.0, size=(rows, 9)), 1)
        X[:, 2] = 4.0                               # constant: scale 1
        A = rng.gamma(1.0, size=(7, 9))
        a, b = RobustScaler().fit(X), _IQRScaler().fit(X)
        assert np.array_equal(a.center_, b.center_) and np.array_equal(a.scale_, b.scale_)
        assert np.array_equal(a.transform(A), b.transform(A))
    X[0, 1] = np.nan
    assert np.array_equal(RobustScaler().fit(X).transform(A), _IQRScaler().fit(X).transform(A))
