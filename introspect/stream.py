"""Continuous sampling of several guests at a fixed rate, handing each sample on.

A guest that dies is marked down (logged, counted) and sampling of the others goes
on; a guest that comes back (relaunched) is picked up again on the next check.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from vmroc.events import Sample

from .errors import IntrospectError
from .sampler import KernelChangedError, Sampler

log = logging.getLogger(__name__)

RETRY_DOWN_S = 5.0


@dataclass
class StreamStats:
    """What a streaming run did, per guest and in total."""

    started: float = field(default_factory=time.monotonic)
    samples: dict[str, int] = field(default_factory=dict)
    inconsistent: dict[str, int] = field(default_factory=dict)
    down: dict[str, int] = field(default_factory=dict)  # times a guest was found down
    late_ticks: int = 0  # ticks skipped because sampling took longer than the period
    reopened: dict[str, int] = field(default_factory=dict)  # kernel changed under a sampler

    def rate(self) -> float:
        """Achieved samples per second per guest (mean over guests)."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return sum(self.samples.values()) / max(len(self.samples), 1) / elapsed

    def to_json(self) -> dict[str, Any]:
        return {"elapsed_s": round(time.monotonic() - self.started, 3),
                "rate_per_guest": round(self.rate(), 2), "samples": self.samples,
                "inconsistent": self.inconsistent, "down": self.down,
                "reopened": self.reopened, "late_ticks": self.late_ticks}


def stream(guests: list, handle: Callable[[Sample], None], rate: float = 10.0,
           stop: threading.Event | None = None, count: int | None = None,
           make_sampler: Callable[[Any], Sampler] = Sampler,
           retry_down_s: float = RETRY_DOWN_S) -> StreamStats:
    """Sample every guest ``rate`` times a second and pass each sample to ``handle``,
    until ``stop`` is set or each guest gave ``count`` samples. Guest names must be
    unique (they key the samples)."""
    if len({g.name for g in guests}) != len(guests):
        raise IntrospectError("stream: guest names must be unique")
    stop = stop or threading.Event()
    stats = StreamStats()
    samplers: dict[str, Sampler | None] = {}
    retry_at: dict[str, float] = {}
    for g in guests:
        stats.samples[g.name] = stats.inconsistent[g.name] = stats.down[g.name] = 0
        samplers[g.name] = _open(g, make_sampler, stats, retry_at, retry_down_s)
    period = 1.0 / rate
    tick = stats.started = time.monotonic()  # the rate counts from the first tick
    try:
        while not stop.is_set():
            for g in guests:
                s = samplers[g.name]
                if s is None:
                    if time.monotonic() >= retry_at[g.name]:
                        samplers[g.name] = s = _open(g, make_sampler, stats, retry_at,
                                                     retry_down_s)
                    if s is None:
                        continue
                try:
                    sample = s.sample()
                except KernelChangedError as exc:
                    log.warning("%s; opening it again", exc)
                    stats.reopened[g.name] = stats.reopened.get(g.name, 0) + 1
                    s.close()
                    samplers[g.name] = _open(g, make_sampler, stats, retry_at, retry_down_s)
                    continue
                except Exception as exc:  # noqa: BLE001 - one guest must not stop the others
                    if not isinstance(exc, IntrospectError):
                        log.exception("guest %s: sampler failed; opening it again in %.0fs",
                                      g.name, retry_down_s)
                    log.warning("guest %s down: %s (other guests go on)", g.name, exc)
                    stats.down[g.name] += 1
                    s.close()
                    samplers[g.name] = None
                    retry_at[g.name] = time.monotonic() + retry_down_s
                    continue
                stats.samples[g.name] += 1
                stats.inconsistent[g.name] += not sample.consistent
                handle(sample)
            if count is not None and all(n >= count for n in stats.samples.values()):
                break
            if count is not None and all(samplers[n] is None for n in samplers):
                break
            tick += period
            delay = tick - time.monotonic()
            if delay < 0:
                skipped = int(-delay // period) + 1
                stats.late_ticks += skipped
                tick += skipped * period
                delay = tick - time.monotonic()
            stop.wait(max(delay, 0))
    finally:
        for s in samplers.values():
            if s is not None:
                s.close()
    return stats


def _open(guest, make_sampler, stats: StreamStats, retry_at: dict,
          retry_down_s: float) -> Sampler | None:
    try:
        return make_sampler(guest)
    except (IntrospectError, OverflowError, ValueError) as exc:  # a kernel still booting
        log.warning("guest %s: cannot sample (%s); retrying in %.0fs", guest.name, exc,
                    retry_down_s)
        stats.down[guest.name] += 1
        retry_at[guest.name] = time.monotonic() + retry_down_s
        return None
