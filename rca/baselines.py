"""Baseline rankers: what a ranking is worth when it knows nothing about the lab.

    series = FeatureSeries.from_samples(samples)      # every guest's feature vectors
    causes = NSigma().fit(series).rank(anomalies)      # best first, like CausalRanker

They rank the same candidates as the lab's ranker (every part of every guest of the
incident, ``rca.components``) from the raw feature series around the incident:

- ``Dummy``: a random order, seeded per incident (the floor: AC@1 of 1 in 5 per guest);
- ``NSigma``: each feature's z-score against its mean and standard deviation over the
  ``before_s`` seconds before the incident's first onset; a component scores the
  largest |z| of its features from the onset on (RCAEval's n-sigma);
- ``Baro``: the same with the median and interquartile range (scikit-learn's
  ``RobustScaler``), as BARO's root-cause stage in RCAEval.

"From the onset on" is up to the incident's last confirmed anomaly, at least
``after_s`` seconds. Features come from ``detect.featurize`` (rates over 3 s, gauge
levels), so a baseline sees what the detector saw, not the samplers' raw counters.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable

import numpy as np
from sklearn.preprocessing import RobustScaler, StandardScaler

from vmroc.detect.featurize import FEATURES, Featurizer
from vmroc.events import Anomaly, Cause, Sample

from .components import PARTS, component, feature_part
from .errors import RCAError

__all__ = ["FeatureSeries", "Dummy", "NSigma", "Baro"]


class FeatureSeries:
    """Every guest's feature vectors over time (``detect.featurize.FEATURES`` order).

    Built one sample (``add``) or batch (``add_batch``) at a time, in time order per
    guest; kept as packed doubles, so an hour of three guests at 10 Hz is about 45 MB
    (twice that once windows were read: a guest's rows are copied to numpy on first
    use)."""

    names = FEATURES

    def __init__(self) -> None:
        self._featurizers: dict[str, Featurizer] = {}
        self._ts: dict[str, array] = {}
        self._x: dict[str, array] = {}
        self._frozen: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_samples(cls, samples: Iterable[Sample]) -> "FeatureSeries":
        series = cls()
        for s in sorted(samples, key=lambda s: s.ts):
            series.add(s)
        return series

    def _featurizer(self, guest: str) -> Featurizer:
        f = self._featurizers.get(guest)
        if f is None:
            f = self._featurizers[guest] = Featurizer()
            self._ts[guest], self._x[guest] = array("d"), array("d")
        return f

    def add(self, sample: Sample) -> None:
        f = self._featurizer(sample.guest)
        x = f.update(sample)
        if x is not None:
            self._ts[sample.guest].append(sample.ts)
            self._x[sample.guest].extend(x)
            self._frozen.pop(sample.guest, None)

    def add_batch(self, samples: list[Sample]) -> None:
        """``add`` on each of ``samples`` (in time order per guest), each guest's vectors
        computed at once (``Featurizer.update_batch``): the same series."""
        by_guest: dict[str, list[Sample]] = {}
        for s in samples:
            by_guest.setdefault(s.guest, []).append(s)
        for guest, mine in by_guest.items():
            X, has, _ = self._featurizer(guest).update_batch(mine)
            if has.any():
                self._ts[guest].extend(s.ts for s, h in zip(mine, has) if h)
                self._x[guest].extend(X[has].ravel().tolist())
                self._frozen.pop(guest, None)

    @property
    def guests(self) -> list[str]:
        return sorted(self._ts)

    def __len__(self) -> int:
        return sum(len(t) for t in self._ts.values())

    def window(self, guest: str, start: float, end: float) -> np.ndarray:
        """The vectors of ``guest`` with ``start <= ts < end`` (rows), maybe none."""
        if guest not in self._ts:
            return np.empty((0, len(self.names)))
        ts, x = self._rows(guest)
        lo, hi = np.searchsorted(ts, [start, end], side="left")
        return x[lo:hi]

    def times(self, guest: str) -> np.ndarray:
        """When each of ``guest``'s vectors was taken (ascending), maybe none."""
        return self._rows(guest)[0] if guest in self._ts else np.empty(0)

    def _rows(self, guest: str) -> tuple[np.ndarray, np.ndarray]:
        if guest not in self._frozen:
            # copies: a view would pin the arrays' buffers, and add() could not grow them
            ts = np.frombuffer(self._ts[guest], dtype=float).copy()
            x = np.frombuffer(self._x[guest], dtype=float).reshape(len(ts), -1).copy()
            self._frozen[guest] = ts, x
        return self._frozen[guest]


