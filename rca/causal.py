"""Causal ranking: a dependency graph learnt from the series, walked back from the symptoms.

    series = FeatureSeries.from_samples(samples)
    causes = CausalGraphRanker().fit(series).rank(anomalies)   # best first, like Baro

``fit(series)`` learns which (guest, part) drives which, Granger-style:

1. every guest's features are averaged per ``step_s`` second on one time grid, robustly
   scaled (median and IQR of the whole series) and clipped at ``clip``, so the minutes of
   faults in a recording sway the fit no more than its ordinary stretches;
2. each feature is predicted from the last ``lags`` steps of every feature (its own
   past too) by a sparse regression (orthogonal matching pursuit, ``max_parents``
   lagged columns per feature); a lagged column of feature i chosen for feature j is an
   edge i -> j weighted by |coefficient|;
3. edges are summed per (guest, part) pair: ``graph_[a, b]`` is how much node a's past
   explains node b (a node's edges to itself are dropped).

``rank(anomalies)`` scores every node by how far its features moved after the incident's
first onset against the ``before_s`` seconds before it, in two ways: the largest robust
|z| of a feature (as Baro) and the most surprising error of its lagged regression (as
CIRCA: a child moved by its parent is predicted from the parent's past, the node where
the fault entered is not). A node's evidence is the geometric mean of the two (a guest
whose samples stopped scores ``stopped`` on its ``guest`` part). Then a personalized
PageRank on the reversed graph (MicroCause, PyRCA's RandomWalk): from a symptom the
walker moves to a node that explains it, preferring anomalous ones, a little back to
the effects (``backward``), stays on a node more anomalous than its causes, and restarts
at the anomalous nodes (``restart``). The candidates, every part of every guest of the
incident, are ranked by where the walker spends its time.

When ``fit`` sees less than ``min_steps`` steps of data (a live service starts with an
empty series), the graph is learnt at the first ``rank`` with enough data, and learnt
again whenever the series has doubled since.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from vmroc.events import Anomaly, Cause

from .baselines import FeatureSeries, _incident
from .components import PARTS, component, feature_part
from .errors import RCAError

__all__ = ["CausalGraphRanker"]


class CausalGraphRanker:
    """Personalized PageRank over a lagged-regression graph of (guest, part) nodes."""

    def __init__(self, step_s: float = 1.0, lags: int = 2, max_parents: int = 4,
                 clip: float = 5.0, before_s: float = 60.0, after_s: float = 10.0,
                 restart: float = 0.5, backward: float = 0.2, stopped: float = 20.0,
                 min_steps: int = 120):
        self.step_s, self.lags, self.max_parents, self.clip = step_s, lags, max_parents, clip
        self.before_s, self.after_s = before_s, after_s
        self.restart, self.backward, self.stopped = restart, backward, stopped
        self.min_steps = min_steps

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "step_s", "lags", "max_parents", "clip", "before_s", "after_s", "restart",
            "backward", "stopped", "min_steps")}

    def set_params(self, **params: Any) -> "CausalGraphRanker":
        for k, v in params.items():
            if k not in self.get_params():
                raise RCAError(f"CausalGraphRanker has no parameter {k!r}")
            setattr(self, k, v)
        return self

    # -- fit ---------------------------------------------------------------------------

    def fit(self, series: FeatureSeries) -> "CausalGraphRanker":
        """Keep the series and learn the graph from it (later, if it is still short)."""
        if series is None:
            raise RCAError("CausalGraphRanker needs the feature series: "
                           "fit(FeatureSeries.from_samples(samples))")
        if (self.step_s <= 0 or self.lags < 1 or self.max_parents < 1 or self.clip <= 0
                or self.before_s <= 0 or self.after_s < 0 or not 0 < self.restart < 1
                or self.backward < 0):
            raise RCAError("CausalGraphRanker: step_s, lags, max_parents, clip, before_s > 0; "
                           "after_s, backward >= 0; restart in (0, 1)")
        self.series_ = series
        self.parts_ = [feature_part(n) for n in series.names]
        self.nodes_: list[str] = []
        self.graph_ = np.zeros((0, 0))
        self.fitted_on_ = 0  # len(series) the graph was learnt from
        self.model_ = None
        self._learn()
        return self

    def _learn(self) -> None:
        """(Re)learn the graph if the series is long enough and has doubled since."""
        size = len(self.series_)
        if self.fitted_on_ and size < 2 * self.fitted_on_:
            return
        guests = self.series_.guests
        span = _span(self.series_, guests)
        if span is None:
            return
        x = _grid(self.series_, guests, span[0], span[1], self.step_s)
        if len(x) < max(self.min_steps, 10 * self.lags):
            return
        z, columns, centre, scale = _scaled(x, self.clip)
        model = _LaggedModel(self.lags, self.max_parents).fit(z)
        weights = model.edges()
        width = len(self.series_.names)
        nodes = [component(g, p) for g in guests for p in PARTS]
        index = {n: i for i, n in enumerate(nodes)}
        of_column = np.array([index.get(component(guests[c // width],
                                                  self.parts_[c % width]), -1)
                              for c in columns])
        graph = np.zeros((len(nodes), len(nodes)))
        keep = of_column >= 0
        np.add.at(graph, (of_column[keep][:, None], of_column[keep][None, :]),
                  weights[np.ix_(keep, keep)])
        np.fill_diagonal(graph, 0.0)
        self.nodes_, self.graph_, self.fitted_on_ = nodes, graph, size
        self.guests_, self.columns_, self.of_column_ = guests, columns, of_column
        self.centre_, self.scale_, self.model_ = centre, scale, model

    # -- rank --------------------------------------------------------------------------

    def rank(self, anomalies: list[Anomaly]) -> list[Cause]:
        if not hasattr(self, "series_"):
            raise RCAError("CausalGraphRanker.rank before fit(series)")
        if not anomalies:
            return []
        self._learn()
        onset, last, guests = _incident(anomalies)
        end = max(last, onset + self.after_s) + 1e-6
        nodes = list(self.nodes_)
        for g in guests:  # a guest the graph has not seen: its nodes, without edges
            nodes += [component(g, p) for p in PARTS if component(g, p) not in self.nodes_]
        scores, features, stopped = self._anomaly_scores(nodes, onset, end)
        if self.model_ is not None:  # moved, and not as the graph predicted from its causes
            scores = np.sqrt(scores * self._residual_scores(nodes, onset, end))
        scores[stopped] = self.stopped
        graph = np.zeros((len(nodes), len(nodes)))
        graph[:len(self.nodes_), :len(self.nodes_)] = self.graph_
        visits = _walk(graph, scores, self.restart, self.backward)
        candidates = [component(g, p) for g in guests for p in PARTS]
        where = {n: i for i, n in enumerate(nodes)}
        ranked = sorted(candidates, key=lambda c: (-visits[where[c]], -scores[where[c]], c))
        return [Cause(component=c, score=round(float(visits[where[c]]), 4),
                      evidence={"onset": onset, "anomaly": round(float(scores[where[c]]), 2),
                                "features": features.get(c, {})})
                for c in ranked]

    def _residual_scores(self, nodes: list[str], onset: float, end: float) -> np.ndarray:
        """Each node's most surprising error of the lagged regression after the onset."""
        step, lags = self.step_s, self.lags
        start = onset - self.before_s - lags * step
        x = _grid(self.series_, self.guests_, start, end, step)
        z = (x[:, self.columns_] - self.centre_) / self.scale_
        errors = self.model_.errors(z)
        before = int(np.ceil((onset - start) / step)) - lags
        surprise = _surprise(errors, before)
        scores = np.zeros(len(nodes))  # nodes start with self.nodes_, in their order
        keep = self.of_column_ >= 0
        np.maximum.at(scores, self.of_column_[keep], surprise[keep])
        return scores

    def _anomaly_scores(self, nodes: list[str], onset: float, end: float
                        ) -> tuple[np.ndarray, dict[str, dict[str, float]], list[int]]:
        """Each node's largest robust |z| after the onset, its top features, and the
        ``guest`` nodes of guests whose samples stopped at the onset."""
        scores = np.zeros(len(nodes))
        where = {n: i for i, n in enumerate(nodes)}
        features: dict[str, dict[str, float]] = {}
        stopped = []
        for g in sorted({n.split("/")[0] for n in nodes}):
            normal = self.series_.window(g, onset - self.before_s, onset)
            after = self.series_.window(g, onset, end)
            if len(normal) < 5:
                continue
            if not len(after):  # its samples stopped: the guest as a whole is down
                stopped.append(where[component(g, "guest")])
                continue
            z = _robust_max_z(normal, after)
            for name, part, value in zip(self.series_.names, self.parts_, z):
                i = where.get(component(g, part))
                if i is None or value <= 0:
                    continue
                scores[i] = max(scores[i], value)
                features.setdefault(nodes[i], {})[name] = round(float(value), 2)
        features = {c: dict(sorted(f.items(), key=lambda kv: -kv[1])[:5])
                    for c, f in features.items()}
        return scores, features, stopped

