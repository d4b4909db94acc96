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
- ``lof()``: scikit-learn's ``LocalOutlierFactor(novelty=True)`` on the z-scaled
  features (``ZScaler``: the scales of ``RobustZScore``, floors included); a row far from
  the baseline's dense neighbourhoods is abnormal. Explained with the z-scores.

Scale floors: a feature that never moved in the baseline still gets a scale, so one
change is abnormal but not infinitely so. It is ``min_scale * max(1, |median|)``, or for
counts of events (``unit`` > 0: the move of one event, e.g. one retransmission per rate
window) a Poisson one, ``sqrt(unit * max(mean, unit))``: the spread of a count at the
baseline's rate, and at least one event. One event after an all-zero baseline is then a
z of 1, not 13.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, TransformerMixin
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import RobustScaler
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["RobustZScore", "ZScaler", "forest", "lof", "scale_floor", "column_medians",
           "MODELS"]

MAD_TO_SIGMA = 1.4826


def scale_floor(X: np.ndarray, median: np.ndarray, min_scale: float,
                unit=None) -> np.ndarray:
    """The smallest scale of each feature (see the module docstring): relative to its
    median, or Poisson for counts (``unit`` > 0)."""
    floor = min_scale * np.maximum(1.0, np.abs(median))
    if unit is None:
        return floor
    unit = np.broadcast_to(np.asarray(unit, dtype=float), floor.shape)
    poisson = np.sqrt(unit * np.maximum(np.abs(X.mean(axis=0)), unit))
    return np.where(unit > 0, poisson, floor)


def robust_center_scale(X: np.ndarray, min_scale: float, unit=None):
    """Per feature: the median and the scale (the largest of the MAD as a standard
    deviation, the standard deviation, and the floor)."""
    if len(X) < 2 or X.ndim != 2:
        median = column_medians(X)
        mad = column_medians(np.abs(X - median)) * MAD_TO_SIGMA
    else:  # one copy of the columns, partitioned for the medians, then made deviations
        S = np.array(X.T, dtype=float, order="C")
        median = _partitioned_medians(S)
        np.abs(np.subtract(S, median[:, None], out=S), out=S)
        mad = _partitioned_medians(S) * MAD_TO_SIGMA
    floor = scale_floor(X, median, min_scale, unit)
    return median, np.maximum(np.maximum(mad, X.std(axis=0)), floor)


def column_medians(X: np.ndarray) -> np.ndarray:
    """``np.median(X, axis=0)``, the same numbers, several times faster: each column
    (contiguous) is partitioned around its middle once (numpy vectorizes a partition at
    one place, not the two ``median`` asks for), the other middle of an even count is
    the largest below it."""
    if len(X) < 2 or X.ndim != 2:
        return np.median(X, axis=0)
    return _partitioned_medians(np.array(X.T, order="C"))


def _partitioned_medians(S: np.ndarray) -> np.ndarray:
    """The median of each row of ``S`` (contiguous rows, at least 2 columns), which it
    partitions in place."""
    n = S.shape[1]
    h = n // 2
    S.partition(h, axis=1)
    return S[:, h].copy() if n % 2 else (S[:, :h].max(axis=1) + S[:, h]) / 2


def _plain_array(X) -> bool:
    """Whether ``X`` is a finite 2-D float array with rows and columns, which
    ``validate_data`` returns unchanged."""
    return (type(X) is np.ndarray and X.dtype == np.float64 and X.ndim == 2
            and X.shape[0] > 0 and X.shape[1] > 0 and bool(np.isfinite(X).all()))


def _plain_rows(estimator, X) -> bool:
    """Whether ``X`` is a finite 2-D float array of the fitted width, for an estimator
    fitted without feature names: ``validate_data(reset=False)`` would return it
    unchanged (it costs more than scoring a few rows, the detector's hot path)."""
    return (_plain_array(X) and X.shape[1] == estimator.n_features_in_
            and not hasattr(estimator, "feature_names_in_"))


class RobustZScore(OutlierMixin, BaseEstimator):
    """Anomaly = some feature more than ``threshold`` deviations from its median.

    A feature's deviation is the largest of its MAD (as a standard deviation), its
    standard deviation (a feature that is mostly flat with bursts has MAD 0) and a floor
    (``scale_floor``: ``min_scale`` relative to the median, or the Poisson spread of a
    count whose one event moves it by ``unit``, per feature; None: no counts).
    """

    def __init__(self, threshold: float = 8.0, min_scale: float = 0.05, unit=None):
        self.threshold = threshold
        self.min_scale = min_scale
        self.unit = unit

    def fit(self, X, y=None):
        if _plain_array(X):  # what validate_data would pass as is: skip its cost
            self.n_features_in_ = X.shape[1]
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            X = validate_data(self, X)
        self.median_, self.scale_ = robust_center_scale(X, self.min_scale, self.unit)
        self.offset_ = -float(self.threshold)
        return self

    def zscores(self, X) -> np.ndarray:
        if not hasattr(self, "scale_"):  # check_is_fitted's question, at a tenth of its cost
            check_is_fitted(self)
        if not _plain_rows(self, X):  # what validate_data would pass as is: skip its cost
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


class ZScaler(TransformerMixin, BaseEstimator):
    """Features as deviations from the baseline median, in the scales of
    ``RobustZScore`` (floors included): signed robust z-scores."""

    def __init__(self, min_scale: float = 0.05, unit=None):
        self.min_scale = min_scale
        self.unit = unit

    def fit(self, X, y=None):
        X = validate_data(self, X)
        self.center_, self.scale_ = robust_center_scale(X, self.min_scale, self.unit)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return (X - self.center_) / self.scale_


def lof(unit=None, n_neighbors: int = 20) -> Pipeline:
    """LocalOutlierFactor (novelty) on ZScaler-scaled features (a scikit-learn Pipeline);
    ``unit`` as in ``RobustZScore``."""
    return Pipeline([("scale", ZScaler(unit=unit)),
                     ("lof", LocalOutlierFactor(n_neighbors=n_neighbors, novelty=True))])


MODELS = {"robust": RobustZScore, "forest": forest, "lof": lof}
