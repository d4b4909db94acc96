"""Injector framework without guests: specs, registry, ledger, leases, runner, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vmroc.events import encode
from vmroc.inject import (
    FaultSpec,
    InjectError,
    Ledger,
    SpecError,
    Target,
    all_kinds,
    get_kind,
    parse_duration,
)
from vmroc.inject.errors import ApplyError, TeardownError
from vmroc.inject.fault import Fault
from vmroc.inject.lease import Lease, heal, leases
from vmroc.inject.ledger import event
from vmroc.inject.registry import KINDS, Param, register, resolve_params
from vmroc.inject.runner import AppliedFault, raising_signals


# -- specs ------------------------------------------------------------------------------
def test_spec_round_trips_json_and_yaml():
    spec = FaultSpec("disk-eio", Target(("g1", "g2"), device="vda", addr=(4096, 512)),
                     {"iotype": "write", "rate": 10.5}, duration="1500ms", seed=7)
    assert spec.duration == 1.5
    assert FaultSpec.from_json(spec.to_json()) == spec
    assert FaultSpec.from_yaml(spec.to_yaml()) == spec
    assert FaultSpec.from_dict(spec.to_dict()) == spec
    assert hash(spec) == hash(FaultSpec.from_json(spec.to_json()))


def test_spec_is_immutable_and_validated():
    spec = FaultSpec("net-drop", ["g1"], {"loss": 5})
    with pytest.raises(AttributeError):
        spec.kind = "x"
    with pytest.raises(TypeError):
        spec.params["loss"] = 10
    for bad in ("NetDrop", "net_drop", "-x", ""):
        with pytest.raises(SpecError):
            FaultSpec(bad)
    with pytest.raises(SpecError, match="duration"):
        FaultSpec("net-drop", duration="soon")
    with pytest.raises(SpecError, match="unknown spec field"):
        FaultSpec.from_dict({"kind": "net-drop", "when": 3})
    with pytest.raises(SpecError, match="addr"):
        Target(("g1",), addr=(-1, 5))
    spec = FaultSpec.from_yaml("kind: net-drop\ntarget: {guests: [g1, g2]}\n")
    assert spec.guests == ("g1", "g2")


@pytest.mark.parametrize("text,seconds", [("10", 10), ("10s", 10), ("500ms", 0.5),
                                          ("2m", 120), (3, 3)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


# -- registry ----------------------------------------------------------------------------
def test_registry_has_twenty_kinds_over_five_levels():
    kinds = all_kinds()
    assert len(kinds) >= 20
    assert {k.level for k in kinds} == {"cpu", "memory", "disk", "network", "cluster"}
    for k in kinds:
        d = k.describe()
        json.dumps(d)
        assert d["effect"] and d["mechanism"]
        assert callable(k.invoke) and callable(k.teardown) and callable(k.verify)
    for name in ("cpu-mce", "cpu-nmi", "cpu-stall", "cpu-throttle", "cpu-hog", "mem-bitflip",
                 "mem-mce", "mem-pressure", "disk-eio", "disk-slow", "disk-hang",
                 "disk-corrupt", "net-drop", "net-corrupt", "net-delay", "net-slow",
                 "net-link-down", "net-flood", "guest-suspend", "guest-crash",
                 "guest-reboot", "net-partition", "bridge-down"):
        assert get_kind(name).name == name


def test_a_kind_declares_its_part_shared_mechanism_and_reach():
    parts = {k.name: k.part for k in all_kinds()}
    assert parts["disk-eio"] == "disk" and parts["cpu-nmi"] == "cpu"  # the level's part
    assert parts["guest-crash"] == "guest" and parts["net-partition"] == "network"
    blkdebug = {k.name for k in all_kinds() if k.shared_mechanism == "blkdebug"}
    assert blkdebug == {"disk-eio", "disk-hang"}
    assert get_kind("disk-eio").conflict_key == get_kind("disk-hang").conflict_key
    assert get_kind("net-drop").conflict_key == "net-drop"
    assert {k.name for k in all_kinds() if k.lab_wide} == {"bridge-down"}
    d = get_kind("bridge-down").describe()
    assert (d["part"], d["shared_mechanism"], d["lab_wide"]) == ("network", None, True)


def test_every_kind_breaks_the_part_rca_scored_it_against_before_v0_2():
    from vmroc.events import FaultEvent
    from vmroc.inject.registry import PARTS as KIND_PARTS
    from vmroc.rca import PARTS
    assert set(KIND_PARTS) <= set(PARTS)
    for k in all_kinds():
        legacy = FaultEvent(fault_id="f", kind=k.name, level=k.level, phase="injected", ts=0)
        assert k.part == legacy.broken_part(), k.name
        ev = event("f", k.name, k.level, "injected", {}, {})  # what the runner records
        assert ev.part == k.part and ev.broken_part() == k.part


@pytest.mark.parametrize("attrs, message", [
    ({"level": "cluster"}, "level cluster has no default part; declare `part = ...`"),
    ({"level": "cpu", "part": "kernel"}, "part 'kernel' not in"),
])
def test_a_kind_without_a_known_part_is_refused(attrs, message):
    cls = type("Bad", (), {"name": "test-bad-part", "effect": "-", "mechanism": "-",
                           "invoke": None, "teardown": None, "verify": None, **attrs})
    with pytest.raises(ValueError, match=message):
        register(cls)
    assert "test-bad-part" not in KINDS


def test_params_are_typed_and_checked():
    k = get_kind("disk-eio")
    assert resolve_params(k, {"sector": "0x10", "iotype": "read"})["sector"] == 16
    assert resolve_params(k, {})["errno"] == 5
    with pytest.raises(SpecError, match="unknown parameter 'bogus'"):
        resolve_params(k, {"bogus": 1})
    with pytest.raises(SpecError, match="one of read, write, both"):
        resolve_params(k, {"iotype": "sideways"})
    with pytest.raises(SpecError, match="maximum 100"):
        resolve_params(get_kind("net-drop"), {"loss": "150"})
    with pytest.raises(SpecError, match="integer"):
        resolve_params(k, {"sector": "many"})
    with pytest.raises(SpecError, match="unknown fault kind 'disk-melt'"):
        get_kind("disk-melt")
    assert Param("x", bool, False, "").coerce("yes", "k") is True


# -- ledger ------------------------------------------------------------------------------
class FakeFuture:
    def __init__(self, fail):
        self.fail = fail

    def get(self, timeout=None):
        if self.fail:
            raise RuntimeError("broker down")


class FakeProducer:
    def __init__(self):
        self.sent, self.fail = [], False

    def send(self, ev):
        if not self.fail:
            self.sent.append(ev)
        return FakeFuture(self.fail)

    def close(self, timeout=None):
        pass


def _ev(phase="injected", fid="f-1"):
    return event(fid, "net-drop", "network", phase, {"guests": ["g1"]}, {"loss": 5},
                 {"why": (1, 2)})


def test_ledger_writes_jsonl_first_and_resends_later(tmp_path):
    prod = FakeProducer()
    prod.fail = True
    led = Ledger(tmp_path / "l.jsonl", producer=prod)
    led.record(_ev())
    led._down_until = 0
    led.record(_ev("recovered"))
    assert led.pending() == 2 and prod.sent == []
    lines = (tmp_path / "l.jsonl").read_text().splitlines()
    assert [json.loads(x)["phase"] for x in lines] == ["injected", "recovered"]
    assert json.loads(lines[0])["evidence"] == {"why": [1, 2]}
    prod.fail = False
    led._down_until = 0
    assert led.flush() == 2
    assert led.pending() == 0 and [e.phase for e in prod.sent] == ["injected", "recovered"]
    # a later ledger on the same file does not resend
    prod2 = FakeProducer()
    assert Ledger(tmp_path / "l.jsonl", producer=prod2).flush() == 0
    assert [e.phase for e in Ledger(tmp_path / "l.jsonl", kafka=False).events("f-1")] == \
        ["injected", "recovered"]


def test_ledger_survives_a_writer_killed_mid_line(tmp_path):
    """A kill -9 mid-append leaves a torn last line: the next event stays a line of its
    own, earlier events are kept, and the torn line is skipped (counted) when sending
    instead of holding back every event after it."""
    path = tmp_path / "l.jsonl"
    prod = FakeProducer()
    led = Ledger(path, producer=prod)
    led.record(_ev())
    whole = (encode(_ev("recovered", fid="f-0")) + b"\n")
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])               # the killed writer's half line
    led.record(_ev("recovered"))
    assert [(e.fault_id, e.phase) for e in Ledger(path, kafka=False).events()] == \
        [("f-1", "injected"), ("f-1", "recovered")]
    assert [e.phase for e in prod.sent] == ["injected", "recovered"]
    assert led.skipped == 1 and led.pending() == 0
    assert Ledger(path, producer=FakeProducer()).flush() == 0   # nothing sent twice


def test_a_full_disk_fails_the_record_and_leaves_no_torn_line(tmp_path, monkeypatch):
    """A full disk takes part of an append, then refuses the rest (ENOSPC): ``record``
    raises a one-line LedgerError and cuts its own part off, so the file keeps only the
    events recorded before it and the next one after the disk is freed is whole."""
    import errno

    from vmroc.inject import LedgerError

    path = tmp_path / "l.jsonl"
    led = Ledger(path, kafka=False)
    led.record(_ev())
    real_write, calls = os.write, []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:10])   # the last free bytes
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(LedgerError, match="No space left on device"):
        led.record(_ev("recovered"))
    monkeypatch.setattr(os, "write", real_write)
    assert calls[1] == calls[0] - 10        # the rest was tried, not dropped
    led.record(_ev("recovered"))
    assert path.read_bytes().count(b"\n") == 2
    assert [e.phase for e in Ledger(path, kafka=False).events()] == ["injected", "recovered"]


class InFlightFuture:
    """A send the producer still retries (the broker is restarting) until ``land()``."""

    def __init__(self):
        self.is_done = False

    def land(self):
        self.is_done = True

    def get(self, timeout=None):
        if not self.is_done:
            raise TimeoutError("not acknowledged yet")


class InFlightProducer(FakeProducer):
    def __init__(self):
        super().__init__()
        self.futures = []

    def send(self, ev):
        self.sent.append(ev)
        self.futures.append(InFlightFuture())
        return self.futures[-1]


def test_events_in_flight_are_not_sent_again_by_another_writer(tmp_path):
    """Two processes record into one ledger file while the broker restarts: what the
    first still has in flight is not sent again by the second (it is not on the topic
    yet, so the second could not tell); the first, the sender until its events land,
    sends the second's event with its next flush: each event once."""
    path = tmp_path / "l.jsonl"
    first, second = InFlightProducer(), FakeProducer()
    a = Ledger(path, producer=first)
    a.record(_ev("injected", fid="a"))                 # in flight, unacknowledged
    b = Ledger(path, producer=second)
    b.record(_ev("injected", fid="b"))
    assert second.sent == [] and b.pending() == 2      # left to the sender
    for f in first.futures:
        f.land()
    a._down_until = 0.0                                # past its retry pause
    a.flush()
    assert [e.fault_id for e in first.sent] == ["a", "b"]
    first.futures[-1].land()
    a.flush()
    assert a.pending() == 0 and [e.fault_id for e in first.sent] == ["a", "b"]
    b.close()
    assert second.sent == []                           # nothing twice


