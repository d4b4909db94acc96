"""Detection on a real campaign: which faults were noticed, how fast, and what else
was flagged; plus the detector's throughput on the recorded samples. Not a test.

    python3 bench/bench_detect.py [--lab NAME] [--campaign deploy/campaigns/demo.yaml]
        [--model robust|forest] [--rate 5] [--json]

Boots its own 3-guest lab ("bench-d") unless --lab names a running one. The guests
are sampled at --rate Hz in-process (no Kafka: this measures the detector, not the
bus) while the campaign runs. A fault counts as detected by the first anomaly of a
target guest whose onset lies between the fault's injection and 10 s after its
recovery; an anomaly matching no fault that way is a false positive.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from deploy import Lab
from detect import Detector
from inject import Ledger
from inject.campaign import Campaign, run_campaign
from introspect.stream import stream

GRACE_S = 10.0
DEMO = Path(__file__).resolve().parents[1] / "deploy" / "campaigns" / "demo.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=None, help="use this running lab instead of booting one")
    ap.add_argument("--campaign", default=str(DEMO))
    ap.add_argument("--model", default="robust", choices=["robust", "forest"])
    ap.add_argument("--rate", type=float, default=5.0, help="samples per second per guest")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    campaign = Campaign.load(args.campaign)
    lab = Lab(args.lab) if args.lab else Lab.up(3, name="bench-d")
    samples, anomalies = [], []
    detector = Detector(model=args.model, baseline_s=max(campaign.baseline - 5, 10))
    stop = threading.Event()

    def handle(sample) -> None:
        samples.append(sample)
        anomalies.extend(detector.update(sample))

    sampler = threading.Thread(target=stream, args=(lab.guests, handle),
                               kwargs={"rate": args.rate, "stop": stop})
    try:
        sampler.start()
        result = run_campaign(campaign, lab, Ledger(kafka=False),
                              progress=lambda m: print(f"campaign: {m}", flush=True))
    finally:
        stop.set()
        sampler.join()
        if not args.lab:
            lab.down()

    rows, matched = [], set()
    for run in result.runs:
        f = run.fault
        if f.t_start is None:
            continue
        end = f.t_start + (f.held_s or 0) + (f.time_to_recover or 0) + GRACE_S
        hits = [a for a in anomalies if a.guest in run.step.spec.guests
                and f.t_start <= (a.onset or a.ts) <= end]
        first = min(hits, key=lambda a: a.ts, default=None)
        matched.update(id(a) for a in hits)
        rows.append({"kind": run.step.spec.kind, "guests": list(run.step.spec.guests),
                     "effective": bool(f.effective), "detected": first is not None,
                     "time_to_detect_s": None if first is None else round(first.ts - f.t_start, 2),
                     "features": [] if first is None else first.features})
    false_pos = [a for a in anomalies if id(a) not in matched]

    # throughput: the recorded samples through a fresh detector, in arrival order
    fresh = Detector(model=args.model, baseline_s=detector.baseline_s)
    t = time.perf_counter()
    for s in samples:
        fresh.update(s)
    per_s = len(samples) / max(time.perf_counter() - t, 1e-9)

    detected = [r for r in rows if r["detected"]]
    ttd = sorted(r["time_to_detect_s"] for r in detected)
    out = {"campaign": campaign.name, "model": args.model, "rate_hz": args.rate,
           "faults": len(rows), "detected": len(detected),
           "median_time_to_detect_s": ttd[len(ttd) // 2] if ttd else None,
           "false_positives": len(false_pos), "samples": len(samples),
           "detector_samples_per_s": round(per_s), "rows": rows,
           "false_positive_anomalies": [{"guest": a.guest, "ts": a.ts, "features": a.features}
                                        for a in false_pos]}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{'kind':<14} {'guests':<8} {'effective':<9} {'detected':<8} {'after s':>8}  features")
    for r in rows:
        after = "-" if r["time_to_detect_s"] is None else f"{r['time_to_detect_s']:.2f}"
        print(f"{r['kind']:<14} {','.join(r['guests']):<8} {str(r['effective']):<9} "
              f"{str(r['detected']):<8} {after:>8}  {', '.join(r['features'])}")
    print(f"{out['detected']}/{out['faults']} detected, median time to detect "
          f"{out['median_time_to_detect_s']} s, {out['false_positives']} false positive(s) "
          f"({args.model}, {args.rate:g} Hz); detector: {out['detector_samples_per_s']} "
          f"samples/s on one core")


if __name__ == "__main__":
    main()
