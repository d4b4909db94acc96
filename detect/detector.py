"""Detection over a stream of samples: per-guest baselines, confirmed episodes, silence.

    det = Detector(model="robust", baseline_s=20)
    for sample in samples:                    # any order across guests, in order per guest
        for anomaly in det.update(sample):    # vmroc.events.Anomaly
            ...

Each guest learns its own normal from its first ``baseline_s`` seconds of samples.
After that, ``confirm`` abnormal vectors in a row open an episode and raise one
``Anomaly`` (``ts`` = when confirmed, ``onset`` = the first abnormal sample, the
features that moved most); ``clear`` normal vectors in a row close it. A guest whose
samples stop while other guests' samples go on (crashed, or its sampler marked it
down) raises a ``liveness`` anomaly after ``silence_s`` of stream time.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vmroc.events import Anomaly, Sample

from .errors import BaselineError, DetectError
from .featurize import Featurizer
from .models import MODELS, RobustZScore

log = logging.getLogger(__name__)


def check_model(model: str) -> None:
    if model not in MODELS:
        raise DetectError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")


class GuestDetector:
    """One guest: baseline, then episodes of abnormal vectors."""

    def __init__(self, guest: str, model: str = "robust", baseline_s: float = 20.0,
                 confirm: int = 3, clear: int = 5, min_vectors: int = 20, **model_args: Any):
        check_model(model)
        self.guest = guest
        self.model_name = model
        self.baseline_s, self.confirm, self.clear = baseline_s, confirm, clear
        self.min_vectors = min_vectors
        self.featurizer = Featurizer()
        self.model = MODELS[model](**model_args)
        # RobustZScore names the features; the forest borrows its explanation
        self.explainer = self.model if isinstance(self.model, RobustZScore) else RobustZScore()
        self.log = log.getChild(guest)
        self.started: float | None = None
        self.baseline: list[list[float]] = []
        self.fitted = False
        self.streak: list[tuple[float, float, list[float]]] = []  # (ts, score, vector)
        self.normal_run = 0
        self.in_episode = False
        self.last_ts: float | None = None
        self.anomalies = 0

    def fit(self) -> None:
        if len(self.baseline) < self.min_vectors:
            raise BaselineError(f"guest {self.guest}: {len(self.baseline)} baseline vectors, "
                                f"need {self.min_vectors}; sample longer or faster")
        X = np.asarray(self.baseline)
        self.model.fit(X)
        if self.explainer is not self.model:
            self.explainer.fit(X)
        self.fitted = True
        self.log.info("%s: baseline learned from %d vectors over %.1fs", self.guest, len(X),
                      self.baseline_s)

    def update(self, sample: Sample) -> Anomaly | None:
        self.last_ts = sample.ts
        if self.started is None:
            self.started = sample.ts
        x = self.featurizer.update(sample)
        if x is None:
            return None
        if not self.fitted:
            self.baseline.append(x)
            if sample.ts - self.started >= self.baseline_s and \
                    len(self.baseline) >= self.min_vectors:
                self.fit()
            return None
        score = float(-self.model.decision_function(np.asarray([x]))[0])  # > 0: abnormal
        if score <= 0:
            self.normal_run += 1
            self.streak.clear()
            if self.in_episode and self.normal_run >= self.clear:
                self.in_episode = False
                self.log.info("%s: back to normal", self.guest)
            return None
        self.normal_run = 0
        if self.in_episode:  # already reported; wait for it to clear
            return None
        self.streak.append((sample.ts, score, x))
        if len(self.streak) < self.confirm:
            return None
        self.in_episode = True
        self.anomalies += 1
        worst = max(self.streak, key=lambda s: s[1])
        features = self.explainer.explain(worst[2], self.featurizer.names)
        self.log.info("%s: anomaly (score %.1f): %s", self.guest, worst[1], ", ".join(features))
        onset, self.streak = self.streak[0][0], []
        return Anomaly(guest=self.guest, ts=sample.ts, detector=self.model_name,
                       score=round(worst[1], 3), features=features, onset=onset,
                       deviations=self.explainer.deviations(worst[2], self.featurizer.names))


class Detector:
    """Every guest of a sample stream, plus silence detection across guests."""

    def __init__(self, model: str = "robust", baseline_s: float = 20.0,
                 silence_s: float = 5.0, **options: Any):
        check_model(model)
        self.model, self.baseline_s, self.silence_s = model, baseline_s, silence_s
        self.options = options
        self.guests: dict[str, GuestDetector] = {}
        self.silent: set[str] = set()
        self.now = 0.0  # stream time: the newest sample seen

    def update(self, sample: Sample) -> list[Anomaly]:
        g = self.guests.get(sample.guest)
        if g is None:
            g = self.guests[sample.guest] = GuestDetector(
                sample.guest, self.model, self.baseline_s, **self.options)
        self.silent.discard(sample.guest)
        self.now = max(self.now, sample.ts)
        out = [a for a in (g.update(sample),) if a is not None]
        return out + self.check_silence()

    def check_silence(self) -> list[Anomaly]:
        """A liveness anomaly for each learned guest silent for ``silence_s``."""
        out = []
        for name, g in self.guests.items():
            if not g.fitted or name in self.silent or g.last_ts is None:
                continue
            gap = self.now - g.last_ts
            if gap >= self.silence_s:
                self.silent.add(name)
                g.anomalies += 1
                out.append(Anomaly(guest=name, ts=self.now, detector="liveness",
                                   score=round(gap, 3), features=["samples/s"],
                                   onset=g.last_ts, deviations={"samples/s": round(gap, 2)}))
        return out
