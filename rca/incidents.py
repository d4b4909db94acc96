"""From anomalies to incidents: group what happened together, rank its causes, and
name the injected fault it belongs to.

    corr = Correlator(CausalRanker(depends=topology).fit(), window_s=10, quiet_s=8)
    corr.add_fault(event)                 # vmroc.faults entries (the ledger), any time
    for incident in corr.add(anomaly):    # closed incidents, ranked
        ...
    corr.flush(now)                       # close incidents quiet for quiet_s

An anomaly joins the open incident if its onset is within ``window_s`` of the
incident's last anomaly; otherwise it opens a new one. An incident closes when no
anomaly joined it for ``quiet_s`` (of stream time). On closing, its causes are ranked
and it is matched to the injected fault whose active time (injection to recovery,
plus ``grace_s``) contains the incident's first onset, preferring a fault on a guest
of the incident.
"""

from __future__ import annotations

import hashlib
import logging

from vmroc.events import Anomaly, FaultEvent, Incident

from .ranker import CausalRanker

log = logging.getLogger(__name__)


class Correlator:
    """Groups anomalies into incidents and ranks them when they close."""

    def __init__(self, ranker: CausalRanker, window_s: float = 10.0, quiet_s: float = 8.0,
                 grace_s: float = 10.0):
        self.ranker = ranker
        self.window_s, self.quiet_s, self.grace_s = window_s, quiet_s, grace_s
        self.open: list[Anomaly] = []
        self.faults: dict[str, dict] = {}  # fault id -> kind, level, guests, start, end
        self.now = 0.0

    def add_fault(self, ev: FaultEvent) -> None:
        """Keep the ledger's view of when each fault was active."""
        f = self.faults.setdefault(ev.fault_id, {"kind": ev.kind, "level": ev.level,
                                                 "guests": list(ev.target.get("guests", [])),
                                                 "start": None, "end": None})
        if ev.phase == "injected":
            f["start"] = ev.ts
        elif ev.phase == "recovered":
            f["end"] = ev.ts

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
        causes = self.ranker.rank(anomalies)
        digest = hashlib.sha1(f"{first}:{guests}".encode()).hexdigest()[:8]
        incident = Incident(id=f"inc-{int(first)}-{digest}", ts=max(a.ts for a in anomalies),
                            guests=guests, anomalies=anomalies, causes=causes,
                            fault_id=self._match(first, guests))
        log.info("incident %s on %s: rank 1 %s (fault %s)", incident.id, ",".join(guests),
                 causes[0].component if causes else "-", incident.fault_id)
        return incident

    def _match(self, first: float, guests: list[str]) -> str | None:
        """The injected fault active when the incident began (on one of its guests, if any)."""
        active = [(fid, f) for fid, f in self.faults.items() if f["start"] is not None
                  and f["start"] - 1.0 <= first <= (f["end"] or float("inf")) + self.grace_s]
        if not active:
            return None
        on_guest = [x for x in active if set(x[1]["guests"]) & set(guests)]
        fid, _ = max(on_guest or active, key=lambda x: x[1]["start"])
        return fid


def _onset(a: Anomaly) -> float:
    return a.onset if a.onset is not None else a.ts
