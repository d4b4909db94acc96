"""From anomalies to incidents: group what happened together and rank its causes.

    corr = Correlator(CausalRanker(depends=topology).fit(), window_s=10, quiet_s=8)
    for incident in corr.add(anomaly):    # closed incidents, ranked
        ...
    corr.flush(now)                       # close incidents quiet for quiet_s

An anomaly joins the open incident if its onset is within ``window_s`` of the
incident's last anomaly; otherwise it opens a new one. An incident closes when no
anomaly joined it for ``quiet_s`` (of stream time). On closing, its causes are ranked;
a ranker with ``credible(causes)`` (the ensemble) may abstain: the incident then says
``abstained`` (no credible cause) and still shows the ranking.

The correlator never reads the fault ledger: an incident is what was seen, and which
injected fault it belongs to is evaluation's join (``rca.scorecard``), so a ranking
cannot lean on the answer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque

from vmroc.events import Anomaly, Incident

log = logging.getLogger(__name__)


class Correlator:
    """Groups anomalies into incidents and ranks them when they close (``ranker``: any
    ranker of ``rca.rankers``, ``rank(anomalies) -> [Cause]``)."""

    def __init__(self, ranker, window_s: float = 10.0, quiet_s: float = 8.0):
        self.ranker = ranker
        self.window_s, self.quiet_s = window_s, quiet_s
        self.open: list[Anomaly] = []
        self.now = 0.0
        # how long the ranker took per closed incident (the last 10000: a live service)
        self.ranking_ms: deque[float] = deque(maxlen=10_000)

    def add(self, anomaly: Anomaly) -> list[Incident]:
        """Take one anomaly; returns incidents it closed (possibly none)."""
        onset = anomaly.onset if anomaly.onset is not None else anomaly.ts
        closed = []
        if self.open and onset - max(_onset(a) for a in self.open) > self.window_s:
            closed.append(self._close())
        self.open.append(anomaly)
        self.now = max(self.now, anomaly.ts)
        return closed

    def flush(self, now: float | None = None) -> list[Incident]:
        """Close the open incident if it has been quiet for ``quiet_s`` (or ``now`` is None:
        close it whatever its age, e.g. at the end of a replay)."""
        if not self.open:
            return []
        if now is not None:
            self.now = max(self.now, now)
            if self.now - max(a.ts for a in self.open) < self.quiet_s:
                return []
        return [self._close()]

    def _close(self) -> Incident:
        anomalies, self.open = self.open, []
        first = min(_onset(a) for a in anomalies)
        guests = sorted({a.guest for a in anomalies})
        t0 = time.perf_counter()
        causes = self.ranker.rank(anomalies)
        self.ranking_ms.append((time.perf_counter() - t0) * 1000)
        abstained = bool(causes) and not credible(self.ranker, causes)
        digest = hashlib.sha1(f"{first}:{guests}".encode()).hexdigest()[:8]
        incident = Incident(id=f"inc-{int(first)}-{digest}", ts=max(a.ts for a in anomalies),
                            guests=guests, anomalies=anomalies, causes=causes,
                            abstained=abstained)
        log.info("incident %s on %s: rank 1 %s%s", incident.id, ",".join(guests),
                 causes[0].component if causes else "-", " (abstained)" if abstained else "")
        return incident


def credible(ranker, causes: list) -> bool:
    """Whether ``ranker`` stands by its ranking (rankers without ``credible`` always do)."""
    check = getattr(ranker, "credible", None)
    return True if check is None else bool(check(causes))


def _onset(a: Anomaly) -> float:
    return a.onset if a.onset is not None else a.ts
