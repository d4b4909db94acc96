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
from vmroc.introspect.logparts import LOG_PARTS, part_of

# Counters that only grow: the detector sees their rate per second of wall clock.
# jiffies and uptime_s stop growing when the guest is paused: a rate of 0 is loud.
RATES = (
    "jiffies", "uptime_s",
    "cpu_user_s", "cpu_system_s", "cpu_idle_s", "cpu_iowait_s", "cpu_softirq_s", "cpu_steal_s",
    "rq_nr_switches", "tasks_utime_s", "tasks_stime_s",
    "vm_pgfault", "vm_pgmajfault", "vm_pgscan_kswapd", "vm_pgscan_direct", "vm_oom_kill",
    "vda_rd", "vda_wr", "vda_rsec", "vda_wsec", "vda_ioms",
    "eth0_rxp", "eth0_txp", "eth0_rxb", "eth0_txb",
    "eth0_rxdrop", "eth0_txdrop", "eth0_rxerr", "eth0_txerr",
    "tcp_retrans", "tcp_timeouts", "tcp_lost_retrans", "tcp_outrsts", "tcp_inerrs",
)
# Per-sample counts of new events (kernel log lines; log_errors: level err or worse):
# summed over the window, per second, so one error line stays visible for a window.
EVENTS = ("log_errors", "log_lines")
# New kernel log lines by the part they name (introspect.logparts), counted like EVENTS.
LOG_EVENTS = tuple(f"log_{part}" for part in LOG_PARTS)
# Gauges: their level is the feature. (Not the load averages: they drift for minutes
# after any change, so a short baseline cannot say what is normal for them.)
LEVELS = (
    "tasks", "tasks_running", "tasks_blocked", "tasks_zombie", "memfree_kb",
    "rq_nr_running", "rq_nr_iowait",
)
FEATURES = tuple(f"{name}/s" for name in RATES + EVENTS + LOG_EVENTS) + LEVELS
# Counts of ordinary activity (packets, I/Os, page faults, retransmissions, any kernel
# line; running, blocked and zombie tasks): Poisson-like, where one event is the smallest
# move and comes now and then in a healthy guest. Not the clocks and CPU seconds (they
# tick steadily), the task total and free memory, nor the counts of errors (timeouts,
# resets, drops, OOM kills, error lines): a healthy guest has none, so one is evidence.
ERRORS = ("vm_oom_kill", "eth0_rxdrop", "eth0_txdrop", "eth0_rxerr", "eth0_txerr",
          "tcp_timeouts", "tcp_lost_retrans", "tcp_outrsts", "tcp_inerrs", "log_errors",
          *LOG_EVENTS)
COUNTED = tuple(n for n in RATES + EVENTS
                if n != "jiffies" and not n.endswith("_s") and n not in ERRORS)
SMALL_COUNTS = ("tasks_running", "tasks_blocked", "tasks_zombie", "rq_nr_running",
                "rq_nr_iowait")
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
        out += [sum(c[i] for c in list(self.logs)[1:]) / dt for i in range(len(LOG_PARTS))]
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
