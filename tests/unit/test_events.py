"""Event schemas: every type round-trips; bad bytes raise SchemaError saying why."""

import json
import logging
import math
import threading
import types

import pytest

from vmroc import bus, events
from vmroc.bus_cli import _format
from vmroc.errors import VmrocError
from vmroc.events import (
    SCHEMAS,
    TOPICS,
    Anomaly,
    Cause,
    FaultEvent,
    Incident,
    Sample,
    SchemaError,
    decode,
    decode_pack,
    encode,
    encode_pack,
    from_dict,
    to_dict,
)

SAMPLE = Sample(guest="g0", ts=1795670000.25, features={"tasks": 51, "load1": 0.42},
                backend="mmap", consistent=False, seq=7, flags=["tasks-truncated"],
                tasks=[{"pid": 1, "comm": "init", "state": "S"}],
                log=["I/O error, dev vda, sector 400"])
FAULT = FaultEvent(fault_id="f-1", kind="disk-eio", level="device", phase="effect-observed",
                   ts=1795670001.0, target={"guest": "g0", "device": "vda"},
                   params={"rate": 0.3}, evidence={"log": "I/O error"}, part="disk")
ANOMALY = Anomaly(guest="g0", ts=1795670002.5, detector="iforest", score=0.93,
                  features=["nr_iowait", "io_errors"])
INCIDENT = Incident(id="inc-1", ts=1795670003.0, guests=["g0"], anomalies=[ANOMALY],
                    causes=[Cause(component="g0/disk/vda", score=0.9, evidence="EIO in log"),
                            Cause(component="g0/net", score=0.1)])
ALL = [SAMPLE, FAULT, ANOMALY, INCIDENT]


@pytest.mark.parametrize("event", ALL, ids=lambda e: e.schema)
def test_roundtrip_by_topic_and_by_schema(event):
    data = encode(event)
    assert decode(event.topic, data) == event
    assert decode(event.schema, data) == event
    obj = json.loads(data)
    assert (obj["schema"], obj["v"]) == (event.schema, event.v)
    assert from_dict(event.schema, to_dict(event)) == event


def test_minimal_events_use_defaults():
    s = decode("sample", b'{"schema":"sample","v":1,"guest":"g1","ts":1,'
                         b'"features":{},"backend":"libvmi","consistent":true}')
    assert (s.seq, s.flags, s.tasks, s.log, s.key) == (0, [], None, None, "g1")
    f = FaultEvent(fault_id="f", kind="net-delay", level="network", phase="injected", ts=2)
    assert decode("vmroc.faults", encode(f)) == f and f.key == "f"


def test_every_topic_has_one_schema():
    assert set(TOPICS) == {"vmroc.samples", "vmroc.faults", "vmroc.anomalies",
                           "vmroc.incidents"}
    assert {c.schema for c in TOPICS.values()} == set(SCHEMAS)


def test_unknown_extra_fields_are_ignored():
    obj = to_dict(ANOMALY) | {"added_later": 1}
    assert decode("anomaly", json.dumps(obj).encode()) == ANOMALY


@pytest.mark.parametrize("data, message", [
    (b"\xff\xfe garbage", "sample: not JSON"),
    (b"", "sample: not JSON"),
    (None, "empty message"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"schema":"fault","v":1}', "expected schema 'sample', got 'fault'"),
])
def test_garbage_raises_schema_error(data, message):
    with pytest.raises(SchemaError, match=message) as info:
        decode("vmroc.samples", data)
    assert isinstance(info.value, VmrocError)


def test_wrong_version_raises_schema_error():
    obj = to_dict(SAMPLE) | {"v": 2}
    with pytest.raises(SchemaError, match=r"sample: version 2 not supported "
                                          r"\(this vmroc reads v1\)") as info:
        decode("sample", json.dumps(obj).encode())
    assert info.value.field == "v"
    with pytest.raises(SchemaError, match="version None"):
        decode("sample", json.dumps({k: v for k, v in obj.items() if k != "v"}).encode())


@pytest.mark.parametrize("event", ALL, ids=lambda e: e.schema)
def test_missing_field_raises_schema_error(event):
    obj = to_dict(event)
    name = next(k for k in obj if k not in ("schema", "v"))
    del obj[name]
    with pytest.raises(SchemaError, match=f"{event.schema}: missing field '{name}'") as info:
        decode(event.topic, json.dumps(obj).encode())
    assert (info.value.schema, info.value.field) == (event.schema, name)


