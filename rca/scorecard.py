"""The scorecard of a run: per fault kind and overall, how many faults were noticed, how
fast, whether the right cause was named, and how often we cried wolf.

    card = scorecard(fault_events, anomalies, incidents, samples)   # one recording
    card["detection_rate"], card["ac1"], card["per_kind"]["disk-eio"]["avg5"]

    scored = score(fault_events, anomalies, incidents, guests=..., span=(t0, t1))
    card = summarize(scored_a + scored_b)                           # several recordings

Pure functions of the ledger, the anomalies and the incidents; nothing is read from the
bus or a file, so any ranker's incidents can be scored the same way.

Matching is honest:

- a fault *touches* its target guests, and for ``network`` and ``cluster`` level kinds
  every other guest of the lab too (its peers see the broken network or the dead peer);
- an anomaly *matches* a fault when it is on a guest the fault touches and its onset is
  inside the fault's window: injection to recovery + ``grace_s`` (recovery missing: to
  the end of the recording);
- a fault is *detected* by its first matching anomaly (detection latency: injection to
  that anomaly's confirmation); an incident is credited to every fault one of its
  anomalies matches (several at once, for overlapping faults); an incident credited to
  no fault is a false alarm;
- only *effective* faults (an ``effect-observed`` entry in the ledger) are scored;
  ``faults`` and ``effective`` count all of them.

Accuracy follows RCAEval: the rank of the true cause (the part the fault's ledger
entries name, ``FaultEvent.broken_part()``, on one of its target guests; on any lab
guest for a fault without targets, e.g. ``bridge-down``) in the incident that holds the
detecting anomaly; AC@k is the share of scored faults with the truth in the top k (an
undetected fault is a miss at every k) and Avg@5 the mean of AC@1..AC@5. ``ac1_ceiling``
is the largest AC@1 any ranker could reach on these incidents: an incident names one
rank-1 cause, so of overlapping faults on different parts in one incident at most those
sharing a truth can be right (with undetected faults, it bounds what ranking can fix).
Localization latency is injection to the first credited incident whose rank-1 cause is
right and claimed (``Incident.ts``, its last anomaly's confirmation; a live RCA worker
publishes the ranking once the incident has been quiet for its ``quiet_s``).

Abstentions are counted, not hidden: an incident whose ranker found no credible cause
(``Incident.abstained``) still shows its ranking, and AC@k reads it as always;
``abstained`` counts the detected faults whose incident abstained and ``ac1_answered``
is AC@1 over the detected faults whose incident did not (what a claimed answer is worth).
"""

from __future__ import annotations

import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vmroc.events import Anomaly, FaultEvent, Incident, Sample

from .components import PARTS, component

__all__ = ["scorecard", "score", "summarize", "rerank", "format_faults", "named", "Scored",
           "GRACE_S", "METRICS"]

GRACE_S = 10.0
LAB_WIDE = ("network", "cluster")   # levels whose faults touch every guest of the lab
METRICS = ("faults", "effective", "detected", "detection_rate", "median_detection_latency_s",
           "p90_detection_latency_s", "median_localization_latency_s", "ac1", "ac1_ceiling",
           "ac3", "avg5", "abstained", "ac1_answered")


@dataclass
class Scored:
    """Faults matched to anomalies and incidents, before summing up; ``+`` joins runs."""

    rows: list[dict[str, Any]] = field(default_factory=list)   # one per injected fault
    false_alarms: list[str] = field(default_factory=list)      # incident ids
    incidents: int = 0
    hours: float = 0.0

    def __add__(self, other: "Scored") -> "Scored":
        return Scored(self.rows + other.rows, self.false_alarms + other.false_alarms,
                      self.incidents + other.incidents, self.hours + other.hours)


def scorecard(faults: Iterable[FaultEvent], anomalies: Iterable[Anomaly],
              incidents: Iterable[Incident], samples: Iterable[Sample] = (), *,
              grace_s: float = GRACE_S) -> dict[str, Any]:
    """The metrics of one run; ``samples`` give the lab's guests and the hours recorded."""
    guests, t0, t1 = set(), None, None
    for s in samples:
        guests.add(s.guest)
        t0 = s.ts if t0 is None else min(t0, s.ts)
        t1 = s.ts if t1 is None else max(t1, s.ts)
    span = (t0, t1) if t0 is not None else None
    return summarize(score(faults, anomalies, incidents, guests=guests, span=span,
                           grace_s=grace_s))


