"""A synthetic 3-guest lab run for the service tests: samples at 5 Hz with a guest that
stalls (guest-suspend on g2) and a disk that fails (disk-eio on g3, with kernel I/O
error lines), and the ledger of both faults."""

from __future__ import annotations

import json
import random
from pathlib import Path

from vmroc.events import FaultEvent, Sample, to_dict

GUESTS = ("g1", "g2", "g3")
DEPENDS = {"g2": ["g1"], "g3": ["g1"]}
# fault id, kind, level, guest, start, end (seconds after t0)
FAULTS = (("f-suspend", "guest-suspend", "cluster", "g2", 40, 50),
          ("f-eio", "disk-eio", "disk", "g3", 80, 90))


def lab_stream(t0: float, seconds: float = 120, hz: int = 5, seed: int = 0,
               faults=FAULTS) -> list[Sample]:
    rng = random.Random(seed)
    state = {g: {"j": 0.0, "wsec": 0.0} for g in GUESTS}
    out = []
    for i in range(int(seconds * hz)):
        t = i / hz
        for k, (g, st) in enumerate(state.items()):
            hit = {kind for _, kind, _, fg, a, b in faults if fg == g and a <= t < b}
            if "guest-suspend" not in hit:
                st["j"] += 250 / hz * rng.uniform(0.9, 1.1)
                st["wsec"] += rng.choice((0, 0, 8)) + (40 if "disk-eio" in hit else 0)
            log = ([f"blk_update_request: I/O error, dev vda, sector {rng.randint(1, 9999)}"]
                   if "disk-eio" in hit and i % 5 == 0 else None)
            out.append(Sample(guest=g, ts=round(t0 + t + k / 100, 3), seq=i, backend="test",
                              consistent=True, log=log,
                              features={"jiffies": int(st["j"]), "uptime_s": st["j"] / 250,
                                        "vda_wsec": int(st["wsec"]),
                                        "tasks": 50 + rng.randint(0, 1),
                                        "memfree_kb": 180000 + rng.randint(-500, 500),
                                        "log_errors": len(log or ())}))
    return out


def ledger(t0: float, faults=FAULTS, campaign: str = "synthetic") -> list[FaultEvent]:
    out = []
    for fid, kind, level, g, a, b in faults:
        for phase, ts in (("injected", a), ("effect-observed", a + 1), ("recovered", b)):
            out.append(FaultEvent(fault_id=f"{fid}-{int(t0)}", kind=kind, level=level, phase=phase,
                                  ts=t0 + ts, target={"guests": [g]}, campaign=campaign,
                                  evidence={"time_to_recover": 1.5, "recovered": True}
                                  if phase == "recovered" else None))
    return out


def events(t0: float, seconds: float = 120, **kw) -> list:
    """Ledger entries and samples in time order, as a live run puts them on the bus."""
    return sorted(ledger(t0) + lab_stream(t0, seconds, **kw), key=lambda e: e.ts)


def write_recording(path: Path, t0: float, seconds: float = 120) -> int:
    evs = events(t0, seconds)
    with open(path, "w") as f:
        f.write(json.dumps({"vmroc_recording": 1, "depends": DEPENDS}) + "\n")
        for e in evs:
            f.write(json.dumps({"topic": e.topic, "partition": 0, "offset": 0,
                                "timestamp_ms": 0, "event": to_dict(e)}) + "\n")
    return len(evs)