def _span(series: FeatureSeries, guests: list[str]) -> tuple[float, float] | None:
    """First and last sample time over ``guests`` (None if one has no samples)."""
    ts = [series.times(g) for g in guests]
    if not guests or any(not len(t) for t in ts):
        return None
    return min(t[0] for t in ts), max(t[-1] for t in ts) + 1e-6


def _grid(series: FeatureSeries, guests: list[str], start: float, stop: float,
          step: float) -> np.ndarray:
    """Every guest's features averaged per step from ``start`` to ``stop``, side by side
    (guest after guest); steps without samples carry the previous step's values."""
    edges = np.arange(start, stop + step, step)
    blocks = []
    for g in guests:
        x = series.window(g, start, edges[-1])
        ts = series.times(g)
        ts = ts[np.searchsorted(ts, start):][:len(x)]
        lo = np.searchsorted(ts, edges[:-1])  # each step's first row
        counts = np.diff(np.append(lo, len(ts)))
        block = np.full((len(lo), x.shape[1]), np.nan)
        full = counts > 0
        if full.any():
            block[full] = np.add.reduceat(x, lo[full], axis=0) / counts[full, None]
        blocks.append(_fill_forward(block))
    return np.hstack(blocks) if blocks else np.zeros((len(edges) - 1, 0))


