"""The demo campaign through detection and RCA: which faults were noticed, how fast,
whether the rank-1 cause was the injected fault, and what else was flagged; plus the
detector's throughput on the recorded samples. Not a test.

    python3 bench/bench_campaign.py [--lab NAME] [--campaign deploy/campaigns/demo.yaml]
        [--model robust|forest|lof] [--rate 5] [--json] [--quick]

Boots its own 3-guest lab ("bench-d") unless --lab names a running one. The guests
are sampled at --rate Hz in-process (no Kafka: this measures detection and RCA, not
the bus) while the campaign runs; anomalies go through ``rca.Correlator`` with the
lab's dependencies, and ``rca.scorecard`` scores the incidents against the ledger.

``--quick`` (what the test suite runs, with ``--lab``): instead of the demo campaign, one
cpu-throttle of g2 for 5 s after a 10 s baseline (about 20 s in all; nothing lab-wide).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from vmroc.deploy import Lab
from vmroc.detect import DEFAULT_MODEL, MODEL_NAMES, Detector
from vmroc.inject import Ledger
from vmroc.inject.campaign import Campaign, run_campaign
from vmroc.introspect.stream import stream
from vmroc.rca import CausalRanker, Correlator, format_faults
from vmroc.rca.scorecard import score, summarize

DEMO = Path(__file__).resolve().parents[1] / "deploy" / "campaigns" / "demo.yaml"
QUICK = """name: quick
baseline: 10s
cooldown: 3s
seed: 7
faults:
  - at: 0s
    kind: cpu-throttle
    guest: g2
    duration: 5s
    params: {quota_pct: 5}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=None, help="use this running lab instead of booting one")
    ap.add_argument("--campaign", default=str(DEMO))
    ap.add_argument("--model", default=DEFAULT_MODEL, choices=MODEL_NAMES)
    ap.add_argument("--rate", type=float, default=5.0, help="samples per second per guest")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="one 5 s cpu-throttle after a 10 s baseline instead of the demo")
    args = ap.parse_args()
    if args.quick:
        args.campaign = Path(tempfile.mkdtemp(prefix="vmroc-bench-")) / "quick.yaml"
        args.campaign.write_text(QUICK)
    campaign = Campaign.load(args.campaign)
    lab = Lab(args.lab) if args.lab else Lab.up(3, name="bench-d")
    samples, anomalies = [], []
    ledger = Ledger(Path(tempfile.mkdtemp(prefix="vmroc-bench-")) / "ledger.jsonl", kafka=False)
    detector = Detector(model=args.model, baseline_s=max(campaign.baseline - 5, 10))
    stop = threading.Event()

    def handle(sample) -> None:
        samples.append(sample)
        anomalies.extend(detector.update(sample))

    sampler = threading.Thread(target=stream, args=(lab.guests, handle),
                               kwargs={"rate": args.rate, "stop": stop})
    try:
        sampler.start()
        depends = lab.dependencies()
        result = run_campaign(campaign, lab, ledger,
                              progress=lambda m: print(f"campaign: {m}", flush=True))
    finally:
        stop.set()
        sampler.join()
        if not args.lab:
            lab.down()

    corr = Correlator(CausalRanker(depends).fit())
    incidents = []
    for a in sorted(anomalies, key=lambda a: a.ts):
        incidents += corr.add(a)
    incidents += corr.flush()
    scored = score([e for e in ledger.events() if e.campaign == result.id], anomalies,
                   incidents, guests=sorted({s.guest for s in samples}))
    report = {**summarize(scored), "rows": scored.rows}

    # throughput: the recorded samples through a fresh detector, in arrival order
    fresh = Detector(model=args.model, baseline_s=detector.baseline_s)
    t = time.perf_counter()
    for s in samples:
        fresh.update(s)
    per_s = len(samples) / max(time.perf_counter() - t, 1e-9)

    report.update({"campaign": campaign.name, "model": args.model, "rate_hz": args.rate,
                   "samples": len(samples), "detector_samples_per_s": round(per_s)})
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(format_faults(report["rows"], report))
    print(f"({args.model}, {args.rate:g} Hz; detector: {report['detector_samples_per_s']} "
          "samples/s on one core)")


if __name__ == "__main__":
    main()
