"""From samples to feature vectors: counter rates and gauge levels, per guest.

The sampler reports raw kernel counters (disk sectors written since boot, jiffies...).
A detector needs what *changes*: ``Featurizer.update(sample)`` turns each sample of
one guest into a vector of per-second rates of the counters and the current levels of
the gauges. Rates are taken over the last ``window_s`` seconds, not between two
samples: the guest's workload ticks once a second, so at 5-10 Hz most sample-to-sample
rates are 0 and the rest spikes. A counter that goes backwards (the guest rebooted)
restarts the featurizer instead of producing a huge negative rate.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from itertools import chain

import numpy as np

from vmroc.events import Sample
from vmroc.introspect import catalog
from vmroc.introspect.logparts import LOG_PARTS, part_of

# What each feature is comes from introspect.catalog; the vector is the watched features:
# counters (their rate per second of wall clock; jiffies and uptime_s stop growing when
# the guest is paused: a rate of 0 is loud), then per-sample counts of new events
# (kernel log lines; summed over the window, per second, so one error line stays
# visible for a window), then new kernel lines by the part they name
# (introspect.logparts), then gauges (their level is the feature; not the load
# averages: they drift for minutes after any change, so a short baseline cannot say
# what is normal for them). Each section in the catalog's order.
_WATCHED = catalog.watched()
_SECTIONS = (
    [f for f in _WATCHED if f.kind == catalog.COUNTER and f.sampled],
    [f for f in _WATCHED if f.kind == catalog.EVENT and f.sampled],
    [f for f in _WATCHED if f.kind == catalog.EVENT and f.group == "logparts"],
    [f for f in _WATCHED if f.kind == catalog.GAUGE and f.sampled],
)
_UNPLACED = [f.name for f in _WATCHED if not any(f in s for s in _SECTIONS)]
if _UNPLACED:  # a watched feature the vector would leave out: say so, never drop it
    raise RuntimeError(f"introspect/catalog.py watches {_UNPLACED}, which the featurizer "
                       "cannot compute (a derived feature it does not know)")
RATES, EVENTS, LOG_EVENTS, LEVELS = (tuple(f.name for f in s) for s in _SECTIONS)
FEATURES = tuple(f.detector_name for s in _SECTIONS for f in s)
_LOG_INDEX = tuple(LOG_PARTS.index(f.part) for f in _SECTIONS[2])
# How the detector weighs a move of one (catalog.COUNTS): counts of ordinary activity
# (packets, I/Os, page faults, retransmissions, any kernel line) are Poisson-like, one
# event the smallest move; a healthy guest has no errors (timeouts, resets, drops, OOM
# kills, error lines), so one is evidence; the small task gauges move by one task.
ERRORS = tuple(f.name for s in _SECTIONS[:3] for f in s if f.count == catalog.ERROR)
COUNTED = tuple(f.name for s in _SECTIONS[:2] for f in s if f.count == catalog.POISSON)
SMALL_COUNTS = tuple(f.name for f in _SECTIONS[3] if f.count == catalog.SMALL)
MIN_DT = 0.02  # samples closer than this carry no rate information
_READ = RATES + EVENTS + LEVELS  # the columns update_batch reads, in the vector's order
_read_all = operator.itemgetter(*_READ)  # every column at once (KeyError: one missing)
_CLOCKS = tuple(_READ.index(n) for n in ("jiffies", "uptime_s"))  # going back: a restart
SMALL_BATCH = 4  # fewer samples than this: update one by one (numpy's overhead is more)
_EXACT = 2.0 ** 53  # below this a counter is a float exactly, so numpy's rate is Python's


class Featurizer:
    """Feature vectors of one guest's samples, in ``FEATURES`` order."""

    names = FEATURES

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self.recent: deque[Sample] = deque()  # samples of the last window_s, oldest first
        self.logs: deque[list[int]] = deque()  # their log lines by part (LOG_PARTS order)
        self.restarts = 0  # counters went backwards: the guest rebooted or was relaunched

    def units(self) -> list[float]:
        """Per feature, the move one event makes (0: not counted so): one per window for
        the rates of ordinary events (``COUNTED``), one task for the small task gauges.
        Detectors floor a feature's scale with it (``models.scale_floor``), so that one
        TCP retransmission after a quiet baseline is no alarm."""
        counted = {f"{name}/s" for name in COUNTED}
        return [1.0 / self.window_s if n in counted else 1.0 if n in SMALL_COUNTS else 0.0
                for n in self.names]

    def update(self, sample: Sample) -> list[float] | None:
        """The vector for ``sample``, or None while there is no rate yet."""
        recent = self.recent
        if recent and any(sample.features.get(n, 0) < recent[-1].features.get(n, 0)
                          for n in ("jiffies", "uptime_s")):
            self.restarts += 1  # the guest restarted: its counters did too
            recent.clear()
            self.logs.clear()
        recent.append(sample)
        self.logs.append(log_counts(sample.log))
        while len(recent) > 2 and recent[1].ts <= sample.ts - self.window_s:
            recent.popleft()
            self.logs.popleft()
        ref = recent[0]
        dt = sample.ts - ref.ts
        if dt < MIN_DT:
            return None
        f, p = sample.features, ref.features
        out = [max(f.get(n, 0.0) - p.get(n, 0.0), 0.0) / dt for n in RATES]
        out += [sum(s.features.get(n, 0.0) for s in list(recent)[1:]) / dt for n in EVENTS]
        out += [sum(c[i] for c in list(self.logs)[1:]) / dt for i in _LOG_INDEX]
        out += [float(f.get(n, 0.0)) for n in LEVELS]
        return [x if math.isfinite(x) else 0.0 for x in out]

    def update_batch(self, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``update`` on each of ``samples`` (one guest's, in order), computed with numpy:
        the vectors (one row per sample), whether each has one (no rate yet: False), and
        whether the guest restarted at each. The same numbers as ``update``, and the same
        state afterwards: where numpy's floats could round otherwise than Python's
        arithmetic (an integer past 2**53, counts of events that are not whole numbers)
        the samples take ``update`` itself, as do batches of fewer than ``SMALL_BATCH``."""
        n = len(samples)
        rows = np.zeros((n, len(self.names)))
        if n < SMALL_BATCH:
            return self._one_by_one(samples, rows)
        old = list(self.recent)
        seq = old + list(samples)
        kept, F_old = getattr(self, "_read", ((), None))  # the window's columns, read before
        if F_old is None or len(kept) != len(old) or any(a is not b for a, b in zip(kept, old)):
            F_old = _columns(old)
        F = np.concatenate([F_old, _columns(samples)])
        p0 = len(old)
        logs = list(self.logs) + [log_counts(s.log) for s in samples]
        nr, ne = len(RATES), len(EVENTS)
        # events and log lines: whole numbers, so a window's sum is exact in any order
        counts = np.concatenate([F[:, nr:nr + ne],
                                 np.asarray(logs, dtype=float)[:, list(_LOG_INDEX)]], axis=1)
        if not _exact(seq, F) or (counts != np.floor(counts)).any() \
                or np.abs(counts).sum() >= _EXACT:
            return self._one_by_one(samples, rows)
        ts = [s.ts for s in seq]
        # restarts: a clock below the previous sample's (update compares with recent[-1])
        clocks = F[:, _CLOCKS]
        back = np.zeros(len(seq), bool)
        back[1:] = (clocks[1:] < clocks[:-1]).any(axis=1)
        back[:p0] = False
        restarted = back[p0:].copy()
        # each sample's window: the oldest sample update keeps before it (its reference)
        lo_of = np.empty(len(seq), dtype=np.intp)
        lo = 0
        window_s = self.window_s
        for k in range(p0, len(seq)):
            if back[k]:
                lo = k
            t = ts[k] - window_s
            while k - lo + 1 > 2 and ts[lo + 1] <= t:
                lo += 1
            lo_of[k] = lo
        idx = np.arange(p0, len(seq))
        ref = lo_of[p0:]
        T = np.asarray(ts)
        dt = T[idx] - T[ref]
        ok = dt >= MIN_DT
        dt = np.where(ok, dt, 1.0)[:, None]
        rows[:, :nr] = np.maximum(F[idx, :nr] - F[ref, :nr], 0.0) / dt
        # events and log lines summed over the window after the reference
        total = np.concatenate([np.zeros((1, counts.shape[1])), np.cumsum(counts, axis=0)])
        rows[:, nr:nr + ne + len(_LOG_INDEX)] = (total[idx + 1] - total[ref + 1]) / dt
        rows[:, nr + ne + len(_LOG_INDEX):] = F[idx, nr + ne:]
        rows[~np.isfinite(rows)] = 0.0
        rows[~ok] = 0.0
        # the state update leaves: the last sample's window
        start = int(lo_of[-1])
        self.recent = deque(seq[start:])
        self.logs = deque(logs[start:])
        self._read = (tuple(self.recent), F[start:])
        self.restarts += int(restarted.sum())
        return rows, ok, restarted

    def _one_by_one(self, samples: list[Sample], rows: np.ndarray):
        ok = np.zeros(len(samples), bool)
        restarted = np.zeros(len(samples), bool)
        for i, s in enumerate(samples):
            before = self.restarts
            x = self.update(s)
            restarted[i] = self.restarts > before
            if x is not None:
                rows[i], ok[i] = x, True
        return rows, ok, restarted


def _exact(samples: list[Sample], F: np.ndarray) -> bool:
    """Whether ``F`` (``_columns(samples)``) holds every value exactly, and numpy's sums
    and differences of them are Python's: finite, and no integer of 2**53 or more."""
    if not np.isfinite(F).all():
        return False
    rows, cols = np.nonzero(np.abs(F) >= _EXACT)
    return not any(type(samples[r].features.get(_READ[c])) is int for r, c in zip(rows, cols))


def _columns(samples: list[Sample]) -> np.ndarray:
    """The features ``update_batch`` reads of each sample (one row each; missing: 0)."""
    n = len(samples)
    try:
        values = chain.from_iterable(map(_read_all, [s.features for s in samples]))
        return np.fromiter(values, float, count=n * len(_READ)).reshape(n, len(_READ))
    except KeyError:  # a sample without some feature (an older sampler): 0 for it
        return np.array([[s.features.get(k, 0.0) for k in _READ] for s in samples],
                        dtype=float).reshape(n, len(_READ))


def log_counts(lines: list[str] | None) -> list[int]:
    """How many of ``lines`` name each part, in ``LOG_PARTS`` order."""
    counts = [0] * len(LOG_PARTS)
    for line in lines or ():
        part = part_of(line)
        if part is not None:
            counts[LOG_PARTS.index(part)] += 1
    return counts
