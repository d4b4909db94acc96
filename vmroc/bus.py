"""The bus: vmroc events over Apache Kafka (kafka-python), topics and the dead-letter queue.

    servers = bootstrap(start_broker=embedded)  # VMROC_KAFKA, else the embedded broker
    with Producer(servers) as out:              # acks=all, retries, flush on close
        out.send(sample)                        # topic and key come from the event
    with Consumer(SAMPLES, servers, group="detect") as inp:
        inp.run(handle, stop=stop_event)        # commits after handle() returned

A message that does not decode is counted (``consumer.stats["dead"]``), logged with
topic/partition/offset and copied to ``vmroc.dlq`` with the reason in its headers;
the consumer goes on. ``vmroc.bus`` sits below the stages and imports none: the
embedded broker (``vmroc.deploy.broker.embedded``) is passed in, to ``bootstrap()`` or
once for the process with ``use_broker()`` (the ``vmroc`` command does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import VmrocError
from .events import SchemaError, _Event, decode_pack, encode, encode_pack

__all__ = [
    "bootstrap", "use_broker", "ensure_topics", "describe_topics", "Producer", "Consumer",
    "Message", "DeadLetter", "BusError", "SAMPLES", "FAULTS", "ANOMALIES", "INCIDENTS",
    "DLQ", "TOPICS",
]

log = logging.getLogger(__name__)

SAMPLES = "vmroc.samples"
FAULTS = "vmroc.faults"
ANOMALIES = "vmroc.anomalies"
INCIDENTS = "vmroc.incidents"
DLQ = "vmroc.dlq"
TOPICS = (SAMPLES, FAULTS, ANOMALIES, INCIDENTS, DLQ)
DEFAULT_SAMPLES_PARTITIONS = 4
# A pack of samples is sent once it holds about this many bytes, whatever its count:
# Kafka refuses messages over 1 MB (a guest with thousands of tasks makes 100 KB samples)
PACK_BYTES = 256 * 1024
ANCHOR_TIMEOUT_MS = 5000     # each call of Consumer._anchor's; then it tries on the next poll

# Client settings shared by producers and consumers: reconnect quickly after a
# broker restart (kafka-python's default backoff grows to 30 s).
_CLIENT = dict(reconnect_backoff_ms=50, reconnect_backoff_max_ms=1000, retry_backoff_ms=100)
_ensured: set[str] = set()
# what bootstrap() calls when VMROC_KAFKA is unset and no start_broker is given
_start_broker: Callable[[bool], str] | None = None
# lz4 (a vmroc dependency) is cheap compression; plain if it is missing.
_COMPRESSION = "lz4" if importlib.util.find_spec("lz4") else None


class BusError(VmrocError):
    """Kafka not reachable, a topic missing, or a send that was not acknowledged."""

    def __init__(self, message: str, servers: str | None = None, topic: str | None = None):
        super().__init__(message)
        self.servers = servers
        self.topic = topic


@dataclasses.dataclass(frozen=True)
class Message:
    """One decoded event with where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int
    event: Any                  # a vmroc.events event, or a DeadLetter on vmroc.dlq


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A message from ``vmroc.dlq``: the original bytes and why they did not decode."""

    topic: str
    partition: int
    offset: int
    error: str
    value: bytes | None


def bootstrap(start: bool = True, *,
              start_broker: Callable[[bool], str] | None = None) -> str:
    """Bootstrap servers: ``VMROC_KAFKA`` if set (never starts anything), else
    ``start_broker(start)``, which returns the servers of a broker this machine runs and
    starts it first if it is down and ``start`` is true (``vmroc.deploy.broker.embedded``:
    the embedded broker). Without ``start_broker``, the one given to ``use_broker()``."""
    servers = os.environ.get("VMROC_KAFKA", "").strip()
    if servers:
        return servers
    start_broker = start_broker or _start_broker
    if start_broker is None:
        raise BusError("no Kafka broker given: point vmroc at one with VMROC_KAFKA=host:port "
                       "(`vmroc broker up` starts the embedded broker and prints its "
                       "address), or pass start_broker=vmroc.deploy.broker.embedded")
    return start_broker(start)


def use_broker(start_broker: Callable[[bool], str] | None) -> None:
    """Make ``start_broker`` what ``bootstrap()`` calls in this process when
    ``VMROC_KAFKA`` is unset, also for the clients given no servers (``Producer``,
    ``Consumer``, ``ensure_topics``, the fault ledger). None forgets it."""
    global _start_broker
    _start_broker = start_broker


def samples_partitions() -> int:
    """Partitions of ``vmroc.samples``: ``VMROC_SAMPLES_PARTITIONS`` or 4."""
    value = os.environ.get("VMROC_SAMPLES_PARTITIONS", str(DEFAULT_SAMPLES_PARTITIONS))
    try:
        return max(1, int(value))
    except ValueError:
        raise BusError(f"VMROC_SAMPLES_PARTITIONS={value!r} is not a number") from None


def ensure_topics(servers: str | None = None, *, partitions: int | None = None,
                  timeout: float = 10.0) -> dict[str, int]:
    """Create the vmroc topics that are missing; grow ``vmroc.samples`` to
    ``partitions`` (default ``samples_partitions()``). Returns topic -> partitions."""
    from kafka.admin import NewPartitions, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    servers = servers or bootstrap()
    wanted = {t: 1 for t in TOPICS} | {SAMPLES: partitions or samples_partitions()}
    admin = _connect("admin", servers, timeout)
    try:
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
        replicas = min(3, brokers)
        existing = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()
                    if t["name"] in wanted and not t["error_code"]}
        new = [NewTopic(t, n, replicas) for t, n in wanted.items() if t not in existing]
        if new:
            try:
                admin.create_topics(new, timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                pass            # another process created them meanwhile
            log.info("created topics %s on %s", [t.name for t in new], servers)
        if existing.get(SAMPLES, wanted[SAMPLES]) < wanted[SAMPLES]:
            admin.create_partitions({SAMPLES: NewPartitions(wanted[SAMPLES])})
            log.info("grew %s to %d partitions", SAMPLES, wanted[SAMPLES])
        _wait_topics(admin, wanted, timeout)
    except KafkaError as exc:
        raise BusError(f"could not set up topics on {servers}: {exc}", servers) from exc
    finally:
        admin.close()
    _ensured.add(servers)
    return {t: max(n, existing.get(t, 0)) for t, n in wanted.items()}


def describe_topics(servers: str, timeout: float = 10.0) -> dict[str, int]:
    """Partitions of each vmroc topic on ``servers``, creating none (a missing topic is
    left out)."""
    admin = _connect("admin", servers, timeout)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics()
                if t["name"] in TOPICS and not t["error_code"]}
    finally:
        admin.close()


class Producer:
    """Publishes events (acks=all, idempotent, retried; batched up to 10 ms and
    lz4-compressed by default); ``close()`` flushes. ``options`` go to KafkaProducer.

    Samples are packed: up to ``pack`` (default 50) samples bound for one partition of
    ``vmroc.samples`` travel as one Kafka message, sent when full (or about
    ``PACK_BYTES`` big) or ``pack_ms`` (10,
    the batching's own linger) after its first sample, whichever comes first. A guest's
    samples all go to its key's partition, so their order is kept; consumers unpack
    transparently. A Kafka message costs kafka-python about as much as the sample in it,
    so full packs double the bus's throughput or more; at 10 Hz per guest a pack holds what
    the other guests of its partition sent within the linger. ``pack=1`` sends one
    sample a message. Other events always go one a message. ``send`` returns a future
    either way: ``.get()`` waits for the broker's acknowledgement (of a sample's pack,
    sending the pack at once if it is still filling).

    Samples go in the compact form (``vmroc.events``; JSON if msgspec is missing),
    other events as JSON; consumers read both. ``compact=False`` sends samples as JSON
    too, for consumers of a vmroc older than the compact form.
    """

    def __init__(self, servers: str | None = None, *, ensure: bool = True, pack: int = 50,
                 pack_ms: float = 10.0, compact: bool = True, **options: Any):
        self.servers = servers or bootstrap()
        if ensure and self.servers not in _ensured:
            ensure_topics(self.servers)
        config = dict(_CLIENT, acks="all", enable_idempotence=True, linger_ms=10,
                      batch_size=256 * 1024, compression_type=_COMPRESSION,
                      max_block_ms=20000, delivery_timeout_ms=60000)
        self._producer = _connect("producer", self.servers, **(config | options))
        self.pack, self.pack_s = max(1, pack), pack_ms / 1000
        self.compact = compact
        self._packs: dict[int, _Pack] = {}      # partition -> the pack filling for it
        self._partition_of: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        self.sent = 0

    def send(self, event: _Event, *, key: str | None = None):
        """Queue ``event`` on its topic; returns its future (see the class docstring).
        ``key`` overrides the event's own; a packed sample's only picks its partition
        (consumers read each packed event's key from the event itself)."""
        key = event.key if key is None else key
        self.sent += 1
        if self.pack == 1 or event.topic != SAMPLES:
            return self._send(event.topic, key, encode(event, compact=self.compact))
        partition = self._partition_of.get(key)
        if partition is None:
            partition = self._partition_of[key] = self._partition(key)
        with self._lock:
            now = time.monotonic()
            pack = self._packs.get(partition)
            if pack is None:
                pack = self._packs[partition] = _Pack(self, partition, now)
            pack.events.append(event)
            pack.size += _size_hint(event)
            if len(pack.events) >= self.pack or pack.size >= PACK_BYTES:
                self._send_pack(pack)
            self._send_stale(now)
            if self._flusher is None:           # under the lock: one flusher, not two
                self._flusher = threading.Thread(target=self._flush_stale, daemon=True,
                                                 name="vmroc-packs")
                self._flusher.start()
        return pack

    def _partition(self, key: str | None) -> int:
        """The partition of ``vmroc.samples`` that kafka's default partitioner gives
        ``key`` (murmur2, as the Java client)."""
        from kafka.partitioner.default import murmur2
        partitions = sorted(self._producer.partitions_for(SAMPLES))
        if key is None:
            return partitions[0]
        return partitions[(murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)]

    def _send_stale(self, now: float) -> None:
        """Send the packs older than ``pack_ms`` (oldest first; the lock is held)."""
        while self._packs:                      # dicts keep insertion order
            pack = next(iter(self._packs.values()))
            if now - pack.started < self.pack_s:
                break
            self._send_pack(pack)

    def _flush_stale(self) -> None:
        """A pack waits at most ``pack_ms`` even when no other sample comes."""
        while not self._closing.wait(self.pack_s / 2):
            try:
                with self._lock:
                    self._send_stale(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the next send or flush raises it
                log.warning("samples to %s: a pack could not be sent yet: %s",
                            self.servers, exc)

    def _send_pack(self, pack: "_Pack") -> None:
        """Send ``pack`` (the lock is held) and give it kafka-python's future."""
        if self._packs.get(pack.partition) is pack:
            del self._packs[pack.partition]
        events = pack.events
        value = (encode_pack(events, compact=self.compact) if len(events) > 1
                 else encode(events[0], compact=self.compact))
        pack.future = self._producer.send(SAMPLES, value, key=events[0].key.encode(),
                                          partition=pack.partition)

    def _send(self, topic: str, key: str | None, value: bytes):
        return self._producer.send(topic, value, key=key.encode() if key is not None else None)

    def flush(self, timeout: float | None = None) -> None:
        """Send partial packs and wait until every event is acknowledged (or raise
        BusError)."""
        from kafka.errors import KafkaError
        with self._lock:
            for pack in list(self._packs.values()):
                self._send_pack(pack)
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise BusError(f"events not acknowledged by {self.servers}: {exc}",
                           self.servers) from exc

    def close(self, timeout: float = 30.0) -> None:
        self._closing.set()
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout=timeout)

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _size_hint(sample) -> int:
    """About how many bytes ``sample`` takes in the compact form (a task record ~60, a
    feature ~15: measured on the lab's samples), so a pack stays below ``PACK_BYTES``."""
    return (200 + 15 * len(sample.features) + 80 * len(sample.tasks or ())
            + sum(len(line) + 8 for line in sample.log or ()))


@contextlib.contextmanager
def _gc_paused():
    """Python's cycle collector held off during a poll: kafka-python parsing the fetched
    records and vmroc decoding them make thousands of objects that hold no cycles
    (records, events, their feature dicts); each few hundred of them would start a
    collection that walks every object of the process, and reading a backlog took
    1.5-2x as long. Held off for the poll's wait too (at most its ``timeout``);
    collection resumes after each poll."""
    if not gc.isenabled():          # held off already (another consumer's batch)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Pack:
    """Samples bound for one partition, sent as one message; also each one's future:
    ``get()`` waits for the pack's acknowledgement, sending it first if it is filling."""

    def __init__(self, producer: Producer, partition: int, started: float):
        self.producer, self.partition, self.started = producer, partition, started
        self.events: list[_Event] = []
        self.size = 0                           # about how many bytes it will take
        self.future = None                      # kafka-python's, once sent

    def get(self, timeout: float | None = None):
        if self.future is None:
            with self.producer._lock:
                if self.future is None:
                    self.producer._send_pack(self)
        return self.future.get(timeout)


class Consumer:
    """Reads and decodes events; offsets are committed only by ``commit()``/``run()``.

    ``group`` is the consumer group (members split the partitions); ``group=None``
    reads every partition without committing (for ``vmroc tail``). ``dlq`` copies
    undecodable messages to ``vmroc.dlq`` (off for read-only tools). ``tasks`` False:
    samples come without their task records, which are then neither made nor checked
    (the detector reads none; decoding is several times faster).
    """

    tasks = True  # make samples' task records (see __init__)

    def __init__(self, topics: str | Iterable[str], servers: str | None = None, *,
                 group: str | None = "vmroc", from_beginning: bool = False,
                 dlq: bool = True, tasks: bool = True, **options: Any):
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        unknown = [t for t in self.topics if t not in TOPICS]
        if unknown:
            raise BusError(f"unknown topic {unknown[0]!r}: vmroc topics are "
                           f"{', '.join(TOPICS)}", topic=unknown[0])
        self.servers = servers or bootstrap()
        self.group = group
        self.dlq = dlq
        self.tasks = tasks
        # Kafka messages received, events decoded from them, messages sent to the DLQ
        self.stats = {"received": 0, "decoded": 0, "dead": 0}
        self._dlq_producer = None
        self._anchored: set = set()   # partitions known to have a committed offset
        config = dict(_CLIENT, group_id=group, enable_auto_commit=False,
                      auto_offset_reset="earliest" if from_beginning else "latest",
                      session_timeout_ms=10000, heartbeat_interval_ms=1000)
        self._consumer = _connect("consumer", self.servers, **(config | options))
        if group is not None:
            self._consumer.subscribe(self.topics)
        else:
            self._assign_all(from_beginning)

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list[Message]:
        """The next decoded events (possibly none); bad messages go to the DLQ."""
        from kafka.errors import KafkaError
        with _gc_paused():
            try:
                batches = self._consumer.poll(timeout_ms=int(timeout * 1000),
                                              max_records=max_records)
            except KafkaError as exc:
                raise BusError(f"consuming {self.topics} from {self.servers}: {exc}",
                               self.servers) from exc
            if self.group is not None:
                self._anchor(batches)
            out = []
            for records in batches.values():
                for rec in records:
                    self.stats["received"] += 1
                    msgs = self._decode(rec)
                    self.stats["decoded"] += len(msgs)
                    out += msgs
        return out

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Commit everything polled so far (after flushing its DLQ copies), or only
        ``offsets``: (topic, partition) -> the next offset to read."""
        if self._dlq_producer is not None:
            self._dlq_producer.flush()
        if self.group is None:
            return
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata
        try:
            if offsets is None:
                self._consumer.commit()
            elif offsets:
                self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                       for (t, p), o in offsets.items()})
        except KafkaError as exc:  # e.g. the broker went away: one error type for callers
            raise BusError(f"committing offsets of group {self.group} on {self.servers}: "
                           f"{exc}", self.servers) from exc

    def positions(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the next offset this member will read, for what it reads
        now (everything polled so far is before it)."""
        return {(tp.topic, tp.partition): self._consumer.position(tp)
                for tp in self._consumer.assignment()}

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages behind the end of the partition, for what it
        reads now (from the consumer's last fetch metadata; may be empty early on)."""
        out = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - self._consumer.position(tp))
        return out

    def run(self, handler: Callable[[Message], None] | None = None, *,
            stop: threading.Event | None = None, max_messages: int | None = None,
            idle_timeout: float | None = None,
            on_batch: Callable[[list[Message]], None] | None = None) -> int:
        """Call ``handler`` on each event (or ``on_batch`` once on each poll's events, in
        order) and commit after each handled batch, until ``stop`` is set,
        ``max_messages`` were handled or nothing came for ``idle_timeout`` seconds.
        Returns how many events were handled."""
        if (handler is None) == (on_batch is None):
            raise TypeError("Consumer.run takes a handler or on_batch, not both")
        handled, idle_since = 0, time.monotonic()
        while not (stop and stop.is_set()):
            limit = None if max_messages is None else max_messages - handled
            if limit == 0:
                break
            received = self.stats["received"]
            try:
                batch = self.poll(0.5, max_records=limit)
            except BusError as exc:  # the broker is away: a worker waits for it
                log.warning("%s; polling again", exc)
                if stop is not None and stop.wait(1.0):
                    break
                if stop is None:
                    time.sleep(1.0)
                continue
            todo = batch[:limit]
            if on_batch is not None:
                if todo:
                    on_batch(todo)
                handled += len(todo)
            else:
                for msg in todo:
                    handler(msg)
                    handled += 1
            if limit is not None and len(batch) > limit:
                break       # a pack was cut: its offset stays uncommitted (redelivered)
            if self.stats["received"] > received:  # messages came, even if none decoded
                try:
                    self.commit()
                except BusError as exc:  # handled but not committed: the next commit
                    log.warning("%s; committed with the next batch", exc)  # covers them
                idle_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                break
        return handled

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member reads now."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def close(self) -> None:
        try:
            if self._dlq_producer is not None:
                self._dlq_producer.close(timeout=10)
        finally:
            self._consumer.close(autocommit=False)

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------
    def _decode(self, rec) -> list[Message]:
        key = rec.key.decode(errors="replace") if rec.key is not None else None
        if rec.topic == DLQ:
            headers = {k: v.decode(errors="replace") for k, v in rec.headers or []}
            event = DeadLetter(topic=headers.get("vmroc.topic", "?"),
                               partition=_int(headers.get("vmroc.partition")),
                               offset=_int(headers.get("vmroc.offset")),
                               error=headers.get("vmroc.error", "?"), value=rec.value)
            return [Message(rec.topic, rec.partition, rec.offset, key, rec.timestamp, event)]
        try:
            events = decode_pack(rec.topic, rec.value, tasks=self.tasks)
        except SchemaError as exc:
            self.stats["dead"] += 1
            log.warning("undecodable message %s/%d@%d (%s)%s", rec.topic, rec.partition,
                        rec.offset, exc, ": copied to " + DLQ if self.dlq else "")
            if self.dlq:
                self._dead_letter(rec, str(exc))
            return []
        if len(events) > 1:     # a pack: one partition's events, each with its own key
            return [Message(rec.topic, rec.partition, rec.offset, event.key, rec.timestamp,
                            event) for event in events]
        return [Message(rec.topic, rec.partition, rec.offset, key, rec.timestamp, event)
                for event in events]

    def _dead_letter(self, rec, error: str) -> None:
        if self._dlq_producer is None:
            self._dlq_producer = _connect("producer", self.servers, acks="all", linger_ms=5,
                                          max_block_ms=20000, **_CLIENT)
        headers = [("vmroc.error", error.encode()), ("vmroc.topic", rec.topic.encode()),
                   ("vmroc.partition", str(rec.partition).encode()),
                   ("vmroc.offset", str(rec.offset).encode())]
        self._dlq_producer.send(DLQ, rec.value, key=rec.key, headers=headers)

    def _anchor(self, batches: dict) -> None:
        """Commit where this member began on each newly assigned partition that its group
        has no offset for yet. Otherwise a member stopped before its first commit would
        leave the group with no offset, and the next one would start at the end
        (``latest``) and skip what was written in between."""
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata
        assigned = self._consumer.assignment()
        self._anchored &= assigned
        todo = {}
        try:
            for tp in assigned - self._anchored:
                if self._consumer.committed(tp, timeout_ms=ANCHOR_TIMEOUT_MS) is None:
                    records = batches.get(tp)
                    start = records[0].offset if records else \
                        self._consumer.position(tp, timeout_ms=ANCHOR_TIMEOUT_MS)
                    todo[tp] = OffsetAndMetadata(start, "", -1)
                else:
                    self._anchored.add(tp)
            if todo:
                self._consumer.commit(todo, timeout_ms=ANCHOR_TIMEOUT_MS)
                self._anchored |= set(todo)
        except KafkaError as exc:  # tried again on the next poll
            log.warning("anchoring group %s on %s: %s", self.group, self.servers, exc)

    def _assign_all(self, from_beginning: bool) -> None:
        from kafka import TopicPartition
        parts = []
        for topic in self.topics:
            ids = self._consumer.partitions_for_topic(topic)
            if not ids:
                raise BusError(f"topic {topic} does not exist on {self.servers}: create the "
                               f"vmroc topics with `vmroc broker up` (or ensure_topics())",
                               self.servers, topic)
            parts += [TopicPartition(topic, p) for p in sorted(ids)]
        self._consumer.assign(parts)
        (self._consumer.seek_to_beginning if from_beginning else self._consumer.seek_to_end)()
        for tp in parts:  # resolve now: "from the end" means the end when this was made
            self._consumer.position(tp)


def _int(text: str | None) -> int:
    """A dead letter's partition or offset header; -1 if missing or not a number."""
    try:
        return int(text)
    except (TypeError, ValueError):
        return -1


def _connect(kind: str, servers: str, timeout: float = 10.0, **config: Any):
    """A kafka-python client, with 'not reachable' turned into a one-line BusError."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    cls = {"admin": KafkaAdminClient, "producer": KafkaProducer,
           "consumer": KafkaConsumer}[kind]
    config.setdefault("bootstrap_timeout_ms", int(timeout * 1000))
    if kind == "admin":
        config = dict(_CLIENT, request_timeout_ms=int(timeout * 1000), **config)
    try:
        return cls(bootstrap_servers=servers.split(","), **config)
    except KafkaError as exc:
        raise BusError(f"Kafka at {servers} not reachable ({type(exc).__name__}): start the "
                       f"embedded broker with `vmroc broker up`, or fix VMROC_KAFKA",
                       servers) from exc


def _wait_topics(admin, wanted: dict[str, int], timeout: float) -> None:
    """Until every topic has its partitions with a leader (creation is asynchronous)."""
    deadline = time.monotonic() + timeout
    from kafka.errors import KafkaError

    while True:
        try:
            ready = {t["name"]: t for t in admin.describe_topics(list(wanted))
                     if not t["error_code"]}
        except KafkaError:
            ready = {}
        if all(t in ready and len(ready[t]["partitions"]) >= n
               and all(p["leader_id"] >= 0 for p in ready[t]["partitions"])
               for t, n in wanted.items()):
            return
        if time.monotonic() > deadline:
            raise BusError(f"topics {sorted(wanted)} not ready after {timeout:.0f} s")
        time.sleep(0.1)

