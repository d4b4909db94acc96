"""The scorecard as one self-contained HTML page (``vmroc eval --html OUT``).

    write_html("report.html", report, detail)   # from service.evaluation.evaluate_recordings

Tables of the scorecard, then three plots drawn as inline SVG (no script, no file
beside it, no plotting library): AC@1 per fault kind of the ranker and each baseline,
the distribution of detection latencies, and a timeline of one group of faults active
at once (or of one fault) with the fault windows shaded, anomalies marked from onset to
confirmation and the incidents with their rank-1 cause. Hovering a mark shows details.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

RANKER_COLORS = ["#2f6db5", "#9a9a9a", "#e08a2e", "#3f9a63", "#8a5bb5", "#c0504d"]
FAULT_COLORS = ["#e4572e", "#2e86ab", "#a23b72", "#f1a208", "#3bb273", "#7768ae"]
FONT = "font-family:system-ui,sans-serif;font-size:12px"


def write_html(path: str | Path, report: dict[str, Any], detail: dict[str, Any]) -> None:
    Path(path).write_text(render_html(report, detail))


def render_html(report: dict[str, Any], detail: dict[str, Any]) -> str:
    rankers = {report["ranker"]: report, **report["baselines"]}
    rows = [r for r in detail.get("rows", []) if r["effective"] and r["detected"]]
    latencies = [r["detection_latency_s"] for r in rows]
    tl = detail.get("timeline")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>vmroc eval</title>",
        "<style>body{font-family:system-ui,sans-serif;font-size:14px;margin:24px;color:#222;"
        "max-width:1100px}"
        "table{border-collapse:collapse;margin:8px 0 20px}"
        "td,th{padding:3px 9px;border-bottom:1px solid #ddd;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "h2{margin-top:32px}figure{margin:0 0 24px}figcaption{color:#555;margin-top:4px}"
        ".note{color:#555}</style></head><body>",
        "<h1>vmroc eval</h1>",
        f"<p class='note'>{_recordings(report)} Ranker scored: <b>{_e(report['ranker'])}</b>. "
        f"False alarms: {report['false_alarms']} of {report['incidents']} incidents "
        f"({_f(report['false_alarms_per_hour'])}/h). A fault counts as detected only by an "
        "anomaly on a guest it touches that starts between its injection and its recovery "
        "+ grace; faults without an observed effect are counted, not scored.</p>",
        "<h2>Per fault kind</h2>", _metrics_table(report),
        "<h2>What the rank-1 cause named</h2>", _named_table(report.get("named")),
        "<h2>Rankers on the same incidents</h2>", _rankers_table(rankers),
        "<h2>Plots</h2>",
        _figure(accuracy_svg(rankers), "AC@1 per fault kind: the share of effective faults "
                "whose true cause was ranked first (an undetected fault is a miss)."),
        _figure(latency_svg(latencies), "Detection latency: injection to the confirmation "
                "of the first anomaly that matched the fault (effective faults)."),
        _figure(timeline_svg(tl) if tl else "<p>no fault in the recordings</p>",
                _timeline_caption(tl)),
        _faults_table(detail.get("rows", [])),
        f"<p class='note'>made by vmroc eval, {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


# -- tables --------------------------------------------------------------------------------

_COLUMNS = [("faults", "faults"), ("effective", "effective"), ("detected", "detected"),
            ("detection_rate", "detection rate"), ("median_detection_latency_s", "latency p50 s"),
            ("p90_detection_latency_s", "latency p90 s"),
            ("median_localization_latency_s", "localization p50 s"),
            ("ac1", "AC@1"), ("ac1_ceiling", "AC@1 ceiling"), ("ac3", "AC@3"), ("avg5", "Avg@5"),
            ("abstained", "abstained"), ("ac1_answered", "AC@1 claimed")]


def _metrics_table(report: dict[str, Any]) -> str:
    head = "".join(f"<th>{_e(label)}</th>" for _, label in _COLUMNS)
    body = [f"<tr><td>{_e(kind)}</td>" + "".join(f"<td>{_f(m[k])}</td>" for k, _ in _COLUMNS)
            + "</tr>" for kind, m in report["per_kind"].items()]
    body.append("<tr><td><b>overall</b></td>" + "".join(
        f"<td><b>{_f(report[k])}</b></td>" for k, _ in _COLUMNS) + "</tr>")
    return f"<table><tr><th>kind</th>{head}</tr>{''.join(body)}</table>"


def _named_table(named: dict[str, dict[str, int]] | None) -> str:
    """Per broken part, what rank 1 named (``rca.scorecard.named``): where misses go."""
    if not named:
        return "<p>no effective fault</p>"
    from vmroc.rca.scorecard import NAMED
    head = "".join(f"<th>{_e(c)}</th>" for c in NAMED)
    body = "".join(f"<tr><td>{_e(part)}</td><td>{sum(counts.values())}</td>"
                   + "".join(f"<td>{counts.get(c, 0)}</td>" for c in NAMED) + "</tr>"
                   for part, counts in named.items())
    return (f"<table class='named'><tr><th>broken part</th><th>faults</th>{head}</tr>{body}"
            "</table><p class='note'>Effective faults by the part the fault broke: right, "
            "the same part of another guest, another part, no cause, or not detected.</p>")


def _rankers_table(rankers: dict[str, dict[str, Any]]) -> str:
    cols = [("ac1", "AC@1"), ("ac3", "AC@3"), ("avg5", "Avg@5"),
            ("median_localization_latency_s", "localization p50 s"),
            ("abstained", "abstained"), ("ac1_answered", "AC@1 claimed")]
    head = "".join(f"<th>{label}</th>" for _, label in cols)
    body = "".join(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_f(m[k])}</td>" for k, _ in cols)
                   + "</tr>" for name, m in rankers.items())
    return f"<table><tr><th>ranker</th>{head}</tr>{body}</table>"


def _faults_table(rows: list[dict[str, Any]]) -> str:
    """Every fault, folded: what a person checks when a number looks wrong."""
    if not rows:
        return ""
    cols = ["recording", "fault", "kind", "targets", "effective", "detected", "latency s",
            "rank of truth", "rank 1", "localization s"]
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (
            Path(r.get("recording", "")).name, r["fault_id"], r["kind"],
            ",".join(r["guests"]) or "lab", "yes" if r["effective"] else "no",
            "yes" if r["detected"] else "no", _f(r["detection_latency_s"]),
            r["rank"] or "-", r["rank1"] or "-", _f(r["localization_latency_s"]))) + "</tr>"
        for r in rows)
    head = "".join(f"<th>{c}</th>" for c in cols)
    return (f"<details><summary>Every fault ({len(rows)})</summary><table><tr>{head}</tr>"
            f"{body}</table></details>")


def _recordings(report: dict[str, Any]) -> str:
    recs = report["recordings"]
    samples = sum(r["samples"] for r in recs)
    skipped = sum(r["skipped_lines"] for r in recs)
    names = ", ".join(_e(Path(r["path"]).name) for r in recs[:5]) + (" ..." if len(recs) > 5
                                                                     else "")
    return (f"{len(recs)} recording(s) ({names}): {samples} samples over "
            f"{report['hours']:.2f} h, {skipped} bad lines skipped.")


# -- plots ---------------------------------------------------------------------------------

def accuracy_svg(rankers: dict[str, dict[str, Any]]) -> str:
    """Grouped bars: AC@1 per kind (and overall), one bar per ranker."""
    names = list(rankers)
    main = next(iter(rankers.values()))
    groups = [*main["per_kind"], "overall"]
    bar, gap = 22, 22
    group_w = bar * len(names) + gap
    left, top, h = 44, 36, 200
    width = max(560, left + group_w * len(groups) + 20)
    height = top + h + 70
    out = [_svg_open(width, height, "AC@1 per fault kind")]
    out += _y_axis(left, top, h, width - 10, [0, 0.25, 0.5, 0.75, 1.0], 1.0, "AC@1")
    for gi, kind in enumerate(groups):
        x0 = left + gap / 2 + gi * group_w
        for ri, name in enumerate(names):
            m = rankers[name] if kind == "overall" else rankers[name]["per_kind"].get(kind, {})
            value = m.get("ac1")
            x = x0 + ri * bar
            color = RANKER_COLORS[ri % len(RANKER_COLORS)]
            if value is None:
                out.append(f"<text x='{x + bar / 2:.1f}' y='{top + h - 3}' fill='#999' "
                           "text-anchor='middle'>-</text>")
                continue
            y = min(top + h * (1 - value), top + h - 2)  # a zero shows as a sliver
            out.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{bar - 2}' "
                       f"height='{top + h - y:.1f}' "
                       f"fill='{color}'><title>{_e(name)} {_e(kind)}: AC@1 {value:.2f} "
                       f"({m.get('effective', 0)} effective faults)</title></rect>"
                       f"<text x='{x + bar / 2 - 1:.1f}' y='{y - 3:.1f}' text-anchor='middle' "
                       f"font-size='9' fill='#555'>{value:.2f}</text>")
        label_x = x0 + bar * len(names) / 2
        weight = "bold" if kind == "overall" else "normal"
        out.append(f"<text x='{label_x:.1f}' y='{top + h + 14}' text-anchor='end' "
                   f"font-weight='{weight}' transform='rotate(-30 {label_x:.1f} {top + h + 14})'>"
                   f"{_e(kind)}</text>")
    out += _legend([(n, RANKER_COLORS[i % len(RANKER_COLORS)]) for i, n in enumerate(names)],
                   left, 14)
    out.append("</svg>")
    return "".join(out)


def latency_svg(latencies: list[float]) -> str:
    """Histogram of detection latencies, with the median and the 90th percentile."""
    width, left, top, h = 560, 44, 20, 180
    height = top + h + 44
    if not latencies:
        return (_svg_open(width, 60, "detection latency") +
                "<text x='20' y='35'>no effective fault was detected</text></svg>")
    lat = np.asarray(latencies, dtype=float)
    lo, hi = min(float(lat.min()), 0.0), max(float(lat.max()), 0.1)
    step = _nice_step((hi - lo) / 12, minimum=0.1)
    edges = np.arange(math.floor(lo / step), math.floor(hi / step) + 2) * step
    counts, edges = np.histogram(lat, bins=edges)
    top_count = max(int(counts.max()), 1)
    step = max(1, math.ceil(top_count / 5))
    ticks = list(range(0, top_count + step, step))
    ymax = ticks[-1]
    plot_w = width - left - 20
    x_of = lambda t: left + plot_w * (t - edges[0]) / (edges[-1] - edges[0])  # noqa: E731
    out = [_svg_open(width, height, "detection latency")]
    out += _y_axis(left, top, h, width - 10, ticks, ymax, "faults")
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if not c:
            continue
        y = top + h * (1 - c / ymax)
        w = max(x_of(b) - x_of(a) - 1, 1)
        out.append(f"<rect x='{x_of(a):.1f}' y='{y:.1f}' width='{w:.1f}' "
                   f"height='{top + h - y:.1f}' fill='{RANKER_COLORS[0]}'>"
                   f"<title>{a:.2f}-{b:.2f} s: "
                   f"{c} fault(s)</title></rect>")
    for t in _nice_ticks(edges[0], edges[-1], 6):
        out.append(f"<text x='{x_of(t):.1f}' y='{top + h + 14}' text-anchor='middle'>{t:g}</text>")
    out.append(f"<text x='{left + plot_w / 2:.1f}' y='{top + h + 32}' text-anchor='middle'>"
               "seconds from injection to detection</text>")
    for n, (label, value) in enumerate((("median", np.median(lat)),
                                        ("p90", np.percentile(lat, 90)))):
        x = x_of(float(value))
        anchor, dx = ("end", -3) if x > left + plot_w * 0.8 else ("start", 3)
        out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{top + h}' stroke='#c0392b' "
                   f"stroke-dasharray='4 3'/><text x='{x + dx:.1f}' y='{top + 10 + 14 * n}' "
                   f"text-anchor='{anchor}' fill='#c0392b' paint-order='stroke' stroke='#fff' "
                   f"stroke-width='3'>{label} {value:.2f} s</text>")
    out.append("</svg>")
    return "".join(out)


def timeline_svg(tl: dict[str, Any]) -> str:
    """Lanes per guest: fault windows shaded, anomalies from onset to confirmation,
    incidents below with their rank-1 cause."""
    guests = tl["guests"]
    t0 = min((f["start"] for f in tl["faults"]), default=tl["start"])
    start, end = tl["start"] - t0, tl["end"] - t0
    left, top, lane = 72, 34, 36
    width = 1000
    plot_w = width - left - 20
    lanes_h = lane * len(guests)
    incidents = sorted(tl["incidents"], key=lambda i: i["start"])
    inc_rows = _pack([(i["start"], i["ts"]) for i in incidents], room=(end - start) * 0.12)
    n_inc_rows = max(inc_rows, default=-1) + 1
    height = top + lanes_h + 30 + 22 * n_inc_rows + 40
    x_of = lambda t: left + plot_w * (t - t0 - start) / (end - start)  # noqa: E731
    y_of = {g: top + i * lane for i, g in enumerate(guests)}
    clip = "timeline-plot"  # one timeline a page
    out = [_svg_open(width, height, "timeline"),
           f"<defs><clipPath id='{clip}'><rect x='{left}' y='0' width='{plot_w}' "
           f"height='{height}'/></clipPath></defs>"]
    for g, y in y_of.items():
        out.append(f"<rect x='{left}' y='{y}' width='{plot_w}' height='{lane}' "
                   f"fill='{'#fafafa' if guests.index(g) % 2 else '#f2f2f2'}'/>"
                   f"<text x='{left - 6}' y='{y + lane / 2 + 4}' text-anchor='end'>{_e(g)}</text>")
    out.append(f"<g clip-path='url(#{clip})'>")
    for fi, f in enumerate(tl["faults"]):
        color = FAULT_COLORS[fi % len(FAULT_COLORS)]
        stop = f["end"] if f["end"] is not None else tl["end"]
        x1, x2 = x_of(f["start"]), x_of(stop)
        targets = [g for g in f["guests"] if g in y_of] or guests
        wide = f["level"] in ("network", "cluster")
        tip = (f"{f['kind']} on {','.join(f['guests']) or 'the lab'} ({f['fault_id']}): "
               f"{'effective' if f['effective'] else 'no effect observed'}, "
               f"{'detected' if f['detected'] else 'not detected'}, truth rank "
               f"{f['rank'] or '-'}")
        for g in guests:
            if g in targets or wide:
                opacity = 0.45 if g in targets else 0.15
                out.append(f"<rect x='{x1:.1f}' y='{y_of[g] + 2}' width='{max(x2 - x1, 2):.1f}' "
                           f"height='{lane - 4}' fill='{color}' fill-opacity='{opacity}'>"
                           f"<title>{_e(tip)}</title></rect>")
        out.append(f"<text x='{max(x1, left) + 2:.1f}' y='{top - 6 - 11 * (fi % 2)}' "
                   f"fill='{color}'>"
                   f"{_e(f['kind'])}{'' if f['effective'] else ' (no effect)'}</text>")
    for a in tl["anomalies"]:
        if a["guest"] not in y_of:
            continue
        y = y_of[a["guest"]] + lane / 2
        xa, xb = x_of(a["onset"]), x_of(a["ts"])
        tip = (f"anomaly on {a['guest']}: onset {a['onset'] - t0:+.2f} s, confirmed "
               f"{a['ts'] - t0:+.2f} s; {', '.join(a['features'])}")
        out.append(f"<g><title>{_e(tip)}</title><line x1='{xa:.1f}' x2='{xb:.1f}' y1='{y}' "
                   f"y2='{y}' stroke='#111' stroke-width='2'/><circle cx='{xa:.1f}' cy='{y}' "
                   f"r='4' fill='#fff' stroke='#111' stroke-width='1.5'/><path d='M{xb - 4:.1f} "
                   f"{y - 5} L{xb + 4:.1f} {y - 5} L{xb:.1f} {y + 2} Z' fill='#111'/></g>")
    y_inc = top + lanes_h + 24
    out.append("</g>")
    out.append(f"<text x='{left - 6}' y='{y_inc + 4}' text-anchor='end'>incidents</text>")
    for i, row in zip(incidents, inc_rows):
        y = y_inc + 22 * row
        xa, xb = x_of(i["start"]), x_of(i["ts"])
        color = "#c0392b" if i["false_alarm"] else "#2e7d32"
        tip = (f"{i['id']} on {','.join(i['guests'])}: rank 1 {i['rank1'] or '-'}"
               f"{' (false alarm)' if i['false_alarm'] else ''}")
        out.append(f"<g><title>{_e(tip)}</title><rect x='{xa:.1f}' y='{y - 4}' "
                   f"width='{max(xb - xa, 3):.1f}' height='8' fill='{color}'/>"
                   f"<text x='{xb + 4:.1f}' y='{y + 4}' fill='{color}'>"
                   f"{_e(i['rank1'] or '-')}</text></g>")
    axis_y = height - 28
    for t in _nice_ticks(start, end, 10):
        x = x_of(t + t0)
        out.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{top + lanes_h}' "
                   f"stroke='#fff' stroke-width='1'/><text x='{x:.1f}' y='{axis_y}' "
                   f"text-anchor='middle'>{t:g}</text>")
    out.append(f"<text x='{left + plot_w / 2:.1f}' y='{axis_y + 16}' text-anchor='middle'>"
               "seconds after the first injection "
               f"({time.strftime('%H:%M:%S', time.localtime(t0))})"
               "</text>")
    out.append("</svg>")
    return "".join(out)


def _timeline_caption(tl: dict[str, Any] | None) -> str:
    if not tl:
        return "Timeline: nothing to show."
    group = [f for f in tl["faults"] if f["fault_id"] in tl["group"]]
    what = (f"a group of {len(group)} faults active at once "
            f"({', '.join(f['kind'] for f in group)})" if len(group) > 1
            else f"one fault ({group[0]['kind']})")
    return (f"Timeline of {what} in {Path(tl['recording']).name}: fault windows shaded "
            "(darker on the target guests, lighter on the peers a network or cluster fault "
            "touches), anomalies from onset (circle) to confirmation (triangle), incidents "
            "with their rank-1 cause (green: credited to a fault, red: false alarm).")


# -- drawing helpers -------------------------------------------------------------------------

def _svg_open(width: float, height: float, label: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
            f"viewBox='0 0 {width:.0f} {height:.0f}' role='img' aria-label='{_e(label)}' "
            f"style='{FONT}'>")


def _y_axis(left: float, top: float, h: float, right: float, ticks: list[float],
            ymax: float, label: str) -> list[str]:
    out = []
    for t in ticks:
        y = top + h * (1 - t / ymax)
        out.append(f"<line x1='{left}' x2='{right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e3e3e3'/>"
                   f"<text x='{left - 5}' y='{y + 4:.1f}' text-anchor='end'>{t:g}</text>")
    out.append(f"<text x='12' y='{top + h / 2:.1f}' text-anchor='middle' "
               f"transform='rotate(-90 12 {top + h / 2:.1f})'>{_e(label)}</text>")
    return out


def _legend(items: list[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for name, color in items:
        out.append(f"<rect x='{x}' y='{y - 9}' width='10' height='10' fill='{color}'/>"
                   f"<text x='{x + 14}' y='{y}'>{_e(name)}</text>")
        x += 30 + 7.5 * len(name)
    return out


def _nice_ticks(lo: float, hi: float, n: int) -> list[float]:
    """Round tick values between ``lo`` and ``hi``, about ``n`` of them."""
    span = hi - lo
    if span <= 0:
        return [lo]
    step = _nice_step(span / n)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 9) for i in range(int((hi - first) / step) + 1)]


def _nice_step(raw: float, minimum: float = 0.0) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``raw``."""
    raw = max(raw, minimum, 1e-9)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw - 1e-12)


def _pack(spans: list[tuple[float, float]], room: float) -> list[int]:
    """A row per span so that spans in one row do not overlap, with ``room`` after each
    for its label."""
    ends: list[float] = []
    rows = []
    for a, b in spans:
        row = next((r for r, e in enumerate(ends) if e < a), None)
        if row is None:
            row = len(ends)
            ends.append(0.0)
        ends[row] = b + room
        rows.append(row)
    return rows


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _f(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if isinstance(x, float) else str(x)
