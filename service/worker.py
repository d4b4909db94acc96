"""The service's worker: ``vmroc.samples`` and ``vmroc.faults`` in; detection and RCA in
process; anomalies and incidents out on the bus and into the store.

    proc = Processor(ranker="heuristic", depends={"g2": ["g1"]}, baseline_s=20)
    proc.feed(message)                 # a bus Message (a sample or a ledger entry)
    proc.release(wall_now)             # samples in time order -> detector -> correlator
    batch = proc.take()                # what to publish and store, with a checkpoint

    Worker(store, servers).run(stop)   # the Kafka loop around a Processor

Order and restarts. Samples of one guest arrive in order (one partition per guest), but
partitions interleave at random, most of all while catching up on a backlog. The
processor keeps a small queue per guest and releases samples in time order across
guests (a guest silent for ``hold_s`` of wall clock is not waited for; at the start,
the guests ``depends`` names and those of a restored state are waited for as well), and closes
incidents by stream time (the newest released sample), never by the wall clock while
events flow. So the same events give the same anomalies and incidents however Kafka
delivered them.

After a batch is published (acknowledged) the worker stores it together with the
processor's state (per-guest baselines, the open incident, the newest sample per guest)
in one transaction, then commits the Kafka offsets: per partition, the oldest message
still queued, else everything polled. Killed at any point, it restarts from the stored
state and the committed offsets: samples at or before a guest's newest processed one
are skipped, and every write is idempotent by event id, so nothing is lost and nothing
is stored twice (the bus may carry an anomaly or incident twice, with the same id).
"""

from __future__ import annotations

import heapq
import logging
import os
import pickle
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from vmroc.bus import FAULTS, SAMPLES, BusError, Consumer, Message, Producer
from vmroc.events import FaultEvent, Incident, Sample, unchecked_sample

from .store import Batch, Store, StoreError

__all__ = ["Processor", "Worker", "GROUP", "Status"]

log = logging.getLogger(__name__)
GROUP = "vmroc-serve"
STATE_KEY = "processor"
STATE_VERSION = 3  # 3: the detector keeps its pool of normal as numpy blocks (detect/pool.py)


