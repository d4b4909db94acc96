"""A supervised ranker: what injected faults looked like, learned from labeled incidents.

    examples = incident_examples(run)                  # from a replayed training recording
    ranker = Fingerprint().fit(examples)               # scikit-learn classifiers inside
    ranker.series_ = series; ranker.rank(anomalies)    # (guest, part) causes, best first
    ranker.save("fingerprint.joblib"); Fingerprint.load("fingerprint.joblib")

A fault injector labels its own incidents: the ledger says which guest and which part
broke. For every incident and every guest of the lab, a *profile* describes how the
guest's features moved from the minute before the incident's onset to the end of the
incident: each feature's robust z-score (median and interquartile range of the minute
before; the largest move, signed, on a log scale), the same relative to the other
guests, and when the guest's own anomaly began (if it had one). Two random forests
learn from the profiles of the training incidents: which guests are culprits, and
which part of a culprit broke (with the fault kind as evidence). A cause's score is
P(culprit) x P(part | culprit); probabilities are calibrated (sigmoid, 3-fold) when
every class has enough examples.
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

from .components import PARTS, component
from .errors import RCAError

__all__ = ["Fingerprint", "Example", "incident_examples", "profile"]

MAX_LAG_S = 30.0   # a guest without an anomaly of its own "began" this late
CLIP = 8.0         # log-scaled z-scores beyond this say nothing more


@dataclass(frozen=True)
class Example:
    """One labeled incident: every lab guest's profile, and what broke."""

    profiles: dict[str, np.ndarray]      # guest -> profile vector
    culprits: frozenset[str]             # guests the fault targeted
    part: str                            # the part it broke
    kind: str                            # the fault kind


def profile(series, anomalies: list[Anomaly], guests: Iterable[str], *,
            before_s: float = 60.0, after_s: float = 10.0,
            depends: Mapping[str, Iterable[str]] | None = None) -> dict[str, np.ndarray]:
    """Each guest's profile for the incident made of ``anomalies`` (see the module
    docstring); ``series`` is an ``rca.baselines.FeatureSeries``."""
    onsets: dict[str, float] = {}
    for a in anomalies:
        t = a.onset if a.onset is not None else a.ts
        onsets[a.guest] = min(onsets.get(a.guest, t), t)
    first = min(onsets.values())
    end = max(max(a.ts for a in anomalies), first + after_s) + 1e-6
    guests = sorted(set(guests) | set(onsets))
    z = {g: _moves(series.window(g, first - before_s, first), series.window(g, first, end),
                   len(series.names)) for g in guests}
    callers = {g: 0 for g in guests}
    for client, servers in (depends or {}).items():
        for server in servers:
            callers[server] = callers.get(server, 0) + 1
    out = {}
    for g in guests:
        others = [z[o] for o in guests if o != g]
        peer = np.mean(others, axis=0) if others else np.zeros_like(z[g])
        lag = min(onsets[g] - first, MAX_LAG_S) if g in onsets else MAX_LAG_S
        out[g] = np.concatenate([z[g], z[g] - peer,
                                 [lag, float(g in onsets), len(onsets) / len(guests),
                                  callers.get(g, 0)]])
    return out


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


def incident_examples(run, grace_s: float | None = None) -> list[Example]:
    """Labeled incidents of a replayed recording (``rca.replay.Run`` with its series):
    each effective, detected fault gives the incident holding its first matching
    anomaly (``rca.scorecard``'s honest matching) and its truth."""
    from .scorecard import GRACE_S, score

    scored = score(run.faults, run.anomalies, run.incidents, guests=run.guests,
                   span=run.span, grace_s=GRACE_S if grace_s is None else grace_s)
    by_id = {i.id: i for i in run.incidents}
    out = []
    for row in scored.rows:
        if not (row["effective"] and row["incident"]):
            continue
        incident = by_id[row["incident"]]
        culprits = frozenset(c.split("/")[0] for c in row["truth"])
        part = row["truth"][0].split("/")[1]
        out.append(Example(profile(run.series, incident.anomalies, run.guests,
                                   depends=run.depends), culprits, part, row["kind"]))
    return out