@pytest.mark.parametrize("schema, change, message", [
    ("sample", {"consistent": "yes"}, "sample.consistent: expected a boolean, got str"),
    ("sample", {"features": {"tasks": "many"}}, r"sample.features\['tasks'\]: expected a number"),
    ("sample", {"features": {"tasks": True}}, "expected a number, got bool"),
    ("sample", {"seq": 1.5}, "sample.seq: expected an integer"),
    ("fault", {"phase": "exploded"}, "fault.phase: expected one of"),
    ("anomaly", {"score": None}, "anomaly.score: expected a number, got NoneType"),
    ("incident", {"causes": [{"component": "x", "score": "high"}]},
     r"incident.causes\[0\]: cause.score: expected a number"),
    ("incident", {"anomalies": [{"guest": "g0"}]},
     r"incident.anomalies\[0\]: anomaly: missing field 'ts'"),
])
def test_wrong_type_raises_schema_error(schema, change, message):
    event = next(e for e in ALL if e.schema == schema)
    with pytest.raises(SchemaError, match=message):
        decode(schema, json.dumps(to_dict(event) | change).encode())


def test_invalid_events_cannot_be_built_or_encoded():
    with pytest.raises(SchemaError, match="sample.ts: expected a number"):
        Sample(guest="g0", ts="now", features={}, backend="mmap", consistent=True)
    with pytest.raises(SchemaError, match="expected a finite number"):
        Anomaly(guest="g0", ts=1, detector="d", score=float("nan"))
    with pytest.raises(SchemaError, match="not a vmroc event"):
        encode({"schema": "sample"})
    with pytest.raises(SchemaError, match="no event schema for 'vmroc.nope'"):
        decode("vmroc.nope", b"{}")


def test_packs_roundtrip_and_fail_as_a_whole():
    samples = [Sample(guest="g0", ts=i, features={"x": i}, backend="mmap", consistent=True,
                      seq=i) for i in range(3)]
    assert decode_pack("vmroc.samples", encode_pack(samples)) == samples
    assert decode_pack("sample", encode(samples[0])) == samples[:1]     # a single event
    bad = encode_pack(samples).replace(b'"seq":1', b'"seq":"one"')
    with pytest.raises(SchemaError, match="pack item 1: sample.seq: expected an integer"):
        decode_pack("sample", bad)
    with pytest.raises(SchemaError, match="non-empty array"):
        decode_pack("sample", b"[]")
    with pytest.raises(SchemaError, match="expected a JSON object, got list"):
        decode("sample", encode_pack(samples))


def test_an_incident_of_an_older_vmroc_with_a_matched_fault_id_still_decodes():
    old = json.loads(encode(INCIDENT))
    old["fault_id"] = "f-1"          # the correlator used to name the injected fault
    assert decode("vmroc.incidents", json.dumps(old).encode()) == INCIDENT


def test_a_fault_event_of_an_older_vmroc_without_a_part_still_decodes():
    old = json.loads(encode(FAULT))
    del old["part"]                  # ledgers recorded before v0.2 name no part
    ev = decode("vmroc.faults", json.dumps(old).encode())
    assert ev.part is None and ev == FaultEvent(**{**to_dict(FAULT, header=False), "part": None})
    assert FAULT.broken_part() == "disk"       # as recorded
    assert ev.broken_part() == "other"         # level "device": no part known before v0.2
    old.update(kind="guest-crash", level="cluster")
    assert decode("fault", json.dumps(old).encode()).broken_part() == "guest"


# -- the compact form of samples (what the bus sends) ---------------------------------

needs_msgspec = pytest.mark.skipif(not events.COMPACT, reason="pip install msgspec")
TASKS = [{"address": 2**64 - 4096, "pid": p, "comm": f"t{p}", "state": "S",
          "kthread": p % 2 == 0, "utime": p / 3} for p in range(1, 6)]
SAMPLES = [
    SAMPLE,                                                     # one task record
    Sample(guest="g1", ts=1795670000, features={}, backend="accel", consistent=True),
    Sample(guest="g2", ts=1.5, features={"big": 2**64 - 1, "neg": -2**63, "f": -0.0},
           backend="mmap", consistent=True, seq=2**40, tasks=TASKS, log=[]),
    Sample(guest="g3", ts=2.5, features={"x": 1}, backend="mmap", consistent=True,
           tasks=TASKS[:2] + [{"pid": 9}], log=["a", "é"]),      # records of other keys
    Sample(guest="g4", ts=3.5, features={"x": 1}, backend="mmap", consistent=True,
           tasks=[]),
    Sample(guest="g5", ts=4.5, features={"x": 1}, backend="mmap", consistent=True,
           tasks=[{"a b": 1, "__dict__": [2]}, {"a b": 3, "__dict__": {"k": None}}]),
]