class Processor:
    """Detection and RCA over one stream of bus messages; no Kafka, no database."""

    def __init__(self, ranker: str = "heuristic", depends: Mapping[str, list[str]] | None = None,
                 *, window_s: float = 10.0, quiet_s: float = 8.0, history_s: float = 1.0,
                 hold_s: float = 2.0, max_queued: int = 50_000, **detector_options: Any):
        from vmroc.detect import Detector
        self.ranker_name, self.depends = ranker, dict(depends or {})
        self.window_s, self.quiet_s = window_s, quiet_s
        self.history_s, self.hold_s, self.max_queued = history_s, hold_s, max_queued
        self.detector = Detector(**detector_options)
        self.series = None
        self.correlator = self._correlator()
        self.last_ts: dict[str, float] = {}          # newest processed sample per guest
        self.stream_now = 0.0                        # newest processed sample, any guest
        self.featurizers: dict[str, Any] = {}        # for the stored history
        self.history_last: dict[str, float] = {}
        self.queues: dict[str, deque] = {}           # guest -> (sample, topic, partition, offset)
        self.arrived: dict[str, float] = {}          # guest -> wall clock of its last arrival
        self._queued = 0
        self.batch = Batch()
        self.out: list = []                          # anomalies and incidents to publish
        self.last_release = time.monotonic()         # wall clock of the last released sample
        self.rca_ms: list[float] = []                # ranking times of closed incidents

    def _correlator(self):
        from vmroc.rca import Correlator, make_ranker
        from vmroc.rca.baselines import FeatureSeries
        series = FeatureSeries()
        ranker = make_ranker(self.ranker_name, depends=self.depends, series=series)
        # the series grows with every sample: kept only for a ranker that reads it
        self.series = series if any(v is series for v in vars(ranker).values()) else None
        return Correlator(ranker, window_s=self.window_s, quiet_s=self.quiet_s)

    # -- state -------------------------------------------------------------------------
    def state(self) -> bytes:
        """What a restarted processor needs to go on exactly where this one was."""
        c = self.correlator
        return pickle.dumps({"v": STATE_VERSION, "detector": self.detector, "open": c.open,
                             "now": c.now, "last_ts": self.last_ts,
                             "stream_now": self.stream_now, "featurizers": self.featurizers,
                             "history_last": self.history_last})

    def restore(self, data: bytes | None) -> bool:
        if not data:
            return False
        try:
            s = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - a stale checkpoint of an older vmroc
            log.warning("stored worker state unreadable (%s): starting afresh", exc)
            return False
        if s.get("v") != STATE_VERSION:
            return False
        self.detector = s["detector"]
        c = self.correlator
        c.open, c.now = s["open"], s["now"]
        self.last_ts, self.stream_now = s["last_ts"], s["stream_now"]
        self.featurizers, self.history_last = s["featurizers"], s["history_last"]
        log.info("worker state restored: %d guests, %d open anomalies, stream time %.1f",
                 len(self.last_ts), len(c.open), self.stream_now)
        return True

    # -- input -------------------------------------------------------------------------
    def feed(self, msg: Message, wall: float | None = None) -> None:
        ev = msg.event
        wall = time.monotonic() if wall is None else wall
        if not self.arrived:
            # the first data since (re)start: guests known from before, or named by who
            # calls whom, get ``hold_s`` to show up too (their partitions may come in a
            # later fetch; a first poll of a backlog may hold one partition only)
            named = {g for caller, servers in self.depends.items() for g in (caller, *servers)}
            for guest in sorted({*self.last_ts, *named}):
                self.queues.setdefault(guest, deque())
                self.arrived[guest] = wall
        if isinstance(ev, Sample):
            q = self.queues.setdefault(ev.guest, deque())
            q.append((ev, msg.topic, msg.partition, msg.offset))
            self._queued += 1
            self.arrived[ev.guest] = wall
        elif isinstance(ev, FaultEvent):
            self.batch.faults.append(ev)  # stored for the dashboard's join, not ranked with

    def queued(self) -> int:
        return self._queued

    def release(self, wall: float | None = None, *, drain: bool = False) -> int:
        """Process queued samples in time order while no guest with fresh arrivals has
        an empty queue (``drain``: everything). Returns how many were processed."""
        wall = time.monotonic() if wall is None else wall

        def must_wait(guest: str) -> bool:
            return (not drain and self._queued < self.max_queued
                    and wall - self.arrived.get(guest, 0.0) < self.hold_s)
        if any(not q and must_wait(g) for g, q in self.queues.items()):
            return 0
        heads = [(q[0][0].ts, g) for g, q in self.queues.items() if q]
        heapq.heapify(heads)
        done = 0
        while heads:
            _, guest = heapq.heappop(heads)
            q = self.queues[guest]
            self._process(q.popleft()[0])
            self._queued -= 1
            done += 1
            if q:
                heapq.heappush(heads, (q[0][0].ts, guest))
            elif must_wait(guest):   # its next sample may be older than the others' heads
                break
        if done:
            self.last_release = wall
        return done

    def idle(self, wall: float | None = None) -> None:
        """Nothing arrives and nothing is queued: close the open incident once it has
        been quiet for ``quiet_s`` of wall clock (the stream ended or paused)."""
        wall = time.monotonic() if wall is None else wall
        if self.correlator.open and not self.queued() and \
                wall - self.last_release >= self.quiet_s:
            self._incidents(lambda: self.correlator.flush(None))

    # -- output ------------------------------------------------------------------------
    def take(self) -> tuple[list, Batch]:
        """The anomalies and incidents to publish, and the batch to store (with the
        state); both start empty again."""
        out, batch = self.out, self.batch
        batch.state[STATE_KEY] = self.state()
        self.out, self.batch = [], Batch()
        return out, batch

    def offsets(self, positions: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Offsets safe to commit: per partition the oldest message still queued, else
        the position (everything polled is processed)."""
        out = dict(positions)
        for q in self.queues.values():
            for _, topic, partition, offset in q:
                tp = (topic, partition)
                if tp in out and offset < out[tp]:
                    out[tp] = offset
        return out

    # -- internals ---------------------------------------------------------------------
    def _process(self, s: Sample) -> None:
        if s.ts <= self.last_ts.get(s.guest, float("-inf")):
            return                                   # processed before a restart
        self.last_ts[s.guest] = s.ts
        self.stream_now = max(self.stream_now, s.ts)
        g = self.batch.guests.get(s.guest)
        self.batch.guests[s.guest] = {"first": s.ts, "last": s.ts, "n": 1} if g is None else {
            "first": g["first"], "last": s.ts, "n": g["n"] + 1}
        for n, line in enumerate(s.log or ()):
            self.batch.logs.append({"guest": s.guest, "ts": s.ts, "n": n, "line": line[:500]})
        s = _slim(s)       # what detection reads: the state saved each second stays small
        self._history(s)
        if self.series is not None:
            self.series.add(s)
        for anomaly in self.detector.update(s):
            self.batch.anomalies.append(anomaly)
            self.out.append(anomaly)
            self._incidents(lambda: self.correlator.add(anomaly))
        self._incidents(lambda: self.correlator.flush(self.stream_now))

    def _incidents(self, step: Callable[[], list[Incident]]) -> None:
        t0 = time.perf_counter()
        closed = step()
        if not closed:
            return
        ms = (time.perf_counter() - t0) * 1000 / len(closed)
        for incident in closed:
            self.batch.incidents.append((incident, round(ms, 3)))
            self.out.append(incident)
            self.rca_ms.append(ms)

    def _history(self, s: Sample) -> None:
        from vmroc.detect.featurize import Featurizer
        f = self.featurizers.get(s.guest)
        if f is None:
            f = self.featurizers[s.guest] = Featurizer()
        x = f.update(s)
        if x is None or s.ts - self.history_last.get(s.guest, float("-inf")) < self.history_s:
            return
        self.history_last[s.guest] = s.ts
        values = {n: round(v, 3) for n, v in zip(f.names, x) if v}
        self.batch.history.append({"guest": s.guest, "ts": s.ts, "vals": values})


def _slim(sample: Sample) -> Sample:
    """The sample with only the features and log lines the featurizer reads (no task
    lists, no other lines)."""
    from vmroc.detect.featurize import EVENTS, LEVELS, RATES
    from vmroc.introspect.logparts import part_of
    f = sample.features
    return unchecked_sample(guest=sample.guest, ts=sample.ts, backend=sample.backend,
                            consistent=sample.consistent, seq=sample.seq, flags=[], tasks=None,
                            features={k: f[k] for k in RATES + EVENTS + LEVELS if k in f},
                            log=[line for line in sample.log or () if part_of(line)] or None)


@dataclass
class Status:
    """What the worker thread tells /healthz and /metrics."""

    running: bool = False
    started: float = field(default_factory=time.time)
    broker_ok: bool = False
    broker_error: str | None = None
    store_ok: bool = True
    store_error: str | None = None
    paused: bool = False            # consumption paused: the store refused a batch
    last_poll: float | None = None
    assigned: int = 0               # partitions read, once their start offsets are known
    last_commit: float | None = None
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)   # topic -> events
    anomalies: int = 0
    incidents: int = 0
    dead: int = 0
    store_writes: int = 0
    rca_ms: deque = field(default_factory=deque)    # ms, drained by each /metrics scrape
    store_ms: deque = field(default_factory=deque)
    error: str | None = None        # the worker died of this


class Worker:
    """The Kafka loop: poll, process, publish, store with the state, commit."""

    def __init__(self, store: Store, servers: str | None = None, *, group: str = GROUP,
                 from_beginning: bool = False, commit_s: float = 1.0,
                 status: Status | None = None, **processor_options: Any):
        self.store, self.servers, self.group = store, servers, group
        self.from_beginning, self.commit_s = from_beginning, commit_s
        self.status = status or Status()
        self.processor = Processor(**processor_options)
        self.processor.restore(store.load_state(STATE_KEY))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        store.claim(self.owner)

    def run(self, stop: threading.Event) -> None:
        st = self.status
        st.running = True
        try:
            self._run(stop)
        except Exception as exc:
            st.error = f"{type(exc).__name__}: {exc}"
            log.exception("service worker stopped")
            raise
        finally:
            st.running = False

    def _run(self, stop: threading.Event) -> None:
        st, proc = self.status, self.processor
        while not stop.is_set():            # (re)connect until the broker answers
            try:
                inp = Consumer([SAMPLES, FAULTS], self.servers, group=self.group,
                               from_beginning=self.from_beginning,
                               tasks=False)  # never read here (see _slim)
                out = Producer(inp.servers)
                break
            except BusError as exc:
                st.broker_ok, st.broker_error = False, str(exc)
                stop.wait(2.0)
        else:
            return
        st.broker_ok, st.broker_error = True, None
        last_commit = last_lag = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    msgs = inp.poll(0.5)
                    st.broker_ok, st.broker_error, st.last_poll = True, None, time.time()
                except BusError as exc:
                    st.broker_ok, st.broker_error = False, str(exc)
                    stop.wait(1.0)
                    continue
                if not st.assigned:  # start offsets resolved: what is sent now is read
                    st.assigned = len(inp.positions())
                for m in msgs:
                    st.consumed[m.topic] = st.consumed.get(m.topic, 0) + 1
                    proc.feed(m)
                st.dead = inp.stats["dead"]
                proc.release()
                if not msgs or time.monotonic() - last_lag >= 1.0:
                    last_lag = time.monotonic()
                    try:
                        st.lag = inp.lag()
                    except Exception:  # noqa: BLE001 - lag is for reports only
                        pass
                if not msgs and st.lag and not any(st.lag.values()):   # caught up
                    proc.idle()
                due = time.monotonic() - last_commit >= self.commit_s
                if (due or len(proc.batch) > 5000) and (len(proc.batch) or proc.out):
                    self._commit(inp, out, stop)
                    last_commit = time.monotonic()
            self._commit(inp, out, stop)
        finally:
            try:
                out.close(timeout=10)
            finally:
                inp.close()

    def _commit(self, inp: Consumer, out: Producer, stop: threading.Event) -> None:
        st, proc = self.status, self.processor
        events, batch = proc.take()
        for ev in events:
            out.send(ev)
        out.flush()                                  # acknowledged before stored
        st.anomalies += sum(not isinstance(e, Incident) for e in events)
        st.incidents += sum(isinstance(e, Incident) for e in events)
        st.rca_ms.extend(proc.rca_ms)
        proc.rca_ms = []
        while True:                                  # the store first, then the offsets
            t0 = time.perf_counter()
            try:
                self.store.write(batch, owner=self.owner)
                break
            except StoreError as exc:
                # paused: nothing is polled or committed until the store takes the batch
                st.store_ok, st.store_error, st.paused = False, str(exc), True
                log.warning("store refused a batch (%s); consumption paused", exc)
                if stop.wait(1.0):
                    try:
                        self.store.write(batch, owner=self.owner)
                    except StoreError:
                        log.error("stopping with a batch the store refused; its events "
                                  "stay uncommitted and are read again on restart")
                        return
                    break
        st.store_ms.append((time.perf_counter() - t0) * 1000)
        st.store_ok, st.store_error, st.paused = True, None, False
        st.store_writes += 1
        try:
            inp.commit(proc.offsets(inp.positions()))
        except Exception as exc:  # noqa: BLE001 - kafka's CommitFailedError and kin
            # e.g. the group rebalanced while the store was paused: the stored state
            # stays ahead of the offsets, so what is read again is skipped (by time)
            log.warning("offsets not committed (%s): events read again are skipped", exc)
            return
        st.last_commit = time.time()
