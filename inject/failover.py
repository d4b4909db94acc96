"""Failover on an etcd lab, measured from the guests' own status lines around a fault.

``measure`` reads a timeline (guest -> ``[(host time read, StatusLine)]``, oldest first)
and tells which leader the guests agreed on before and after, how long the election
took, how long no client could write, and the client errors and history violations the
fault caused; ``summarize`` sums those per fault kind. Pure functions, no I/O.

Write times come from ``etcd_wlast``, a guest uptime: mapped to host time with the
offset (host time at uptime 0) of the segment of the guest's lines it falls in (that
of the last line printed before it, in the same boot). A new
segment starts where ``up`` decreases (a reboot) or where ``host time - up`` rises by
more than ``SPLIT_S`` for good (a pause: uptime froze); its offset is the smallest
``host time - up`` of its lines, since a line is read at or after it was printed.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter, defaultdict
from typing import Any, Callable

from vmroc.deploy.lab import guest_name
from vmroc.deploy.status import StatusLine

__all__ = ["measure", "summarize", "write_times"]

Timeline = dict[str, list[tuple[float, StatusLine]]]
Lines = list[tuple[float, StatusLine]]

SPLIT_S = 0.5       # a lasting rise of host time - uptime beyond this: the guest was paused
RESOLUTION_S = 1.5  # lines come once a second: a write is seen up to ~1 s late, so gaps
                    # shorter than this are noise ("writes never stopped")


def measure(timeline: Timeline, *, t_inject: float, t_revert: float, targets: list[str],
            t_end: float | None = None) -> dict[str, Any] | None:
    """Leader before/after, election time, write unavailability and client errors around
    a fault injected at ``t_inject`` and reverted at ``t_revert`` (host times); None
    when no line carries ``etcd_lead`` (not an etcd lab)."""
    if t_end is None:
        t_end = max((ts for lines in timeline.values() for ts, _ in lines), default=t_revert)
    timeline = {g: [(ts, s) for ts, s in lines if ts <= t_end]
                for g, lines in timeline.items()}
    if not any("etcd_lead" in s.values for lines in timeline.values() for _, s in lines):
        return None
    before = _last_lines(timeline, lambda ts: ts <= t_inject)
    after = _last_lines(timeline, lambda ts: ts > t_revert)
    leader_before, leader_after = _agreed_leader(before), _agreed_leader(after)
    term_before = max((s.get("etcd_term", 0) for s in before), default=0)
    election = _election(timeline, t_inject, targets, leader_before, term_before)
    writes = sorted({w for lines in timeline.values() for w in write_times(lines)})
    normal = _median_gap([w for w in writes if w <= t_inject])
    # a write shows up to a line period late: the gap still open at the last line read
    # is only known to be open up to that much before it
    horizon = max((lines[-1][0] for lines in timeline.values() if lines), default=t_end)
    gap, resumed = _longest_gap(writes, t_inject, horizon - RESOLUTION_S)
    if gap <= max(2 * (normal or 0), RESOLUTION_S):
        resumed = t_inject  # writes never stopped
    return {
        "leader_before": leader_before,
        "leader_after": leader_after,
        "leader_changed": None not in (leader_before, leader_after)
                          and leader_before != leader_after,
        "election_s": _r(None if election is None else election - t_inject),
        "unavailable_s": _r(gap),
        "writes_resumed_s": _r(None if resumed is None else resumed - t_inject),
        "normal_gap_s": _r(normal),
        "client_errors": sum(_increase(lines, t_inject, "etcd_werr", "etcd_rerr")
                             for lines in timeline.values()),
        "history_violations": sum(_increase(lines, t_inject, "etcd_back")
                                  for lines in timeline.values()),
        "lines": sum(map(len, timeline.values())),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per fault kind, from ``{"kind": ..., "failover": measure(...)}`` rows: how many,
    elections (count, median and max over the faults that had one), unavailability and
    time to resumed writes (median, max), client errors, history violations, stale reads
    and lost writes (totals; the last two from ``deploy.etcd.check_writes``)."""
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("failover"):
            by_kind[row["kind"]].append(row["failover"])
    out = {}
    for kind, ms in sorted(by_kind.items()):
        elections = [m["election_s"] for m in ms if m.get("election_s") is not None]
        out[kind] = {"n": len(ms), "elections": len(elections),
                     **_stats("election", elections),
                     **_stats("unavailable", [m.get("unavailable_s") for m in ms]),
                     **_stats("writes_resumed", [m.get("writes_resumed_s") for m in ms]),
                     "client_errors": sum(m.get("client_errors", 0) for m in ms),
                     "history_violations": sum(m.get("history_violations", 0) for m in ms),
                     "stale_reads": sum(len((m.get("writes") or {}).get("stale") or [])
                                        for m in ms),
                     "lost_writes": sum(len((m.get("writes") or {}).get("lost") or [])
                                        for m in ms)}
    return out