def _fill_forward(block: np.ndarray) -> np.ndarray:
    """Missing rows take the previous row (the first ones the first present row)."""
    present = ~np.isnan(block[:, 0])
    if not present.any():
        return np.zeros_like(block)
    idx = np.where(present, np.arange(len(block)), 0)
    np.maximum.accumulate(idx, out=idx)
    idx[:int(np.argmax(present))] = int(np.argmax(present))
    return block[idx]


def _scaled(x: np.ndarray, clip: float):
    """Columns that vary, centred on their median, divided by their IQR (their std if
    the IQR is 0) and clipped at +-clip; which columns, their centres and scales."""
    centre = np.median(x, axis=0)
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    scale = q75 - q25
    flat = scale <= 0
    scale[flat] = x[:, flat].std(axis=0)
    columns = np.flatnonzero(scale > 0)
    centre, scale = centre[columns], scale[columns]
    return np.clip((x[:, columns] - centre) / scale, -clip, clip), columns, centre, scale


class _LaggedModel:
    """Each column predicted from the last ``lags`` rows of every column by orthogonal
    matching pursuit (at most ``k`` lagged columns), on standardized columns."""

    def __init__(self, lags: int, k: int):
        self.lags, self.k = lags, k

    def _past(self, z: np.ndarray) -> np.ndarray:
        rows = len(z)
        return np.hstack([z[self.lags - lag:rows - lag] for lag in range(1, self.lags + 1)])

    def fit(self, z: np.ndarray) -> "_LaggedModel":
        from sklearn.linear_model import orthogonal_mp_gram

        past, target = self._past(z), z[self.lags:]
        self.mean_, self.sd_ = past.mean(axis=0), past.std(axis=0)
        self.sd_[self.sd_ <= 0] = 1.0
        self.tmean_, self.tsd_ = target.mean(axis=0), target.std(axis=0)
        self.tsd_[self.tsd_ <= 0] = 1.0
        p, t = (past - self.mean_) / self.sd_, (target - self.tmean_) / self.tsd_
        with warnings.catch_warnings():  # "ended prematurely": fewer useful columns than k
            warnings.simplefilter("ignore", RuntimeWarning)
            coef = orthogonal_mp_gram(p.T @ p, p.T @ t,
                                      n_nonzero_coefs=min(self.k, p.shape[1]))
        self.coef_ = np.nan_to_num(np.asarray(coef).reshape(p.shape[1], z.shape[1]))
        self.used_ = np.flatnonzero(self.coef_.any(axis=1))
        return self

    def edges(self) -> np.ndarray:
        """``w[i, j]``: sum over lags of |coefficient| of column i's past for column j."""
        n = self.coef_.shape[1]
        return np.abs(self.coef_).reshape(self.lags, n, n).sum(axis=0)

    def errors(self, z: np.ndarray) -> np.ndarray:
        """Actual minus predicted, for the rows from ``lags`` on (in target units)."""
        used = self.used_  # the few lagged columns any prediction reads
        past = (self._past(z)[:, used] - self.mean_[used]) / self.sd_[used]
        pred = np.einsum("rk,kc->rc", past, self.coef_[used])
        return (z[self.lags:] - self.tmean_) / self.tsd_ - pred


