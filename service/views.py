"""What the dashboard pages and their JSON twins show, as plain JSON-ready dicts.

Ranking never sees the ledger: the store keeps incidents as the correlator ranked them,
and the join with the injected faults happens here, on reading, with the matching rules
of ``rca.scorecard`` (a fault matches an incident when one of its anomalies is on a guest
the fault touches, with its onset inside the fault's window; the rank of the truth is
the rank of the fault's part on a target guest).
"""

from __future__ import annotations

from typing import Any

from vmroc.events import FaultEvent, Incident, to_dict

from .store import Store

__all__ = ["incident_list", "incident_detail", "timeline", "faults_view", "guests_view",
           "KEY_FEATURES"]

# What the guest timeline draws (featurized names, as the detector sees them).
KEY_FEATURES = ("jiffies/s", "cpu_user_s/s", "tasks_running", "memfree_kb", "vda_wsec/s",
                "eth0_rxp/s", "log_errors/s")
PLOT_BEFORE_S, PLOT_AFTER_S = 60.0, 30.0     # around an incident's onset and end
MAX_PLOTTED = 6                               # features of an incident's plot


def _scorecard():
    from vmroc.rca.scorecard import GRACE_S, score, summarize
    return GRACE_S, score, summarize


def _lab(store: Store) -> list[str]:
    return [g["name"] for g in store.guests()]


def match(store: Store, incidents: list[Incident], faults: list[FaultEvent] | None = None
          ) -> dict[str, list[dict[str, Any]]]:
    """Incident id -> the injected faults it is credited to, each with the rank of the
    truth in that incident and whether rank 1 is right (``rca.scorecard.score``)."""
    if not incidents:
        return {}
    grace, score, _ = _scorecard()
    if faults is None:
        start = min(_onset(i) for i in incidents)
        faults = store.fault_events(start - grace, max(i.ts for i in incidents))
    lab, span = _lab(store), store.span()
    out: dict[str, list[dict[str, Any]]] = {}
    for inc in incidents:
        if not faults:
            out[inc.id] = []
            continue
        rows = score(faults, [], [inc], guests=lab, span=span, grace_s=grace).rows
        out[inc.id] = [{"fault_id": r["fault_id"], "kind": r["kind"], "guests": r["guests"],
                        "effective": r["effective"], "truth": r["truth"], "rank": r["rank"],
                        "right": r["rank"] == 1} for r in rows if r["detected"]]
    return out


def incident_list(store: Store, limit: int = 50, before: float | None = None,
                  guest: str | None = None) -> dict[str, Any]:
    rows = store.incidents(limit=limit, before=before, guest=guest)
    events = store.incident_events(r["id"] for r in rows)
    matched = match(store, list(events.values()))
    for r in rows:
        r["faults"] = matched.get(r["id"], [])
        r["abstained"] = bool(getattr(events.get(r["id"]), "abstained", False))
    return {"incidents": rows, "next_before": rows[-1]["ts"] if len(rows) == limit else None}


def incident_detail(store: Store, incident_id: str) -> dict[str, Any] | None:
    found = store.incident(incident_id)
    if found is None:
        return None
    inc: Incident = found["event"]
    first = _onset(inc)
    grace, _, _ = _scorecard()
    start, end = first - PLOT_BEFORE_S, inc.ts + PLOT_AFTER_S
    faults = store.fault_events(first - grace, inc.ts)
    causes = []
    for rank, c in enumerate(inc.causes, 1):
        guest, _, part = c.component.partition("/")
        ev = c.evidence if isinstance(c.evidence, dict) else {}
        causes.append({"rank": rank, "component": c.component, "guest": guest, "part": part,
                       "score": c.score, "features": ev.get("features", {}),
                       "link": ev.get("link"), "evidence": c.evidence})
    moved: dict[tuple[str, str], float] = {}
    for a in inc.anomalies:
        for name in a.features:
            dev = (a.deviations or {}).get(name, 0.0)
            key = (a.guest, name)
            moved[key] = max(moved.get(key, 0.0), dev)
    for c in causes[:1]:        # and what the rank-1 cause rests on
        for name, dev in c["features"].items():
            moved.setdefault((c["guest"], name), dev)
    plotted = sorted(moved, key=lambda k: -moved[k])[:MAX_PLOTTED]
    series = []
    for guest in sorted({g for g, _ in plotted}):
        names = [n for g, n in plotted if g == guest]
        rows = store.history(guest, start, end, names)
        for n in names:
            series.append({"guest": guest, "feature": n, "deviation": moved[(guest, n)],
                           "points": [[r["ts"], r["values"].get(n, 0.0)] for r in rows]})
    return {
        "id": inc.id, "ts": inc.ts, "onset": first, "guests": inc.guests,
        "rca_ms": found["rca_ms"], "abstained": inc.abstained,
        "causes": causes,
        "anomalies": [to_dict(a, header=False) for a in inc.anomalies],
        "logs": store.logs(inc.guests, first - 5.0, inc.ts + 2.0),
        "faults": match(store, [inc], faults)[inc.id],
        "plot": {"start": start, "end": end, "onset": first, "confirmed": inc.ts,
                 "series": series, "windows": _windows(faults, set(inc.guests), start, end)},
    }


