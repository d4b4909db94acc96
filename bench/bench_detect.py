"""Detection throughput on a shipped recording: per sample against in batches.

Run: nice python bench/bench_detect.py [recording] [--batch 2000] [--json]. Measures on
one core, in the same run: decoding the recording (every field, and as a replay reads
it: no task lists, slimmed), ``Detector.update`` once per sample, ``Detector.update_batch``
in batches of ``--batch`` samples (and checks both give the same anomalies), and the
whole replay (``rca.replay.run_recording``: decode, detection, ranking). Prints samples
per second, the ratio batch / per sample, and how many guests sampled at 10 Hz one
detector core keeps up with. Not a test.

``--quick`` (what the test suite runs): the first 3000 events of the recording (about
100 s of it), batches of 500.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--quick", action="store_true",
                    help="the recording's first 3000 events, batches of 500")
    args = ap.parse_args()
    path = Path(args.recording)
    if args.quick:
        from _quick import recording_slice
        path, args.batch = recording_slice(path, 3000), min(args.batch, 500)
    full, t_full = decode(path, tasks=True)
    del full
    samples, t_slim = decode(path, tasks=False)
    samples.sort(key=lambda s: s.ts)
    n = len(samples)

    det = Detector()
    t = time.perf_counter()
    one = [a for s in samples for a in det.update(s)]
    t_one = time.perf_counter() - t
    det = Detector()
    t = time.perf_counter()
    many = [a for i in range(0, n, args.batch) for a in det.update_batch(samples[i:i + args.batch])]
    t_many = time.perf_counter() - t
    same = [encode(a) for a in one] == [encode(a) for a in many]

    t = time.perf_counter()
    run = run_recording(path, "heuristic")
    t_replay = time.perf_counter() - t

    rate = {"decode_all_fields": n / t_full, "decode_as_replay": n / t_slim,
            "update_per_sample": n / t_one, "update_batch": n / t_many,
            "replay": run.samples / t_replay}
    report = {"recording": path.name, "samples": n, "guests": len(det.guests),
              "anomalies": len(one), "same_anomalies": same, "batch": args.batch,
              "samples_per_s": {k: round(v) for k, v in rate.items()},
              "batch_over_per_sample": round(t_one / t_many, 2),
              "decode_as_replay_over_all_fields": round(t_full / t_slim, 2),
              "guests_at_10hz_per_core": {"update_per_sample": int(rate["update_per_sample"] / HZ),
                                          "update_batch": int(rate["update_batch"] / HZ)}}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{path.name}: {n} samples of {len(det.guests)} guests, {len(one)} anomalies; "
          f"batch and per-sample give the same anomalies: {same}")
    print(f"{'stage':<34}{'samples/s':>10}{'guests at 10 Hz':>17}")
    for name, key in (("decode (all fields)", "decode_all_fields"),
                      ("decode as replay (no tasks, slim)", "decode_as_replay"),
                      ("Detector.update, per sample", "update_per_sample"),
                      (f"Detector.update_batch ({args.batch})", "update_batch"),
                      ("replay (run_recording)", "replay")):
        print(f"{name:<34}{rate[key]:>10.0f}{rate[key] / HZ:>17.0f}")
    print(f"update_batch / update: {t_one / t_many:.2f}x; decode as replay / all fields: "
          f"{t_full / t_slim:.2f}x")


if __name__ == "__main__":
    main()
