"""Bad input everywhere, fuzzed (hypothesis): a malformed campaign file, a bad `--param`
value, a bad CSV table for `vmroc rca rank --csv`, a bad recording and raw garbage on
every Kafka topic each give a one-line ``VmrocError`` (what the CLI prints, exit 1) or a
counted skip; never another exception (a traceback), never a worker exit, and nothing
applied to a guest.

Reproducible: ``derandomize=True`` (examples from the test's name, no database); the
``@example``s are inputs that once broke a property (the fix is in the module that now
raises the one-line error).
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import lzma
import math
import random
import threading
import types

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vmroc import bus, events
from vmroc.errors import VmrocError
from vmroc.events import SchemaError, decode, decode_pack, encode, encode_pack
from vmroc.inject.campaign import Campaign, load_yaml
from vmroc.inject.cli import _parse_params
from vmroc.inject.errors import SpecError
from vmroc.inject.lifecycle import prepare
from vmroc.inject.registry import all_kinds, resolve_params
from vmroc.inject.spec import FaultSpec, Target
from vmroc.rca.errors import RCAError
from vmroc.rca.table import rank_table
from vmroc.recordings import RecordingError, read_recording

from .test_events import ALL, SAMPLE, SAMPLES

FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.function_scoped_fixture,
                                   HealthCheck.filter_too_much])


def one_line(call, errors=VmrocError):
    """``call()``'s result, or None when it raised ``errors`` with a one-line message;
    any other exception fails the property (it would be a traceback)."""
    try:
        return call()
    except errors as exc:
        text = f"{type(exc).__name__}: {exc}"
        assert "\n" not in text and "\r" not in text, text
        return None


# -- values ---------------------------------------------------------------------------
WEIRD = ["5x", -1, -0.5, 1e308, -1e308, math.nan, math.inf, -math.inf, 10**30, 10**400,
         "", " ", "-5s", "1e3s", "0x10", "24h", "25h", "999999999999h", "1" * 400, 0, 0.0,
         "nan", "inf", "5 s", "5S", "g1,,g2", ",", ["g1", 5], [["x"]], {"a": 1}, [], {},
         None, True, False, "\n", "on", "off", "effect", "yes", "\x00", "é", "1_000"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400),
                    st.floats(), st.text(max_size=12), st.sampled_from(WEIRD))
json_like = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=16)

# -- campaigns -------------------------------------------------------------------------
VALID = {
    "name": "fuzz", "lab": "default", "workload": "web", "baseline": "20s", "cooldown": 10,
    "duration": "20m", "seed": 7,
    "faults": [
        {"at": "0s", "kind": "disk-eio", "guest": "g2", "duration": "10s",
         "params": {"iotype": "write", "sector": "0x100"}, "device": "vda"},
        {"at": 5, "kind": "mem-mce", "guests": ["g1"], "addr": [4096, 1]},
        {"group": {"at": "30s", "id": "eio-and-drop", "faults": [
            {"kind": "disk-slow", "guest": "g3", "duration": "10s"},
            {"kind": "net-drop", "guest": "g3", "duration": "10s", "params": {"loss": 60}}]}},
        {"cascade": {"at": "60s", "steps": [
            {"kind": "net-delay", "guest": "g1", "duration": "12s"},
            {"kind": "cpu-throttle", "guest": "g2", "duration": "10s", "after": "5s"},
            {"kind": "net-drop", "guest": "g3", "duration": "8s", "on": "effect",
             "timeout": "3s"}]}},
        {"flip-flop": {"at": "120s", "kind": "net-link-down", "guest": "g3", "on": "5s",
                       "off": "5s", "times": 3}},
        {"at": "200s", "kind": "bridge-down", "duration": "2s"},
    ],
}
KEYS = sorted({"name", "lab", "workload", "baseline", "cooldown", "duration", "seed",
               "faults", "at", "kind", "guest", "guests", "params", "addr", "device",
               "group", "cascade", "flip-flop", "id", "steps", "after", "on", "off",
               "timeout", "times", "iotype", "loss"}) + [k.name for k in all_kinds()]
campaign_like = st.recursive(scalars | st.sampled_from(KEYS), lambda kids: st.one_of(
    st.lists(kids, max_size=4),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), kids, max_size=5)),
    max_leaves=24)


def test_the_valid_campaign_loads():
    assert len(Campaign.from_dict(VALID).steps) == 1 + 1 + 2 + 3 + 3 + 1


def _slots(node, out):
    """Every (container, key or index) of a JSON-like tree, depth first."""
    for key in (list(node) if isinstance(node, dict) else range(len(node))):
        out.append((node, key))
        if isinstance(node[key], (dict, list)):
            _slots(node[key], out)
    return out


@st.composite
def mutated(draw, base=VALID):
    """``base`` with one to three changes anywhere in it: a key dropped, a value
    replaced by a weird one, a value wrapped in a list, an entry duplicated."""
    obj = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(obj, [])
        if not slots:
            break
        parent, key = draw(st.sampled_from(slots))
        how = draw(st.sampled_from(["drop", "replace", "replace", "replace", "wrap", "dup"]))
        if how == "drop":
            del parent[key]
        elif how == "replace":
            parent[key] = copy.deepcopy(draw(st.sampled_from(WEIRD) | json_like))  # ours now
        elif how == "wrap":
            parent[key] = [parent[key]]
        elif isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[key])))
        else:
            parent[draw(st.sampled_from(KEYS))] = parent[key]
    return obj


def check_campaign(obj):
    campaign = one_line(lambda: Campaign.from_dict(obj, "fuzz.yaml"))
    if campaign is not None:  # what `vmroc campaign plan` prints must build too
        json.dumps(campaign.plan(), default=str)


@settings(max_examples=250, **FUZZ)
@given(campaign_like)
@example({"faults": [{"kind": ["disk-eio"], "guest": "g1"}]})   # unhashable kind: TypeError
@example({"faults": [], "duration": 10**400})                    # OverflowError
@example({"faults": [{"kind": "disk-eio", "guest": 5}]})         # int guests: TypeError
@example({"faults": [], "duration": 5, "lab": ["x"]})            # a list as the lab name
@example({"faults": [{"kind": "disk-eio", "guest": "g1",
                      "params": {"sector": math.inf}}]})          # int(inf): OverflowError
def test_any_json_like_campaign_is_a_campaign_or_one_line(obj):
    check_campaign(obj)


@settings(max_examples=300, **FUZZ)
@given(mutated())
def test_a_mutated_campaign_is_a_campaign_or_one_line(obj):
    check_campaign(obj)


YAML_CHARS = "{}[]:,-\n #&*!|>'\"%@`?abcgks01.\t=\\"
VALID_YAML = json.dumps(VALID, indent=1)


@settings(max_examples=200, **FUZZ)
@given(st.one_of(st.text(max_size=80), st.text(YAML_CHARS, max_size=80),
                 st.builds(lambda cut, junk: VALID_YAML[:cut] + junk,
                           st.integers(0, len(VALID_YAML)), st.text(YAML_CHARS, max_size=8))))
@example("[" * 1000)                            # RecursionError from the YAML reader
@example("a: " + "9" * 5000)                    # ValueError: int past 4300 digits
@example("a: 1\r\nb: [")                        # a message on one line
def test_any_text_as_a_campaign_file_is_a_campaign_or_one_line(text):
    obj = one_line(lambda: load_yaml(text, "campaign fuzz.yaml"), SpecError)
    if obj is not None:
        check_campaign(obj)


@settings(max_examples=60, **FUZZ)
@given(st.binary(max_size=64) | st.builds(lambda cut, junk: VALID_YAML.encode()[:cut] + junk,
                                          st.integers(0, len(VALID_YAML)),
                                          st.binary(max_size=4)))
@example(b"\xff\xfe")                          # not UTF-8: UnicodeDecodeError
def test_any_bytes_as_a_campaign_file_load_or_fail_in_one_line(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    one_line(lambda: Campaign.load(path), SpecError)


# -- `--param K=V` and fault specs -------------------------------------------------------
class _LabDown:
    """A lab that is not up: prepare() must stop at validation; nothing can be applied."""

    name, is_up, workload = "fuzz", False, "web"

    def guest(self, name):  # pragma: no cover - never reached when the lab is down
        raise AssertionError("prepare() went past the lab check")


@st.composite
def kind_and_params(draw):
    kind = draw(st.sampled_from(all_kinds()))
    names = [p.name for p in kind.params]
    key = st.sampled_from(names) | st.text(max_size=6) if names else st.text(max_size=6)
    value = st.one_of(scalars, st.sampled_from(["0x10", "0b1", "0o7", "1e3", "-0", "true",
                                                "False", "on", " 5 ", "5.0", "1e400", "-inf"]))
    return kind, draw(st.dictionaries(key, value, max_size=4))


@settings(max_examples=300, **FUZZ)
@given(kind_and_params())
def test_any_parameter_value_resolves_or_fails_in_one_line(kp):
    kind, params = kp
    out = one_line(lambda: resolve_params(kind, params), SpecError)
    if out is not None:
        assert set(out) == {p.name for p in kind.params}


cli_value = st.one_of(st.text(max_size=12), st.sampled_from(
    ["0x10", "-1", "1e400", "nan", "inf", "9" * 5000, "true", "", " ", "=", "a=b"]))


@st.composite
def cli_params(draw):
    kind = draw(st.sampled_from(all_kinds()))
    names = [p.name for p in kind.params] or ["x"]
    items = draw(st.lists(st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(names) | st.text(max_size=5),
                  cli_value),
        st.text(max_size=10)), max_size=3))
    return kind.name, items, draw(st.lists(st.text(max_size=4), max_size=2))


@settings(max_examples=200, **FUZZ)
@given(cli_params())
def test_any_param_on_the_command_line_stops_before_the_lab(kgp):
    """`vmroc inject KIND --guest G --param K=V`: the strings as the CLI passes them, up
    to the lab check (the lab is down here): always a one-line error, nothing applied."""
    kind, items, guests = kgp

    def inject():
        spec = FaultSpec(kind, Target(tuple(guests)), _parse_params(items, kind), 5.0)
        prepare(spec, _LabDown())
    assert one_line(inject) is None


@settings(max_examples=200, **FUZZ)
@given(kind=st.sampled_from([k.name for k in all_kinds()]) | st.text(max_size=8) | json_like,
       target=json_like, params=json_like, duration=scalars, seed=scalars)
@example(kind="disk-eio", target={"guests": 5}, params={}, duration=1, seed=None)
@example(kind="disk-eio", target={"addr": 5}, params={}, duration=1, seed=None)
@example(kind="disk-eio", target=[], params={}, duration=10**400, seed=None)
def test_any_fault_spec_is_built_or_fails_in_one_line(kind, target, params, duration, seed):
    spec = one_line(lambda: FaultSpec(kind, target, params, duration, seed), SpecError)
    if spec is not None:  # what the ledger and the leases write, read back
        one_line(lambda: FaultSpec.from_json(spec.to_json()), SpecError)
    one_line(lambda: FaultSpec.from_dict({"kind": kind, "target": target, "params": params,
                                          "duration": duration, "seed": seed}), SpecError)


@settings(max_examples=80, **FUZZ)
@given(st.text(max_size=60) | st.text(YAML_CHARS, max_size=60))
@example('{"kind": "disk-eio", "target": {"addr": 5}}')
@example("[" * 1000)
def test_any_text_as_a_fault_spec_is_one_or_fails_in_one_line(text):
    one_line(lambda: FaultSpec.from_json(text), SpecError)
    one_line(lambda: FaultSpec.from_yaml(text), SpecError)


# -- CSV tables (`vmroc rca rank --csv FILE --anomaly-start T`) ----------------------------
CELLS = st.one_of(st.floats().map(repr), st.integers(-10**6, 10**6).map(str),
                  st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "abc",
                                   " 1 ", "1_000", "0x10", "-0", "1e-400", "\x00"]),
                  st.text(max_size=4))
NAMES = st.sampled_from(["time", "time", "cpu", "lat", "mem", " time", "", "x,y", "Time"]) \
    | st.text(max_size=4)


@st.composite
def tables(draw):
    """(CSV text, anomaly start): random names and cells, or a numeric table whose times
    may repeat, go backwards or miss, with constant, huge or missing columns."""
    if draw(st.sampled_from(["numeric", "numeric", "numeric", "random"])) == "random":
        header = draw(st.lists(NAMES, min_size=0, max_size=5))
        rows = draw(st.lists(st.lists(CELLS, min_size=len(header), max_size=len(header))
                             if draw(st.booleans()) else st.lists(CELLS, max_size=6),
                             max_size=30))
        start = draw(st.floats() | st.integers(-5, 40))
    else:
        n = draw(st.sampled_from([0, 1, 9, 10, 11, 19, 20, 21, 22, 40, 70])
                 | st.integers(22, 70) | st.integers(22, 70))
        metrics = draw(st.lists(st.sampled_from(["cpu", "lat", "mem", "io", "net"]),
                                min_size=1, max_size=4, unique=True))
        times = [float(i) for i in range(n)]
        how = draw(st.sampled_from(["sorted"] * 3 + ["shuffled", "duplicated", "gaps"]))
        if how == "shuffled":
            random.Random(draw(st.integers(0, 9))).shuffle(times)
        elif how == "duplicated":
            times = [float(i // 3) for i in range(n)]
        elif how == "gaps" and n:
            times[draw(st.integers(0, n - 1))] = math.nan
        number = st.one_of(st.floats(-1e3, 1e3), st.floats(), st.just(1e308),
                           st.just(-1e308), st.just(0.0))
        columns = {}
        for m in metrics:
            style = draw(st.sampled_from(["noise", "constant", "wild", "empty"]))
            rng = random.Random(draw(st.integers(0, 99)))
            if style == "noise":
                columns[m] = [rng.gauss(0, 1) + (5 if i > n // 2 else 0) for i in range(n)]
            elif style == "constant":
                columns[m] = [3.0] * n
            elif style == "wild":
                columns[m] = [draw(number) for _ in range(n)]
            else:
                columns[m] = [math.nan] * n
        header = ["time", *metrics]
        rows = [[repr(t) if not math.isnan(t) else "", *(
            "" if math.isnan(columns[m][i]) else repr(columns[m][i]) for m in metrics)]
            for i, t in enumerate(times)]
        start = draw(st.floats(10, max(10, n - 1)) | st.floats(10, max(10, n - 1))
                     | st.floats(-5, n + 5) | st.floats() | st.sampled_from([10.0, 20.5, 25.0]))
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    return out.getvalue(), start


def check_ranking(ranked, csv_text):
    assert ranked and all(isinstance(m, str) and math.isfinite(s) for m, s in ranked)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow on 1e308 cells
@settings(max_examples=250, **FUZZ)
@given(tables(), st.sampled_from(["residual"] * 4 + ["baro", "nsigma", "dummy", "x"]))
def test_any_csv_table_ranks_or_fails_in_one_line(tmp_path, table, ranker):
    text, start = table
    path = tmp_path / "table.csv"
    path.write_text(text)
    ranked = one_line(lambda: rank_table(str(path), start, ranker=ranker), RCAError)
    if ranked is not None:
        check_ranking(ranked, text)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=40, **FUZZ)
@given(tables() | st.tuples(st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                            st.just(1.0)))
@example(("", 1.0))
@example(("time,cpu\n1,2\n", 1.0))
def test_vmroc_rca_rank_prints_a_ranking_or_one_line(tmp_path, capsys, table):
    from vmroc.cli import main
    text, start = table
    path = tmp_path / "table.csv"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    if not math.isfinite(start):
        start = 1.0
    capsys.readouterr()
    code = main(["rca", "rank", "--csv", str(path), f"--anomaly-start={start!r}",
                 "--top", "0", "--json"])
    out, err = capsys.readouterr()
    if code == 0:
        assert json.loads(out)
    else:
        assert code == 1 and err.count("\n") == 1 and err.startswith("RCAError: "), err


# -- recordings ------------------------------------------------------------------------
def _recording() -> bytes:
    from vmroc.events import FaultEvent, to_dict

    from .test_detect import guest_stream

    samples = sorted(guest_stream("g1", 0.0, 20, seed=1)
                     + guest_stream("g2", 0.0, 20, stalled_from=14.0, seed=2),
                     key=lambda s: s.ts)
    ledger = [FaultEvent(fault_id="f1", kind="guest-suspend", level="cluster", phase=phase,
                         ts=ts, target={"guests": ["g2"]}, campaign="c", part="guest")
              for phase, ts in (("injected", 14.0), ("recovered", 18.0))]
    lines = [json.dumps({"vmroc_recording": 1, "depends": {"g2": ["g1"]}})]
    lines += [json.dumps({"topic": e.topic, "partition": 0, "offset": i, "timestamp_ms": 0,
                          "event": to_dict(e)}) for i, e in enumerate(ledger + samples)]
    return ("\n".join(lines) + "\n").encode()


RECORDING = _recording()
GARBAGE_LINES = st.one_of(st.binary(max_size=30), st.sampled_from([
    b"not json", b"[]", b"null", b"1" * 5000, b"[" * 5000, b'{"topic": 5}',
    b'{"topic": [], "event": {}}', b'{"topic": "vmroc.samples", "event": []}',
    b'{"topic": "vmroc.samples", "event": {"schema": "sample", "v": 1}}',
    b'{"topic": "vmroc.faults", "event": {"schema": "fault", "v": 1, "ts": 1e400}}',
    b"\xff\xfe\x00garbage", b"\x00" * 10, b'{"topic": "vmroc.dlq", "event": {}}']))


@st.composite
def bad_recordings(draw):
    """(file bytes): the recording truncated, its lines shuffled, garbage lines or bytes
    in it, its header broken; then maybe compressed (xz or gzip) and that stream cut."""
    lines = RECORDING.split(b"\n")
    for change in draw(st.lists(st.sampled_from(
            ["shuffle", "garbage", "garbage", "flip", "flip", "drop", "header"]),
            max_size=3)):
        if change == "shuffle":
            body = lines[1:]
            random.Random(draw(st.integers(0, 99))).shuffle(body)
            lines = lines[:1] + body
        elif change == "garbage":
            lines.insert(draw(st.integers(0, len(lines))), draw(GARBAGE_LINES))
        elif change == "flip":
            i = draw(st.integers(0, len(lines) - 1))
            if lines[i]:
                j = draw(st.integers(0, len(lines[i]) - 1))
                lines[i] = lines[i][:j] + bytes([draw(st.integers(0, 255))]) + lines[i][j + 1:]
        elif change == "header":
            lines[0] = json.dumps({"vmroc_recording": draw(st.sampled_from([1, 1, 2, "1"])),
                                   "depends": draw(json_like)}, default=str).encode() \
                if draw(st.integers(0, 2)) else draw(GARBAGE_LINES)
        elif len(lines) > 1:
            del lines[draw(st.integers(1, len(lines) - 1))]
    data = b"\n".join(lines)
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    packer = draw(st.sampled_from([None, "xz", "gz"]))
    if packer is not None:
        data = lzma.compress(data, preset=0) if packer == "xz" else gzip.compress(data)
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
    return data


def check_recording(path):
    stats: dict = {}
    read = one_line(lambda: read_recording(path, stats), RecordingError)
    if read is None:
        return
    header, rows = read
    assert isinstance(header, dict)
    n = 0
    for topic, event in rows:
        assert topic in events.TOPICS and isinstance(event, events.TOPICS[topic])
        n += 1
    assert stats["skipped"] >= 0 and n <= RECORDING.count(b"\n")


@settings(max_examples=200, **FUZZ)
@given(bad_recordings())
@example(b'{"vmroc_recording": 1}\n\xff\xfe\n')       # not UTF-8: UnicodeDecodeError
@example(b"[1]\n")                                    # a header that is not an object
@example(b'{"vmroc_recording": 1}\n' + b"[" * 5000 + b"\n")   # RecursionError
@example(b"\xfd7zXZ\x00")                             # only the xz magic
@example(b"\x1f\x8b")                                 # only the gzip magic
def test_a_bad_recording_is_read_with_counted_skips_or_fails_in_one_line(tmp_path, data):
    path = tmp_path / "run.jsonl"
    path.write_bytes(data)
    check_recording(path)


@settings(max_examples=30, **FUZZ)
@given(bad_recordings())
@example(b'{"vmroc_recording": 1, "depends": [1]}\n')   # depends not a mapping
@example(b'{"vmroc_recording": 1, "depends": {"g2": 5}}\n')
def test_a_bad_recording_replays_or_fails_in_one_line(tmp_path, data):
    from vmroc.rca.replay import run_recording
    path = tmp_path / "run.jsonl"
    path.write_bytes(data)
    run = one_line(lambda: run_recording(path, baseline_s=8))
    if run is not None:
        assert run.skipped >= 0 and run.samples <= RECORDING.count(b"\n")


# -- bytes on the bus --------------------------------------------------------------------
VALID_BYTES = ([encode(e) for e in ALL] + [encode(s, compact=True) for s in SAMPLES]
               + [encode_pack(SAMPLES, compact=True), encode_pack([SAMPLE, SAMPLE]),
                  encode(SAMPLE, compact=True)])


@st.composite
def mutated_bytes(draw):
    data = bytearray(draw(st.sampled_from(VALID_BYTES)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif how == "cut":
            del data[i:]
        elif how == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[i]
    return bytes(data)


def _wire(row):
    return events._ONE + events.msgspec.msgpack.encode(row)


@st.composite
def compact_rows(draw):
    """A compact sample (msgpack by position) with one field replaced by any value, the
    task table with any keys and rows."""
    row = list(events._sample_row(SAMPLES[1] if len(SAMPLES) > 1 else SAMPLE))
    row += [None] * (13 - len(row))
    msgpack_like = st.recursive(
        st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
        | st.text(max_size=6),
        lambda kids: st.lists(kids, max_size=3)
        | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=10)
    if draw(st.booleans()):
        row[draw(st.integers(0, 12))] = draw(msgpack_like)
    else:
        keys = draw(st.lists(st.sampled_from(["pid", "comm", "class", "_", "__x", "a b",
                                              "match", "None", "schema", "0"])
                             | st.text(max_size=4), max_size=4))
        row[10], row[11] = None, keys
        row[12] = draw(st.lists(st.lists(msgpack_like, max_size=5), max_size=3))
    row = row[:draw(st.integers(0, 13))] if draw(st.booleans()) else row
    return _wire(row)


bus_bytes = st.one_of(st.binary(max_size=60), mutated_bytes(), compact_rows(),
                      json_like.map(lambda o: json.dumps(o).encode()),
                      st.sampled_from([b"", b"\xc1", b"\xc1\x01", b"\xc1\x01\x01\x90",
                                       b"1" * 5000, b"[" * 5000,
                                       b"\xc1\x01\x00" + b"\x91" * 5000,
                                       b"\xc1\x01\x01" + b"\x91" * 5000]))


@settings(max_examples=400, **FUZZ)
@given(st.sampled_from(sorted(events.TOPICS)), bus_bytes)
@example("vmroc.samples", b"1" * 5000)     # ValueError: int past 4300 digits
@example("vmroc.samples", b"[" * 5000)     # RecursionError
@example("vmroc.faults", b'{"schema":"fault","v":1,"fault_id":"f","kind":"k","level":"cpu",'
         b'"phase":"injected","ts":1,"params":{"x":NaN}}')  # decoded, but cannot be re-encoded
def test_any_bytes_on_any_topic_decode_or_raise_schema_error(topic, data):
    event = one_line(lambda: decode(topic, data), SchemaError)
    if event is not None:
        assert isinstance(event, events.TOPICS[topic])
        assert decode(topic, encode(event)) == event
    got = one_line(lambda: decode_pack(topic, data), SchemaError)
    if got is not None:
        assert got and all(isinstance(e, events.TOPICS[topic]) for e in got)


class _FakeKafka:
    """Polls hand out the records in batches, then nothing."""

    def __init__(self, records, size):
        self.batches = [records[i:i + size] for i in range(0, len(records), size)]

    def poll(self, timeout_ms, max_records=None):
        return {("t", 0): self.batches.pop(0)} if self.batches else {}


class _FakeDLQ:
    def __init__(self):
        self.sent, self.flushes = [], 0

    def send(self, topic, value, key=None, headers=None):
        self.sent.append((topic, value, dict(headers)))

    def flush(self):
        self.flushes += 1


headers = st.lists(st.tuples(st.sampled_from(["vmroc.topic", "vmroc.partition",
                                              "vmroc.offset", "vmroc.error"])
                             | st.text(max_size=5), st.binary(max_size=8)), max_size=4)


@settings(max_examples=100, **FUZZ)
@given(st.lists(st.tuples(st.sampled_from(bus.TOPICS), bus_bytes | st.none(),
                          st.none() | st.binary(max_size=6), headers), max_size=12),
       st.integers(1, 5))
@example([(bus.DLQ, b"x", b"k", [("vmroc.partition", b"abc")])], 1)   # ValueError: int()
def test_the_consumer_loop_counts_bad_messages_and_goes_on(messages, size):
    """``Consumer.run`` over records a fake broker hands out: an undecodable message is
    counted dead and copied to the DLQ, the loop goes on to the end."""
    consumer = object.__new__(bus.Consumer)
    consumer.topics, consumer.servers, consumer.group, consumer.dlq = list(bus.TOPICS), \
        "fake:9092", None, True
    consumer.stats = {"received": 0, "decoded": 0, "dead": 0}
    consumer._dlq_producer = dlq = _FakeDLQ()
    records = [types.SimpleNamespace(topic=t, partition=0, offset=i, key=k, timestamp=0,
                                     value=v, headers=h)
               for i, (t, v, k, h) in enumerate(messages)]
    consumer._consumer = _FakeKafka(records, size)
    handled = []
    n = consumer.run(handled.append, idle_timeout=0, stop=threading.Event())
    stats = consumer.stats
    assert stats["received"] == len(records) and n == len(handled) == stats["decoded"]
    good = dead = 0
    for rec in records:
        if rec.topic == bus.DLQ:
            good += 1           # a dead letter is read as it is, whatever its bytes
            continue
        try:
            good += len(decode_pack(rec.topic, rec.value))
        except SchemaError:
            dead += 1
    assert stats["decoded"] == good and stats["dead"] == len(dlq.sent) == dead
    assert all(isinstance(m.event, bus.DeadLetter) == (m.topic == bus.DLQ) for m in handled)

