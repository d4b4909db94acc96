"""Detection end to end on real parts: guests sampled from outside at 5 Hz onto a real
Kafka broker, the detector worker consuming them, real faults injected; the anomaly
names the guest, starts after the fault and names the feature that moved."""

from __future__ import annotations

import threading
import time

import pytest

from vmroc.bus import ANOMALIES, Consumer, Producer
from vmroc.detect import Detector, run_detector
from vmroc.inject import FaultSpec, Ledger, run
from vmroc.introspect.stream import stream

pytestmark = pytest.mark.real


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


def test_faults_become_anomalies_of_the_right_guest(lab, broker, tmp_path):
    stop = threading.Event()
    detector = Detector(baseline_s=15)
    seen: list = []
    producer = Producer(broker.bootstrap)
    threads = [
        threading.Thread(target=stream, args=(lab.guests, producer.send),
                         kwargs={"rate": 5, "stop": stop}),
        threading.Thread(target=run_detector, args=(broker.bootstrap,),
                         kwargs={"stop": stop, "group": f"detect-{time.time_ns()}",
                                 "detector": detector, "on_anomaly": seen.append}),
    ]
    for t in threads:
        t.start()
    ledger = Ledger(tmp_path / "ledger.jsonl", kafka=False)
    try:
        wait_for(lambda: len(detector.guests) == 3 and
                 all(g.fitted for g in detector.guests.values()), 90, "three baselines")

        def anomaly_after(t0: float):
            return wait_for(lambda: [a for a in seen if a.guest == "g2" and a.onset >= t0],
                            30, f"an anomaly of g2 after {t0}")[0]

        paused = run(FaultSpec("guest-suspend", ["g2"], duration=4), lab, ledger)
        a1 = anomaly_after(paused.t_start)
        assert a1.ts - paused.t_start < 5, "noticed within 5 s"
        assert {"jiffies/s", "uptime_s/s"} & set(a1.features), a1
        wait_for(lambda: not detector.guests["g2"].in_episode, 30, "g2 back to normal")
        broken = run(FaultSpec("disk-eio", ["g2"], {"iotype": "write"}, duration=4), lab,
                     ledger)
        a2 = anomaly_after(broken.t_start)
        assert "log_errors/s" in a2.features, a2
        # g3 neither serves g2 nor calls it (every guest calls g1, g1 calls g2): while g2
        # is broken and just after, it must stay quiet
        time.sleep(5)
        windows = [(f.t_start, f.t_start + f.spec.duration + 5) for f in (paused, broken)]
        bystander = [a for a in seen if a.guest == "g3"
                     and any(lo <= a.onset <= hi for lo, hi in windows)]
        assert not bystander, bystander
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        producer.close()
    on_bus = []
    with Consumer(ANOMALIES, broker.bootstrap, group=None, from_beginning=True, dlq=False) as c:
        deadline = time.monotonic() + 20
        while len(on_bus) < 2 and time.monotonic() < deadline:
            on_bus += [m.event for m in c.poll(1.0) if m.event in (a1, a2)]
    assert a1 in on_bus and a2 in on_bus