def score(faults: Iterable[FaultEvent], anomalies: Iterable[Anomaly],
          incidents: Iterable[Incident], *, guests: Iterable[str] = (),
          span: tuple[float, float] | None = None, grace_s: float = GRACE_S) -> Scored:
    """Match one run's faults to its anomalies and incidents (see the module docstring).

    ``guests`` are the lab's guests (a network or cluster fault's peers); ``span`` is
    the recording's first and last sample time (hours recorded, open fault windows)."""
    incidents = list(incidents)
    of_anomaly: dict[tuple, Incident] = {}
    for inc in sorted(incidents, key=lambda i: i.ts, reverse=True):  # earliest wins
        for a in inc.anomalies:
            of_anomaly[_key(a)] = inc
    # every anomaly once, also those only inside incidents (e.g. read back from the bus)
    every = {_key(a): a for a in [*anomalies, *(a for i in incidents for a in i.anomalies)]}
    by_onset = sorted(every.values(), key=_onset)
    onsets = [_onset(a) for a in by_onset]
    lab = set(guests) | {a.guest for a in by_onset}
    credited: set[str] = set()
    rows = []
    for w in _windows(faults, lab, span[1] if span else None, grace_s):
        row = {k: w[k] for k in ("fault_id", "kind", "level", "guests", "truth", "start",
                                 "end", "effective")}
        inside = by_onset[bisect_left(onsets, w["start"]):bisect_right(onsets, w["until"])]
        hits = sorted((a for a in inside if a.guest in w["touched"]), key=lambda a: a.ts)
        own = sorted({i.id: i for i in map(of_anomaly.get, map(_key, hits)) if i}.values(),
                     key=lambda i: i.ts)
        credited.update(i.id for i in own)
        first = of_anomaly.get(_key(hits[0])) if hits else None
        comps = [c.component for c in first.causes] if first else []
        right = next((i for i in own if i.causes and i.causes[0].component in w["truth"]
                      and not i.abstained), None)
        row.update({
            "detected": bool(hits),
            "detection_latency_s": round(hits[0].ts - w["start"], 3) if hits else None,
            "incident": first.id if first else None,
            "rank": next((n for n, c in enumerate(comps, 1) if c in w["truth"]), None),
            "rank1": comps[0] if comps else None,
            "abstained": bool(first and first.abstained),
            "localization_latency_s": round(right.ts - w["start"], 3) if right else None,
        })
        rows.append(row)
    false_alarms = [i.id for i in sorted(incidents, key=lambda i: i.ts)
                    if i.id not in credited]
    hours = (span[1] - span[0]) / 3600 if span else 0.0
    return Scored(rows, false_alarms, len(incidents), hours)


def summarize(scored: Scored) -> dict[str, Any]:
    """Overall metrics, then ``per_kind`` (the same but the false alarms, which have no
    kind)."""
    out = _metrics(scored.rows)
    out.update({
        "incidents": scored.incidents,
        "false_alarms": len(scored.false_alarms),
        "hours": round(scored.hours, 4),
        "false_alarms_per_hour": (round(len(scored.false_alarms) / scored.hours, 2)
                                  if scored.hours > 0 else None),
    })
    kinds = sorted({r["kind"] for r in scored.rows})
    out["per_kind"] = {k: _metrics([r for r in scored.rows if r["kind"] == k]) for k in kinds}
    return out


def format_faults(rows: list[dict[str, Any]], card: dict[str, Any]) -> str:
    """One line per injected fault (``score(...).rows``: detected, how fast, rank of the
    truth), then the summary line of ``card`` (``summarize``): what a person reads."""
    lines = [f"{'fault':<16} {'truth':<22} {'detected':>8} {'after s':>7} {'rank':>4}  rank 1"]
    for r in rows:
        after = "-" if r["detection_latency_s"] is None else f"{r['detection_latency_s']:.2f}"
        detected = "yes" if r["detected"] else ("no" if r["effective"] else "no effect")
        lines.append(f"{r['kind']:<16} {','.join(r['truth']):<22} {detected:>8} {after:>7} "
                     f"{r['rank'] or '-':>4}  {r['rank1'] or '-'}")
    m = card
    lines.append(f"{m['detected']}/{m['effective']} effective faults detected (median "
                 f"{m['median_detection_latency_s']} s); AC@1 {m['ac1']}, AC@3 {m['ac3']}, "
                 f"Avg@5 {m['avg5']}; {m['false_alarms']} false alarm(s) in "
                 f"{m['incidents']} incident(s)")
    return "\n".join(lines)


NAMED = ("right", "other guest", *PARTS, "none", "undetected")  # the columns of ``named``


