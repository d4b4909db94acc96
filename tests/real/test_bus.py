"""The bus against a real Apache Kafka broker (started by the ``broker`` fixture)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.fixtures_broker import free_ports
from vmroc import bus
from vmroc.deploy.broker import Broker, BrokerError, embedded
from vmroc.events import Anomaly, Cause, FaultEvent, Incident, Sample, decode, encode

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[2]


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def sample(guest: str, seq: int) -> Sample:
    return Sample(guest=guest, ts=time.time(), features={"tasks": 50 + seq % 7, "load1": 0.5},
                  backend="mmap", consistent=True, seq=seq)


def consume(topic: str, servers: str, want: int, *, match=lambda m: True,
            timeout: float = 30, group: str | None = None, **kw) -> tuple[list, bus.Consumer]:
    """Read from the beginning with a fresh group until ``want`` matching events came."""
    got: list[bus.Message] = []
    deadline = time.monotonic() + timeout
    with bus.Consumer(topic, servers, group=group or f"t-{run_id()}", from_beginning=True,
                      **kw) as consumer:
        while len(got) < want and time.monotonic() < deadline:
            got += [m for m in consumer.poll(0.5) if match(m)]
            consumer.commit()
    return got, consumer


def raw_producer(servers: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=servers, acks="all")


# -- the broker ------------------------------------------------------------------------
def test_broker_runs_from_the_test_command_on_loopback_only(broker):
    status = broker.status()
    assert status.running and status.version.startswith("4.")
    assert Path(f"/proc/{status.pid}/cmdline").read_bytes().find(b"kafka.Kafka") > 0
    assert listening_addresses(broker.port) == {"127.0.0.1"}
    assert "Kafka Server started" in broker.log_file.read_text()
    topics = bus.ensure_topics(broker.bootstrap)
    assert topics[bus.SAMPLES] == 4 and set(topics) == set(bus.TOPICS)


def listening_addresses(port: int) -> set[str]:
    """Addresses with a TCP socket in LISTEN on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                mapped = addr.startswith("0000000000000000FFFF0000")  # ::ffff:a.b.c.d
                v4 = addr[-8:] if name == "tcp" or mapped else None
                found.add(socket.inet_ntoa(bytes.fromhex(v4)[::-1]) if v4 else addr)
    return found


# -- events ----------------------------------------------------------------------------
def test_every_event_type_roundtrips(broker):
    rid = run_id()
    anomaly = Anomaly(guest=f"g-{rid}", ts=time.time(), detector="iforest", score=0.97,
                      features=["nr_iowait"])
    events = [
        sample(f"g-{rid}", 1),
        FaultEvent(fault_id=f"f-{rid}", kind="disk-eio", level="device", phase="injected",
                   ts=time.time(), target={"guest": f"g-{rid}"}, params={"sector": 400}),
        anomaly,
        Incident(id=f"i-{rid}", ts=time.time(), guests=[f"g-{rid}"], anomalies=[anomaly],
                 causes=[Cause(component=f"g-{rid}/disk/vda", score=0.9, evidence="EIO")]),
    ]
    with bus.Producer(broker.bootstrap) as producer:
        acks = [producer.send(e).get(timeout=10) for e in events]
    assert [a.topic for a in acks] == [e.topic for e in events]
    for event in events:
        got, _ = consume(event.topic, broker.bootstrap, 1, match=lambda m: rid in m.key)
        assert [m.event for m in got] == [event]
        assert got[0].key == event.key and got[0].topic == event.topic


def test_samples_are_keyed_by_guest(broker):
    rid = run_id()
    with bus.Producer(broker.bootstrap) as producer:
        for seq in range(30):
            producer.send(sample(f"g{seq % 3}-{rid}", seq))
    got, _ = consume(bus.SAMPLES, broker.bootstrap, 30, match=lambda m: rid in m.key)
    per_guest: dict[str, set[int]] = {}
    for m in got:
        per_guest.setdefault(m.key, set()).add(m.partition)
        assert m.key == m.event.guest
    assert len(per_guest) == 3 and all(len(p) == 1 for p in per_guest.values())
    for guest in per_guest:                     # order within a guest is kept
        seqs = [m.event.seq for m in got if m.key == guest]
        assert seqs == sorted(seqs)


