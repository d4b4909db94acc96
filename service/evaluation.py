"""Recordings scored: replayed through detection and RCA, the same incidents ranked by
the baselines too, and everything summed up in one scorecard (``vmroc eval``).

    run = run_recording("run.jsonl.xz")                 # faults, anomalies, incidents
    report, detail = evaluate_recordings(["a.jsonl", "b.jsonl.xz"], ranker="heuristic")
    report["ac1"], report["per_kind"], report["baselines"]["baro"]["ac1"]

A replay runs the code of the live workers: the samples in time order through
``detect.Detector``, the anomalies through ``rca.Correlator`` with the chosen ranker
(``rca.rankers``); the ledger only scores. The ranker's time per incident, as the
correlator measured it during the replay, is reported too (``ranking_ms_median``,
``ranking_ms_p90``). The baselines rank the incidents that
correlation produced, so only the ranking differs; ``rca.scorecard`` matches and scores.
On an etcd lab the ledger's ``recovered`` events carry ``evidence["failover"]``
(``inject.failover.measure``): the report sums them per kind under ``failover``
(``inject.failover.summarize``; the key is absent when no fault carries one).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vmroc.events import Anomaly, FaultEvent
from vmroc.rca.replay import Run, run_recording

__all__ = ["evaluate_recordings", "failover_rows", "pick_timeline", "run_recording", "Run"]

log = logging.getLogger(__name__)

TIMELINE_MARGIN_S = 20.0   # shown before and after the faults of the report's timeline


def evaluate_recordings(paths: list[str | Path], ranker: str = "heuristic",
                        baselines: tuple[str, ...] | None = None, *, grace_s: float | None = None,
                        rca_model: str | None = None,
                        **detector_options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scorecard of ``ranker`` over every recording, and of each baseline on the same
    incidents. Returns the report (``vmroc eval --json``) and the detail a report page
    draws: every fault's row and one timeline (``pick_timeline``)."""
    from vmroc.inject.failover import summarize as summarize_failover
    from vmroc.rca.rankers import BASELINES, check_ranker, make_ranker
    from vmroc.rca.scorecard import GRACE_S, Scored, named, rerank, score, summarize

    grace_s = GRACE_S if grace_s is None else grace_s
    # the lab's own ranker is a contestant too when another one is scored
    names = [b for b in (("heuristic", *BASELINES) if baselines is None else baselines)
             if b != ranker]
    for name in (ranker, *names):  # an unknown name fails before any replay
        check_ranker(name)
    main, others = Scored(), {b: Scored() for b in names}
    recordings, timeline, ranking_ms, failover = [], None, [], []
    for path in paths:
        run = run_recording(path, ranker, rca_model=rca_model, **detector_options)
        where = {"guests": run.guests, "span": run.span, "grace_s": grace_s}
        scored = score(run.faults, run.anomalies, run.incidents, **where)
        for row in scored.rows:
            row["recording"] = run.path
        main += scored
        ranking_ms += run.ranking_ms
        failover += failover_rows(run.faults)
        for b in names:
            ranked = rerank(run.incidents, make_ranker(b, depends=run.depends,
                                                       series=run.series, model=rca_model))
            others[b] += score(run.faults, run.anomalies, ranked, **where)
        recordings.append({"path": run.path, "workload": run.header.get("workload", "web"),
                           "samples": run.samples,
                           "skipped_lines": run.skipped, "truncated_after_line": run.truncated,
                           "hours": round(run.hours, 4), "faults": len(scored.rows),
                           "anomalies": len(run.anomalies), "incidents": len(run.incidents)})
        candidate = pick_timeline(run, scored.rows, scored.false_alarms, grace_s)
        if candidate and (timeline is None or len(candidate["group"]) > 1 >= len(
                timeline["group"])):
            timeline = candidate
    report = {"ranker": ranker, **summarize(main),
              "ranking_ms_median": round(float(np.median(ranking_ms)), 2) if ranking_ms else None,
              "ranking_ms_p90": (round(float(np.percentile(ranking_ms, 90)), 2)
                                 if ranking_ms else None),
              "named": named(main.rows),
              "baselines": {b: summarize(s) for b, s in others.items()},
              "recordings": recordings}
    if failover:
        report["failover"] = summarize_failover(failover)
    return report, {"rows": main.rows, "timeline": timeline}


def failover_rows(faults: list[FaultEvent]) -> list[dict[str, Any]]:
    """``{"kind", "failover"}`` of each fault whose ``recovered`` event carries
    ``evidence["failover"]`` (the last such event of a fault)."""
    rows = {f.fault_id: {"kind": f.kind, "failover": f.evidence["failover"]} for f in faults
            if f.phase == "recovered" and isinstance(f.evidence, dict)
            and f.evidence.get("failover")}
    return list(rows.values())


def pick_timeline(run: Run, rows: list[dict[str, Any]], false_alarms: list[str],
                  grace_s: float) -> dict[str, Any] | None:
    """The faults, anomalies and incidents around the run's largest group of faults
    active at once (or its first detected fault, if none overlap), for a picture."""
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["start"])
    groups: list[list[dict]] = []
    for r in rows:
        if groups and r["start"] <= max(_end(x) for x in groups[-1]) + grace_s:
            groups[-1].append(r)
        else:
            groups.append([r])
    best = max(groups, key=len)
    if len(best) == 1:
        best = next(([r] for r in rows if r["effective"] and r["detected"]), [rows[0]])
    start = min(r["start"] for r in best) - TIMELINE_MARGIN_S
    end = max(_end(r) for r in best) + grace_s + TIMELINE_MARGIN_S
    within = [r for r in rows if r["start"] <= end and _end(r) >= start]
    anomalies = [a for a in run.anomalies if start <= _onset(a) <= end or start <= a.ts <= end]
    shown = {id(a) for a in anomalies}
    incidents = [i for i in run.incidents if any(id(a) in shown for a in i.anomalies)]
    return {
        "recording": run.path, "start": start, "end": end,
        "guests": sorted(set(run.guests) | {a.guest for a in anomalies}),
        "group": [r["fault_id"] for r in best],  # the faults the timeline is about
        "faults": [{k: r[k] for k in ("fault_id", "kind", "level", "guests", "truth", "start",
                                      "end", "effective", "detected", "rank")} for r in within],
        "anomalies": [{"guest": a.guest, "onset": _onset(a), "ts": a.ts,
                       "features": a.features[:3]} for a in anomalies],
        "incidents": [{"id": i.id, "start": min(_onset(a) for a in i.anomalies), "ts": i.ts,
                       "guests": i.guests,
                       "rank1": i.causes[0].component if i.causes else None,
                       "false_alarm": i.id in false_alarms} for i in incidents],
    }


def _end(row: dict[str, Any]) -> float:
    return row["end"] if row["end"] is not None else row["start"]


def _onset(a: Anomaly) -> float:
    return a.onset if a.onset is not None else a.ts
