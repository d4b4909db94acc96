"""`vmroc schema`: JSON Schemas generated from the code, checked against what the code
reads and writes (shipped campaigns, encoded events) and against what it refuses."""

import json
from pathlib import Path

import pytest

from vmroc import events, schema
from vmroc.cli import main, schema_sources
from vmroc.events import Anomaly, Cause, FaultEvent, Incident, Sample
from vmroc.inject import campaign as campaign_mod
from vmroc.inject.campaign import Campaign, load_yaml
from vmroc.inject.campaign_schema import MAX_DURATION_S, campaign_schema
from vmroc.inject.errors import SpecError
from vmroc.inject.spec import parse_duration

jsonschema = pytest.importorskip("jsonschema", reason="needs the [test] extra")

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS = sorted([*ROOT.glob("deploy/campaigns/*.yaml"), *ROOT.glob("data/recordings/*.yaml")])


@pytest.fixture(scope="module")
def sources():
    return {name: make() for name, make in schema_sources().items()}


def validator(doc):
    return jsonschema.Draft202012Validator(doc)


def test_names_are_the_campaign_and_every_published_event(sources):
    assert set(sources) == {"campaign", *events.SCHEMAS}
    assert {"sample", "fault", "anomaly", "incident"} <= set(sources)


@pytest.mark.parametrize("name", ["campaign", *sorted(events.SCHEMAS)])
def test_every_schema_is_a_valid_2020_12_schema(sources, name):
    doc = sources[name]
    assert doc["$schema"] == schema.DIALECT
    jsonschema.Draft202012Validator.check_schema(doc)
    json.dumps(doc)                     # plain JSON, nothing Python-only


def test_the_event_checker_and_the_schema_know_the_same_scalars():
    assert set(schema.JSON_TYPES) == set(events._SCALARS)


# -- bus events ---------------------------------------------------------------------------
def _events():
    anomaly = Anomaly(guest="g1", ts=10.5, detector="robust", score=4.2,
                      features=["vda_wsec/s"], onset=9.9, deviations={"vda_wsec/s": 7.0})
    return [
        Sample(guest="g1", ts=1.5, features={"tasks": 51, "load1": 0.25}, backend="mmap",
               consistent=True, seq=7, flags=[], tasks=[{"pid": 1, "comm": "init"}],
               log=["I/O error, dev vda"]),
        Sample(guest="g2", ts=2.0, features={}, backend="accel", consistent=False),
        FaultEvent(fault_id="f1", kind="disk-eio", level="disk", phase="injected", ts=3.0,
                   target={"guests": ["g1"]}, params={"iotype": "write"},
                   evidence={"kernel_log": ["x"]}, campaign="demo-1"),
        FaultEvent(fault_id="f2", kind="net-drop", level="network", phase="recovered",
                   ts=4.0, evidence="seen"),
        anomaly,
        Incident(id="i1", ts=11.0, guests=["g1"], anomalies=[anomaly],
                 causes=[Cause(component="g1/disk", score=0.9, evidence={"why": "eio"}),
                         Cause(component="g1/cpu", score=0.1)], abstained=False),
    ]


@pytest.mark.parametrize("event", _events(), ids=lambda e: e.schema)
def test_an_encoded_event_validates_against_its_schema(sources, event):
    validator(sources[event.schema]).validate(json.loads(events.encode(event)))


@pytest.mark.parametrize("name, change", [
    ("sample", {"features": {"tasks": "many"}}),
    ("sample", {"consistent": 1}),
    ("sample", {"v": 2}),
    ("fault", {"phase": "exploded"}),
    ("anomaly", {"score": True}),
    ("incident", {"causes": [{"score": 1.0}]}),          # a cause without its component
])
def test_what_decode_refuses_the_schema_refuses(sources, name, change):
    good = next(json.loads(events.encode(e)) for e in _events() if e.schema == name)
    bad = good | change
    with pytest.raises(events.SchemaError):
        events.decode(name, json.dumps(bad).encode())
    assert not validator(sources[name]).is_valid(bad)


def test_a_missing_field_is_refused(sources):
    sample = json.loads(events.encode(_events()[0]))
    del sample["backend"]
    assert not validator(sources["sample"]).is_valid(sample)


def test_field_comments_become_descriptions(sources):
    props = sources["sample"]["properties"]
    assert "wall clock" in props["ts"]["description"]
    assert sources["sample"]["x-topic"] == "vmroc.samples"


def test_the_sample_schema_carries_the_feature_catalog(sources):
    from vmroc.introspect.catalog import as_dict
    assert sources["sample"]["x-features"] == json.loads(json.dumps(as_dict()))
    assert "x-features" in sources["sample"]["properties"]["features"]["description"]


# -- campaign files -----------------------------------------------------------------------
def test_shipped_campaigns_are_found():
    names = {p.name for p in CAMPAIGNS}
    assert {"demo.yaml", "mixed.yaml", "normal.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize("path", CAMPAIGNS, ids=lambda p: p.name)
def test_every_shipped_campaign_validates(sources, path):
    data = load_yaml(path.read_text(), str(path))
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in validator(sources["campaign"]).iter_errors(data)]
    assert not errors, errors[:3]