class Fingerprint:
    """Causes ranked by classifiers trained on labeled incidents (``fit(examples)``)."""

    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 1, seed: int = 0):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "min_samples_leaf": self.min_samples_leaf,
                "seed": self.seed}

    def set_params(self, **params: Any) -> "Fingerprint":
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def fit(self, examples: list[Example], meta: dict | None = None) -> "Fingerprint":
        if not examples:
            raise RCAError("Fingerprint.fit needs labeled incidents: train on recordings "
                           "with effective, detected faults")
        Xg, yg, Xp, yp, yk = [], [], [], [], []
        for ex in examples:
            for g, vec in ex.profiles.items():
                Xg.append(vec)
                yg.append(int(g in ex.culprits))
                if g in ex.culprits:
                    Xp.append(vec)
                    yp.append(ex.part)
                    yk.append(ex.kind)
        self.width_ = len(Xg[0])
        self.culprit_ = self._classifier(np.array(Xg), np.array(yg))
        self.part_ = self._classifier(np.array(Xp), np.array(yp))
        self.kind_ = self._classifier(np.array(Xp), np.array(yk))
        self.meta_ = {**(meta or {}), "examples": len(examples),
                      "parts": dict(zip(*np.unique(yp, return_counts=True))),
                      "sklearn": _sklearn_version(), "python": platform.python_version()}
        self.meta_["parts"] = {str(k): int(v) for k, v in self.meta_["parts"].items()}
        self.series_ = None
        self.depends_ = None
        return self

    def _classifier(self, X: np.ndarray, y: np.ndarray):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(n_estimators=self.n_estimators,
                                        min_samples_leaf=self.min_samples_leaf,
                                        class_weight="balanced", random_state=self.seed,
                                        n_jobs=1)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            return _Constant(classes[0])
        if counts.min() >= 3:
            return CalibratedClassifierCV(forest, method="sigmoid", cv=3).fit(X, y)
        return forest.fit(X, y)

    def using(self, series, depends: Mapping[str, Iterable[str]] | None = None
              ) -> "Fingerprint":
        """The feature series (and who calls whom) the profiles are computed from."""
        self.series_, self.depends_ = series, depends
        return self

    def rank(self, anomalies: list[Anomaly]) -> list[Cause]:
        if not hasattr(self, "culprit_"):
            raise RCAError("Fingerprint.rank before fit(); train one with `vmroc rca train`")
        if self.series_ is None:
            raise RCAError("Fingerprint needs the feature series: .using(series)")
        if not anomalies:
            return []
        profiles = profile(self.series_, anomalies, self.series_.guests, depends=self.depends_)
        guests = sorted(profiles)
        X = np.array([profiles[g] for g in guests])
        if X.shape[1] != self.width_:
            raise RCAError(f"this model was trained on {self.width_} profile values and the "
                           f"features give {X.shape[1]}: retrain with `vmroc rca train`")
        p_culprit = _proba(self.culprit_, X, 1)
        p_culprit = p_culprit / (p_culprit.sum() or 1.0)
        parts = _proba_table(self.part_, X)
        kinds = _proba_table(self.kind_, X)
        scores = {}
        for i, g in enumerate(guests):
            for part in PARTS:
                scores[component(g, part)] = (p_culprit[i] * parts[i].get(part, 0.0), i)
        ranked = sorted(scores, key=lambda c: (-scores[c][0], c))
        out = []
        for c in ranked:
            score, i = scores[c]
            kind, pk = max(kinds[i].items(), key=lambda kv: kv[1])
            out.append(Cause(component=c, score=round(float(score), 4), evidence={
                "p_culprit": round(float(p_culprit[i]), 3), "kind": kind,
                "p_kind": round(float(pk), 3)}))
        return out

    # -- files ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model (joblib), with its metadata."""
        import joblib
        if not hasattr(self, "culprit_"):
            raise RCAError("Fingerprint.save before fit()")
        series, self.series_ = self.series_, None
        try:
            joblib.dump(self, path, compress=3)
        finally:
            self.series_ = series
        return Path(path)

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


def _proba_table(model, X: np.ndarray) -> list[dict[str, float]]:
    proba = model.predict_proba(X)
    return [{str(c): float(p) for c, p in zip(model.classes_, row)} for row in proba]


def _sklearn_version() -> str:
    import sklearn
    return sklearn.__version__
