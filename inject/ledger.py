"""The fault ledger: every start, observed effect and recovery, as ``FaultEvent``s.

Each event is appended to a local JSONL file first (one encoded event per line), then
sent to Kafka topic ``vmroc.faults``. A side file records how many bytes of the JSONL
have been acknowledged by the broker, so events written while the broker was down are
sent by the next ``flush()`` (of this or any later ledger on the same file)::

    ledger = Ledger()                         # $VMROC_HOME/inject/ledger.jsonl, Kafka auto
    ledger.record(event)                      # local append (fsync) + send attempt
    ledger.flush()                            # send whatever is still unsent
    ledger.pending()                          # events not yet acknowledged

``kafka=None`` (default) sends when a broker is configured (``VMROC_KAFKA``) or the
embedded one is running, and never starts one; ``kafka=False`` keeps it local.
"""

from __future__ import annotations

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
RETRY_AFTER = 30.0  # seconds before trying an unreachable broker again


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
        self.last_error: str | None = None
        self.skipped = 0  # bad (torn) lines passed over when sending

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
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise LedgerError(f"cannot write the fault ledger {self.path}: {exc}") from exc
        log.info("ledger %s %s %s", event.fault_id, event.kind, event.phase)
        if send:
            self.flush()
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
        try:
            return int(self.sent_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

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
        if self.kafka is False or time.monotonic() < self._down_until:
            return None
        from vmroc.bus import BusError, Producer, bootstrap
        try:
            servers = self.servers or bootstrap(start=False)
            self._producer = Producer(servers)
        except BusError as exc:
            self._down_until = time.monotonic() + RETRY_AFTER
            self.last_error = str(exc)
            (log.warning if self.kafka else log.info)(
                "fault ledger kept locally in %s (Kafka: %s)", self.path, exc)
            return None
        return self._producer

    def flush(self, timeout: float = 15.0) -> int:
        """Send every unsent event; returns how many were acknowledged now."""
        producer = self._get_producer()
        if producer is None:
            return 0
        self.lock_path.touch(exist_ok=True)
        with open(self.lock_path, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            offset = self._sent_offset()
            try:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                return 0
            end = data.rfind(b"\n") + 1      # only whole lines
            events = []
            for raw in data[:end].splitlines():
                if not raw.strip():
                    continue
                try:
                    events.append(decode("fault", raw))
                except SchemaError:  # a torn line (see record): counted, never blocks
                    self.skipped += 1
                    log.warning("fault ledger %s: skipping a bad line (not sent): %.60r",
                                self.path, raw)
            if not events:
                if end:
                    self._mark_sent(offset + end)  # only bad lines: past them
                return 0
            try:
                futures = [producer.send(ev) for ev in events]
                for fut in futures:
                    fut.get(timeout=timeout)
            except Exception as exc:  # kafka-python raises many types; keep them local
                self.last_error = str(exc)
                self._down_until = time.monotonic() + RETRY_AFTER
                log.warning("fault ledger: %d event(s) not sent yet (%s); kept in %s",
                            len(events), exc, self.path)
                return 0
            self._mark_sent(offset + end)
            return len(events)

    def _mark_sent(self, offset: int) -> None:
        tmp = self.sent_path.with_suffix(".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, self.sent_path)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._producer is not None and hasattr(self._producer, "close"):
                try:
                    self._producer.close(timeout=10)
                except Exception as exc:  # pragma: no cover - best effort on shutdown
                    log.warning("closing the ledger producer: %s", exc)
                self._producer = None

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
