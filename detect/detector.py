"""Detection over a stream of samples: per-guest baselines, confirmed episodes, silence.

    det = Detector(model="robust", baseline_s=20)
    for sample in samples:                    # any order across guests, in order per guest
        for anomaly in det.update(sample):    # vmroc.events.Anomaly
            ...

Each guest learns its own normal from its first ``baseline_s`` seconds of samples, and
its threshold from the same samples (``detect.calibrate``: the cut at which confirmed
episodes would come ``target_fa_per_hour`` times an hour, never below the model's floor
in ``MIN_CUT``; a ``threshold`` given to the robust model is used as is instead). A guest
whose counters go backwards (it rebooted) learns both again from its next samples.
Normal keeps being learned: every ``refit_s`` of stream time outside an episode, the
model and its threshold are fitted again on the baseline plus the vectors judged
normal in the last ``keep_s`` seconds, so a guest's slower rhythms (writeback bursts,
periodic jobs) that twenty seconds never showed become normal once seen, while what
was judged abnormal never enters. After that, ``confirm`` abnormal vectors in a row
open an episode and raise one ``Anomaly`` (``ts`` = when confirmed, ``onset`` = the
first abnormal sample, the features that moved most); ``clear`` normal vectors in a row close it. A guest whose
samples stop while other guests' samples go on (crashed, or its sampler marked it
down) raises a ``liveness`` anomaly after ``silence_s`` of stream time.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from typing import Any

import numpy as np

from vmroc.events import Anomaly, Sample

from . import DEFAULT_MODEL
from .calibrate import calibrated_cut
from .errors import BaselineError, DetectError
from .featurize import Featurizer
from .models import MODELS, RobustZScore

log = logging.getLogger(__name__)

# The lowest calibrated cut of each model's abnormality (-score_samples): a robust z of
# 6.5, a local outlier factor of 2.5. On the shipped recordings twenty seconds of
# baseline put the calibrated cut at 1.4-4.7 z (events rarer than 20 s are not in them)
# and at a factor of 1.7-1.9, so the floor holds it there; the calibration raises it for
# noisier guests. Robust: 6.5 gives no false alarm on normal and 67 of 76 faults of
# mixed-s1 detected (6: 1 and 70; 7: 0 and 64); lof: the factor of normal's episodes
# peaks at 2.3. Models not listed keep their own offset.
MIN_CUT = {"robust": 6.5, "lof": 2.5}


def check_model(model: str) -> None:
    if model not in MODELS:
        raise DetectError(f"unknown model {model!r}; use one of {', '.join(MODELS)}")


def make_model(model: str, units: list[float], **model_args: Any):
    """The model by its name; given the features' units if it takes them."""
    factory = MODELS[model]
    if "unit" in inspect.signature(factory).parameters:
        model_args.setdefault("unit", units)
    return factory(**model_args)