def test_packed_events_are_unpacked_in_order(broker):
    rid = run_id()
    with bus.Producer(broker.bootstrap, pack=10, pack_ms=1000) as producer:
        for seq in range(25):
            producer.send(sample(f"g{seq % 2}-{rid}", seq))
    got, consumer = consume(bus.SAMPLES, broker.bootstrap, 25, match=lambda m: rid in m.key)
    assert sorted(m.event.seq for m in got) == list(range(25))
    assert all(m.key == m.event.guest for m in got)
    per_partition: dict[int, list[bus.Message]] = {}
    for m in got:
        per_partition.setdefault(m.partition, []).append(m)
    for msgs in per_partition.values():         # full packs of 10 and the rest: one message
        assert len({m.offset for m in msgs}) == -(-len(msgs) // 10)
    for guest in {m.key for m in got}:
        seqs = [m.event.seq for m in got if m.key == guest]
        assert seqs == sorted(seqs)


def test_a_pack_goes_out_within_pack_ms_and_its_future_acknowledges_it(broker):
    rid = run_id()
    with bus.Producer(broker.bootstrap, pack=10, pack_ms=50) as producer:
        sent = time.time()
        producer.send(sample(f"lone-{rid}", 1))         # no second sample, no flush
        got, _ = consume(bus.SAMPLES, broker.bootstrap, 1, match=lambda m: rid in m.key)
        assert [m.event.seq for m in got] == [1]
        assert got[0].timestamp_ms / 1000 - sent < 0.5  # handed to kafka after ~50 ms
        ack = producer.send(sample(f"lone-{rid}", 2)).get(timeout=10)   # sent at once
        assert ack.topic == bus.SAMPLES and ack.offset > got[0].offset


def test_two_consumers_in_one_group_split_the_partitions(broker):
    rid, group = run_id(), f"split-{run_id()}"
    stop = threading.Event()
    members = [bus.Consumer(bus.SAMPLES, broker.bootstrap, group=group, from_beginning=False)
               for _ in range(2)]
    received: list[list[bus.Message]] = [[], []]
    threads = [threading.Thread(target=c.run, args=(received[i].append,),
                                kwargs={"stop": stop}) for i, c in enumerate(members)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            a, b = (c.assignment() for c in members)
            if a and b and not (a & b) and len(a | b) == 4:
                break
            time.sleep(0.2)
        assert len(a) == len(b) == 2 and not (a & b), (a, b)
        with bus.Producer(broker.bootstrap) as producer:
            for seq in range(200):
                producer.send(sample(f"g{seq % 20}-{rid}", seq))
        deadline = time.monotonic() + 30
        while sum(len(r) for r in received) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for c in members:
            c.close()
    mine = [[m for m in r if rid in m.key] for r in received]
    assert all(mine), "both members received events"
    for msgs, parts in zip(mine, (a, b)):
        assert {(m.topic, m.partition) for m in msgs} <= parts
    seqs = sorted(m.event.seq for r in mine for m in r)
    assert seqs == list(range(200)), "every event exactly once across the group"


def test_offsets_are_committed_only_after_handling(broker):
    rid, group = run_id(), f"commit-{run_id()}"
    with bus.Producer(broker.bootstrap) as producer:
        for seq in range(10):
            producer.send(FaultEvent(fault_id=f"f-{rid}", kind="net-delay", level="network",
                                     phase="injected", ts=time.time(), params={"seq": seq}))
    handled = []

    def handler(msg):
        if msg.event.params["seq"] == 5 and not any(h == 5 for h in handled):
            raise RuntimeError("handler crashed on seq 5")
        handled.append(msg.event.params["seq"])

    mine = lambda m: m.key == f"f-{rid}"        # noqa: E731
    with bus.Consumer(bus.FAULTS, broker.bootstrap, group=group, from_beginning=True,
                      max_poll_records=1) as consumer:
        with pytest.raises(RuntimeError):
            consumer.run(lambda m: mine(m) and handler(m), idle_timeout=10)
    # A new member of the group resumes at the event that was not handled.
    got, _ = consume(bus.FAULTS, broker.bootstrap, 5, match=mine, group=group)
    assert [m.event.params["seq"] for m in got] == [5, 6, 7, 8, 9]
    assert handled == [0, 1, 2, 3, 4]


def test_a_member_gone_before_its_first_commit_leaves_the_group_where_it_began(broker):
    """``vmroc serve`` killed before its first commit restarted at the end of its topics
    and skipped the ledger events written in between (found by bench_resilience)."""
    rid, group = run_id(), f"anchor-{run_id()}"
    mine = lambda m: m.key == f"f-{rid}"        # noqa: E731

    def fault(seq: int) -> FaultEvent:
        return FaultEvent(fault_id=f"f-{rid}", kind="net-delay", level="network",
                          phase="injected", ts=time.time(), params={"seq": seq})

    first = bus.Consumer(bus.FAULTS, broker.bootstrap, group=group)   # from the end
    deadline = time.monotonic() + 30
    while not first.assignment() and time.monotonic() < deadline:
        first.poll(0.5)
    assert first.assignment(), "the first member was never assigned the partition"
    with bus.Producer(broker.bootstrap) as producer:
        for seq in range(3):
            producer.send(fault(seq))
    got: list[bus.Message] = []
    while len(got) < 3 and time.monotonic() < deadline + 30:
        got += [m for m in first.poll(0.5) if mine(m)]
    assert [m.event.params["seq"] for m in got] == [0, 1, 2]
    first.close()                                   # gone, never committed
    with bus.Producer(broker.bootstrap) as producer:
        for seq in (3, 4):
            producer.send(fault(seq))
    second = bus.Consumer(bus.FAULTS, broker.bootstrap, group=group)  # also from the end
    again: list[bus.Message] = []
    deadline = time.monotonic() + 30
    with second:
        while len(again) < 5 and time.monotonic() < deadline:
            again += [m for m in second.poll(0.5) if mine(m)]
    assert [m.event.params["seq"] for m in again] == [0, 1, 2, 3, 4]


def test_undecodable_messages_go_to_the_dlq_and_the_consumer_goes_on(broker, caplog):
    rid = run_id()
    good = [FaultEvent(fault_id=f"f-{rid}", kind="disk-eio", level="device", phase=phase,
                       ts=time.time()) for phase in ("injected", "recovered")]
    ok = json.loads(encode(good[0]))
    bad = [b"\x00\xffgarbage bytes",
           json.dumps(ok | {"v": 99}).encode(),
           json.dumps({k: v for k, v in ok.items() if k != "phase"}).encode()]
    with bus.Producer(broker.bootstrap) as producer:
        producer.send(good[0]).get(10)
    raw = raw_producer(broker.bootstrap)
    offsets = [raw.send(bus.FAULTS, b, key=f"f-{rid}".encode()).get(10).offset for b in bad]
    raw.close()
    with bus.Producer(broker.bootstrap) as producer:
        producer.send(good[1]).get(10)

    caplog.set_level(logging.WARNING, logger="vmroc.bus")
    got, consumer = consume(bus.FAULTS, broker.bootstrap, 2, match=lambda m: rid in m.key)
    assert [m.event for m in got] == good                # went on past the garbage
    assert consumer.stats["dead"] >= 3
    for offset in offsets:
        assert any(f"{bus.FAULTS}/0@{offset}" in r.getMessage() for r in caplog.records)

    dead, _ = consume(bus.DLQ, broker.bootstrap, 3, group=None,
                      match=lambda m: m.key == f"f-{rid}" and m.event.offset in offsets)
    by_offset = {m.event.offset: m.event for m in dead}
    assert sorted(by_offset) == offsets
    assert [by_offset[o].value for o in offsets] == bad
    assert all(by_offset[o].topic == bus.FAULTS for o in offsets)
    assert "not JSON" in by_offset[offsets[0]].error
    assert "version 99 not supported" in by_offset[offsets[1]].error
    assert "missing field 'phase'" in by_offset[offsets[2]].error


def test_restart_loses_no_acknowledged_event(broker):
    """Clean stop, then a crash (SIGKILL): everything acknowledged before is there."""
    rid = run_id()
    acked: list[int] = []
    for restart in ("clean", "kill"):
        with bus.Producer(broker.bootstrap) as producer:
            futures = [(seq, producer.send(sample(f"g{seq % 8}-{rid}", seq)))
                       for seq in range(len(acked), len(acked) + 1000)]
            producer.flush(30)
        acked += [seq for seq, f in futures if f.get(timeout=1).offset >= 0]
        assert broker.stop(kill=restart == "kill") and broker.pid() is None
        broker.start(timeout=120)
    assert len(acked) == 2000
    got, _ = consume(bus.SAMPLES, broker.bootstrap, 2000, match=lambda m: rid in m.key,
                     timeout=60)
    assert sorted(m.event.seq for m in got) == acked     # none lost, none duplicated


# -- the command line ------------------------------------------------------------------
def vmroc(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmroc.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env=env or os.environ.copy())


def test_tail_prints_events(broker):
    rid = run_id()
    faults = [FaultEvent(fault_id=f"f-{rid}", kind="cpu-stall", level="cpu", phase=p,
                         ts=time.time(), evidence="watchdog") for p in ("injected", "recovered")]
    with bus.Producer(broker.bootstrap) as producer:
        for f in faults:
            producer.send(f)
    out = vmroc("tail", "faults", "--from-beginning", "--json", "--idle", "1")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    mine = [decode("fault", json.dumps(x["event"]).encode()) for x in lines
            if x["key"] == f"f-{rid}"]
    assert mine == faults
    text = vmroc("tail", "vmroc.faults", "--from-beginning", "--idle", "1").stdout
    assert f"fault_id=f-{rid} kind=cpu-stall" in text and "phase=recovered" in text


def test_broker_cli_up_status_down_keeps_data_until_wipe(tmp_path, broker):
    """`vmroc broker up|status|down` in a fresh VMROC_HOME (jar cache linked in)."""
    jars = broker.jars_dir
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / jars.name).symlink_to(jars)
    env = ({k: v for k, v in os.environ.items() if k != "VMROC_KAFKA"}
           | {"VMROC_HOME": str(tmp_path)})
    port, cport = free_ports(2)
    try:
        up = vmroc("broker", "up", "--port", str(port), "--controller-port", str(cport),
                   "--json", env=env)
        assert up.returncode == 0, up.stderr
        status = json.loads(vmroc("broker", "status", "--json", env=env).stdout)
        assert status["running"] and status["port"] == port
        assert status["version"] == broker.version
        assert status["data_dir"].startswith(str(tmp_path))
        servers = f"127.0.0.1:{port}"
        with bus.Producer(servers) as producer:
            producer.send(sample("keep-me", 1)).get(10)
        assert vmroc("broker", "down", env=env).stdout.strip() == "stopped"
        assert vmroc("broker", "status", env=env).returncode == 3
        assert vmroc("broker", "up", env=env).returncode == 0       # same port remembered
        got, _ = consume(bus.SAMPLES, servers, 1, match=lambda m: m.key == "keep-me")
        assert got and got[0].event.guest == "keep-me"               # data survived down/up
        wipe = vmroc("broker", "down", "--wipe", env=env)
        assert wipe.returncode == 0 and "removed" in wipe.stdout
        assert not Path(status["data_dir"]).exists()
    finally:
        vmroc("broker", "down", env=env)


# -- bad input: one line that says what to do --------------------------------------------
def test_port_taken_is_one_line(tmp_path, broker):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"broker port 127.0.0.1:{port} is taken.*--port"):
            Broker(tmp_path, port=port, jars_dir=broker.jars_dir).start()
        env = os.environ.copy() | {"VMROC_HOME": str(tmp_path)}
        env.pop("VMROC_KAFKA")
        out = vmroc("broker", "up", "--port", str(port), env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("BrokerError: ")


def test_java_missing_is_one_line(tmp_path, broker):
    with pytest.raises(BrokerError, match="Java not found.*deploy/setup.sh"):
        Broker(tmp_path, java=str(tmp_path / "no-java"), jars_dir=broker.jars_dir).start()


def test_maven_unreachable_without_cache_is_one_line(tmp_path):
    offline = ["-o", f"-Dmaven.repo.local={tmp_path / 'empty-m2'}"]   # no network, no repo
    b = Broker(tmp_path / "state", jars_dir=tmp_path / "jars", mvn_args=offline)
    with pytest.raises(BrokerError, match=r"could not fetch the Kafka jars with Maven "
                                          r"\(exit 1\).*Maven Central"):
        b.ensure_jars()
    assert not (tmp_path / "jars").exists()
    with pytest.raises(BrokerError, match="Maven .* not found.*apt-get install maven"):
        Broker(tmp_path, jars_dir=tmp_path / "jars", mvn=str(tmp_path / "no-mvn")).ensure_jars()


def test_unreachable_broker_is_one_line():
    port = free_ports(1)[0]
    t0 = time.monotonic()
    with pytest.raises(bus.BusError, match=f"Kafka at 127.0.0.1:{port} not reachable.*"
                                           f"vmroc broker up"):
        bus.Producer(f"127.0.0.1:{port}", ensure=False, bootstrap_timeout_ms=1000)
    assert time.monotonic() - t0 < 10
    env = os.environ.copy() | {"VMROC_KAFKA": f"127.0.0.1:{port}"}
    out = vmroc("tail", "samples", env=env)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("BusError: Kafka at")


def test_bootstrap_uses_the_session_broker_and_never_starts_one(broker, monkeypatch, tmp_path):
    assert bus.bootstrap() == broker.bootstrap                   # VMROC_KAFKA from the fixture
    assert bus.bootstrap(start_broker=embedded) == broker.bootstrap
    monkeypatch.delenv("VMROC_KAFKA")
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    monkeypatch.setattr(bus, "_start_broker", None)              # as a library, not `vmroc`
    with pytest.raises(bus.BusError, match="VMROC_KAFKA.*start_broker"):
        bus.bootstrap()                                          # no broker passed in
    with pytest.raises(bus.BusError, match="vmroc broker up.*VMROC_KAFKA"):
        bus.bootstrap(start_broker=embedded)                     # VMROC_KAFKA_AUTOSTART=0
    assert not Broker().status().running


def test_record_then_replay_publishes_the_same_events(broker, tmp_path):
    """`vmroc record` keeps what the bus carried (skipping garbage, counted); `vmroc
    replay --publish` puts the same events back, in order."""
    rid = run_id()
    events = [sample(f"rec-{rid}", i) for i in range(5)]
    with bus.Producer(broker.bootstrap) as producer:
        for ev in events[:2]:
            producer.send(ev).get(10)
        raw = raw_producer(broker.bootstrap)
        raw.send(bus.SAMPLES, b"\x00garbage", key=f"rec-{rid}".encode()).get(10)
        raw.close()
        for ev in events[2:]:
            producer.send(ev).get(10)
    path = tmp_path / "run.jsonl"
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "record", "-o", str(path),
                           "--topics", bus.SAMPLES, "--idle", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "undecodable skipped" in proc.stderr and " 0 undecodable" not in proc.stderr
    mine = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    mine = [r["event"] for r in mine if r["event"].get("guest") == f"rec-{rid}"]
    assert [r["seq"] for r in mine] == [0, 1, 2, 3, 4]

    with bus.Consumer(bus.SAMPLES, broker.bootstrap, group=None, dlq=False) as inp:
        inp.poll(1.0)  # assigned at the current end: only the replay follows
        proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "replay", str(path),
                               "--publish", "--json"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["sent"] == len(path.read_text().splitlines()) - 1
        again: list = []
        deadline = time.monotonic() + 30
        while len(again) < 5 and time.monotonic() < deadline:
            again += [m.event for m in inp.poll(1.0) if m.event.guest == f"rec-{rid}"]
    assert again == events
