"""Event schemas: every type round-trips; bad bytes raise SchemaError saying why."""

import json

import pytest

from vmroc.errors import VmrocError
from vmroc.events import (SCHEMAS, TOPICS, Anomaly, Cause, FaultEvent, Incident, Sample,
                          SchemaError, decode, decode_pack, encode, encode_pack, from_dict,
                          to_dict)

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
