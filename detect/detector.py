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
first abnormal sample, the features that moved most); ``clear`` normal vectors in a row
close it. A guest whose samples stop while other guests' samples go on (crashed, or its
sampler marked it down) raises a ``liveness`` anomaly after ``silence_s`` of stream time.

``det.update_batch(samples)`` gives what ``update`` on each would, in the same order,
with each guest's features computed with numpy and its vectors scored in one model call
(split where a fit or refit changes the model); ``update`` is a batch of one.
"""

from __future__ import annotations

import bisect
import inspect
import logging
from typing import Any

import numpy as np

from vmroc.events import Anomaly, Sample

from . import DEFAULT_MODEL
from .calibrate import calibrated_cut
from .errors import BaselineError, DetectError
from .featurize import Featurizer
from .models import MODELS, RobustZScore
from .pool import NormalPool

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

    _fits = 0  # models fitted so far (a class default: detectors pickled before it)

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
        self.normal = NormalPool()  # the vectors judged normal since the baseline
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
        self.baseline: list[list[float]] = []  # collected; an array once fitted
        self.baseline_ts: list[float] = []
        self._base: tuple[np.ndarray, np.ndarray] | None = None  # (times, vectors)
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
        self._base = (np.asarray(self.baseline_ts, dtype=float),
                      np.asarray(self.baseline, dtype=float))
        self._fit(self._base[1], self._base[0])
        self.fitted = self.learned = True
        how = "" if self.cut is None else \
            f"; threshold {self.cut:.2f} for {self.target_fa_per_hour:g} false alarms an hour"
        self.log.info("%s: baseline learned from %d vectors over %.1fs%s", self.guest,
                      len(self.baseline), self.baseline_s, how)

    def refit(self, now: float) -> None:
        """Learn normal again from the baseline and the recent vectors judged normal."""
        self.normal.forget_before(now - self.keep_s)
        ts, X = self._base
        if len(self.normal):
            kept_ts, kept = self.normal.arrays()
            ts, X = np.concatenate([ts, kept_ts]), np.concatenate([X, kept])
        self._fit(X, ts)
        self.log.debug("%s: normal learned again from %d vectors; threshold %s", self.guest,
                       len(ts), "-" if self.cut is None else f"{self.cut:.2f}")

    def _fit(self, X: np.ndarray, ts: np.ndarray) -> None:
        self._fits += 1
        self.fitted_at = float(ts[-1]) if len(ts) else None
        if self.calibrates:
            self.cut = max(self.calibrate(X, ts), self.min_cut)
            if isinstance(self.model, RobustZScore):
                self.model.set_params(threshold=self.cut)
        self.model.fit(X)
        if self.explainer is not self.model:
            self.explainer.fit(X)

    def calibrate(self, X: np.ndarray, ts: np.ndarray) -> float:
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
        self.baseline, self.baseline_ts, self._base = [], [], None
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
        return float(self.abnormalities(np.asarray([x]))[0])

    def abnormalities(self, X: np.ndarray) -> np.ndarray:
        """``abnormality`` of each row of ``X``, in one call of the model."""
        if self.cut is None:
            return -self.model.decision_function(X)
        return -self.model.score_samples(X) - self.cut

    def update(self, sample: Sample) -> Anomaly | None:
        return self._run([sample])[0][0]

    def update_batch(self, samples: list[Sample]) -> list[Anomaly]:
        """``update`` on each of ``samples`` (this guest's, in order): the same anomalies,
        with the features of the whole batch computed at once and its vectors scored in
        one model call per fitted model (a fit or refit inside the batch splits it)."""
        return [a for a in self._run(samples)[0] if a is not None]

    def _run(self, samples: list[Sample]) -> tuple[list[Anomaly | None], int | None]:
        """Per sample its anomaly or None, and the index of the first sample after which
        the guest had learned a baseline (None: not by the end). A fitted guest outside
        an episode takes each run of normal vectors at once (``_normal_run``); the rest
        goes one vector at a time (``_step``)."""
        X, has, restarted = self.featurizer.update_batch(samples)
        n = len(samples)
        out: list[Anomaly | None] = [None] * n
        learned_at = 0 if self.learned else None
        special = ~has | restarted  # rows a run of normal vectors stops at
        times: np.ndarray | None = None  # the samples' times, once needed
        scores = np.empty(0)
        scored_from, scored_to, model_fit = 0, 0, None  # rows scored_from..to
        stops: list[int] = []  # in the scored rows: abnormal or special, or a refit's
        k = 0
        while k < n:
            sample = samples[k]
            self.last_ts = sample.ts
            if self.started is None:
                self.started = sample.ts
            if restarted[k] and (self.fitted or self.baseline):
                self.relearn(sample.ts)
            if not has[k]:
                k += 1
                continue
            if not self.fitted:
                if sample.ts >= self.started:  # else settling after a restart
                    self._learn_baseline(sample, X[k].tolist())
                    if self.fitted and learned_at is None:
                        learned_at = k
                k += 1
                continue
            if model_fit != self._fits or k >= scored_to:
                # score up to the first sample at which a refit may come (it is scored
                # by this model, then the model changes)
                if times is None:
                    times = np.fromiter((s.ts for s in samples), float, n)
                scored_to = self._refit_horizon(times, k)
                scores = self.abnormalities(X[k:scored_to])
                scored_from, model_fit = k, self._fits
                stop = (scores > 0) | special[k:scored_to]
                if self._refit_due(samples[scored_to - 1].ts):
                    stop[-1] = True
                stops = (np.flatnonzero(stop) + k).tolist()
            if not self.in_episode:
                i = bisect.bisect_left(stops, k)
                end = stops[i] if i < len(stops) else scored_to
                if end > k:
                    self._normal_run(times, X, scores[k - scored_from:end - scored_from], k)
                    self.last_ts = samples[end - 1].ts
                    k = end
                    continue
            out[k] = self._step(sample, X[k], float(scores[k - scored_from]))
            k += 1
        return out, learned_at

    def _learn_baseline(self, sample: Sample, x: list[float]) -> None:
        self.baseline.append(x)
        self.baseline_ts.append(sample.ts)
        if sample.ts - self.started >= self.baseline_s and \
                len(self.baseline) >= self.min_vectors:
            self.fit()

    def _refit_due(self, ts: float) -> bool:
        return bool(self.refit_s) and ts - (self.fitted_at or ts) >= self.refit_s

    def _refit_horizon(self, times: np.ndarray, k: int) -> int:
        """One past the first sample from ``k`` on (``times``: the batch's) at which
        ``update`` may refit."""
        if not self.refit_s:
            return len(times)
        ts = times[k:]
        due = np.flatnonzero(ts - (self.fitted_at or ts) >= self.refit_s)
        return k + int(due[0]) + 1 if len(due) else len(times)

    def _normal_run(self, times: np.ndarray, X: np.ndarray, scores: np.ndarray,
                    k: int) -> None:
        """``_step`` on rows ``k``.. of a fitted guest outside an episode (``times``: the
        batch's), all normal (``scores`` <= 0), none of them due to refit: the clearly
        normal ones are kept."""
        self.normal_run += len(scores)
        self.streak.clear()
        if self.cut is None:
            keep = np.flatnonzero(scores <= 0)
        else:
            keep = np.flatnonzero(scores + self.cut <= self.learn_below * self.cut)
        if len(keep):
            self.normal.add(times[k + keep], X[k + keep])

    def _step(self, sample: Sample, x: np.ndarray, score: float) -> Anomaly | None:
        """The episode logic for one vector of a fitted guest (``score`` > 0: abnormal)."""
        if score <= 0:
            self.normal_run += 1
            self.streak.clear()
            if not self.in_episode and self.clearly_normal(score):
                self.normal.add(np.array([sample.ts]), x[None, :].copy())
                if self._refit_due(sample.ts):
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
        return self.update_batch([sample])

    def update_batch(self, samples: list[Sample]) -> list[Anomaly]:
        """``update`` on each of ``samples`` in order, as one batch: each guest's samples
        go through its detector together (``GuestDetector.update_batch``), then the
        stream is walked once more in order for the silence checks. The same anomalies
        in the same order as one ``update`` per sample."""
        by_guest: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            by_guest.setdefault(s.guest, []).append(i)
        # what the silence checks read, as it was before the batch
        learned = {n: g.learned for n, g in self.guests.items()}
        last = {n: g.last_ts for n, g in self.guests.items()}
        found: list[Anomaly | None] = [None] * len(samples)
        learns_at: dict[int, list[str]] = {}  # sample index -> guests learned after it
        for name, where in by_guest.items():
            g = self.guests.get(name)
            if g is None:
                g = self.guests[name] = GuestDetector(name, self.model, self.baseline_s,
                                                      **self.options)
                learned[name], last[name] = False, None
            anomalies, learned_at = g._run([samples[i] for i in where])
            for i, a in zip(where, anomalies):
                found[i] = a
            if learned_at is not None and not learned[name]:
                learns_at.setdefault(where[learned_at], []).append(name)
        out: list[Anomaly] = []
        oldest = self._oldest_watched(learned, last)
        for i, s in enumerate(samples):
            if s.guest in self.silent:
                self.silent.discard(s.guest)
                oldest = min(oldest, s.ts)
            self.now = max(self.now, s.ts)
            last[s.guest] = s.ts
            for name in learns_at.get(i, ()):
                learned[name] = True
                oldest = min(oldest, last[name])
            if found[i] is not None:
                out.append(found[i])
            # no guest can be silent for silence_s if the oldest watched one is not
            if self.now - oldest >= self.silence_s:
                out += self._silent(learned, last)
                oldest = self._oldest_watched(learned, last)
        return out

    def _oldest_watched(self, learned: dict[str, bool], last: dict[str, float | None]) -> float:
        """The oldest last sample of the guests a silence check watches (inf: none)."""
        return min((t for n, t in last.items()
                    if learned[n] and n not in self.silent and t is not None),
                   default=float("inf"))

    def _silent(self, learned: dict[str, bool], last: dict[str, float | None]) -> list[Anomaly]:
        out = []
        for name, g in self.guests.items():
            t = last[name]
            if not learned[name] or name in self.silent or t is None:
                continue
            gap = self.now - t
            if gap >= self.silence_s:
                self.silent.add(name)
                g.anomalies += 1
                out.append(Anomaly(guest=name, ts=self.now, detector="liveness",
                                   score=round(gap, 3), features=["samples/s"],
                                   onset=t, deviations={"samples/s": round(gap, 2)}))
        return out

    def check_silence(self) -> list[Anomaly]:
        """A liveness anomaly for each learned guest silent for ``silence_s``."""
        return self._silent({n: g.learned for n, g in self.guests.items()},
                            {n: g.last_ts for n, g in self.guests.items()})