def test_ledger_without_kafka_keeps_everything_local(tmp_path):
    led = Ledger(tmp_path / "l.jsonl", kafka=False)
    led.record(_ev())
    assert led.pending() == 1 and led.flush() == 0


# -- a fake kind to drive the runner -----------------------------------------------------
APPLIED: dict[str, bool] = {}


@register
class FakeKind:
    name = "test-fake"
    level = "cpu"
    params = (Param("fail", str, "none", "where to fail",
                    choices=("none", "invoke", "verify", "teardown-once")),)
    effect = "the fake flag is set"
    mechanism = "a dict entry"
    window = 0.5
    recover_timeout = 1

    def invoke(fx):
        fx.state["flag"] = fx.id
        fx.save()
        APPLIED[fx.id] = True
        if fx.params["fail"] == "invoke":
            raise InjectError("invoke failed on purpose")

    def verify(fx):
        return {"flag": fx.id} if APPLIED.get(fx.id) else None

    def teardown(fx):
        if fx.params["fail"] == "teardown-once" and not fx.state.get("failed"):
            fx.state["failed"] = True  # as a kind meets a QEMU that answers no QMP
            raise ApplyError("test-fake on g1: guest g1: QMP socket does not answer")
        APPLIED.pop(fx.state.get("flag"), None)


