"""Score incidents against the fault ledger: did we notice, how fast, and did we name
the right cause?

    report = evaluate(fault_events, incidents)
    report["top1"], report["rows"][0]["rank"]

For every injected fault: the incidents matched to it (``Incident.fault_id``), the time
from injection to the first confirmed anomaly of those incidents (time to detect), and
the rank of the true cause (the fault's part on one of its target guests, see
``rca.components``) in the first matched incident. Incidents matched to no fault are
false alarms.
"""

from __future__ import annotations

import statistics
from typing import Any

from vmroc.events import FaultEvent, Incident

from .components import component, fault_part


def evaluate(faults: list[FaultEvent], incidents: list[Incident]) -> dict[str, Any]:
    injected = {e.fault_id: e for e in faults if e.phase == "injected"}
    effective = {e.fault_id for e in faults if e.phase == "effect-observed"}
    rows = []
    for fid, ev in sorted(injected.items(), key=lambda kv: kv[1].ts):
        truth = [component(g, fault_part(ev.kind, ev.level))
                 for g in ev.target.get("guests", [])]
        matched = sorted((i for i in incidents if i.fault_id == fid), key=lambda i: i.ts)
        row: dict[str, Any] = {"fault_id": fid, "kind": ev.kind, "truth": truth,
                               "effective": fid in effective, "detected": bool(matched),
                               "time_to_detect_s": None, "rank": None, "rank1": None}
        if matched:
            first = matched[0]
            noticed = min(a.ts for a in first.anomalies)
            row["time_to_detect_s"] = round(noticed - ev.ts, 2)
            comps = [c.component for c in first.causes]
            row["rank1"] = comps[0] if comps else None
            row["rank"] = next((i + 1 for i, c in enumerate(comps) if c in truth), None)
        rows.append(row)
    n = len(rows)
    ttd = [r["time_to_detect_s"] for r in rows if r["time_to_detect_s"] is not None]
    false_alarms = [i.id for i in incidents if i.fault_id is None]
    return {
        "faults": n,
        "detected": sum(r["detected"] for r in rows),
        "top1": sum(r["rank"] == 1 for r in rows),
        "top3": sum(r["rank"] is not None and r["rank"] <= 3 for r in rows),
        "median_time_to_detect_s": round(statistics.median(ttd), 2) if ttd else None,
        "incidents": len(incidents),
        "false_alarms": len(false_alarms),
        "rows": rows,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a table a person reads."""
    lines = [f"{'fault':<14} {'truth':<14} {'detected':<8} {'after s':>7} {'rank':>4}  rank 1"]
    for r in report["rows"]:
        after = "-" if r["time_to_detect_s"] is None else f"{r['time_to_detect_s']:.2f}"
        lines.append(f"{r['kind']:<14} {','.join(r['truth']):<14} {str(r['detected']):<8} "
                     f"{after:>7} {r['rank'] or '-':>4}  {r['rank1'] or '-'}")
    n = report["faults"] or 1
    lines.append(f"{report['detected']}/{report['faults']} detected, rank-1 cause right for "
                 f"{report['top1']}/{report['faults']} ({report['top1'] / n:.0%}), in the top 3 "
                 f"for {report['top3']}/{report['faults']}; median time to detect "
                 f"{report['median_time_to_detect_s']} s; {report['false_alarms']} false "
                 f"alarm(s) in {report['incidents']} incident(s)")
    return "\n".join(lines)
