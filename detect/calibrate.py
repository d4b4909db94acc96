"""A guest's threshold, calibrated from its baseline to a target rate of false alarms.

The baseline is scored out of sample: it is cut in ``blocks`` consecutive blocks, and
each block is scored by a clone of the model fitted on the other blocks, so a feature
that moved in one block only is seen moving, as it would be after the baseline; the
blocks' levels are pooled, but for the first block's (see ``calibrated_cut``). An
episode needs ``confirm`` abnormal vectors in a row, so the level a run of vectors
holds is the smallest abnormality among them; an episode at cut ``c`` starts where
that level rises above ``c``. Twenty seconds cannot show a rate of one an hour, so the
tail of those levels is taken as exponential (peaks over a quantile ``u0``, mean
excess ``beta``) and the cut is where the episode rate falls to the target::

    rate(c) = rate(u0) * exp(-(c - u0) / beta)  =>  c = u0 + beta * ln(rate(u0) / target)

    cut = calibrated_cut(model, X, seconds=20, confirm=3, target_per_hour=1)
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import clone

from .models import RobustZScore, robust_center_scale

__all__ = ["out_of_sample_abnormality", "episode_levels", "episode_starts", "tail_cut",
           "calibrated_cut"]


def out_of_sample_abnormality(model, X, blocks: int = 4, first: int = 0) -> list[np.ndarray]:
    """Per block of consecutive rows (from block ``first`` on), its rows' abnormality
    (``-score_samples``) by a clone of ``model`` fitted on the other blocks."""
    X = np.asarray(X, dtype=float)
    out = []
    for held in np.array_split(np.arange(len(X)), blocks)[first:]:
        lo, hi = (int(held[0]), int(held[-1]) + 1) if len(held) else (0, 0)
        out.append(_held_out(model, np.concatenate([X[:lo], X[hi:]]), X[lo:hi]))
    return out


def _held_out(model, train: np.ndarray, held: np.ndarray) -> np.ndarray:
    """``-score_samples(held)`` of a clone of ``model`` fitted on ``train``; for
    ``RobustZScore`` the same numbers without cloning and checking (it runs at every
    refit of every guest)."""
    if type(model) is RobustZScore:
        median, scale = robust_center_scale(train, model.min_scale, model.unit)
        return (np.abs(held - median) / scale).max(axis=1)
    return -clone(model).fit(train).score_samples(held)


def episode_levels(abnormality: np.ndarray, confirm: int) -> np.ndarray:
    """The level each run of ``confirm`` consecutive vectors holds: their smallest
    abnormality (an episode at cut c needs all of them above c)."""
    a = np.asarray(abnormality, dtype=float)
    if len(a) < confirm:
        return a[:0]
    return np.lib.stride_tricks.sliding_window_view(a, confirm).min(axis=1)


def episode_starts(levels: np.ndarray, cut: float) -> int:
    """How many times the levels rise above ``cut`` (episodes opened)."""
    above = np.asarray(levels) > cut
    return int(above[0]) + int(np.count_nonzero(above[1:] & ~above[:-1])) if len(above) else 0


def tail_cut(levels: np.ndarray, seconds: float, target_per_hour: float,
             quantile: float = 0.75) -> float:
    """The level above which episodes would start ``target_per_hour`` times an hour, by
    the exponential tail of ``levels`` (``seconds`` of them) above their ``quantile``."""
    u0 = float(np.quantile(levels, quantile))
    excess = levels[levels > u0] - u0
    beta = float(excess.mean()) if len(excess) else 0.0
    rate0 = max(episode_starts(levels, u0), 1) / seconds  # episodes per second at u0
    target = target_per_hour / 3600.0
    return u0 + beta * math.log(rate0 / target) if rate0 > target else u0


def calibrated_cut(model, X, seconds: float, confirm: int = 3,
                   target_per_hour: float = 1.0, blocks: int = 4,
                   quantile: float = 0.5) -> float:
    """The abnormality above which confirmed episodes come ``target_per_hour`` times an
    hour on data like ``X`` (``seconds`` long): the tail cut of the blocks' levels
    pooled, but for the first block's (fitted on, never scored: the guest's first
    seconds, just booted or with its rate window still filling, are unlike the rest)."""
    levels = [episode_levels(a, confirm)
              for a in out_of_sample_abnormality(model, X, blocks, first=1)]
    pooled = np.concatenate(levels)
    scored = seconds / len(X) * sum(len(lv) + confirm - 1 for lv in levels)
    return tail_cut(pooled, scored, target_per_hour, quantile)