class FakeGuest:
    def __init__(self, name, tmp):
        self.name, self.ip, self.config = name, "10.77.0.11", {"peer": ""}
        self.serial_path = tmp / f"{name}.serial"

    def status_lines(self):
        return []

    def alive(self):
        return True

    def state(self):
        return "running"


class FakeLab:
    name = "fake"
    is_up = True
    state = {"net": "tap"}
    workload = "web"

    def __init__(self, tmp):
        self.guests = [FakeGuest("g1", tmp)]

    def guest(self, name):
        for g in self.guests:
            if g.name == name:
                return g
        raise InjectError(f"unknown guest {name}")


def _fault(tmp_path, **params):
    spec = FaultSpec("test-fake", ["g1"], params, duration=0.2)
    kind = KINDS["test-fake"]
    lab = FakeLab(tmp_path)
    fx = Fault(f"test-fake-{time.time_ns()}", spec, kind, resolve_params(kind, spec.params), lab)
    return AppliedFault(fx, Ledger(tmp_path / "l.jsonl", kafka=False), lease_dir=tmp_path)


def test_a_ledger_that_cannot_write_leaves_no_fault_applied(tmp_path, monkeypatch):
    """The disk under the ledger fills while a fault is applied: every phase fails to be
    recorded (logged, listed in the result), and the fault is still reverted on exit."""
    from vmroc.inject import LedgerError

    f = _fault(tmp_path)

    def full(event, send=True):
        raise LedgerError("cannot write the fault ledger l.jsonl: No space left on device")

    monkeypatch.setattr(f.ledger, "record", full)
    with f:
        assert APPLIED.get(f.id)
        f.hold()
    assert f.id not in APPLIED and not (tmp_path / f"{f.id}.json").exists()
    assert f.result()["unrecorded"] == ["injected", "effect-observed", "recovered"]


