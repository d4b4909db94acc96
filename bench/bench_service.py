"""What `vmroc serve` costs: dashboard latency with many incidents stored, and the CPU of
the service keeping up with a live lab.

    python3 bench/bench_service.py pages [--incidents 10000] [--faults 2000] [--json]
    python3 bench/bench_service.py live [--seconds 90] [--hz 10] [--recording R] [--json]

``pages``: a SQLite store filled with N synthetic incidents (one every 30 s, two
anomalies and five ranked causes each), a ledger of F faults and two hours of feature
history for three guests; then each page and its JSON twin is requested through a real
HTTP server (werkzeug, as `vmroc serve` runs it), median and p95 of 20 requests.

``live``: a throw-away Kafka broker (or VMROC_KAFKA), `vmroc serve` as its own process,
and the samples of a real recording (default: the first in data/recordings; their
features, task lists and log lines as recorded) re-timed to now and published at ``--hz``
per guest in real time. Reported: the service's CPU (user + system, all threads, from
/proc) per second of wall clock once the baselines are learned, and the same samples
through ``detect.Detector`` alone, offline, for the detector's own share.

``--quick`` (what the test suite runs, both commands take it): ``pages`` with 300
incidents, 60 faults and 3 requests a page; ``live`` for 9 s, 3 of them warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def fill(store, incidents: int, faults: int, now: float) -> None:
    from vmroc.events import Anomaly, Cause, FaultEvent, Incident
    from vmroc.service.store import Batch

    rng = random.Random(0)
    parts = ("cpu", "memory", "disk", "network", "guest")
    kinds = (("cpu-throttle", "cpu"), ("mem-pressure", "memory"), ("disk-eio", "disk"),
             ("net-drop", "network"), ("guest-suspend", "cluster"))
    t0 = now - incidents * 30
    batch = Batch()
    for n in range(incidents):
        onset = t0 + n * 30 + rng.uniform(0, 5)
        guest = f"g{rng.randint(1, 3)}"
        anomalies = [Anomaly(guest=guest, ts=onset + 0.6 + k, detector="robust", score=9.0,
                             onset=onset + k, features=["vda_wsec/s", "cpu_iowait_s/s"],
                             deviations={"vda_wsec/s": 14.0, "cpu_iowait_s/s": 9.0})
                     for k in range(2)]
        causes = [Cause(component=f"{guest}/{p}", score=round(1 / (i + 2), 3),
                        evidence={"onset": onset, "features": {"vda_wsec/s": 14.0}})
                  for i, p in enumerate(rng.sample(parts, 5))]
        inc = Incident(id=f"inc-{int(onset)}-{n:08x}", ts=onset + 1.6, guests=[guest],
                       anomalies=anomalies, causes=causes)
        batch.anomalies += anomalies
        batch.incidents.append((inc, 0.3))
    every = max(1, incidents // max(1, faults))
    for n in range(min(faults, incidents)):
        start = t0 + n * every * 30 - 1
        kind, level = kinds[n % len(kinds)]
        for phase, ts in (("injected", start), ("effect-observed", start + 1),
                          ("recovered", start + 11)):
            batch.faults.append(FaultEvent(
                fault_id=f"f{n}", kind=kind, level=level, phase=phase, ts=ts,
                target={"guests": [f"g{n % 3 + 1}"]}, campaign=f"c{n // 500}",
                evidence={"time_to_recover": 1.2} if phase == "recovered" else None))
    for g in ("g1", "g2", "g3"):
        for k in range(7200):
            ts = now - 7200 + k
            batch.history.append({"guest": g, "ts": ts, "vals": {
                "jiffies/s": 250.0, "tasks_running": 1, "memfree_kb": 180000.0,
                "vda_wsec/s": rng.choice((0, 8.0)), "cpu_user_s/s": 0.02}})
        batch.guests[g] = {"first": now - 7200, "last": now, "n": 72000}
    store.write(batch)


def pages(args) -> list[dict]:
    from werkzeug.serving import make_server

    from vmroc.service.app import create_app
    from vmroc.service.store import Store

    tmp = tempfile.mkdtemp(prefix="vmroc-bench-serve-")
    store = Store(f"sqlite:///{tmp}/bench.db")
    t = time.perf_counter()
    fill(store, args.incidents, args.faults, time.time())
    print(f"filled the store in {time.perf_counter() - t:.1f} s: {store.counts()}",
          file=sys.stderr)
    app = create_app({"STORE": store, "TOKEN": "x"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    newest = store.incidents(limit=1)[0]["id"]
    rows = []
    for path in ("/incidents", "/api/incidents", f"/incidents/{newest}",
                 f"/api/incidents/{newest}", "/guests", "/api/guests/g1/timeline",
                 "/guests/g1", "/faults", "/api/faults", "/healthz", "/metrics"):
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=60) as r:
                body = r.read()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        rows.append({"path": path, "median_ms": round(statistics.median(times), 1),
                     "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
                     "bytes": len(body)})
    server.shutdown()
    return rows


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live(args) -> dict:
    from vmroc import bus
    from vmroc.events import Sample
    from vmroc.recordings import read_recording

    recording = args.recording or next(iter(sorted((ROOT / "data" / "recordings").glob(
        "*.jsonl*"))), None)
    if recording is None:
        sys.exit("no recording: pass --recording (make one with `vmroc campaign run ... "
                 "--record`)")
    _, events = read_recording(recording)
    per_guest: dict[str, list[Sample]] = {}
    need = int(args.seconds * args.hz)
    for _, ev in events:
        if isinstance(ev, Sample):
            per_guest.setdefault(ev.guest, []).append(ev)
            if len(per_guest) >= 3 and all(len(v) >= need for v in per_guest.values()):
                break
    guests = sorted(per_guest)[:3]
    print(f"{recording}: {need} samples each of {guests}", file=sys.stderr)

    broker = None
    servers = os.environ.get("VMROC_KAFKA", "").strip()
    if not servers:
        from tests.fixtures_broker import free_ports
        from vmroc.deploy.broker import Broker
        port, cport = free_ports(2)
        broker = Broker(tempfile.mkdtemp(prefix="vmroc-bench-kafka-"), port=port,
                        controller_port=cport)
        broker.start()
        servers = broker.bootstrap
    tmp = tempfile.mkdtemp(prefix="vmroc-bench-serve-")
    proc = None
    try:
        bus.ensure_topics(servers)
        env = dict(os.environ, VMROC_KAFKA=servers, VMROC_HOME=tmp)
        log = open(f"{tmp}/serve.log", "w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", "vmroc.cli", "serve", "--port", "0", "--db",
             f"sqlite:///{tmp}/serve.db", "--group", f"bench-{time.time_ns()}",
             "--depends", "g2:g1,g3:g1", "--lab", "bench-nolab", "--baseline", "20"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        url = None
        while url is None:
            time.sleep(0.3)
            log.seek(0)
            m = re.search(r"dashboard at (http://\S+/)", log.read())
            url = m.group(1) if m else None
            if proc.poll() is not None:
                sys.exit("vmroc serve died: " + log.read())
        while True:
            try:
                with urllib.request.urlopen(url + "healthz") as r:
                    health = json.load(r)
            except urllib.error.HTTPError as exc:   # 503 until the broker answers
                health = json.load(exc)
            if health["worker"]["partitions"]:
                break
            time.sleep(0.3)
        warmup = min(30.0, args.seconds / 3)  # 30 s unless --quick
        start, cpu_start, t_start = time.time(), None, None
        with bus.Producer(servers) as out:
            for i in range(need):
                tick = start + i / args.hz
                delay = tick - time.time()
                if delay > 0:
                    time.sleep(delay)
                if cpu_start is None and i / args.hz >= warmup:
                    cpu_start, t_start = cpu_s(proc.pid), time.monotonic()
                for g in guests:
                    s = per_guest[g][i]
                    out.send(Sample(guest=s.guest, ts=tick, features=s.features,
                                    backend=s.backend, consistent=s.consistent, seq=s.seq,
                                    flags=s.flags, tasks=s.tasks, log=s.log))
        time.sleep(2)
        used, wall = cpu_s(proc.pid) - cpu_start, time.monotonic() - t_start
        with urllib.request.urlopen(url + "api/guests") as r:
            stored = {g["name"]: g["samples"] for g in json.load(r)["guests"]}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if broker is not None:
            broker.stop(wipe=True)
    # the detector's own cost on the same samples, offline
    from vmroc.detect import Detector
    det = Detector(baseline_s=20)
    merged = sorted((s for g in guests for s in per_guest[g][:need]), key=lambda s: s.ts)
    t = time.process_time()
    for s in merged:
        det.update(s)
    det_cpu = time.process_time() - t
    stream_s = need / args.hz
    return {"guests": len(guests), "hz": args.hz, "seconds": args.seconds,
            "measured_s": round(wall, 1), "serve_cpu_pct": round(100 * used / wall, 1),
            "detector_alone_cpu_pct": round(100 * det_cpu / stream_s, 1),
            "stored_samples": stored, "load": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pages")
    p.add_argument("--incidents", type=int, default=10000)
    p.add_argument("--faults", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="300 incidents, 3 requests a page")
    lv = sub.add_parser("live")
    lv.add_argument("--seconds", type=float, default=90.0)
    lv.add_argument("--hz", type=float, default=10.0)
    lv.add_argument("--recording", default=None)
    lv.add_argument("--json", action="store_true")
    lv.add_argument("--quick", action="store_true", help="9 s, 3 of them warm-up")
    args = parser.parse_args()
    if args.quick and args.what == "pages":
        args.incidents, args.faults = min(args.incidents, 300), min(args.faults, 60)
        args.repeat = min(args.repeat, 3)
    elif args.quick:
        args.seconds = min(args.seconds, 9.0)
    import logging
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if args.what == "pages":
        rows = pages(args)
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print(f"{'page':<40} {'median ms':>10} {'p95 ms':>8} {'bytes':>9}")
            for r in rows:
                print(f"{r['path']:<40} {r['median_ms']:>10} {r['p95_ms']:>8} {r['bytes']:>9}")
    else:
        result = live(args)
        print(json.dumps(result, indent=1 if args.json else None))


if __name__ == "__main__":
    main()
