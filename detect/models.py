"""Detectors with the scikit-learn outlier-detector contract.

``fit(X)`` learns normal from baseline vectors and returns ``self``; fitted attributes
end in ``_``; ``score_samples(X)`` is lower for more abnormal rows;
``decision_function(X) = score_samples(X) - offset_`` is negative for anomalies;
``predict(X)`` gives +1 (normal) / -1 (anomaly). ``explain(x)`` names the features
that made a row abnormal, most abnormal first.

- ``RobustZScore``: per feature median and MAD of the baseline; a row's score is minus
  its largest robust z-score. Fast, needs no tuning, and says which feature moved.
- ``forest()``: scikit-learn's ``IsolationForest`` on robustly scaled features, for
  anomalies no single feature shows (explained with the z-scores all the same).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import RobustScaler
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["RobustZScore", "forest", "MODELS"]

MAD_TO_SIGMA = 1.4826


class RobustZScore(OutlierMixin, BaseEstimator):
    """Anomaly = some feature more than ``threshold`` deviations from its median.

    A feature's deviation is the largest of its MAD (as a standard deviation), its
    standard deviation (a feature that is mostly flat with bursts has MAD 0) and
    ``min_scale * max(1, |median|)`` (a feature that never moved in the baseline,
    e.g. disk errors, so one change is abnormal but not infinitely so).
    """

    def __init__(self, threshold: float = 8.0, min_scale: float = 0.05):
        self.threshold = threshold
        self.min_scale = min_scale

    def fit(self, X, y=None):
        X = validate_data(self, X)
        self.median_ = np.median(X, axis=0)
        mad = np.median(np.abs(X - self.median_), axis=0) * MAD_TO_SIGMA
        floor = self.min_scale * np.maximum(1.0, np.abs(self.median_))
        self.scale_ = np.maximum(np.maximum(mad, X.std(axis=0)), floor)
        self.offset_ = -float(self.threshold)
        return self

    def zscores(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return np.abs(X - self.median_) / self.scale_

    def score_samples(self, X) -> np.ndarray:
        return -self.zscores(X).max(axis=1)

    def decision_function(self, X) -> np.ndarray:
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) < 0, -1, 1)

    def deviations(self, x, names, least: float = 3.0, top: int = 12) -> dict[str, float]:
        """Feature -> deviations from normal, for the ``top`` features beyond ``least``."""
        z = self.zscores(np.asarray(x, dtype=float).reshape(1, -1))[0]
        order = np.argsort(-z)[:top]
        return {names[i]: round(float(z[i]), 2) for i in order if z[i] >= least}

    def explain(self, x, names, top: int = 3) -> list[str]:
        """The ``top`` features of row ``x`` furthest from normal (beyond the threshold)."""
        z = self.zscores(np.asarray(x, dtype=float).reshape(1, -1))[0]
        order = np.argsort(-z)[:top]
        return [names[i] for i in order if z[i] > self.threshold] or [names[order[0]]]


def forest(random_state: int = 0, contamination: float | str = "auto") -> Pipeline:
    """IsolationForest on RobustScaler-scaled features (a scikit-learn Pipeline)."""
    return Pipeline([("scale", RobustScaler()),
                     ("forest", IsolationForest(n_estimators=100, random_state=random_state,
                                                contamination=contamination))])


MODELS = {"robust": RobustZScore, "forest": forest}