def _incident(anomalies: list[Anomaly]) -> tuple[float, float, list[str]]:
    """First onset, last confirmation and guests of an incident's anomalies."""
    onset = min(a.onset if a.onset is not None else a.ts for a in anomalies)
    return onset, max(a.ts for a in anomalies), sorted({a.guest for a in anomalies})


class Dummy:
    """Every part of every guest of the incident in a random order, seeded."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, series: FeatureSeries | None = None) -> "Dummy":
        self.fitted_ = True
        return self

    def rank(self, anomalies: list[Anomaly]) -> list[Cause]:
        if not hasattr(self, "fitted_"):
            raise RCAError("Dummy.rank before fit(); call fit() first")
        if not anomalies:
            return []
        onset, _, guests = _incident(anomalies)
        comps = [component(g, p) for g in guests for p in PARTS]
        # seeded by the incident, so a ranking does not depend on what was ranked before
        random.Random(f"{self.seed}:{onset!r}:{','.join(guests)}").shuffle(comps)
        return [Cause(component=c, score=round(1 / len(comps), 4)) for c in comps]


class NSigma:
    """Components ordered by the largest |z| of their features after the onset."""

    scaler = StandardScaler

    def __init__(self, before_s: float = 60.0, after_s: float = 10.0, min_normal: int = 5):
        self.before_s, self.after_s, self.min_normal = before_s, after_s, min_normal

    def fit(self, series: FeatureSeries) -> "NSigma":
        if self.before_s <= 0 or self.after_s < 0:
            raise RCAError(f"{type(self).__name__}: before_s must be > 0, after_s >= 0")
        if series is None:
            raise RCAError(f"{type(self).__name__} needs the feature series: "
                           "fit(FeatureSeries.from_samples(samples))")
        self.series_ = series
        self.parts_ = [feature_part(n) for n in series.names]
        return self

    def rank(self, anomalies: list[Anomaly]) -> list[Cause]:
        if not hasattr(self, "series_"):
            raise RCAError(f"{type(self).__name__}.rank before fit(series)")
        if not anomalies:
            return []
        onset, last, guests = _incident(anomalies)
        end = max(last, onset + self.after_s) + 1e-6
        scores: dict[str, float] = {component(g, p): 0.0 for g in guests for p in PARTS}
        features: dict[str, dict[str, float]] = {c: {} for c in scores}
        for g in guests:
            normal = self.series_.window(g, onset - self.before_s, onset)
            after = self.series_.window(g, onset, end)
            if len(normal) < self.min_normal or not len(after):
                continue  # nothing to compare: this guest's parts stay at 0
            z = np.abs(self.scaler().fit(normal).transform(after)).max(axis=0)
            for name, part, value in zip(self.series_.names, self.parts_, z):
                comp = component(g, part)
                if comp not in scores or not np.isfinite(value):
                    continue
                scores[comp] = max(scores[comp], float(value))
                features[comp][name] = round(float(value), 2)
        ranked = sorted(scores, key=lambda c: (-scores[c], c))
        return [Cause(component=c, score=round(scores[c], 3),
                      evidence={"onset": onset, "features": dict(sorted(
                          features[c].items(), key=lambda kv: -kv[1])[:5])})
                for c in ranked]


class _IQRScaler:
    """scikit-learn's ``RobustScaler()`` (median, 25-75 % range) with the same numbers on
    finite data, its quantiles taken for every column at once rather than column by
    column (a ranking fits one per guest and incident); data with NaN goes to it."""

    def fit(self, X: np.ndarray) -> "_IQRScaler":
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and len(X)
                and np.isfinite(X).all()):
            self._sk = RobustScaler().fit(X)
            return self
        self._sk = None
        self.center_ = np.median(X, axis=0)
        q = np.percentile(X, [25, 75], axis=0)
        scale = q[1] - q[0]
        scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0  # sklearn: constant -> 1
        self.scale_ = scale
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self._sk is not None:
            return self._sk.transform(X)
        return (np.asarray(X, dtype=float) - self.center_) / self.scale_


class Baro(NSigma):
    """NSigma with the median and interquartile range (BARO's ``RobustScaler``)."""

    scaler = _IQRScaler