def named(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Where the misses go: per broken part, what the rank-1 cause of its effective faults
    named (``NAMED``): the truth (``right``), the same part of another guest (``other
    guest``), another part (by name; ``guest`` is the whole machine), no cause at all
    (``none``), or nothing detected (``undetected``)."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        if not r["effective"] or not r["truth"]:
            continue
        part = r["truth"][0].partition("/")[2]
        said = r["rank1"]
        if not r["detected"]:
            what = "undetected"
        elif said is None:
            what = "none"
        elif said in r["truth"]:
            what = "right"
        else:
            other = said.partition("/")[2]
            what = "other guest" if other == part else other
        counts = out.setdefault(part, dict.fromkeys(NAMED, 0))
        counts[what] = counts.get(what, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: PARTS.index(kv[0])
                       if kv[0] in PARTS else len(PARTS)))


def rerank(incidents: Iterable[Incident], ranker) -> list[Incident]:
    """The same incidents (same anomalies, same windows) with ``ranker``'s causes."""
    from .incidents import credible
    out = []
    for i in incidents:
        causes = ranker.rank(i.anomalies)
        out.append(replace(i, causes=causes,
                           abstained=bool(causes) and not credible(ranker, causes)))
    return out


def _metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [r for r in rows if r["effective"]]
    n = len(scored)
    detected = [r for r in scored if r["detected"]]
    latency = [r["detection_latency_s"] for r in detected]
    localized = [r["localization_latency_s"] for r in scored
                 if r["localization_latency_s"] is not None]
    ac = [sum(r["rank"] is not None and r["rank"] <= k for r in scored) / n if n else None
          for k in range(1, 6)]
    answered = [r for r in detected if not r.get("abstained")]
    abstained = len(detected) - len(answered)
    return {
        "faults": len(rows),
        "effective": n,
        "detected": len(detected),
        "detection_rate": round(len(detected) / n, 3) if n else None,
        "median_detection_latency_s": _round(statistics.median(latency)) if latency else None,
        "p90_detection_latency_s": _round(np.percentile(latency, 90)) if latency else None,
        "median_localization_latency_s": (_round(statistics.median(localized))
                                          if localized else None),
        "ac1": round(ac[0], 3) if n else None,
        "ac1_ceiling": round(_ac1_ceiling(scored) / n, 3) if n else None,
        "ac3": round(ac[2], 3) if n else None,
        "avg5": round(sum(ac) / 5, 3) if n else None,
        "abstained": abstained,
        "ac1_answered": (round(sum(r["rank"] == 1 for r in answered) / len(answered), 3)
                         if answered else None),
    }


def _ac1_ceiling(scored: list[dict[str, Any]]) -> int:
    """How many of the faults any ranker could name at rank 1 with these incidents: an
    incident has one rank-1 cause, so of the faults detected in it only those sharing
    one truth can all be right (overlapping faults on different parts cannot)."""
    truths: dict[str, list[list[str]]] = {}
    for r in scored:
        if r["detected"] and r["incident"]:
            truths.setdefault(r["incident"], []).append(r["truth"])
    return sum(max(sum(c in t for t in group) for c in {c for t in group for c in t})
               for group in truths.values())


def _windows(faults: Iterable[FaultEvent], lab: set[str], end: float | None,
             grace_s: float) -> list[dict[str, Any]]:
    """One window per injected fault, in injection order."""
    by_id: dict[str, dict[str, Any]] = {}
    for ev in faults:
        f = by_id.setdefault(ev.fault_id, {"fault_id": ev.fault_id, "kind": ev.kind,
                                           "level": ev.level, "part": ev.broken_part(),
                                           "start": None, "end": None, "effective": False,
                                           "guests": list(ev.target.get("guests") or [])})
        if ev.phase == "injected":
            f["start"] = ev.ts
        elif ev.phase == "recovered":
            f["end"] = ev.ts
        elif ev.phase == "effect-observed":
            f["effective"] = True
    out = []
    for f in sorted((f for f in by_id.values() if f["start"] is not None),
                    key=lambda f: f["start"]):
        targets = f["guests"] or sorted(lab)
        f["truth"] = [component(g, f["part"]) for g in targets]
        f["touched"] = set(targets) | (lab if f["level"] in LAB_WIDE else set())
        stop = f["end"] if f["end"] is not None else end
        f["until"] = stop + grace_s if stop is not None else float("inf")
        out.append(f)
    return out


def _onset(a: Anomaly) -> float:
    return a.onset if a.onset is not None else a.ts


def _key(a: Anomaly) -> tuple:
    """An anomaly's identity across copies (incidents read back from the bus)."""
    return (a.guest, a.ts, a.onset, a.detector)


def _round(x: float) -> float:
    return round(float(x), 2)