GOOD = {"name": "t", "baseline": "5s", "faults": [
    {"at": 0, "kind": "disk-eio", "guest": "g1", "duration": "10s",
     "params": {"iotype": "write"}},
    {"group": {"at": "30s", "id": "two", "faults": [
        {"kind": "net-drop", "guest": "g2", "params": {"loss": 40}},
        {"kind": "cpu-hog", "guests": ["g2"]}]}},
    {"cascade": {"at": "60s", "steps": [
        {"kind": "net-delay", "guest": "g1", "duration": "12s"},
        {"kind": "cpu-throttle", "guest": "g2", "after": "5s"},
        {"kind": "net-drop", "guest": "g3", "on": "effect", "timeout": "20s"}]}},
    {"flip-flop": {"at": "120s", "kind": "net-link-down", "guest": "g3", "on": "5s",
                   "off": "5s", "times": 3}},
]}


def test_a_campaign_with_every_entry_validates_and_loads(sources):
    validator(sources["campaign"]).validate(GOOD)
    assert len(Campaign.from_dict(GOOD).steps) == 1 + 2 + 3 + 3


def _with(**change):
    out = json.loads(json.dumps(GOOD))
    for path, value in change.items():
        *parents, last = path.split("__")
        obj = out
        for key in parents:
            obj = obj[int(key)] if isinstance(obj, list) else obj[key]
        if value is _DELETE:
            del obj[int(last) if isinstance(obj, list) else last]
        else:
            obj[int(last) if isinstance(obj, list) else last] = value
    return out


_DELETE = object()
MALFORMED = {
    "unknown top key": _with(colour="red"),
    "no faults": _with(faults=_DELETE),
    "faults not a list": _with(faults={"at": 0}),
    "no faults and no duration": {"name": "t", "faults": []},
    "bad duration": _with(baseline="soon"),
    "negative duration": _with(cooldown=-1),
    "unknown kind": _with(faults__0__kind="disk-melt"),
    "missing kind": _with(faults__0__kind=_DELETE),
    "unknown key in a fault": _with(faults__0__colour="red"),
    "unknown parameter": _with(faults__0__params={"colour": "red"}),
    "parameter out of range": _with(faults__1__group__faults__0__params={"loss": 500}),
    "parameter not in its choices": _with(faults__0__params={"iotype": "sideways"}),
    "parameter of the wrong type": _with(faults__1__group__faults__0__params={"loss": True}),
    "group of one": _with(faults__1__group__faults=[{"kind": "cpu-hog", "guest": "g1"}]),
    "at inside a group": _with(faults__1__group__faults__0__at="1s"),
    "a composed entry with another key": _with(faults__1__at="1s"),
    "bad id": _with(faults__1__group__id="-no"),
    "later cascade step without after or on": _with(faults__2__cascade__steps__1__after=_DELETE),
    "cascade step with after and on": _with(faults__2__cascade__steps__1__on="effect"),
    "first cascade step with after": _with(faults__2__cascade__steps__0__after="1s"),
    "on other than effect": _with(faults__2__cascade__steps__2__on="start"),
    "timeout without on": _with(faults__2__cascade__steps__1__timeout="3s"),
    "flip-flop times out of range": _with(**{"faults__3__flip-flop__times": 0}),
    "flip-flop with a duration": _with(**{"faults__3__flip-flop__duration": "5s"}),
    "addr of one number": _with(faults__0__addr=[4096]),
    "seed not an integer": _with(seed="seven"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_campaign_fails_validation_and_loading(sources, name):
    bad = MALFORMED[name]
    assert not validator(sources["campaign"]).is_valid(bad), name
    with pytest.raises(SpecError):
        Campaign.from_dict(bad)


def test_duration_limits_match_the_parser(sources):
    assert parse_duration(MAX_DURATION_S) == MAX_DURATION_S
    with pytest.raises(SpecError):
        parse_duration(MAX_DURATION_S + 1)
    duration = validator({**sources["campaign"]["$defs"]["duration"],
                          "$schema": schema.DIALECT})
    for ok in (0, 10, 2.5, "10s", "500ms", "2m", "1h", " 3 s "):
        parse_duration(ok)
        assert duration.is_valid(ok), ok
    for bad in ("ten", "10d", -1, MAX_DURATION_S + 1, True):
        with pytest.raises(SpecError):
            parse_duration(bad)
        assert not duration.is_valid(bad), bad


def test_a_key_the_loader_learns_needs_a_type_here(monkeypatch):
    monkeypatch.setattr(campaign_mod, "STEP_KEYS", campaign_mod.STEP_KEYS + ("colour",))
    with pytest.raises(KeyError, match="colour"):
        campaign_schema()


def test_every_kind_and_parameter_is_in_the_schema(sources):
    from vmroc.inject.registry import all_kinds
    rules = sources["campaign"]["$defs"]["kindParams"]["allOf"]
    by_kind = {r["if"]["properties"]["kind"]["const"]:
               r["then"]["properties"]["params"]["properties"] for r in rules}
    assert set(by_kind) == {k.name for k in all_kinds()}
    for kind in all_kinds():
        assert set(by_kind[kind.name]) == {p.name for p in kind.params}, kind.name


# -- the command --------------------------------------------------------------------------
def test_schema_without_a_name_lists_them(capsys):
    assert main(["schema", "--json"]) == 0
    listed = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert listed == {"campaign", *events.SCHEMAS}
    assert main(["schema"]) == 0
    assert "campaign" in capsys.readouterr().out


def test_schema_out_writes_the_file(tmp_path, capsys):
    out = tmp_path / "campaign.schema.json"
    assert main(["schema", "campaign", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["title"] == "vmroc campaign file"
    assert main(["schema", "incident"]) == 0
    assert json.loads(capsys.readouterr().out)["x-topic"] == "vmroc.incidents"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_generated_campaign_validates(sources, seed):
    from vmroc.inject.generate import generate
    text = generate(40, seed, kinds="all").text
    validator(sources["campaign"]).validate(load_yaml(text, "generated"))
