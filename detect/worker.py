"""The detector as a Kafka worker: ``vmroc.samples`` in, ``vmroc.anomalies`` out.

Workers of one consumer group split the sample partitions; samples are keyed by guest,
so each guest's samples reach one worker, in order, and its baseline lives there.
Each poll's samples are decoded without their task records (the detector reads none)
and scored as one batch (``Detector.update_batch``: the same anomalies as one sample at
a time, faster); offsets are committed after a batch is
handled and its anomalies are acknowledged.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from vmroc.bus import ANOMALIES, SAMPLES, Consumer, Producer
from vmroc.events import Anomaly, Sample

from .detector import Detector

log = logging.getLogger(__name__)
GROUP = "vmroc-detect"


def run_detector(servers: str | None = None, *, stop: threading.Event | None = None,
                 group: str = GROUP, from_beginning: bool = False,
                 on_anomaly: Callable[[Anomaly], None] | None = None,
                 idle_timeout: float | None = None, detector: Detector | None = None,
                 **options: Any) -> Detector:
    """Consume samples until ``stop`` (or ``idle_timeout`` s without any), publish
    anomalies; returns the detector (its per-guest state, for reports). ``options`` go
    to a new ``Detector``, unless one is given."""
    detector = detector or Detector(**options)
    with Consumer(SAMPLES, servers, group=group, from_beginning=from_beginning,
                  tasks=False) as inp, \
            Producer(inp.servers) as out:
        def handle(batch) -> None:  # one poll's samples, scored together, in order
            anomalies = detector.update_batch([m.event for m in batch
                                               if isinstance(m.event, Sample)])
            for anomaly in anomalies:
                out.send(anomaly)
            if anomalies:
                out.flush()  # acknowledged before the samples' offsets are committed
            for anomaly in anomalies if on_anomaly is not None else ():
                on_anomaly(anomaly)
        inp.run(on_batch=handle, stop=stop, idle_timeout=idle_timeout)
        log.info("detector stopped: %s", {g: d.anomalies for g, d in detector.guests.items()})
    return detector


__all__ = ["run_detector", "GROUP", "ANOMALIES"]
