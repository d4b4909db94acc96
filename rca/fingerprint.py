"""A supervised ranker: what injected faults looked like, learned from labeled incidents.

    examples = incident_examples(run)                  # from a replayed training recording
    ranker = Fingerprint().fit(examples)               # a scikit-learn forest inside
    ranker.using(series, depends).rank(anomalies)      # (guest, part) causes, best first
    ranker.save("fingerprint.joblib"); Fingerprint.load("fingerprint.joblib")

A fault injector labels its own incidents: the ledger says which guest and which part
broke. Every candidate cause (each part of each lab guest) of an incident is described
by how that part moved from the minute before the onset to the end of the incident
(robust z-scores of its features, median and interquartile range of the minute before,
on a log scale: the largest rise, the largest fall, how many features moved, the kernel
lines naming the part, and each of the part's features one by one, as is and minus the
other guests' mean: 3-fold CV ensemble AC@1 0.47 -> 0.53-0.56, held-out mixed-s2
0.60 -> 0.66), how the same part moved on the other guests, how the rest of
the guest moved, when the guest's own anomaly began, who calls whom, for its network
whether a broken link of its own explains which guests' networks were anomalous
(``rca.components.network_explains``; 3-fold CV ensemble AC@1 0.55-0.58 -> 0.61-0.63), and where the
heuristic ranker (``rca.ranker``) and BARO (``rca.baselines``) put the candidate. A
random forest learns from the training incidents which candidates were the truth;
a cause's score is its calibrated probability (sigmoid, fitted on 3-fold out-of-fold
predictions; one forest of 150 trees ranks, not one per fold: 3-fold CV on mixed-s1 +
mixed-s3 gave the ensemble AC@1 0.47 / Avg@5 0.72 either way, in a sixth of the
time). A description per
part, not per feature, and the other rankers' opinions as inputs, are what a few dozen
labeled incidents can teach.
"""

from __future__ import annotations

import pickle
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vmroc.events import Anomaly, Cause

from .components import PARTS, component, network_explains
from .errors import RCAError

__all__ = ["Fingerprint", "Example", "incident_examples", "describe"]

MAX_LAG_S = 30.0   # a guest without an anomaly of its own "began" this late
CLIP = 8.0         # log-scaled z-scores beyond this say nothing more


@dataclass(frozen=True)
class Example:
    """One labeled incident: every candidate cause's description, and the truth."""

    candidates: dict[str, np.ndarray]    # component -> description vector
    truth: frozenset[str]                # the components the fault broke
    kind: str                            # the fault kind
    fault_id: str = ""                   # the ledger's fault (to hold faults out)


def describe(series, anomalies: list[Anomaly], guests: Iterable[str], opinions: dict,
             *, before_s: float = 60.0, after_s: float = 10.0,
             depends: Mapping[str, Iterable[str]] | None = None) -> dict[str, np.ndarray]:
    """Every candidate cause of the incident made of ``anomalies`` and its description
    (see the module docstring). ``opinions`` maps a ranker's name to its causes for this
    incident; ``series`` is an ``rca.baselines.FeatureSeries``."""
    onsets: dict[str, float] = {}
    for a in anomalies:
        t = a.onset if a.onset is not None else a.ts
        onsets[a.guest] = min(onsets.get(a.guest, t), t)
    first = min(onsets.values())
    end = max(max(a.ts for a in anomalies), first + after_s) + 1e-6
    guests = sorted(set(guests) | set(onsets))
    parts = _parts_of(tuple(series.names))
    raw = {g: _moves(series.window(g, first - before_s, first),
                     series.window(g, first, end), len(series.names)) for g in guests}
    moved = {g: _by_part(raw[g], parts) for g in guests}
    widest = max(len(idx) for idx, _ in parts)
    callers = {g: 0 for g in guests}
    for servers in (depends or {}).values():
        for server in servers:
            callers[server] = callers.get(server, 0) + 1
    explains = network_explains(anomalies, guests, depends)
    ranks = {name: {c.component: (n, c.score) for n, c in enumerate(causes, 1)}
             for name, causes in sorted(opinions.items())}
    out = {}
    for g in guests:
        lag = min(onsets[g] - first, MAX_LAG_S) if g in onsets else MAX_LAG_S
        others = [o for o in guests if o != g]
        for i, part in enumerate(PARTS):
            own = moved[g][i]
            peers = np.mean([moved[o][i] for o in others], axis=0) if others else own * 0
            rest = np.max([moved[g][j] for j in range(len(PARTS)) if j != i], axis=0)
            idx = parts[i][0]
            each = raw[g][idx]       # the part's own features one by one, padded
            each_peers = np.mean([raw[o][idx] for o in others], axis=0) if others else each * 0
            pad = np.zeros(widest - len(idx))
            comp = component(g, part)
            said = []
            for name in ranks:
                n, score = ranks[name].get(comp, (0, 0.0))
                said += [1.0 / n if n else 0.0, float(score)]
            out[comp] = np.concatenate([own, own - peers, rest, each, pad, each - each_peers,
                                        pad, [
                lag, float(g in onsets), len(onsets) / len(guests), callers.get(g, 0)],
                explains[g] if part == "network" else [0.0, 0.0, 0.0], said, np.eye(len(PARTS))[i]])
    return out


