"""The fault ledger across an outage of the real session broker: events recorded while
Kafka is stopped do not stall recording and stay in the local file; once the broker is
back, ``flush()`` delivers them, and ``vmroc.faults`` holds every recorded event exactly
once, in the order recorded."""

from __future__ import annotations

import time
import uuid

import pytest

from vmroc.bus import FAULTS, Consumer
from vmroc.inject import Ledger
from vmroc.inject.ledger import event

pytestmark = pytest.mark.real


def injected(fault_id: str):
    return event(fault_id, "net-delay", "network", "injected", {"guests": ["g1"]},
                 {"delay_ms": 50})


def fault_ids_on_topic(servers: str, run: str) -> list[str]:
    """This run's fault ids in the order ``vmroc.faults`` holds them, reading the whole
    topic from its first offset to its end."""
    seen: list[str] = []
    with Consumer(FAULTS, servers, group=None, from_beginning=True, dlq=False) as topic:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen += [m.event.fault_id for m in topic.poll(0.5) if run in m.event.fault_id]
            if topic.lag() == {(FAULTS, 0): 0}:
                break
        else:
            pytest.fail(f"did not reach the end of {FAULTS} in 30 s")
    return seen


def test_events_recorded_while_the_broker_is_down_arrive_once_in_order(broker, tmp_path):
    run = uuid.uuid4().hex[:8]
    before, during = ([f"outage-{run}-{phase}-{n}" for n in range(3)]
                      for phase in ("before", "during"))
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, servers=broker.bootstrap)
    try:
        for fault_id in before:
            ledger.record(injected(fault_id))
        assert ledger.pending() == 0
        assert fault_ids_on_topic(broker.bootstrap, run) == before

        assert broker.stop() and broker.pid() is None
        try:
            started = time.monotonic()
            for fault_id in during:
                ledger.record(injected(fault_id))
            recording_took = time.monotonic() - started
            assert ledger.pending() == len(during)
            assert [e.fault_id for e in Ledger(path, kafka=False).events()] == before + during
        finally:
            broker.start(timeout=120)
        assert recording_took < 10, f"recording 3 events with Kafka down took " \
                                    f"{recording_took:.1f} s"

        ledger.flush(timeout=60)
        assert ledger.pending() == 0
    finally:
        ledger.close()
    assert fault_ids_on_topic(broker.bootstrap, run) == before + during