def test_runner_applies_verifies_and_reverts(tmp_path):
    f = _fault(tmp_path)
    with f:
        assert APPLIED.get(f.id)
        assert (tmp_path / f"{f.id}.json").exists()          # lease while active
        f.hold()
    assert f.id not in APPLIED and not (tmp_path / f"{f.id}.json").exists()
    assert f.effective and [e.phase for e in f.entries] == \
        ["injected", "effect-observed", "recovered"]
    assert {e.part for e in f.entries} == {"cpu"}            # the fake kind's level's part
    f.stop()                                                 # idempotent
    assert len(f.entries) == 3
    assert f.result()["effective"] is True


def test_runner_reverts_on_exception_and_on_failed_invoke(tmp_path):
    f = _fault(tmp_path)
    with pytest.raises(ZeroDivisionError):
        with f:
            raise ZeroDivisionError("in the body of the fault's with")
    assert f.id not in APPLIED and f.runstate == "stopped"
    g = _fault(tmp_path, fail="invoke")
    with pytest.raises(InjectError, match="on purpose"):
        g.start()
    assert g.id not in APPLIED
    assert [e.phase for e in g.entries] == ["injected", "ineffective", "recovered"]
    assert list(tmp_path.glob("test-fake-*.json")) == []


def test_runner_reverts_on_sigterm(tmp_path):
    f = _fault(tmp_path)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(KeyboardInterrupt):
        with raising_signals():
            with f:
                f.hold(duration=30)
    assert f.id not in APPLIED and f.runstate == "stopped"


def test_heal_reverts_leases_of_dead_owners_only(tmp_path):
    f = _fault(tmp_path)
    f.start()
    assert APPLIED.get(f.id)
    assert heal(directory=tmp_path, ledger=f.ledger) == []    # owner (we) alive: left alone
    lease = Lease.load(tmp_path / f"{f.id}.json")
    lease.update(owner_pid=999999999)                          # the injector was killed
    done = heal(directory=tmp_path, ledger=f.ledger)
    assert done and done[0]["fault_id"] == f.id
    # FakeLab is not a deploy.Lab: heal rebuilds Lab("fake"), which is not up
    assert f.id not in APPLIED or done[0]["healed"]
    assert leases(tmp_path) == [] or not done[0]["healed"]


def test_heal_does_not_record_a_recovery_its_owner_recorded(tmp_path):
    """The owner recorded ``recovered`` and was killed before it dropped the lease: heal
    reverts again (idempotent) and drops the lease, without a second ``recovered``."""
    f = _fault(tmp_path)
    f.start()
    f.ledger.record(event(f.id, "test-fake", "cpu", "recovered", {"guests": ["g1"]}, {}))
    Lease.load(tmp_path / f"{f.id}.json").update(owner_pid=999999999)
    done = heal(directory=tmp_path, ledger=f.ledger)
    assert done[0]["healed"] and done[0]["recovery"] == {"recorded_by_owner": True}
    assert leases(tmp_path) == []
    assert [e.phase for e in f.ledger.events(f.id)] == ["injected", "recovered"]
    APPLIED.pop(f.id, None)


