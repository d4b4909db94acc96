"""Nemesis for vmroc's own processes: kill -9 them at random moments of a campaign, then
check the histories: nothing lost, nothing duplicated, nothing left applied. Not a test
(tests/real/test_resilience.py runs a short one and asserts the same).

    python3 bench/bench_resilience.py [--seed 1] [--minutes 20] [--kills N] [--lab NAME]
        [--campaign deploy/campaigns/smoke.yaml] [--baseline 5s] [--keep DIR] [--json]
        [--quick]

Every vmroc process runs as its own `python -m vmroc.cli ...` with its own log:
the campaign runner (`campaign run`, ledger in the run's JSONL), the sampler
(`sample --rate 10 --publish`), a detector worker (`detect`), the RCA worker (`rca run`),
`serve` (its own SQLite store) and a Kafka broker of its own (own state directory and
ports: the machine's broker is never touched), plus a recorder (`record`, never killed).
A seeded ``random.Random(seed)`` draws, every 3-8 s, a victim and a restart delay of
0.5-3 s: SIGKILL, wait, the same command again. A killed campaign runner is followed by
`vmroc inject heal` (as a user would) and a new run of the campaign; one that ends by
itself is started again too, until the planned time (or --kills) is over.

At the end: the campaign is stopped, `vmroc inject heal`, a last ledger flush, the
consumers catch up and stop, and the checker reads the histories (the ledger JSONL, the
topics from their start, the recording, serve's store, the consumer groups' committed
offsets polled each second during the run) and prints one table:

- left applied: leases of the lab, blkdebug nodes, nftables `inj_*` tables, cgroups
  `vmroc-<lab>-*`, balloon below the guest's RAM, block I/O limits, guests not running,
  the bridge missing, and guests whose HTTP/disk/CPU counters do not advance;
- ledger: every (fault id, phase) of the JSONL on `vmroc.faults` exactly once, and in
  serve's store (lost / duplicated / on the bus but not in the JSONL);
- samples: every sample on `vmroc.samples` is in the recording; within one sampler
  process a guest's `seq` has no hole (a hole: handed to the producer, never on the bus);
  per sampler kill the longest gap around it vs. its restart time (kill to the restarted
  sampler's first sample); gaps nobody killed anything for;
- offsets: for each restart of detect, rca and serve, its group's committed offsets right
  before the kill existed for every partition with data and the restarted member's first
  commits are not below them (not re-read from the beginning); serve's stored history has
  no hole where the topic has samples (nothing skipped).

Two mishaps besides the kills, once each, a third and two thirds into the run (after
kill N/3 and 2N/3 with --kills): **a guest dies** under the sampler (its QEMU SIGKILLed,
launched again 3-6 s later; the sampler must go on and read it again once it booted),
and **the disk of vmroc's state fills up**: the ledger JSONL, the leases and serve's
store live on a small tmpfs of their own (``state/``, 64 MiB), which a filler file
fills for 5-10 s (writes fail with ENOSPC; nothing recorded before may be lost, no fault
left applied, and everything goes on once it is freed). Needs root for the mount.

``--quick``: 2 minutes (what the test suite may run). Own lab `nemesis` (3 guests, web
workload) unless --lab names a running one; it is taken down at the end unless given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from vmroc.deploy.broker import free_ports

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "deploy" / "campaigns" / "smoke.yaml"
PY = sys.executable
VICTIMS = ("campaign", "sampler", "detect", "rca", "serve", "broker")
CONSUMERS = {"detect": "vmroc-detect", "rca": "vmroc-rca", "serve": "vmroc-serve"}
READS = {"detect": ["vmroc.samples"], "rca": ["vmroc.anomalies"],
         "serve": ["vmroc.samples", "vmroc.faults"]}   # what each consumer's group reads
GAP_S = 2.5        # a hole in a guest's samples longer than this is a gap (10 Hz)
BROKER_LAUNCH = ("import sys; from vmroc.deploy.broker import Broker; "
                 "b = Broker(sys.argv[1], port=int(sys.argv[2]), "
                 "controller_port=int(sys.argv[3])); b.start(timeout=120); "
                 "print(b.pid(), flush=True)")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the processes -----------------------------------------------------------------------
class Proc:
    """One vmroc process, launched again with the same command after each kill."""

    def __init__(self, name: str, cmd: list[str], run_dir: Path, env: dict[str, str]):
        self.name, self.cmd, self.env = name, cmd, env
        self.log = run_dir / "logs" / f"{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.popen: subprocess.Popen | None = None
        self.launches: list[float] = []     # wall clock of each launch
        self.exits: list[dict] = []         # exits nobody asked for

    def launch(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"\n=== {time.strftime('%H:%M:%S')} launch: {' '.join(self.cmd)}\n"
                      .encode())
            out.flush()
            self.popen = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        self.launches.append(time.time())

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> int | None:
        if not self.running():
            return None
        pid = self.popen.pid
        os.kill(pid, signal.SIGKILL)
        self.popen.wait()
        return pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if not self.running():
            return self.popen.returncode if self.popen else None
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"{self.name} ignored signal {sig} for {timeout:.0f} s: SIGKILL")
            self.popen.kill()
            return self.popen.wait()


class BrokerProc:
    """The run's own Kafka broker: killed with SIGKILL on its java process, started
    again by ``Broker.start`` (what `vmroc broker up` runs) on the same state dir."""

    name = "broker"

    def __init__(self, state_dir: Path, run_dir: Path, env: dict[str, str]):
        self.state_dir, self.env = state_dir, env
        self.port, self.controller_port = free_ports(2)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = run_dir / "logs" / "broker-launch.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.launches: list[float] = []
        self.ready_s: list[float] = []
        self.exits: list[dict] = []

    def _broker(self):
        from vmroc.deploy.broker import Broker
        return Broker(self.state_dir, port=self.port, controller_port=self.controller_port)

    @property
    def pid(self) -> int | None:
        return self._broker().pid()

    def running(self) -> bool:
        return self.pid is not None

    def launch(self) -> None:
        t = time.time()
        self.launches.append(t)
        with open(self.log, "ab") as out:
            done = subprocess.run([PY, "-c", BROKER_LAUNCH, str(self.state_dir),
                                   str(self.port), str(self.controller_port)],
                                  stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                  cwd=ROOT, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"the broker did not start again: see {self.log} and "
                               f"{self.state_dir / 'broker.log'}")
        self.ready_s.append(time.time() - t)

    def kill(self) -> int | None:
        pid = self.pid
        if pid is None:
            return None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        self._broker().stop(timeout=timeout)


def vmroc_cmd(*args: str) -> list[str]:
    return [PY, "-m", "vmroc.cli", *args]


def group_offsets(admin, group: str) -> dict[str, int]:
    """"topic/partition" -> the group's committed offset ({} for a group without any)."""
    from kafka.errors import KafkaError
    try:
        got = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError as exc:
        if "GroupIdNotFound" in type(exc).__name__ or "GroupIdNotFound" in str(exc):
            return {}
        raise
    return {f"{tp.topic}/{tp.partition}": om.offset for tp, om in got.items() if om.offset >= 0}


