"""RCA as a Kafka worker: ``vmroc.anomalies`` in, ``vmroc.incidents`` out. One worker (the
anomalies topic has one partition: incidents span guests). It does not read the fault
ledger: matching incidents to injected faults is evaluation's job (``rca.scorecard``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Mapping

from vmroc.bus import ANOMALIES, BusError, Consumer, Producer
from vmroc.events import Anomaly, Incident

from .incidents import Correlator
from .rankers import make_ranker

log = logging.getLogger(__name__)
GROUP = "vmroc-rca"


def run_rca(servers: str | None = None, *, stop: threading.Event | None = None,
            depends: Mapping[str, list[str]] | None = None, group: str = GROUP,
            from_beginning: bool = False,
            on_incident: Callable[[Incident], None] | None = None,
            correlator: Correlator | None = None, ranker: str = "heuristic",
            **options) -> Correlator:
    """Correlate anomalies into ranked incidents until ``stop``; returns the correlator.
    ``ranker`` is a name in ``rca.rankers`` that ranks from anomalies alone (rankers that
    read the feature series run in ``vmroc serve``, which keeps the series)."""
    stop = stop or threading.Event()
    corr = correlator or Correlator(make_ranker(ranker, depends=depends or {}), **options)
    with Consumer([ANOMALIES], servers, group=group,
                  from_beginning=from_beginning) as inp, Producer(inp.servers) as out:
        def publish(incidents: list[Incident]) -> None:
            for incident in incidents:
                out.send(incident)
                if on_incident is not None:
                    on_incident(incident)
            out.flush()

        while not stop.is_set():
            try:
                msgs = inp.poll(0.5)
            except BusError as exc:  # the broker is away: wait for it
                log.warning("%s; polling again", exc)
                stop.wait(1.0)
                continue
            for msg in msgs:
                if isinstance(msg.event, Anomaly):
                    publish(corr.add(msg.event))
            publish(corr.flush(time.time()))  # wall clock: live streams only
            if not corr.open:  # every anomaly read so far is in a published incident
                try:
                    inp.commit()
                except BusError as exc:  # committed by a later round
                    log.warning("%s; committing again later", exc)
        publish(corr.flush())
        inp.commit()
    return corr