def test_a_sent_mark_the_disk_refuses_sends_nothing_twice(tmp_path, monkeypatch):
    """``.sent`` cannot be written (a full disk): recording goes on, and the acknowledged
    events are not sent again by the same ledger."""
    real = Path.write_text

    def full(self, *a, **kw):
        if self.name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "write_text", full)
    prod = FakeProducer()
    led = Ledger(tmp_path / "l.jsonl", producer=prod)
    led.record(_ev())
    led.record(_ev("recovered"))
    led.flush()
    assert [e.phase for e in prod.sent] == ["injected", "recovered"]
    assert led.pending() == 0


# -- CLI ---------------------------------------------------------------------------------
def vmroc(*args, env=None):
    return subprocess.run([sys.executable, "-m", "vmroc.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_cli_list_json_comes_from_the_registry():
    proc = vmroc("inject", "list", "--json")
    assert proc.returncode == 0
    kinds = {k["kind"]: k for k in json.loads(proc.stdout)}
    assert len(kinds) >= 20 and kinds["disk-eio"]["level"] == "disk"
    assert "iotype" in [p["name"] for p in kinds["disk-eio"]["params"]]
    assert "net-drop" in vmroc("inject", "list").stdout
    assert "Expected effect" in vmroc("inject", "net-drop", "--help").stdout


def test_the_kind_table_in_docs_is_the_registrys():
    proc = vmroc("inject", "list", "--markdown")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.splitlines()
    assert len(table) == 2 + len(json.loads(vmroc("inject", "list", "--json").stdout))
    assert "| `bridge-down` | cluster | network |" in proc.stdout
    assert "RIPV\\|MCIP" in proc.stdout                 # a | in a cell does not split it
    doc = (Path(__file__).resolve().parents[2] / "docs" / "inject.md").read_text().splitlines()
    start = next(i for i, line in enumerate(doc) if line.startswith("<!-- kinds: generated"))
    end = doc.index("<!-- end kinds -->")
    assert doc[start + 1:end] == table, (
        "docs/inject.md's kind table is not the registry's: run `vmroc inject list "
        "--markdown` and put its output between the `<!-- kinds: ... -->` and "
        "`<!-- end kinds -->` lines")


@pytest.mark.parametrize("args,message", [
    (["net-drop", "--name", "nolab", "-g", "g1", "-p", "loss=500"],
     "SpecError: net-drop: bad value"),
    (["net-drop", "--name", "nolab", "-g", "g1", "-p", "nope=1"], "unknown parameter 'nope'"),
    (["net-drop", "--name", "nolab", "-g", "g1", "-p", "junk"], "use KEY=VALUE"),
    (["net-drop", "--name", "nolab", "-g", "g1"], "TargetError: lab nolab is not up"),
    (["net-drop", "--name", "nolab"], "needs exactly 1 target guest"),
    (["mem-mce", "--name", "nolab", "-g", "g1", "--addr", "zz"], "bad --addr"),
    (["disk-melt", "-g", "g1"], "SpecError: unknown fault kind 'disk-melt'"),
])
def test_cli_bad_input_is_one_line(args, message, tmp_path):
    proc = vmroc("inject", *args, env={"VMROC_LEDGER": str(tmp_path / "l.jsonl"),
                                       "VMROC_LEASES": str(tmp_path)})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert list(tmp_path.glob("*.json")) == []                 # nothing applied


def test_a_line_in_flight_at_invoke_does_not_hide_a_stopped_guest(monkeypatch):
    """A status line printed between the baseline mark and the invoke (or flushed just
    after) used to make `silent_for` fail for the whole window: a guest-suspend that
    stopped the guest was recorded as ineffective. Silence now counts from that line."""
    from types import SimpleNamespace

    from vmroc.inject.kinds import _common as c

    clock = [100.0]
    monkeypatch.setattr(c.time, "monotonic", lambda: clock[0])
    printed = [["in flight"]]
    fx = SimpleNamespace(t_invoke=100.0, last_line={}, since=lambda g: printed[0])
    assert c.silent_for(fx, "g3", 2.0) is None          # the line is seen at 100.0
    clock[0] = 101.0
    assert c.silent_for(fx, "g3", 2.0) is None          # quiet 1 s so far
    clock[0] = 102.5
    assert c.silent_for(fx, "g3", 2.0) == 2.5           # stopped: quiet since 100.0
    printed[0] = ["in flight", "alive"]                  # a guest still printing
    clock[0] = 103.0
    assert c.silent_for(fx, "g3", 2.0) is None
    clock[0] = 104.0
    assert c.silent_for(fx, "g3", 2.0) is None          # 1 s since its last line


def test_heal_restarts_a_wedged_guest_and_leaves_a_running_one_alone(tmp_path):
    """A QEMU that runs but answers no QMP is killed and relaunched (its faults go with
    it); a running guest is not touched."""
    from vmroc.inject.recovery import restart_wedged

    calls = []

    class Wedged(FakeGuest):
        pid = 4242
        up = True

        def alive(self):
            return self.up

        def state(self):
            return "unresponsive" if not calls else "running"

        def kill(self):
            calls.append("kill")
            self.up = False

        def launch(self):
            calls.append("launch")
            self.up = True

        def wait_for_status(self, timeout):
            calls.append("status")

    lab = FakeLab(tmp_path)
    lab.guests = [Wedged("g1", tmp_path), FakeGuest("g2", tmp_path)]
    said = []
    assert restart_wedged(lab, ["g1", "g2"], said.append) == ["g1"]
    assert calls == ["kill", "launch", "status"]
    assert "g1: QEMU (pid 4242) runs but does not answer QMP (wedged)" in said[0]
    assert restart_wedged(lab, ["g1", "g2"], said.append) == []   # running now: left alone


def test_a_teardown_on_a_wedged_guest_restarts_it_and_reverts(tmp_path, monkeypatch):
    """The fault's own teardown meets a QEMU that answers no QMP: the guest is relaunched,
    the teardown runs again, the lease goes and the recovered entry says so."""
    f = _fault(tmp_path, fail="teardown-once")
    relaunched = []
    monkeypatch.setattr("vmroc.inject.lifecycle.restart_wedged",
                        lambda lab, names, say: relaunched.extend(names) or list(names))
    with f:
        f.hold()
    assert relaunched == ["g1"] and f.id not in APPLIED and f.restarted == ["g1"]
    assert [e.phase for e in f.entries][-1] == "recovered"
    assert f.entries[-1].evidence["restarted"] == ["g1"]
    assert list(tmp_path.glob("test-fake-*.json")) == []
    g = _fault(tmp_path, fail="teardown-once")       # not wedged: the error stands
    monkeypatch.setattr("vmroc.inject.lifecycle.restart_wedged", lambda lab, names, say: [])
    with pytest.raises(TeardownError, match="vmroc inject heal"):
        with g:
            pass


def test_a_target_left_in_a_kernel_panic_is_reset_after_the_teardown(tmp_path, monkeypatch):
    """A fault whose target panicked (QEMU holds it in `guest-panicked`) resets it after
    its teardown, and the recovered entry names it; a running guest is left alone."""
    from vmroc.inject.recovery import restart_panicked

    sent = []

    class Qmp:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def cmd(self, name, **args):
            sent.append(name)

    class Panicked(FakeGuest):
        def alive(self):
            return True

        def state(self):
            return "running" if sent else "guest-panicked"

        def qmp(self, timeout=10):
            return Qmp()

    lab = FakeLab(tmp_path)
    lab.guests = [Panicked("g1", tmp_path), FakeGuest("g2", tmp_path)]
    said = []
    assert restart_panicked(lab, ["g1", "g2"], said.append) == ["g1"]
    assert sent == ["system_reset", "cont"]
    assert said == ["g1: stopped in a kernel panic; resetting it (QMP system_reset, cont)"]
    assert restart_panicked(lab, ["g1", "g2"], said.append) == []  # running again
    f = _fault(tmp_path)
    monkeypatch.setattr("vmroc.inject.lifecycle.restart_panicked",
                        lambda lab, names, say: list(names))
    with f:
        f.hold()
    assert f.restarted == ["g1"] and f.entries[-1].phase == "recovered"
    assert f.entries[-1].evidence["restarted"] == ["g1"]
