"""The fault ledger: every start, observed effect and recovery, as ``FaultEvent``s.

Each event is appended to a local JSONL file first (one encoded event per line), then
sent to Kafka topic ``vmroc.faults``. A side file records how many bytes of the JSONL
have been acknowledged by the broker, so events written while the broker was down are
sent by the next ``flush()`` (of this or any later ledger on the same file)::

    ledger = Ledger()                         # $VMROC_HOME/inject/ledger.jsonl, Kafka auto
    ledger.record(event)                      # local append (fsync) + send attempt
    ledger.flush()                            # send whatever is still unsent, now
    ledger.pending()                          # events not yet acknowledged

With the broker down, ``record()`` waits at most ``RECORD_WAIT`` s for it, then only
appends locally for ``RETRY_AFTER`` s. Events the producer still holds (it retries them
until the broker is back or its delivery timeout) are not handed to it again, so an
outage neither loses nor duplicates them; they are sent again only once it gave up.

``kafka=None`` (default) sends when a broker is configured (``VMROC_KAFKA``) or the
embedded one is running, and never starts one; ``kafka=False`` keeps it local.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from vmroc.events import FaultEvent, SchemaError, decode, encode
from vmroc.home import subdir

from .errors import LedgerError, SpecError
from .registry import get_kind

__all__ = ["Ledger", "default_path"]

log = logging.getLogger(__name__)
RETRY_AFTER = 30.0  # seconds record() leaves an unreachable broker alone
RECORD_WAIT = 5.0   # seconds record() waits for the broker's acknowledgement
TAIL_MARGIN = 500   # messages of other writers the first flush reads past on vmroc.faults
SENDER_WAIT = 2.0   # seconds a flush waits for another process's flush to end


def default_path() -> Path:
    env = os.environ.get("VMROC_LEDGER")
    return Path(env) if env else subdir("inject") / "ledger.jsonl"


class Ledger:
    """Local JSONL fault history with at-least-once delivery to ``vmroc.faults``."""

    def __init__(self, path: str | os.PathLike | None = None, *, kafka: bool | None = None,
                 servers: str | None = None, producer: Any = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sent_path = self.path.with_name(self.path.name + ".sent")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.kafka = kafka
        self.servers = servers
        self._producer = producer
        self._down_until = 0.0
        self._producer_lock = threading.Lock()
        self._send_lock = threading.Lock()  # one flush at a time in this process
        self._sender = None  # the lock file, flocked while this ledger is the sender
        # sent, not yet acknowledged, oldest first: (file offset after the line, the
        # producer's future; None for a line that needs none)
        self._unacked: list[tuple[int, Any]] = []
        # the first flush looks for the unsent lines on the topic: a writer killed after
        # the broker took an event but before it marked it sent would otherwise send it
        # twice (set by _connect: only with a producer of our own)
        self._servers: str | None = None
        self._tail_checked = False
        self.last_error: str | None = None
        self.skipped = 0  # bad (torn) lines passed over when sending
        self._acked_to = 0  # acknowledged up to here (also when .sent cannot be written)

    # -- writing -----------------------------------------------------------------------
    def record(self, event: FaultEvent, send: bool = True) -> FaultEvent:
        """Append ``event`` to the JSONL file (durably), then try to send it."""
        line = encode(event) + b"\n"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # a writer killed mid-line left a torn line: end it, so this event
                    # stays a line of its own (the torn one is skipped when read)
                    log.warning("fault ledger %s ended in a torn line; kept apart from "
                                "%s %s", self.path, event.fault_id, event.phase)
                    line = b"\n" + line
                try:
                    done = 0
                    while done < len(line):  # a full disk may take part of it only
                        done += os.write(fd, line[done:])
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # no torn line of ours left behind
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise LedgerError(f"cannot write the fault ledger {self.path}: {exc}") from exc
        log.info("ledger %s %s %s", event.fault_id, event.kind, event.phase)
        if send and time.monotonic() >= self._down_until:
            try:
                self.flush(RECORD_WAIT)
            except OSError as exc:  # recorded is what counts; sending is tried again
                log.warning("fault ledger: %s %s recorded, not sent yet (%s)",
                            event.fault_id, event.phase, exc)
        return event

    def events(self, fault_id: str | None = None) -> list[FaultEvent]:
        """Every event in the local file (of one fault, if given), oldest first."""
        out = []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        for raw in data.splitlines():
            try:
                ev = decode("fault", raw)
            except SchemaError:
                log.warning("skipping a bad ledger line in %s: %.60r", self.path, raw)
                continue
            if fault_id is None or ev.fault_id == fault_id:
                out.append(ev)
        return out

    # -- sending -----------------------------------------------------------------------
    def _sent_offset(self) -> int:
        """Where the acknowledged part of the file ends: the ``.sent`` file, or further if
        this process could not write it (a full disk)."""
        try:
            on_disk = int(self.sent_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            on_disk = 0
        return max(on_disk, self._acked_to)

    def pending(self) -> int:
        """Events in the local file not yet acknowledged by Kafka."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._sent_offset())
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def _get_producer(self):
        with self._producer_lock:  # a campaign records from several threads
            return self._connect()

    def _connect(self):
        if self._producer is not None:
            return self._producer
        if self.kafka is False:
            return None
        from vmroc.bus import BusError, Producer, bootstrap
        try:
            servers = self.servers or bootstrap(start=False)
            self._producer = Producer(servers)
            self._servers = servers
        except BusError as exc:
            self._down_until = time.monotonic() + RETRY_AFTER
            self.last_error = str(exc)
            (log.warning if self.kafka else log.info)(
                "fault ledger kept locally in %s (Kafka: %s)", self.path, exc)
            return None
        return self._producer

    def flush(self, timeout: float = 15.0) -> int:
        """Send every unsent event now and wait up to ``timeout`` s for the broker;
        returns how many were acknowledged during this call. Events the producer still
        tries to deliver are waited for, not sent again."""
        producer = self._get_producer()
        if producer is None:
            return 0
        deadline = time.monotonic() + timeout
        with self._sending(min(timeout, SENDER_WAIT)) as sender:
            if not sender:
                log.info("fault ledger %s: another process is sending it; its next flush "
                         "takes the %d unsent event(s)", self.path, self.pending())
                return 0
            acked = self._settle(deadline)
            if self._unacked:  # the producer still retries some: lines sent now would go
                return acked   # behind them, and twice if those failed and went again
            try:
                lines = self._unsent_lines(self._sent_offset())
                if lines and not self._tail_checked and self._servers:
                    lines = self._not_on_topic(lines)
                self._tail_checked = True
                for end, ev in lines:
                    self._unacked.append((end, None if ev is None else producer.send(ev)))
            except FileNotFoundError:
                pass
            except Exception as exc:  # the lines not handed over yet go next time
                self._not_acknowledged(exc)
            return acked + self._settle(deadline)

    def _not_on_topic(self, lines: list[tuple[int, FaultEvent | None]]
                      ) -> list[tuple[int, FaultEvent | None]]:
        """``lines`` with the events already on ``vmroc.faults`` (same fault id, phase and
        time, in its last messages) turned into lines that need no sending. Any trouble
        reading the topic: ``lines`` as they are (at least once)."""
        wanted = {(ev.fault_id, ev.phase, ev.ts) for _, ev in lines if ev is not None}
        if not wanted:
            return lines
        from kafka import KafkaConsumer, TopicPartition

        from vmroc.bus import FAULTS
        seen, tp = set(), TopicPartition(FAULTS, 0)
        try:
            consumer = KafkaConsumer(bootstrap_servers=self._servers, enable_auto_commit=False)
            try:
                consumer.assign([tp])
                end = consumer.end_offsets([tp])[tp]
                consumer.seek(tp, max(0, end - len(wanted) - TAIL_MARGIN))
                deadline = time.monotonic() + 10.0
                while consumer.position(tp) < end and time.monotonic() < deadline:
                    for records in consumer.poll(timeout_ms=500).values():
                        for rec in records:
                            try:
                                ev = decode("fault", rec.value)
                            except SchemaError:
                                continue
                            seen.add((ev.fault_id, ev.phase, ev.ts))
                complete = consumer.position(tp) >= end
            finally:
                consumer.close()
        except Exception as exc:  # noqa: BLE001 - kafka-python raises many types
            log.info("fault ledger: could not read the tail of %s (%s)", FAULTS, exc)
            return lines
        if not complete:
            return lines
        there = wanted & seen
        if there:
            log.warning("fault ledger %s: %d unsent event(s) are on %s already (a writer "
                        "stopped before marking them sent): not sent again", self.path,
                        len(there), FAULTS)
        return [(end_, None if ev is not None and (ev.fault_id, ev.phase, ev.ts) in there
                 else ev) for end_, ev in lines]

    @contextlib.contextmanager
    def _sending(self, wait: float):
        """True while this ledger is the file's one sender (threads and processes; a
        flock on the lock file). A ledger with events still in flight stays the sender
        between its flushes, so another process cannot send them again meanwhile (it
        would not find them on the topic yet); False after ``wait`` s: another process
        is the sender, and its next flush takes every unsent line, ours too."""
        with self._send_lock:
            if self._sender is None:
                lock = open(self.lock_path, "a+")
                deadline = time.monotonic() + wait
                while True:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            lock.close()
                            lock = None
                            break
                        time.sleep(0.05)
                if lock is None:
                    yield False
                    return
                self._sender = lock
            try:
                yield True
            finally:
                if not self._unacked or self._producer is None:
                    self._sender.close()   # releases the flock
                    self._sender = None

    def _unsent_lines(self, offset: int) -> list[tuple[int, FaultEvent | None]]:
        """(offset after the line, its event; None for a blank or bad one) for each
        whole line from ``offset``."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        lines = []
        for raw in data[:data.rfind(b"\n") + 1].split(b"\n")[:-1]:
            offset += len(raw) + 1
            ev = None
            if raw.strip():
                try:
                    ev = decode("fault", raw)
                except SchemaError:  # a torn line (see record): counted, never blocks
                    self.skipped += 1
                    log.warning("fault ledger %s: skipping a bad line (not sent): %.60r",
                                self.path, raw)
            lines.append((offset, ev))
        return lines

    def _settle(self, deadline: float) -> int:
        """Wait until ``deadline`` for the sent events, oldest first; mark those
        acknowledged as sent and return how many. An event the producer gave up on is
        forgotten with every later one, so the next flush sends them again."""
        acked, acked_to = 0, None
        while self._unacked:
            end, future = self._unacked[0]
            if future is not None:
                try:
                    future.get(timeout=max(0.0, deadline - time.monotonic()))
                except Exception as exc:  # kafka-python raises many types; keep them local
                    self._not_acknowledged(exc)
                    if getattr(future, "is_done", True):  # not still retried by the producer
                        self._unacked.clear()
                    break
                acked += 1
            acked_to = end
            self._unacked.pop(0)
        if acked_to is not None:
            self._mark_sent(max(acked_to, self._sent_offset()))
        return acked

    def _not_acknowledged(self, exc: Exception) -> None:
        self.last_error = str(exc)
        self._down_until = time.monotonic() + RETRY_AFTER
        log.warning("fault ledger: %d event(s) not acknowledged yet (%s); kept in %s",
                    self.pending(), str(exc) or type(exc).__name__, self.path)

    def _mark_sent(self, offset: int) -> None:
        self._acked_to = max(self._acked_to, offset)
        tmp = self.sent_path.with_suffix(".tmp")
        try:
            tmp.write_text(str(offset))
            os.replace(tmp, self.sent_path)
        except OSError as exc:  # e.g. a full disk: this process remembers; a later one
            # finds the events on the topic already (the first flush's tail check)
            log.warning("fault ledger: cannot mark %s sent up to %d (%s)", self.path,
                        offset, exc)

    def close(self) -> None:
        """Send what is unsent (unless Kafka failed less than ``RETRY_AFTER`` s ago) and
        close the producer."""
        try:
            if time.monotonic() >= self._down_until:
                self.flush()
        finally:
            if self._producer is not None and hasattr(self._producer, "close"):
                try:
                    self._producer.close(timeout=10)
                except Exception as exc:  # pragma: no cover - best effort on shutdown
                    log.warning("closing the ledger producer: %s", exc)
                self._producer = None
                with self._sending(SENDER_WAIT) as sender:
                    if sender:
                        self._settle(time.monotonic())  # what closing delivered is sent

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def event(fault_id: str, kind: str, level: str, phase: str, target: dict, params: dict,
          evidence: Any = None, ts: float | None = None, campaign: str | None = None,
          part: str | None = None) -> FaultEvent:
    """A ``FaultEvent`` with JSON-clean params and evidence; ``part`` (what the fault
    breaks) defaults to the registered kind's."""
    return FaultEvent(fault_id=fault_id, kind=kind, level=level, phase=phase,
                      ts=time.time() if ts is None else ts, target=_clean(target),
                      params=_clean(params), evidence=_clean(evidence), campaign=campaign,
                      part=part if part is not None else _part(kind))


def _part(kind: str) -> str | None:
    try:
        return get_kind(kind).part
    except SpecError:  # not a registered kind (an event made by hand): no part
        return None


def _clean(value: Any) -> Any:
    """Round-trip through JSON so tuples become lists and odd floats fail early."""
    return json.loads(json.dumps(value, default=str, allow_nan=False))
