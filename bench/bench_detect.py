"""Detection throughput on a shipped recording: per sample against in batches.

Run: nice python bench/bench_detect.py [recording] [--batch 2000] [--json]. Measures on
one core, in the same run: decoding the recording (every field, and as a replay reads
it: no task lists, slimmed), ``Detector.update`` once per sample, ``Detector.update_batch``
in batches of ``--batch`` samples (and checks both give the same anomalies), the same
with refits off (what the per-sample path costs without the once-a-minute learning of
normal), and the whole replay (``rca.replay.run_recording``: decode, detection,
ranking). Each stage is timed ``--repeat`` times, the best kept (the host's other work
only ever slows a run down). Prints samples per second, the ratio batch / per sample,
how many guests sampled at 10 Hz one detector core keeps up with, what the refits
cost per guest and minute of stream, and the sha256 of the anomalies (a change meant to
keep every anomaly gives the same on both commits). Not a test.

``--quick`` (what the test suite runs): the first 3000 events of the recording (about
100 s of it), batches of 500.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from vmroc.detect import Detector
from vmroc.detect.featurize import EVENTS, LEVELS, RATES
from vmroc.events import Sample, encode
from vmroc.rca.replay import _slim, run_recording
from vmroc.recordings import read_recording

DEFAULT = Path(__file__).parents[1] / "data" / "recordings" / "mixed-s2.jsonl.xz"
HZ = 10  # a guest's sampling rate in the lab


def decode(path: Path, tasks: bool) -> tuple[list[Sample], float]:
    t = time.perf_counter()
    _, events = read_recording(path, tasks=tasks)
    samples = [ev for _, ev in events if isinstance(ev, Sample)]
    if not tasks:
        samples = [_slim(s, RATES + EVENTS + LEVELS) for s in samples]
    return samples, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("recording", nargs="?", default=str(DEFAULT))
    ap.add_argument("--batch", type=int, default=2000, help="samples per update_batch call")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="timings per stage; the best is kept")
    ap.add_argument("--quick", action="store_true",
                    help="the recording's first 3000 events, batches of 500")
    args = ap.parse_args()
    path = Path(args.recording)
    if args.quick:
        from _quick import recording_slice
        path, args.batch = recording_slice(path, 3000), min(args.batch, 500)
        args.repeat = 1
    best = min  # of the repeated timings
    t_full = best(decode(path, tasks=True)[1] for _ in range(args.repeat))
    t_slim = best(decode(path, tasks=False)[1] for _ in range(args.repeat))
    samples = sorted(decode(path, tasks=False)[0], key=lambda s: s.ts)
    n = len(samples)

    def batches(**options) -> tuple[list, float, Detector]:
        det = Detector(**options)
        t = time.perf_counter()
        found = [a for i in range(0, n, args.batch)
                 for a in det.update_batch(samples[i:i + args.batch])]
        return found, time.perf_counter() - t, det

    def per_sample() -> tuple[list, float, Detector]:
        det = Detector()
        t = time.perf_counter()
        found = [a for s in samples for a in det.update(s)]
        return found, time.perf_counter() - t, det

    one, t_one, det = min((per_sample() for _ in range(args.repeat)), key=lambda r: r[1])
    many, t_many, det = min((batches() for _ in range(args.repeat)), key=lambda r: r[1])
    t_frozen = best(batches(refit_s=None)[1] for _ in range(args.repeat))
    same = [encode(a) for a in one] == [encode(a) for a in many]
    # the anomalies' fingerprint: equal on two commits = the same anomalies, byte for byte
    digest = hashlib.sha256(b"".join(encode(a) for a in many)).hexdigest()
    refits = sum(g._fits for g in det.guests.values())
    minutes = sum((g.last_ts or 0) - (g.started or 0) for g in det.guests.values()) / 60

    def replay() -> tuple[float, int]:
        t = time.perf_counter()
        run = run_recording(path, "heuristic")
        return time.perf_counter() - t, run.samples
    t_replay, replayed = min(replay() for _ in range(args.repeat))

    rate = {"decode_all_fields": n / t_full, "decode_as_replay": n / t_slim,
            "update_per_sample": n / t_one, "update_batch": n / t_many,
            "update_batch_refits_off": n / t_frozen, "replay": replayed / t_replay}
    fit_ms = (t_many - t_frozen) / max(refits, 1) * 1000
    report = {"recording": path.name, "samples": n, "guests": len(det.guests),
              "anomalies": len(one), "same_anomalies": same, "batch": args.batch,
              "anomalies_sha256": digest,
              "samples_per_s": {k: round(v) for k, v in rate.items()},
              "batch_over_per_sample": round(t_one / t_many, 2),
              "fits": refits, "ms_per_fit": round(fit_ms, 2),
              "refit_ms_per_guest_minute": round((t_many - t_frozen) * 1000
                                                 / max(minutes, 1e-9), 2),
              "decode_as_replay_over_all_fields": round(t_full / t_slim, 2),
              "guests_at_10hz_per_core": {"update_per_sample": int(rate["update_per_sample"] / HZ),
                                          "update_batch": int(rate["update_batch"] / HZ)}}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{path.name}: {n} samples of {len(det.guests)} guests, {len(one)} anomalies; "
          f"batch and per-sample give the same anomalies: {same}; their sha256 "
          f"{digest[:16]} (equal on two commits: the same anomalies)")
    print(f"{'stage':<34}{'samples/s':>10}{'guests at 10 Hz':>17}")
    for name, key in (("decode (all fields)", "decode_all_fields"),
                      ("decode as replay (no tasks, slim)", "decode_as_replay"),
                      ("Detector.update, per sample", "update_per_sample"),
                      (f"Detector.update_batch ({args.batch})", "update_batch"),
                      ("  the same, refits off", "update_batch_refits_off"),
                      ("replay (run_recording)", "replay")):
        print(f"{name:<34}{rate[key]:>10.0f}{rate[key] / HZ:>17.0f}")
    print(f"update_batch / update: {t_one / t_many:.2f}x; decode as replay / all fields: "
          f"{t_full / t_slim:.2f}x")
    print(f"{refits} fits of normal (baselines, refits): {fit_ms:.1f} ms each, "
          f"{report['refit_ms_per_guest_minute']:.1f} ms per guest and minute of stream "
          f"(best of {args.repeat})")


if __name__ == "__main__":
    main()