def _compact(value):
    return events._ONE + events.msgspec.msgpack.encode(value)


@needs_msgspec
@pytest.mark.parametrize("event", ALL + SAMPLES[1:], ids=lambda e: f"{e.schema}-{e.key}")
def test_compact_roundtrip_of_every_event(event):
    data = encode(event, compact=True)
    assert (data[0] == 0xC1) == isinstance(event, Sample)   # other events stay JSON
    assert decode(event.topic, data) == event
    assert decode(event.schema, memoryview(data)) == event
    assert decode_pack(event.topic, bytearray(data)) == [event]
    assert to_dict(decode(event.topic, data)) == to_dict(event)


@needs_msgspec
def test_compact_is_smaller_and_packs_roundtrip():
    big = SAMPLES[2]
    assert len(encode(big, compact=True)) < len(encode(big)) * 0.6
    data = encode_pack(SAMPLES, compact=True)
    assert data[:3] == b"\xc1\x01\x01"
    assert decode_pack("vmroc.samples", data) == SAMPLES
    mixed = encode_pack([SAMPLE, ANOMALY], compact=True)      # not all samples: JSON
    assert mixed[:1] == b"["
    with pytest.raises(SchemaError, match="expected one event, got a compact pack"):
        decode("sample", data)


@needs_msgspec
def test_old_json_samples_still_decode():
    old = (b'{"schema":"sample","v":1,"guest":"g1","ts":1,"features":{"tasks":51},'
           b'"backend":"libvmi","consistent":true}')
    assert decode_pack("vmroc.samples", old) == [Sample(
        guest="g1", ts=1, features={"tasks": 51}, backend="libvmi", consistent=True)]
    assert decode("sample", encode(SAMPLE)) == decode("sample", encode(SAMPLE, compact=True))


@needs_msgspec
def test_a_sample_past_64_bits_goes_as_json():
    s = Sample(guest="g0", ts=1, features={"huge": 2**70}, backend="mmap", consistent=True)
    data = encode(s, compact=True)
    assert data[:1] == b"{" and decode("sample", data) == s
    assert encode_pack([s, SAMPLE], compact=True)[:1] == b"["


ROW = ("sample", 1, "g0", 1.5, {"tasks": 51}, "mmap", True)


@needs_msgspec
@pytest.mark.parametrize("data, message, field_name", [
    (b"\xc1", "compact message of an unknown layout", None),
    (b"\xc1\x07\x00\x90", "unknown layout", None),
    (b"\xc1\x01\x05\x90", "unknown layout", None),
    (b"\xc1\x01\x00", "sample: not a compact event", None),
    (b"\xc1\x01\x00\xc1 garbage", "sample: not a compact event .*malformed", None),
    (b"\xc1\x01\x00\xff\xfe garbage", "sample: expected `array`, got `int`", None),
    (b"\xc1\x01\x00\x97\xa6sample", "sample: not a compact event .*truncated", None),
    (b"\xc1\x01\x01\x90", "non-empty compact pack", None),
    ("short", "sample: missing field 'ts'", "ts"),
    ("nan", r"sample.features\[...\]: expected `float` >=", "features"),
    ("text", r"sample.features\[...\]: expected `int \| float`, got `str`", "features"),
    ("bool", r"sample.features\[...\]: expected `int \| float`, got `bool`", "features"),
    ("seq", "sample.seq: expected `int`, got `float`", "seq"),
    ("inf-ts", "sample.ts: expected `float` <=", "ts"),
    ("v2", r"sample: version 2 not supported \(this vmroc reads v1\)", "v"),
    ("fault", "expected schema 'sample', got 'fault'", "schema"),
    ("row", r"sample.tasks\[1\]: expected `array` of at least length 2, got 1", "tasks"),
    ("long-row", r"sample.tasks\[0\]: expected `array` of at most length 2, got 3", "tasks"),
    ("odd-keys", "sample.tasks: a row has not the table's 2 columns", "tasks"),
    ("row-nan", r"sample.tasks\[0\]\[1\]: expected", "tasks"),
    ("rows-no-keys", "sample.tasks: task rows without keys", "tasks"),
    ("keys-no-rows", "sample.tasks: a task table needs rows", "tasks"),
    ("task-nan", r"sample.tasks\[0\]\[...\]: expected", "tasks"),
    ("pack", "pack item 1: sample.seq: expected `int`, got `str`", "seq"),
])
def test_bad_compact_bytes_raise_schema_error(data, message, field_name):
    bad = {"short": ROW[:3], "nan": ROW[:4] + ({"x": math.nan},) + ROW[5:],
           "text": ROW[:4] + ({"tasks": "many"},) + ROW[5:],
           "bool": ROW[:4] + ({"tasks": True},) + ROW[5:],
           "seq": ROW + (1.5,), "inf-ts": ROW[:3] + (math.inf,) + ROW[4:],
           "v2": ROW[:1] + (2,) + ROW[2:], "fault": ("fault",) + ROW[1:],
           "row": ROW + (0, [], None, None, ["pid", "comm"], [[1, "a"], [2]]),
           "keys-no-rows": ROW + (0, [], None, None, ["pid", "comm"]),
           "long-row": ROW + (0, [], None, None, ["pid", "comm"], [[1, "a", 3]]),
           "odd-keys": ROW + (0, [], None, None, ["a b", "c"], [[1, 2], [3]]),
           "row-nan": ROW + (0, [], None, None, ["pid", "comm"], [[1, math.nan]]),
           "rows-no-keys": ROW + (0, [], None, None, None, [[1, 2]]),
           "task-nan": ROW + (0, [], None, [{"x": math.inf}])}
    if data in bad:
        data = _compact(bad[data])
    elif data == "pack":
        data = b"\xc1\x01\x01" + events.msgspec.msgpack.encode([ROW, ROW + ("7",)])
    with pytest.raises(SchemaError, match=message) as info:
        decode_pack("vmroc.samples", data)
    assert info.value.schema == "sample" and info.value.field == field_name
    assert "\n" not in str(info.value)