def write_times(lines: Lines) -> list[float]:
    """Host times of one guest's successful writes its lines name (``etcd_wlast``),
    sorted. A write is mapped with the offset of the last line of the same boot printed
    at or before it: a write between a pause and the line before it may have been made
    just after the resume instead, but it is then placed within a line period (1 s) of
    the pause's start, not anywhere in the pause. A value above the line's uptime (a
    previous boot's) is ignored."""
    offsets = _offsets(lines)
    out = set()
    for start, end in _boots(lines):
        ups = [s["up"] for _, s in lines[start:end]]
        for i in range(start, end):
            wlast = lines[i][1].get("etcd_wlast", 0)
            if 0 < wlast <= ups[i - start]:
                last = start + max(bisect.bisect_right(ups, wlast) - 1, 0)  # ups rise
                out.add(wlast + offsets[last])
    return sorted(out)


def _boots(lines: Lines) -> list[tuple[int, int]]:
    """[start, end) index ranges of the lines of each boot (``up`` decreases between)."""
    cuts = [i for i in range(1, len(lines)) if lines[i][1]["up"] < lines[i - 1][1]["up"]]
    edges = [0, *cuts, len(lines)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if a < b]


def _offsets(lines: Lines) -> list[float]:
    """Per line, its segment's offset (host time at uptime 0). The minimum of
    ``ts - up`` from a line to the end of its boot rises where a segment starts; a line
    read late rises it for that line only, so it starts none."""
    out = [0.0] * len(lines)
    for start, end in _boots(lines):
        low, lows = math.inf, []
        for ts, s in reversed(lines[start:end]):
            low = min(low, ts - s["up"])
            lows.append(low)
        lows.reverse()
        for k, low in enumerate(lows):
            new = k == 0 or low - lows[k - 1] > SPLIT_S
            out[start + k] = low if new else out[start + k - 1]
    return out


def _last_lines(timeline: Timeline, keep: Callable[[float], bool]) -> list[StatusLine]:
    """Each guest's last line read at a host time ``keep`` accepts (if any)."""
    out = []
    for lines in timeline.values():
        kept = [s for ts, s in lines if keep(ts)]
        out += kept[-1:]
    return out


def _agreed_leader(lines: list[StatusLine]) -> str | None:
    """The leader a majority of the guests naming one (``etcd_lead`` > 0) name."""
    votes = Counter(int(s.get("etcd_lead", 0)) for s in lines)
    votes.pop(0, None)
    if not votes:
        return None
    lead, n = votes.most_common(1)[0]
    return guest_name(lead) if 2 * n > sum(votes.values()) else None


def _election(timeline: Timeline, t_inject: float, targets: list[str],
              leader_before: str | None, term_before: float) -> float | None:
    """Host time of the first line, from injection on, of a guest the fault did not
    target that names another leader at a higher term."""
    seen = [ts for g, lines in timeline.items() if g not in targets for ts, s in lines
            if ts >= t_inject and s.get("etcd_lead", 0) > 0
            and guest_name(int(s["etcd_lead"])) != leader_before
            and s.get("etcd_term", 0) > term_before]
    return min(seen, default=None)


def _median_gap(writes: list[float]) -> float | None:
    return statistics.median(b - a for a, b in zip(writes, writes[1:])) if len(
        writes) > 1 else None


def _longest_gap(writes: list[float], t_inject: float,
                 horizon: float) -> tuple[float, float | None]:
    """The longest stretch without a write that ends after ``t_inject`` (from the last
    write before it, or from it), and the write that ends it (None: none did, up to
    ``horizon``, the last line read)."""
    before = [w for w in writes if w <= t_inject]
    points = before[-1:] or [t_inject]
    points += [w for w in writes if w > t_inject]
    gaps = [(b - a, b) for a, b in zip(points, points[1:])]
    gaps.append((max(horizon - points[-1], 0.0), None))
    return max(gaps, key=lambda g: g[0])


def _increase(lines: Lines, t_inject: float, *keys: str) -> int:
    """How much the counters ``keys`` (summed) grew on lines read after ``t_inject``; a
    counter that restarts (a reboot, or it went down) counts from 0."""
    total = 0.0
    for (_, prev), (ts, cur) in zip(lines, lines[1:]):
        if ts <= t_inject:
            continue
        for key in keys:
            a, b = prev.get(key, 0), cur.get(key, 0)
            total += b if b < a or cur["up"] < prev["up"] else b - a
    return round(total)


def _stats(name: str, values: list[float | None]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    return {f"{name}_median_s": _r(statistics.median(values)) if values else None,
            f"{name}_max_s": _r(max(values)) if values else None}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