# -- watching the consumer groups --------------------------------------------------------
class OffsetWatch(threading.Thread):
    """Each second: the committed offsets of the consumer groups (what a restarted member
    resumes from). Kept as (wall clock, group, {"topic/partition": offset})."""

    def __init__(self, servers: str):
        super().__init__(name="offset-watch", daemon=True)
        self.servers, self.stop, self.history = servers, threading.Event(), []
        self.lock = threading.Lock()
        self.admin = None

    def snapshot(self) -> dict[str, dict[str, int]] | None:
        from kafka import KafkaAdminClient
        try:
            if self.admin is None:
                self.admin = KafkaAdminClient(bootstrap_servers=self.servers,
                                              request_timeout_ms=3000)
            return {group: group_offsets(self.admin, group) for group in CONSUMERS.values()}
        except Exception:  # noqa: BLE001 - the broker is down: a new client next second
            if self.admin is not None:
                try:
                    self.admin.close()
                except Exception:  # noqa: BLE001
                    pass
            self.admin = None
            return None

    def run(self) -> None:
        while not self.stop.wait(1.0):
            t = time.time()
            snap = self.snapshot()
            if snap is not None:
                with self.lock:
                    self.history.append((t, snap))


def groups_ready(watch: OffsetWatch, timeout: float) -> float:
    """Seconds until every consumer group holds a committed offset on each topic it reads
    (a member commits where it begins as soon as it is assigned), so what the campaign
    sends from now on is read by all of them; a machine under load takes longer than a
    fixed sleep allowed (serve then missed the first ledger event)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with watch.lock:  # the watch's own snapshots: its admin client is not shared
            snap = watch.history[-1][1] if watch.history else {}
        if all(any(k.startswith(f"{topic}/") for k in snap.get(CONSUMERS[name], {}))
               for name, topics in READS.items() for topic in topics):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise SystemExit(f"bench_resilience: the consumers did not join their groups in "
                     f"{timeout:.0f} s")


# -- the run -----------------------------------------------------------------------------
def campaign_file(run_dir: Path, source: Path, baseline: str) -> Path:
    """The campaign with its baseline shortened (the detectors' baselines are their own),
    so that runs cut short by the nemesis still apply faults."""
    import yaml
    data = yaml.safe_load(source.read_text())
    if baseline:
        data["baseline"] = baseline
    out = run_dir / source.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def run(args) -> dict[str, Any]:
    from vmroc import bus
    from vmroc.deploy import Lab

    run_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vmroc-nemesis-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    own_lab = args.lab is None
    lab_name = args.lab or "nemesis"
    lab = Lab(lab_name)
    if own_lab:
        if not (lab.is_up and all(g.alive() for g in lab.guests)):
            say(f"starting lab {lab_name} (3 guests, web)")
            lab.down()
            lab = Lab.up(3, name=lab_name, progress=say)
    elif not lab.is_up:
        raise SystemExit(f"lab {lab_name} is not up")
    state = mount_state(run_dir)
    env = dict(os.environ, VMROC_LEDGER=str(state / "ledger.jsonl"), VMROC_LAB=lab_name,
               VMROC_LEASES=str(state / "leases"), PYTHONUNBUFFERED="1")
    broker = BrokerProc(run_dir / "kafka", run_dir, env)
    env["VMROC_KAFKA"] = broker.bootstrap
    env.pop("VMROC_KAFKA_AUTOSTART", None)
    campaign = campaign_file(run_dir, Path(args.campaign), args.baseline)
    serve_port = free_ports(1)[0]
    procs: dict[str, Any] = {
        "broker": broker,
        "recorder": Proc("recorder", vmroc_cmd("record", "-o", str(run_dir / "recording.jsonl"),
                                               "--lab", lab_name), run_dir, env),
        "serve": Proc("serve", vmroc_cmd("serve", "--db", f"sqlite:///{state / 'serve.db'}",
                                         "--port", str(serve_port), "--lab", lab_name),
                      run_dir, env),
        "detect": Proc("detect", vmroc_cmd("detect"), run_dir, env),
        "rca": Proc("rca", vmroc_cmd("rca", "run", "--lab", lab_name), run_dir, env),
        "sampler": Proc("sampler", vmroc_cmd("sample", "--lab", lab_name, "--rate", "10",
                                             "--publish"), run_dir, env),
        "campaign": Proc("campaign", vmroc_cmd("campaign", "run", str(campaign), "--lab",
                                               lab_name), run_dir, env),
    }
    kills: list[dict[str, Any]] = []
    heals: list[dict[str, Any]] = []
    mishaps: dict[str, dict[str, Any]] = {}
    side = random.Random(args.seed + 1)   # the mishaps' draws leave the kills' alone
    campaign_runs = Counter()
    watch = OffsetWatch(broker.bootstrap)
    rng = random.Random(args.seed)
    t_start = time.time()
    try:
        say(f"broker {broker.bootstrap} (state {broker.state_dir})")
        broker.launch()
        bus.ensure_topics(broker.bootstrap, partitions=4)
        watch.start()
        for name in ("recorder", "serve", "detect", "rca", "sampler"):
            procs[name].launch()
        ready_s = groups_ready(watch, timeout=180)
        say(f"consumers in their groups after {ready_s:.1f} s")
        time.sleep(2)  # the sampler found its guests
        procs["campaign"].launch()
        campaign_runs["started"] += 1
        deadline = time.monotonic() + args.minutes * 60
        say(f"nemesis: seed {args.seed}, {args.minutes:g} min"
            + (f", at most {args.kills} kills" if args.kills else "") + f"; run dir {run_dir}")

        def supervise(until: float) -> None:
            """Sleep until ``until``, starting again what ended by itself meanwhile."""
            while time.monotonic() < until:
                time.sleep(0.2)
                for name, p in procs.items():
                    if name == "broker" or p.running():
                        continue
                    code = p.popen.returncode if p.popen else None
                    if name == "campaign":
                        campaign_runs["ended" if code == 0 else f"exit {code}"] += 1
                        heal(heals, env, lab_name, after="campaign ended")
                        campaign_runs["started"] += 1
                    else:
                        p.exits.append({"t": time.time(), "code": code})
                        say(f"{name} exited by itself ({code}): started again")
                    p.launch()

        while time.monotonic() < deadline and not (args.kills and len(kills) >= args.kills):
            supervise(time.monotonic() + rng.uniform(3, 8))
            victim, delay = rng.choice(VICTIMS), rng.uniform(0.5, 3.0)
            p = procs[victim]
            t_kill = time.time()
            pid = p.kill()
            kill = {"victim": victim, "pid": pid, "t_kill": t_kill, "delay_s": round(delay, 2)}
            say(f"kill -9 {victim} (pid {pid}); again in {delay:.1f} s")
            time.sleep(delay)
            if victim == "campaign":
                campaign_runs["killed"] += 1
                kill["heal"] = heal(heals, env, lab_name, after=f"campaign pid {pid} killed")
                campaign_runs["started"] += 1
            p.launch()
            kill["t_launch"] = p.launches[-1]
            if victim == "broker":
                kill["broker_ready_s"] = round(broker.ready_s[-1], 2)
            kills.append(kill)
            third = (len(kills) / args.kills if args.kills
                     else (time.monotonic() - (deadline - args.minutes * 60))
                     / (args.minutes * 60))
            if third >= 1 / 3 and "guest_death" not in mishaps:
                mishaps["guest_death"] = guest_death(lab, side)
            if third >= 2 / 3 and "disk_full" not in mishaps:
                mishaps["disk_full"] = disk_full(state, side, env, lab_name)
        for name in ("guest_death", "disk_full"):   # a run cut short still has both
            if name not in mishaps:
                mishaps[name] = (guest_death(lab, side) if name == "guest_death"
                                 else disk_full(state, side, env, lab_name))
        dead = lab.guest(mishaps["guest_death"]["guest"])
        dead.wait_for_status(240, where=lambda line: line["http_ok"] >= 1)
        say(f"nemesis over: {len(kills)} kills in {(time.time() - t_start) / 60:.1f} min")
        finish(procs, heals, env, lab_name, broker)
        t_end = time.time()
        watch.stop.set()
        (run_dir / "history.json").write_text(json.dumps({
            "kills": kills, "heals": heals, "offsets": watch.history, "t_start": t_start,
            "t_end": t_end, "launches": {n: p.launches for n, p in procs.items()},
            "exits": {n: p.exits for n, p in procs.items()}, "lab": lab_name,
            "port": broker.port, "controller_port": broker.controller_port,
            "campaign_runs": campaign_runs, "seed": args.seed, "mishaps": mishaps},
            default=str))
        report = check(run_dir, lab, procs, kills, heals, watch.history, broker, t_start,
                       t_end, mishaps)
    finally:
        watch.stop.set()
        for name in ("campaign", "sampler", "detect", "rca", "serve", "recorder"):
            procs[name].stop(signal.SIGTERM, timeout=60)
        broker.stop()
        unmount_state(run_dir, state)
        if own_lab and not args.keep_lab:
            lab.down()
    report.update({"seed": args.seed, "minutes": round((t_end - t_start) / 60, 1),
                   "campaign_runs": dict(campaign_runs), "lab": lab_name,
                   "run_dir": str(run_dir)})
    (run_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


# -- the mishaps -------------------------------------------------------------------------
STATE_MB = 64
STATE_FILES = ("ledger.jsonl", "serve.db", "leases")


def mount_state(run_dir: Path) -> Path:
    """A small tmpfs (``run_dir/state``) for vmroc's own state: the ledger JSONL, the
    leases, serve's store; the run directory's names for them point into it."""
    state = run_dir / "state"
    state.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STATE_MB}m", "vmroc-state",
                           str(state)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_resilience: cannot mount a tmpfs on {state} (needs root): "
                         f"{done.stderr.strip()}")
    (state / "leases").mkdir()
    for name in STATE_FILES:
        if (run_dir / name).is_dir() and not (run_dir / name).is_symlink():
            shutil.rmtree(run_dir / name)
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / name).symlink_to(state / name)
    return state


def unmount_state(run_dir: Path, state: Path) -> None:
    """The state's files copied into the run directory (for --keep), then unmounted."""
    for name in STATE_FILES:
        link = run_dir / name
        if link.is_symlink():
            link.unlink()
            if (state / name).is_dir():
                shutil.copytree(state / name, link)
            elif (state / name).exists():
                shutil.copy2(state / name, link)
    subprocess.run(["umount", "-l", str(state)], capture_output=True)


def guest_death(lab, rng: random.Random) -> dict[str, Any]:
    """One guest's QEMU SIGKILLed under the sampler, launched again 3-6 s later."""
    g = rng.choice(lab.guests)
    delay = rng.uniform(3, 6)
    t_kill = time.time()
    g.kill()
    say(f"guest {g.name} killed (kill -9 of its QEMU); launched again in {delay:.1f} s")
    time.sleep(delay)
    g.launch()
    return {"guest": g.name, "t_kill": t_kill, "t_launch": time.time(),
            "delay_s": round(delay, 2)}


def disk_full(state: Path, rng: random.Random, env: dict, lab_name: str) -> dict[str, Any]:
    """The state tmpfs filled to the last byte for 5-10 s, then freed. Meanwhile a user
    injects a fault by hand: it must be refused in one line, nothing applied."""
    hold = rng.uniform(5, 10)
    filler = state / "filler"
    written = 0
    t_full = time.time()
    try:
        with open(filler, "wb") as f:
            while True:
                written += f.write(b"\0" * (1 << 20))
                f.flush()
    except OSError:
        pass   # ENOSPC: full
    say(f"state disk full ({written >> 20} MiB filler); freed in {hold:.1f} s")
    by_hand = subprocess.run(vmroc_cmd("inject", "net-delay", "--guest", "g3", "--duration",
                                       "2", "--name", lab_name, "--json"),
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    time.sleep(max(0.0, t_full + hold - time.time()))
    filler.unlink(missing_ok=True)
    return {"t_full": t_full, "t_freed": time.time(), "filler_mb": written >> 20,
            "hold_s": round(hold, 2),
            "inject_by_hand": {"code": by_hand.returncode,
                               "stderr": by_hand.stderr.strip().splitlines()}}


def heal(heals: list, env: dict, lab_name: str, after: str) -> dict[str, Any]:
    """`vmroc inject heal --name LAB --json`, as a user would after a killed campaign."""
    t = time.time()
    done = subprocess.run(vmroc_cmd("inject", "heal", "--name", lab_name, "--json"),
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    try:
        healed = json.loads(done.stdout)["healed"]
    except (ValueError, KeyError):
        healed = []
    entry = {"after": after, "t": t, "took_s": round(time.time() - t, 2),
             "code": done.returncode, "healed": [(h.get("kind"), h.get("healed"))
                                                 for h in healed],
             "error": done.stderr.strip().splitlines()[-1:] if done.returncode else []}
    heals.append(entry)
    if healed or done.returncode:
        say(f"heal after {after}: {entry['healed']} (exit {done.returncode})")
    return entry


def finish(procs: dict, heals: list, env: dict, lab_name: str, broker: BrokerProc) -> None:
    """Everything running again, the campaign stopped and healed, the ledger flushed,
    the consumers caught up; the sampler and the workers stopped."""
    if not broker.running():
        broker.launch()
    for name, p in procs.items():
        if name not in ("broker", "campaign") and not p.running():
            p.launch()
    procs["campaign"].stop(signal.SIGTERM, timeout=120)   # reverts its active faults
    heal(heals, env, lab_name, after="the end")
    flushed = subprocess.run(
        [PY, "-c", "from vmroc.inject.ledger import Ledger; l = Ledger(); n = l.flush(); "
                   "print(n, l.pending(), l.last_error)"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    say(f"last ledger flush: sent, pending, error = {flushed.stdout.strip()}")
    time.sleep(5)
    procs["sampler"].stop(signal.SIGTERM)
    caught_up(broker.bootstrap, timeout=180)
    time.sleep(12)  # rca closes its open incident (quiet 8 s) and commits
    for name in ("detect", "rca", "serve"):
        procs[name].stop(signal.SIGTERM)
    time.sleep(3)
    procs["recorder"].stop(signal.SIGINT)


def caught_up(servers: str, timeout: float) -> dict[str, int]:
    """Wait until every group's committed offsets reach the end of what it reads."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    deadline = time.monotonic() + timeout
    lag: dict[str, int] = {}
    topics = {CONSUMERS[name]: read for name, read in READS.items()}
    while time.monotonic() < deadline:
        admin = KafkaAdminClient(bootstrap_servers=servers)
        cons = KafkaConsumer(bootstrap_servers=servers)
        try:
            for group, names in topics.items():
                tps = [TopicPartition(t, p) for t in names
                       for p in sorted(cons.partitions_for_topic(t) or [])]
                ends = cons.end_offsets(tps)
                done = group_offsets(admin, group)
                lag[group] = sum(ends[tp] - done.get(f"{tp.topic}/{tp.partition}", 0)
                                 for tp in tps)
        finally:
            admin.close()
            cons.close()
        if not any(lag.values()):
            return lag
        time.sleep(2)
    say(f"consumers still behind after {timeout:.0f} s: {lag}")
    return lag


# -- the checker -------------------------------------------------------------------------
def read_topic(servers: str, topic: str) -> list:
    from vmroc.bus import Consumer
    out = []
    with Consumer(topic, servers, group=None, from_beginning=True, dlq=False) as c:
        idle = time.monotonic()
        while time.monotonic() - idle < 5:
            got = c.poll(1.0)
            if got:
                out += got
                idle = time.monotonic()
    return out


def left_applied(lab, lease_dir: Path | None = None) -> list[str]:
    """What a fault could have left behind, by the mechanisms the kinds use (see
    tests/real/test_inject.py): empty when everything was reverted."""
    from vmroc.inject.lease import leases
    out = [f"lease {x.fault_id} ({x.data.get('kind')})" for x in leases(lease_dir)
           if x.data.get("lab") == lab.name]
    for g in lab.guests:
        state = g.state()
        if state != "running":
            out.append(f"{g.name}: {state}")
            continue
        with g.qmp() as q:
            nodes = [n["node-name"] for n in q.cmd("query-named-block-nodes")
                     if n["drv"] == "blkdebug"]
            out += [f"{g.name}: blkdebug node {n}" for n in nodes]
            for dev in q.cmd("query-block"):
                ins = dev.get("inserted") or {}
                limits = {k: ins.get(k) for k in ("bps", "bps_rd", "bps_wr", "iops", "iops_rd",
                                                   "iops_wr") if ins.get(k)}
                if limits:
                    out.append(f"{g.name}: I/O limits {limits} on {dev.get('device')}")
            try:
                actual = q.cmd("query-balloon")["actual"]
                if actual < g.config["ram_mb"] << 20:
                    out.append(f"{g.name}: balloon holds {(g.config['ram_mb'] << 20) - actual} B")
            except Exception:  # noqa: BLE001 - no balloon device: nothing to leave
                pass
    nft = subprocess.run(lab.netns_prefix() + ["nft", "list", "tables"], capture_output=True,
                         text=True).stdout
    out += [f"nftables {line.strip()}" for line in nft.splitlines() if "inj_" in line]
    link = subprocess.run(lab.netns_prefix() + ["ip", "link", "show", "br0"],
                          capture_output=True, text=True)
    if lab.netns_prefix() and link.returncode != 0:
        out.append("bridge br0 missing")
    for ctl in ("cpu", "freezer"):
        root = Path("/sys/fs/cgroup") / ctl
        if root.is_dir():
            out += [f"cgroup {p}" for p in root.glob(f"vmroc-{lab.name}-*")]
    return out


def not_advancing(lab, timeout: float = 40) -> list[str]:
    """Guests whose HTTP client, disk worker or CPU worker does not advance."""
    bad = []
    for g in lab.guests:
        first = g.last_status()
        if first is None:
            bad.append(f"{g.name}: no status line")
            continue
        try:
            g.wait_for_status(timeout, where=lambda s, f=first: s["http_ok"] > f["http_ok"]
                              and s["disk_ok"] > f["disk_ok"] and s["cpu_ops"] > f["cpu_ops"])
        except Exception as exc:  # noqa: BLE001 - a timeout is the finding
            bad.append(f"{g.name}: counters stopped ({exc})")
    return bad


def check(run_dir: Path, lab, procs: dict, kills: list, heals: list, offsets: list,
          broker: BrokerProc, t_start: float, t_end: float,
          mishaps: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The histories against each other (see the module's docstring)."""
    mishaps = mishaps or {}
    from sqlalchemy import create_engine, text

    from vmroc.inject.ledger import Ledger

    servers = broker.bootstrap
    rep: dict[str, Any] = {}
    # faults left applied
    leftover = left_applied(lab, run_dir / "leases" if (run_dir / "leases").is_dir() else None)
    rep["left_applied"] = leftover + not_advancing(lab)
    rep["faults_healed"] = sum(ok for h in heals for _, ok in h["healed"])
    rep["heal_failures"] = [h for h in heals if h["code"] != 0]

    # the ledger: JSONL vs vmroc.faults vs serve's store
    ledger_file = Ledger(run_dir / "ledger.jsonl", kafka=False)
    jsonl = ledger_file.events()
    local = Counter((e.fault_id, e.phase) for e in jsonl)
    faults_msgs = read_topic(servers, "vmroc.faults")
    on_bus = Counter((m.event.fault_id, m.event.phase) for m in faults_msgs)
    engine = create_engine(f"sqlite:///{run_dir / 'serve.db'}")
    with engine.connect() as db:
        stored = Counter(tuple(r) for r in db.execute(text("SELECT fault_id, phase FROM ledger")))
        hist = defaultdict(list)
        for guest, ts in db.execute(text("SELECT guest, ts FROM history ORDER BY ts")):
            hist[guest].append(ts)
    engine.dispose()
    full = mishaps.get("disk_full")
    if full:
        lines = [x for x in (run_dir / "ledger.jsonl").read_bytes().splitlines() if x.strip()]
        rep["disk_full"] = {
            "hold_s": full["hold_s"], "filler_mb": full["filler_mb"],
            "ledger_lines_unreadable": len(lines) - len(jsonl),
            "inject_by_hand": full["inject_by_hand"],
            "exits_meanwhile": {n: len([e for e in p.exits
                                        if full["t_full"] <= e["t"] <= full["t_freed"] + 10])
                                for n, p in procs.items() if n != "broker"}}
    rep["ledger"] = {
        "events": sum(local.values()), "faults": len({f for f, _ in local}),
        "twice_in_jsonl": sorted(k for k, n in local.items() if n > 1),
        "lost_on_bus": sorted(k for k in local if k not in on_bus),
        "duplicated_on_bus": sorted(k for k, n in on_bus.items() if n > max(local[k], 1)),
        "on_bus_not_in_jsonl": sorted(k for k in on_bus if k not in local),
        "lost_in_store": sorted(k for k in local if k not in stored),
        "duplicated_in_store": sorted(k for k, n in stored.items() if n > 1),
    }

    # samples: the topic vs the recording; holes in seq; gaps per kill
    sample_msgs = [m for m in read_topic(servers, "vmroc.samples")
                   if hasattr(m.event, "seq")]
    recorded: set[tuple[str, int, int]] = set()
    with open(run_dir / "recording.jsonl") as f:
        next(f)
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if "topic" not in r:
                continue  # the header of a recorder started again
            recorded.add((r["topic"], r["partition"], r["offset"]))
    missing = [m for m in sample_msgs if (m.topic, m.partition, m.offset) not in recorded]
    missing += [m for m in faults_msgs if (m.topic, m.partition, m.offset) not in recorded]
    ids = Counter((m.event.guest, m.event.ts, m.event.seq) for m in sample_msgs)
    rep["samples"] = {"on_bus": len(sample_msgs), "recorded": len(recorded),
                      "on_bus_not_recorded": len(missing),
                      "duplicated_on_bus": sum(n - 1 for n in ids.values() if n > 1)}
    sampler = procs["sampler"]
    windows = list(zip(sampler.launches, sampler.launches[1:] + [t_end + 60]))
    by_guest: dict[str, list[float]] = defaultdict(list)
    holes = []
    per_run: dict[tuple[int, str], list] = defaultdict(list)
    for m in sample_msgs:
        s = m.event
        by_guest[s.guest].append(s.ts)
        i = next((i for i, (a, b) in enumerate(windows) if a <= s.ts < b), -1)
        per_run[(i, s.guest)].append((s.ts, s.seq))
    for (i, guest), seq in per_run.items():
        seq.sort()
        for (t0, a), (t1, b) in zip(seq, seq[1:]):
            if b > a + 1:   # b <= a: the sampler opened the guest again (seq from 1)
                holes.append({"guest": guest, "sampler_run": i, "after_ts": round(t0, 2),
                              "missing": b - a - 1, "gap_s": round(t1 - t0, 2)})
    rep["samples"]["seq_holes"] = holes
    for ts in by_guest.values():
        ts.sort()
    # the guest that died: down from its kill until the sampler read it again
    death = mishaps.get("guest_death")
    dead_window: tuple[float, float] | None = None
    if death:
        again = [t for t in by_guest.get(death["guest"], []) if t > death["t_launch"]]
        dead_window = (death["t_kill"] - 1, again[0] + 1 if again else t_end + 60)
        rep["guest_death"] = {
            "guest": death["guest"], "down_s": round(death["t_launch"] - death["t_kill"], 2),
            "read_again_s": round(again[0] - death["t_launch"], 2) if again else None,
            "sampler_exits": [e for e in procs["sampler"].exits
                              if death["t_kill"] <= e["t"] <= dead_window[1]]}
    kill_gaps = []
    stream_kills = [k["t_kill"] for k in kills if k["victim"] in ("sampler", "broker")]
    for k in kills:
        if k["victim"] not in ("sampler", "broker"):
            continue
        # until samples flow again, and not into the next sampler or broker kill's gap
        until = min([k["t_launch"] + 30] + [t for t in stream_kills if t > k["t_kill"]])
        row = {"victim": k["victim"], "t_kill": k["t_kill"], "delay_s": k["delay_s"]}
        gaps, restarts, ok = [], [], True
        for guest, ts in by_guest.items():
            if (death and guest == death["guest"]
                    and dead_window[0] <= k["t_kill"] <= dead_window[1] + 30):
                continue  # a dead (or just booted) guest's gap is its own
            before = [t for t in ts if t < k["t_kill"]]
            after = [t for t in ts if t > k["t_kill"]]
            if not before or not after:
                continue
            # a sampler kill's gap: its last sample before the kill to the restarted
            # one's first; a broker kill's: the longest until it is back (and not into
            # the next kill's)
            last, gap = before[-1], after[0] - before[-1]
            for t in after if k["victim"] == "broker" else ():
                gap = max(gap, t - last)
                if t > until:
                    break
                last = t
            restart = after[0] - k["t_kill"]
            gaps.append(gap)
            restarts.append(restart)
            if k["victim"] == "sampler" and gap > restart + 1.0:
                ok = False
        if gaps:
            row.update(gap_s=round(max(gaps), 2), restart_s=round(max(restarts), 2),
                       ok=ok)
            kill_gaps.append(row)
    rep["kill_gaps"] = kill_gaps
    # gaps that no sampler kill explains (broker kills may: reported with them)
    explained = [(k["t_kill"] - 2, k["t_launch"] + 60) for k in kills
                 if k["victim"] in ("sampler", "broker")]
    unexplained = []
    for guest, ts in by_guest.items():
        for a, b in zip(ts, ts[1:]):
            mine = explained + ([dead_window] if death and guest == death["guest"] else [])
            if b - a > GAP_S and not any(x <= b and a <= y for x, y in mine):
                unexplained.append({"guest": guest, "from": round(a, 2),
                                    "gap_s": round(b - a, 2)})
    rep["samples"]["unexplained_gaps"] = unexplained

    # offsets: each restarted consumer resumed from its group's committed offsets
    anomaly_msgs = read_topic(servers, "vmroc.anomalies")
    reads = READS
    first_ms: dict[str, int] = {}      # "topic/partition" -> its first message's time
    for m in sample_msgs + faults_msgs + anomaly_msgs:
        key = f"{m.topic}/{m.partition}"
        first_ms[key] = min(first_ms.get(key, m.timestamp_ms), m.timestamp_ms)
    resumes = []
    for k in kills:
        group = CONSUMERS.get(k["victim"])
        if group is None:
            continue
        before = [snap[group] for t, snap in offsets if k["t_kill"] <= t < k["t_launch"]]
        before = before[-1] if before else next(
            (snap[group] for t, snap in reversed(offsets) if t < k["t_kill"]), {})
        after = next((snap[group] for t, snap in offsets
                      if t > k["t_launch"] and snap[group] != before), None)
        row = {"victim": k["victim"], "t_kill": k["t_kill"], "committed": sum(before.values())}
        # a partition with data (2 s before the kill) but no committed offset: the
        # restarted member would start at its end (auto.offset.reset=latest) and skip
        row["no_commit"] = sorted(tp for tp, ms in first_ms.items()
                                  if tp.split("/")[0] in reads[k["victim"]]
                                  and ms / 1000 < k["t_kill"] - 2 and tp not in before)
        row["rewound"] = {tp: (o, after.get(tp)) for tp, o in before.items()
                          if after is not None and after.get(tp, o) < o}
        row["resumed"] = after is not None and not row["rewound"] and not row["no_commit"]
        resumes.append(row)
    rep["resumes"] = resumes
    # serve skipped nothing: its history (one row a second a guest) has no hole where the
    # topic has samples of that guest, from its first row on (a new group starts at the
    # end of the topic: what came before its first poll is not its to read)
    skipped = []
    for guest, ts in by_guest.items():
        rows = hist.get(guest, [])
        if not rows:
            skipped.append({"guest": guest, "history_rows": 0})
            continue
        edges = rows + [t_end]
        for a, b in zip(edges, edges[1:]):
            if b - a <= GAP_S:
                continue
            inside = [t for t in ts if a + 1.2 < t < b - 1.2]
            if len(inside) > 5:
                skipped.append({"guest": guest, "from": round(a, 2), "to": round(b, 2),
                                "samples": len(inside)})
    rep["serve_skipped"] = skipped
    rep["serve_history_rows"] = sum(len(v) for v in hist.values())
    rep["kills"] = kills
    rep["kills_per_process"] = dict(Counter(k["victim"] for k in kills))
    rep["exits"] = {name: p.exits for name, p in procs.items() if p.exits}
    led = rep["ledger"]
    rep["summary"] = {
        "kills": len(kills), "faults_healed": rep["faults_healed"],
        "left_applied": len(rep["left_applied"]),
        "ledger_events": led["events"],
        "events_lost": len(led["lost_on_bus"]) + len(led["lost_in_store"]),
        "duplicates": len(led["duplicated_on_bus"]) + len(led["duplicated_in_store"])
        + rep["samples"]["duplicated_on_bus"],
        "samples_not_recorded": rep["samples"]["on_bus_not_recorded"],
        "seq_holes": sum(h["missing"] for h in holes),
        "unexplained_gaps": len(unexplained),
        "sampler_gaps_over_restart_plus_1s": sum(not g["ok"] for g in kill_gaps
                                                 if g["victim"] == "sampler"),
        "consumers_not_resumed": sum(not r["resumed"] for r in resumes),
        "serve_skipped": len(skipped),
    }
    if "guest_death" in rep:
        gd = rep["guest_death"]
        s = rep["summary"]
        s["dead_guest_read_again_s"] = gd["read_again_s"]
        s["sampler_exits_with_dead_guest"] = len(gd["sampler_exits"])
    if "disk_full" in rep:
        rep["summary"]["ledger_lines_unreadable"] = rep["disk_full"]["ledger_lines_unreadable"]
        rep["summary"]["exits_while_disk_full"] = sum(
            rep["disk_full"]["exits_meanwhile"].values())
    return rep


def check_again(run_dir: Path) -> dict[str, Any]:
    """The checker again on a kept run directory (its lab still up): for the checker's
    own development."""
    from vmroc.deploy import Lab
    h = json.loads((run_dir / "history.json").read_text())
    env = dict(os.environ)
    broker = BrokerProc(run_dir / "kafka", run_dir, env)
    broker.port, broker.controller_port = h["port"], h["controller_port"]
    broker.bootstrap = f"127.0.0.1:{broker.port}"
    procs: dict[str, Any] = {}
    for name, launches in h["launches"].items():
        p = Proc(name, [], run_dir, env)
        p.launches, p.exits = launches, h["exits"].get(name, [])
        procs[name] = p
    procs["broker"] = broker
    offsets = [tuple(x) for x in h["offsets"]]
    broker.launch()
    try:
        rep = check(run_dir, Lab(h["lab"]), procs, h["kills"], h["heals"], offsets, broker,
                    h["t_start"], h["t_end"], h.get("mishaps"))
    finally:
        broker.stop()
    rep.update({"seed": h.get("seed"), "minutes": round((h["t_end"] - h["t_start"]) / 60, 1),
                "campaign_runs": h["campaign_runs"], "lab": h["lab"], "run_dir": str(run_dir)})
    return rep


def print_table(rep: dict[str, Any]) -> None:
    s = rep["summary"]
    print(f"seed {rep['seed']}, {rep['minutes']} min, lab {rep['lab']}, campaign runs "
          f"{rep['campaign_runs']}")
    print("| process | kills |")
    print("|---|---|")
    for name in VICTIMS:
        print(f"| {name} | {rep['kills_per_process'].get(name, 0)} |")
    print(f"| total | {s['kills']} |")
    print()
    print("| check | result |")
    print("|---|---|")
    for key, label in (("faults_healed", "faults healed by `vmroc inject heal`"),
                       ("left_applied", "faults left applied"),
                       ("ledger_events", "ledger events (fault id, phase) in the JSONL"),
                       ("events_lost", "ledger events lost (bus or store)"),
                       ("duplicates", "duplicates (ledger on bus/store, samples on bus)"),
                       ("samples_not_recorded", "samples on the bus not in the recording"),
                       ("seq_holes", "samples missing inside one sampler's sequence"),
                       ("unexplained_gaps", "sample gaps no kill explains"),
                       ("sampler_gaps_over_restart_plus_1s",
                        "sampler kills with gap > restart + 1 s"),
                       ("consumers_not_resumed", "consumer restarts not resumed"),
                       ("serve_skipped", "holes in serve's history (skipped)"),
                       ("dead_guest_read_again_s",
                        "guest killed under the sampler: read again s after its launch"),
                       ("sampler_exits_with_dead_guest", "sampler exits while a guest was dead"),
                       ("ledger_lines_unreadable", "ledger JSONL lines unreadable (disk full)"),
                       ("exits_while_disk_full", "processes that exited while the disk was "
                        "full (started again)")):
        if key in s:
            print(f"| {label} | {s[key]} |")
    gaps = [g for g in rep["kill_gaps"] if g["victim"] == "sampler"]
    if gaps:
        print()
        print("| sampler kill | restart delay s | restart s (kill to first sample) | "
              "longest gap s | gap <= restart + 1 s |")
        print("|---|---|---|---|---|")
        for g in gaps:
            print(f"| {time.strftime('%H:%M:%S', time.localtime(g['t_kill']))} | "
                  f"{g['delay_s']} | {g['restart_s']} | {g['gap_s']} | {g['ok']} |")
    bgaps = [g for g in rep["kill_gaps"] if g["victim"] == "broker"]
    if bgaps:
        print(f"broker kills: longest sample gap {max(g['gap_s'] for g in bgaps)} s "
              f"(restart delays {', '.join(str(g['delay_s']) for g in bgaps)} s)")
    if rep["left_applied"]:
        print("left applied:", "; ".join(rep["left_applied"]))
    if rep["exits"]:
        print("exited by themselves:", {k: len(v) for k, v in rep["exits"].items()})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=20.0, help="nemesis time (20)")
    ap.add_argument("--kills", type=int, default=None, help="stop after N kills")
    ap.add_argument("--lab", default=None, help="use this running lab (3 guests) instead "
                                                "of booting `nemesis`")
    ap.add_argument("--keep-lab", action="store_true", help="leave the own lab up")
    ap.add_argument("--campaign", default=str(SMOKE))
    ap.add_argument("--baseline", default="5s",
                    help="the campaign's baseline instead of the file's ('' keeps it)")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="run directory to keep (logs, ledger, recording, store)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 minutes")
    ap.add_argument("--check-only", metavar="DIR", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.minutes = min(args.minutes, 2.0)
    rep = check_again(Path(args.check_only)) if args.check_only else run(args)
    if args.json:
        print(json.dumps(rep, indent=1, default=str))
    else:
        print_table(rep)
    s = rep["summary"]
    bad = (s["left_applied"] or s["events_lost"] or s["duplicates"] or s["seq_holes"]
           or s["samples_not_recorded"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