def _surprise(errors: np.ndarray, before: int, shift_rows: int = 30) -> np.ndarray:
    """Per column, how unlikely its errors from row ``before`` on are against the rows
    before (median and IQR): the largest |z| of one row, or the largest |mean z| of the
    first w rows times sqrt(w) (a shift, small in each row but persistent)."""
    normal, after = errors[:before], errors[before:]
    if len(normal) < 5 or not len(after):
        return np.zeros(errors.shape[1])
    centre = np.median(normal, axis=0)
    q75, q25 = np.percentile(normal, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349
    scale[scale <= 0] = 1.0
    e = (after - centre) / scale
    first = e[:shift_rows]
    shift = np.abs(np.cumsum(first, axis=0)) / np.sqrt(np.arange(1, len(first) + 1))[:, None]
    return np.maximum(np.abs(e).max(axis=0), shift.max(axis=0))


def _robust_max_z(normal: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Each column's largest |z| after, against the median and IQR of the normal rows
    (the std if the IQR is 0; 0 for columns constant before and after)."""
    centre = np.median(normal, axis=0)
    q75, q25 = np.percentile(normal, [75, 25], axis=0)
    scale = q75 - q25
    flat = scale <= 0
    scale[flat] = normal[:, flat].std(axis=0)
    dev = np.abs(after - centre).max(axis=0)
    still = scale <= 0
    scale[still] = 1.0
    z = dev / scale
    z[still] = np.where(dev[still] > 0, 10.0, 0.0)  # a constant that moved: loud
    return z


def _walk(graph: np.ndarray, scores: np.ndarray, restart: float, backward: float,
          steps: int = 100) -> np.ndarray:
    """Personalized PageRank from the anomalous nodes on the reversed graph.

    ``graph[a, b]``: a's past explains b. From node b the walker goes to a cause a with
    weight ``graph[a, b] * score[a]``, to an effect c with ``backward * graph[b, c] *
    score[c]``, stays with ``max(0, score[b] - max score of its causes)``; with
    probability ``restart`` it jumps to a node in proportion to its score."""
    n = len(scores)
    s = scores / scores.max() if scores.max() > 0 else np.full(n, 1.0 / max(n, 1))
    if n == 0:
        return s
    to_cause = graph.T * s[None, :]          # [b, a] = graph[a, b] * s[a]
    to_effect = backward * graph * s[None, :]  # [b, c] = graph[b, c] * s[c]
    linked = graph > 0
    cause_max = np.where(linked.T, s[None, :], 0).max(axis=1)
    move = to_cause + to_effect
    move[np.arange(n), np.arange(n)] += np.maximum(0.0, s - cause_max)
    out = move.sum(axis=1, keepdims=True)
    move = np.where(out > 0, move / np.where(out > 0, out, 1), np.eye(n))
    start = s / s.sum() if s.sum() > 0 else np.full(n, 1.0 / n)
    p = start.copy()
    for _ in range(steps):
        nxt = restart * start + (1 - restart) * p @ move
        if np.abs(nxt - p).sum() < 1e-10:
            return nxt
        p = nxt
    return p