def timeline(store: Store, guest: str, since: float | None = None,
             window_s: float = 600.0) -> dict[str, Any] | None:
    """The guest's key features over the last ``window_s`` of its samples (or after
    ``since``, for live updates), its anomalies and the fault windows touching it."""
    known = {g["name"]: g for g in store.guests()}
    if guest not in known:
        return None
    end = known[guest]["last_ts"]
    start = end - window_s if since is None else since
    rows = store.history(guest, start, end + 1.0, KEY_FEATURES)
    faults = store.fault_events(start, end)
    return {
        "guest": guest, "start": start, "end": end, "samples": known[guest]["samples"],
        "features": list(KEY_FEATURES),
        "points": [[r["ts"], [r["values"].get(n, 0.0) for n in KEY_FEATURES]] for r in rows],
        "anomalies": [{"ts": a.ts, "onset": a.onset, "detector": a.detector,
                       "features": a.features[:3]}
                      for a in store.anomalies(start - 60.0, end, guest=guest)],
        "windows": _windows(faults, {guest}, start, end),
    }


def guests_view(store: Store, now: float) -> list[dict[str, Any]]:
    return [{"name": g["name"], "samples": g["samples"], "first_ts": g["first_ts"],
             "last_ts": g["last_ts"], "stored_age_s": round(now - g["seen"], 1)}
            for g in store.guests()]


_CACHE: dict[tuple, Any] = {}


def faults_view(store: Store, campaign: str | None = None, limit: int = 200
                ) -> dict[str, Any]:
    """The ledger, one row per fault (newest first) with detection and localization
    times from the scorecard and the time to recover from the ledger; the scorecard of
    ``campaign`` (default: the newest). Kept until the store changes."""
    key = (id(store), campaign, limit)
    version = store.version()
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    out = _faults_view(store, campaign, limit)
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = (version, out)
    return out


def _faults_view(store: Store, campaign: str | None, limit: int) -> dict[str, Any]:
    grace, score, summarize = _scorecard()
    events = store.fault_events(last=limit)
    by_id: dict[str, list[FaultEvent]] = {}
    for e in events:
        by_id.setdefault(e.fault_id, []).append(e)
    injected = sorted((fid for fid, evs in by_id.items()
                       if any(e.phase == "injected" for e in evs)),
                      key=lambda fid: _phase_ts(by_id[fid], "injected"))[-limit:]
    shown = [e for fid in injected for e in by_id[fid]]
    rows = _scored_rows(store, shown, grace, score)
    for r in rows:
        evs = by_id[r["fault_id"]]
        rec = next((e for e in evs if e.phase == "recovered"), None)
        ev = rec.evidence if rec is not None and isinstance(rec.evidence, dict) else {}
        r["time_to_recover_s"] = ev.get("time_to_recover")
        r["recovered"] = ev.get("recovered", rec is not None) if rec is not None else None
        r["campaign"] = evs[0].campaign
        r["ineffective"] = any(e.phase == "ineffective" for e in evs)
    rows.sort(key=lambda r: r["start"], reverse=True)
    campaigns = store.campaigns()
    campaign = campaign or (campaigns[0] if campaigns else None)
    card = None
    if campaign is not None:
        mine = store.fault_events(campaign=campaign)
        scored = _scored(store, mine, grace, score)
        card = {"campaign": campaign, **summarize(scored)} if scored else None
    return {"faults": rows, "campaigns": campaigns, "scorecard": card}


def _scored(store: Store, events: list[FaultEvent], grace: float, score):
    if not events:
        return None
    start = min(e.ts for e in events)
    end = max(e.ts for e in events) + grace
    anomalies = store.anomalies(start - grace, end, light=True)
    incidents = store.incidents_between(start - grace, end + 60.0, light=True)
    return score(events, anomalies, incidents, guests=_lab(store), span=store.span(),
                 grace_s=grace)


def _scored_rows(store: Store, events: list[FaultEvent], grace: float, score):
    scored = _scored(store, events, grace, score)
    return scored.rows if scored else []


def _windows(faults: list[FaultEvent], guests: set[str], start: float, end: float
             ) -> list[dict[str, Any]]:
    """Fault windows meeting [start, end] on one of ``guests`` (or lab-wide)."""
    by_id: dict[str, dict[str, Any]] = {}
    for e in faults:
        w = by_id.setdefault(e.fault_id, {"fault_id": e.fault_id, "kind": e.kind,
                                          "guests": list(e.target.get("guests") or []),
                                          "start": None, "end": None})
        if e.phase == "injected":
            w["start"] = e.ts
        elif e.phase == "recovered":
            w["end"] = e.ts
    out = []
    for w in by_id.values():
        if w["start"] is None or (w["guests"] and not set(w["guests"]) & guests):
            continue
        if w["start"] <= end and (w["end"] is None or w["end"] >= start):
            out.append(w)
    return sorted(out, key=lambda w: w["start"])


def _phase_ts(events: list[FaultEvent], phase: str) -> float:
    return next((e.ts for e in events if e.phase == phase), float("inf"))


def _onset(i: Incident) -> float:
    return min((a.onset if a.onset is not None else a.ts) for a in i.anomalies) \
        if i.anomalies else i.ts