@needs_msgspec
def test_compact_samples_only_decode_as_samples():
    data = encode(SAMPLE, compact=True)
    with pytest.raises(SchemaError, match="expected schema 'fault', got 'sample'"):
        decode("vmroc.faults", data)
    with pytest.raises(SchemaError, match="fault: has no compact form"):
        decode("vmroc.faults", _compact(("fault",) + ROW[1:]))
    with pytest.raises(SchemaError, match="no event schema for 'vmroc.nope'"):
        decode("vmroc.nope", data)


def test_without_msgspec_compact_falls_back_to_json(monkeypatch, caplog):
    monkeypatch.setattr(events, "msgspec", None)
    monkeypatch.setattr(events, "_warned_json", False)
    with caplog.at_level(logging.WARNING, logger="vmroc.events"):
        data = [encode(SAMPLE, compact=True), encode_pack([SAMPLE] * 2, compact=True)]
        encode(SAMPLE, compact=True)
    assert data[0] == encode(SAMPLE) and data[1][:1] == b"["
    assert [r.message for r in caplog.records] == [
        "msgspec is not installed: samples go on the bus as JSON (pip install msgspec "
        "for the compact form)"]
    with pytest.raises(SchemaError, match="msgspec is not installed to read it"):
        decode("sample", b"\xc1\x01\x00\x97")


class _FakeKafkaProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, value, key=None, partition=None):
        self.sent.append((topic, value))

    def partitions_for(self, topic):
        return {0, 1, 2, 3}


def _producer(**options) -> bus.Producer:
    producer = object.__new__(bus.Producer)      # no broker: only the encoding is tested
    producer.pack, producer.pack_s, producer._packs, producer.sent = 1, 1.0, {}, 0
    producer._partition_of, producer._lock, producer._flusher = {}, threading.Lock(), False
    producer.compact = options.get("compact", True)
    producer.pack = options.get("pack", 1)
    producer._producer = _FakeKafkaProducer()
    return producer


def _consume(topic: str, value: bytes) -> list:
    consumer = object.__new__(bus.Consumer)
    consumer.stats, consumer.dlq = {"received": 0, "decoded": 0, "dead": 0}, False
    rec = types.SimpleNamespace(topic=topic, partition=0, offset=0, key=b"k",
                                timestamp=0, value=value, headers=[])
    return consumer._decode(rec)


@needs_msgspec
def test_the_bus_sends_samples_compact_and_reads_both():
    producer = _producer()
    for event in (SAMPLE, FAULT):
        producer.send(event)
    json_producer = _producer(compact=False)
    json_producer.send(SAMPLE)
    packed = _producer(pack=2)
    two = [SAMPLE, Sample(**{**to_dict(SAMPLE, header=False), "seq": 8})]
    for s in two:
        packed.send(s)
    (_, compact), (_, fault) = producer._producer.sent
    (_, plain), = json_producer._producer.sent
    (_, pack), = packed._producer.sent
    assert compact[:3] == b"\xc1\x01\x00" and fault[:1] == plain[:1] == b"{"
    assert pack[:3] == b"\xc1\x01\x01"
    for topic, value, want in [("vmroc.samples", compact, [SAMPLE]),
                               ("vmroc.faults", fault, [FAULT]),
                               ("vmroc.samples", plain, [SAMPLE]),
                               ("vmroc.samples", pack, two)]:
        assert [m.event for m in _consume(topic, value)] == want
    assert _consume("vmroc.samples", compact[:-3]) == []        # counted dead, skipped
    # vmroc tail --json prints the compact sample as the JSON event
    msg = _consume("vmroc.samples", compact)[0]
    assert json.loads(_format(msg, True))["event"] == to_dict(SAMPLE)