def _parts_of(names: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per part (``PARTS`` order): the indices of its features, and of its kernel lines."""
    from .components import feature_part
    return [(np.array([i for i, n in enumerate(names) if feature_part(n) == p
                       and not n.startswith("log_")], dtype=int),
             np.array([i for i, n in enumerate(names) if n == f"log_{p}/s"], dtype=int))
            for p in PARTS]


def _by_part(z: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Rows per part: the largest rise, the largest fall, how many features moved
    (|z| beyond e^1.5 - 1, about 3.5 robust sigmas), and its kernel lines' rise."""
    rows = []
    for idx, logs in parts:
        v = z[idx] if len(idx) else np.zeros(1)
        rows.append([float(max(v.max(), 0)), float(max(-v.min(), 0)),
                     float((np.abs(v) > 1.5).sum()),
                     float(z[logs].max()) if len(logs) else 0.0])
    return np.array(rows)


def _moves(normal: np.ndarray, after: np.ndarray, width: int) -> np.ndarray:
    """Per feature, the largest robust move after the onset, signed, log-scaled."""
    if len(normal) < 5 or not len(after):
        return np.zeros(width)
    med = np.median(normal, axis=0)
    q1, q3 = np.percentile(normal, [25, 75], axis=0)
    scale = np.maximum((q3 - q1) / 1.349, np.maximum(np.abs(med) * 0.01, 1e-3))
    z = (after - med) / scale
    pick = np.abs(z).argmax(axis=0)
    signed = z[pick, np.arange(z.shape[1])]
    return np.clip(np.sign(signed) * np.log1p(np.abs(signed)), -CLIP, CLIP)


def opinions_of(series, depends) -> dict:
    """The rankers whose opinions a description carries, fitted for this run."""
    from .baselines import Baro
    from .ranker import CausalRanker
    return {"heuristic": CausalRanker(depends).fit(), "baro": Baro().fit(series)}


def incident_examples(run, grace_s: float | None = None) -> list[Example]:
    """Labeled incidents of a replayed recording (``rca.replay.Run`` with its series):
    each effective, detected fault gives the incident holding its first matching
    anomaly (``rca.scorecard``'s honest matching) and its truth."""
    from .scorecard import GRACE_S, score

    scored = score(run.faults, run.anomalies, run.incidents, guests=run.guests,
                   span=run.span, grace_s=GRACE_S if grace_s is None else grace_s)
    by_id = {i.id: i for i in run.incidents}
    rankers = opinions_of(run.series, run.depends)
    out = []
    for row in scored.rows:
        if not (row["effective"] and row["incident"]):
            continue
        anomalies = by_id[row["incident"]].anomalies
        said = {name: r.rank(anomalies) for name, r in rankers.items()}
        out.append(Example(describe(run.series, anomalies, run.guests, said,
                                    depends=run.depends),
                           frozenset(row["truth"]), row["kind"], row["fault_id"]))
    return out


class Fingerprint:
    """Causes ranked by classifiers trained on labeled incidents (``fit(examples)``)."""

    def __init__(self, n_estimators: int = 150, min_samples_leaf: int = 1, seed: int = 0,
                 per_fold: bool = False):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self.per_fold = per_fold  # keep a forest per calibration fold (3x the ranking time)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "min_samples_leaf": self.min_samples_leaf,
                "seed": self.seed, "per_fold": self.per_fold}

    def set_params(self, **params: Any) -> "Fingerprint":
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def fit(self, examples: list[Example], meta: dict | None = None) -> "Fingerprint":
        if not examples:
            raise RCAError("Fingerprint.fit needs labeled incidents: train on recordings "
                           "with effective, detected faults")
        X, y = [], []
        for ex in examples:
            for comp, vec in ex.candidates.items():
                X.append(vec)
                y.append(int(comp in ex.truth))
        self.width_ = len(X[0])
        self.model_ = self._classifier(np.array(X), np.array(y))
        parts = [c.split("/")[1] for ex in examples for c in sorted(ex.truth)[:1]]
        self.meta_ = {**(meta or {}), "examples": len(examples),
                      "parts": {p: parts.count(p) for p in PARTS if p in parts},
                      "sklearn": _sklearn_version(), "python": platform.python_version()}
        self.series_ = None
        self.depends_ = None
        return self

    def _classifier(self, X: np.ndarray, y: np.ndarray):
        from sklearn.calibration import CalibratedClassifierCV

        forest = _forest_class()(n_estimators=self.n_estimators,
                                        min_samples_leaf=self.min_samples_leaf,
                                        class_weight="balanced", random_state=self.seed,
                                        n_jobs=1)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            return _Constant(classes[0])
        if counts.min() >= 3:
            return CalibratedClassifierCV(forest, method="sigmoid", cv=3,
                                          ensemble=bool(self.per_fold)).fit(X, y)
        return forest.fit(X, y)

    def using(self, series, depends: Mapping[str, Iterable[str]] | None = None
              ) -> "Fingerprint":
        """The feature series (and who calls whom) the descriptions are computed from."""
        self.series_, self.depends_ = series, depends
        self.opinions_ = opinions_of(series, depends) if series is not None else None
        return self

    def rank(self, anomalies: list[Anomaly]) -> list[Cause]:
        if not hasattr(self, "model_"):
            raise RCAError("Fingerprint.rank before fit(); train one with `vmroc rca train`")
        if self.series_ is None:
            raise RCAError("Fingerprint needs the feature series: .using(series)")
        if not anomalies:
            return []
        said = {name: r.rank(anomalies) for name, r in self.opinions_.items()}
        cands = describe(self.series_, anomalies, self.series_.guests, said,
                         depends=self.depends_)
        comps = sorted(cands)
        X = np.array([cands[c] for c in comps])
        if X.shape[1] != self.width_:
            raise RCAError(f"this model was trained on {self.width_} values per cause and "
                           f"the features give {X.shape[1]}: retrain with `vmroc rca train`")
        p = _proba(self.model_, X, 1)
        order = sorted(range(len(comps)), key=lambda i: (-p[i], comps[i]))
        return [Cause(component=comps[i], score=round(float(p[i]), 4), evidence={
            name: next((n for n, c in enumerate(causes, 1) if c.component == comps[i]), None)
            for name, causes in said.items()}) for i in order]

    # -- files ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model (joblib), with its metadata. The file is written beside
        and renamed over ``path``: a save that fails leaves the model there untouched."""
        import joblib
        if not hasattr(self, "model_"):
            raise RCAError("Fingerprint.save before fit()")
        path = Path(path)
        part = path.with_name(f".{path.name}.part")
        kept = self.series_, self.opinions_ if hasattr(self, "opinions_") else None
        self.series_, self.opinions_ = None, None
        try:
            joblib.dump(self, part, compress=3)
            part.replace(path)
        finally:
            self.series_, self.opinions_ = kept
            part.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Fingerprint":
        import joblib
        try:
            model = joblib.load(path)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError, KeyError,
                AttributeError, ImportError) as exc:
            raise RCAError(f"cannot load the RCA model {path}: {exc}") from exc
        if not isinstance(model, cls):
            raise RCAError(f"{path} is not a fingerprint model (train one with "
                           "`vmroc rca train`)")
        return model


_FOREST = None


def _forest_class():
    """``RandomForestClassifier`` whose ``predict_proba`` runs its trees in a plain loop:
    the same sums in the same order as scikit-learn's with ``n_jobs=1``, without a
    joblib task per tree (about 0.1 ms each, 150 trees per incident ranked)."""
    global _FOREST
    if _FOREST is None:
        from sklearn.ensemble import RandomForestClassifier

        class SequentialForest(RandomForestClassifier):
            def predict_proba(self, X):
                if self.n_outputs_ != 1 or self.n_jobs not in (None, 1):
                    return super().predict_proba(X)
                X = self._validate_X_predict(X)
                proba = np.zeros((X.shape[0], self.n_classes_), dtype=np.float64)
                for tree in self.estimators_:
                    proba += tree.predict_proba(X, check_input=False)
                proba /= len(self.estimators_)
                return proba

        SequentialForest.__module__ = __name__
        SequentialForest.__qualname__ = "SequentialForest"
        _FOREST = SequentialForest
    return _FOREST


def __getattr__(name: str):
    """``SequentialForest`` for unpickling a model (made on first use: sklearn loads
    only when a model does)."""
    if name == "SequentialForest":
        return _forest_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Constant:
    """A classifier for a training set with a single class."""

    def __init__(self, label):
        self.classes_ = np.array([label])

    def predict_proba(self, X):
        return np.ones((len(X), 1))


def _proba(model, X: np.ndarray, label) -> np.ndarray:
    classes = list(model.classes_)
    if label not in classes:
        return np.zeros(len(X))
    return model.predict_proba(X)[:, classes.index(label)]


def _sklearn_version() -> str:
    import sklearn
    return sklearn.__version__