class GuestDetector:
    """One guest: baseline, then episodes of abnormal vectors."""

    def __init__(self, guest: str, model: str = DEFAULT_MODEL, baseline_s: float = 20.0,
                 confirm: int = 3, clear: int = 5, min_vectors: int = 20,
                 target_fa_per_hour: float | None = 1.0, min_cut: float | None = None,
                 settle_s: float = 20.0, refit_s: float | None = 60.0,
                 keep_s: float = 600.0, learn_below: float = 0.5, **model_args: Any):
        check_model(model)
        self.guest = guest
        self.model_name = model
        self.baseline_s, self.confirm, self.clear = baseline_s, confirm, clear
        self.min_vectors, self.settle_s = min_vectors, settle_s
        self.refit_s, self.keep_s, self.learn_below = refit_s, keep_s, learn_below
        self.normal: deque[tuple[float, list[float]]] = deque()  # judged normal since fit
        self.fitted_at: float | None = None
        self.target_fa_per_hour = target_fa_per_hour
        self.featurizer = Featurizer()
        units = self.featurizer.units()
        self.model = make_model(model, units, **model_args)
        # RobustZScore names the features; the other models borrow its explanation
        self.explainer = self.model if isinstance(self.model, RobustZScore) \
            else RobustZScore(unit=units)
        self.calibrates = (target_fa_per_hour is not None and model in MIN_CUT
                           and "threshold" not in model_args)
        self.min_cut = MIN_CUT.get(model) if min_cut is None else min_cut
        self.cut: float | None = None  # calibrated abnormality cut (None: the model's own)
        self.log = log.getChild(guest)
        self.started: float | None = None
        self.baseline: list[list[float]] = []
        self.baseline_ts: list[float] = []
        self.fitted = False
        self.learned = False  # a baseline was learned once (silence counts from then on)
        self.refits = 0       # baselines learned again after a restart
        self.streak: list[tuple[float, float, list[float]]] = []  # (ts, score, vector)
        self.normal_run = 0
        self.in_episode = False
        self.last_ts: float | None = None
        self.anomalies = 0

    def fit(self) -> None:
        if len(self.baseline) < self.min_vectors:
            raise BaselineError(f"guest {self.guest}: {len(self.baseline)} baseline vectors, "
                                f"need {self.min_vectors}; sample longer or faster")
        self._fit(np.asarray(self.baseline), self.baseline_ts)
        self.fitted = self.learned = True
        how = "" if self.cut is None else \
            f"; threshold {self.cut:.2f} for {self.target_fa_per_hour:g} false alarms an hour"
        self.log.info("%s: baseline learned from %d vectors over %.1fs%s", self.guest,
                      len(self.baseline), self.baseline_s, how)

    def refit(self, now: float) -> None:
        """Learn normal again from the baseline and the recent vectors judged normal."""
        while self.normal and self.normal[0][0] < now - self.keep_s:
            self.normal.popleft()
        ts = self.baseline_ts + [t for t, _ in self.normal]
        self._fit(np.asarray(self.baseline + [x for _, x in self.normal]), ts)
        self.log.debug("%s: normal learned again from %d vectors; threshold %s", self.guest,
                       len(ts), "-" if self.cut is None else f"{self.cut:.2f}")

    def _fit(self, X: np.ndarray, ts: list[float]) -> None:
        self.fitted_at = ts[-1] if ts else None
        if self.calibrates:
            self.cut = max(self.calibrate(X, ts), self.min_cut)
            if isinstance(self.model, RobustZScore):
                self.model.set_params(threshold=self.cut)
        self.model.fit(X)
        if self.explainer is not self.model:
            self.explainer.fit(X)

    def calibrate(self, X: np.ndarray, ts: list[float]) -> float:
        """The cut of the model's abnormality for the target rate of false alarms
        (``ts``: when the rows of ``X`` were taken; gaps left by episodes do not count)."""
        step = float(np.median(np.diff(ts))) if len(ts) > 1 else 0.1
        seconds = step * len(ts)
        return calibrated_cut(self.model, X, seconds=seconds, confirm=self.confirm,
                              target_per_hour=self.target_fa_per_hour)

    def relearn(self, ts: float) -> None:
        """Forget the baseline and any episode: the guest restarted."""
        self.refits += 1
        self.log.info("%s: restarted (its counters went backwards): learning its baseline "
                      "again over %.0fs from %.0fs on (its boot settles first)", self.guest,
                      self.baseline_s, self.settle_s)
        self.started, self.fitted = ts + self.settle_s, False
        self.baseline, self.baseline_ts = [], []
        self.normal.clear()
        self.streak.clear()
        self.normal_run, self.in_episode = 0, False

    def clearly_normal(self, score: float) -> bool:
        """Whether a vector this far below the cut is learned as normal: its abnormality
        within ``learn_below`` of the cut's way down (a vector close to the cut may be a
        fault's weak start, and would teach the detector to tolerate it)."""
        if self.cut is None:
            return score <= 0
        return score + self.cut <= self.learn_below * self.cut

    def abnormality(self, x: list[float]) -> float:
        """How far past the cut vector ``x`` is (> 0: abnormal)."""
        row = np.asarray([x])
        if self.cut is None:
            return float(-self.model.decision_function(row)[0])
        return float(-self.model.score_samples(row)[0] - self.cut)

    def update(self, sample: Sample) -> Anomaly | None:
        self.last_ts = sample.ts
        if self.started is None:
            self.started = sample.ts
        restarts = self.featurizer.restarts
        x = self.featurizer.update(sample)
        if self.featurizer.restarts > restarts and (self.fitted or self.baseline):
            self.relearn(sample.ts)
        if x is None:
            return None
        if not self.fitted:
            if sample.ts < self.started:  # settling after a restart
                return None
            self.baseline.append(x)
            self.baseline_ts.append(sample.ts)
            if sample.ts - self.started >= self.baseline_s and \
                    len(self.baseline) >= self.min_vectors:
                self.fit()
            return None
        score = self.abnormality(x)  # > 0: abnormal
        if score <= 0:
            self.normal_run += 1
            self.streak.clear()
            if not self.in_episode and self.clearly_normal(score):
                self.normal.append((sample.ts, x))
                if self.refit_s and sample.ts - (self.fitted_at or sample.ts) >= self.refit_s:
                    self.refit(sample.ts)
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

    def __init__(self, model: str = DEFAULT_MODEL, baseline_s: float = 20.0,
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
            if not g.learned or name in self.silent or g.last_ts is None:
                continue
            gap = self.now - g.last_ts
            if gap >= self.silence_s:
                self.silent.add(name)
                g.anomalies += 1
                out.append(Anomaly(guest=name, ts=self.now, detector="liveness",
                                   score=round(gap, 3), features=["samples/s"],
                                   onset=g.last_ts, deviations={"samples/s": round(gap, 2)}))
        return out