def test_consumer_run_hands_each_poll_to_on_batch_and_commits_after_it():
    consumer = object.__new__(bus.Consumer)
    consumer.stats = {"received": 0, "decoded": 0, "dead": 0}
    polls = [["a", "b", "c"], [], ["d"]]
    seen, commits = [], []

    def poll(timeout, max_records=None):
        batch = polls.pop(0) if polls else []
        consumer.stats["received"] += len(batch)
        return batch

    consumer.poll = poll
    consumer.commit = lambda: commits.append(list(seen))
    assert consumer.run(on_batch=lambda batch: seen.append(batch), max_messages=4) == 4
    assert seen == [["a", "b", "c"], ["d"]]           # one call per poll, in order
    assert commits == [[["a", "b", "c"]], [["a", "b", "c"], ["d"]]]  # after each batch
    with pytest.raises(TypeError):
        consumer.run(lambda m: None, on_batch=lambda b: None)


@pytest.mark.parametrize("compact", [True, False])
def test_samples_decoded_without_tasks_are_the_same_but_for_them(compact):
    """``decode_pack(tasks=False)`` (the detector's and the service's consumers): the
    same samples with ``tasks`` None; a compact task table is not even parsed."""
    from vmroc.events import Sample, decode_pack, encode_pack, to_dict
    samples = [Sample(guest="g1", ts=1.0 + i, features={"a": i, "b": 0.5}, backend="accel",
                      consistent=True, seq=i, flags=[], log=["x"],
                      tasks=[{"pid": 1, "comm": "init"}, {"pid": 2, "comm": "kthreadd"}])
               for i in range(3)]
    data = encode_pack(samples, compact=compact)
    full, slim = decode_pack("vmroc.samples", data), decode_pack("vmroc.samples", data,
                                                                 tasks=False)
    assert [s.tasks for s in full] == [samples[0].tasks] * 3
    assert all(s.tasks is None for s in slim)
    assert [dict(to_dict(s), tasks=None) for s in full] == [to_dict(s) for s in slim]
    if compact:  # a broken task table: refused in full, not looked at without tasks
        broken = data.replace(b"kthreadd", b"kthread\xff")
        with pytest.raises(SchemaError):
            decode_pack("vmroc.samples", broken)
        assert len(decode_pack("vmroc.samples", broken, tasks=False)) == 3


def test_a_poll_holds_off_the_cycle_collector_and_always_gives_it_back():
    import gc

    from kafka.errors import KafkaError

    seen = []

    class Kafka:
        def __init__(self, fail):
            self.fail = fail

        def poll(self, timeout_ms, max_records):
            seen.append(gc.isenabled())
            if self.fail:
                raise KafkaError("broker gone")
            return {}

    consumer = object.__new__(bus.Consumer)
    consumer.stats, consumer.group, consumer.topics, consumer.servers = {}, None, ["t"], "x"
    consumer._consumer = Kafka(fail=False)
    assert gc.isenabled() and consumer.poll(0.1) == [] and gc.isenabled()
    consumer._consumer = Kafka(fail=True)
    with pytest.raises(bus.BusError, match="broker gone"):
        consumer.poll(0.1)
    assert seen == [False, False] and gc.isenabled()
    gc.disable()                                # held off by someone else: left so
    try:
        consumer._consumer = Kafka(fail=False)
        consumer.poll(0.1)
        assert not gc.isenabled()
    finally:
        gc.enable()


@needs_msgspec
def test_a_pack_of_big_samples_goes_out_before_kafka_would_refuse_it():
    producer = _producer(pack=10)
    tasks = [{"pid": i, "comm": f"worker-{i}", "state": "S"} for i in range(3000)]
    big = Sample(**{**to_dict(SAMPLE, header=False), "tasks": tasks})
    for _ in range(4):
        producer.send(big)
    sent = list(producer._producer.sent)
    assert len(sent) >= 2 and all(len(value) < bus.PACK_BYTES for _, value in sent)
    for _ in range(3):
        producer.send(SAMPLE)                   # small ones still fill a pack of 10
    assert producer._producer.sent == sent
