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
from collections import deque

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
        Detectors floor a feature's scale with it (``models.scale_floor``), so that one TCP retransmission
        after a quiet baseline is no alarm."""
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


def log_counts(lines: list[str] | None) -> list[int]:
    """How many of ``lines`` name each part, in ``LOG_PARTS`` order."""
    counts = [0] * len(LOG_PARTS)
    for line in lines or ():
        part = part_of(line)
        if part is not None:
            counts[LOG_PARTS.index(part)] += 1
    return counts
