"""The embedded Apache Kafka broker: one KRaft node (broker + controller) on 127.0.0.1.

    broker = Broker()                 # state in $VMROC_HOME/kafka/broker, port 9092
    broker.start()                    # resolves jars once, formats once, waits until ready
    broker.bootstrap                  # "127.0.0.1:9092"
    broker.stop(wipe=False)           # data survives unless wipe=True

``embedded`` is how the rest of vmroc finds this broker without importing deploy: it is
passed to ``vmroc.bus.bootstrap(start_broker=embedded)`` (or ``bus.use_broker``).

Jars come from Maven Central through ``deploy/kafka/pom.xml`` and are cached under
``$VMROC_HOME/kafka/jars-<kafka version>-<pom hash>/``, shared by every broker on the
machine. A broker's state directory holds ``server.properties``, ``broker.json`` (pid,
ports, version), ``broker.log`` and ``data/`` (the Kafka log dirs).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from vmroc import home
from vmroc.bus import BusError
from vmroc.errors import VmrocError
from vmroc.proc import alive as pid_alive

__all__ = ["Broker", "BrokerError", "BrokerStatus", "DEFAULT_PORT", "embedded",
           "free_ports", "kafka_version"]

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
CONFIG_TEMPLATE = KAFKA_DIR / "server.properties.in"
DEFAULT_PORT = 9092
READY_TOPIC = "vmroc.health"


class BrokerError(VmrocError):
    """The embedded broker could not be set up, started, reached or stopped."""

    def __init__(self, message: str, log_file: Path | None = None):
        super().__init__(message)
        self.log_file = log_file


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    """What ``vmroc broker status`` shows."""

    running: bool
    pid: int | None
    port: int
    controller_port: int
    version: str
    bootstrap: str
    state_dir: str
    data_dir: str
    log_file: str


def kafka_version() -> str:
    """The Apache Kafka version the pom asks for."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:
        raise BrokerError(f"{POM} has no <kafka.version> property")
    return match.group(1).strip()


def embedded(start: bool = True) -> str:
    """The bootstrap servers of the embedded broker (``vmroc.bus.bootstrap`` calls it).
    If it is not running it is started when ``start`` is true and
    ``VMROC_KAFKA_AUTOSTART`` is not ``0`` (as in the test suite); else ``BusError``."""
    broker = Broker()
    if broker.pid() is None:
        if not start or os.environ.get("VMROC_KAFKA_AUTOSTART") == "0":
            raise BusError("no Kafka broker: start one with `vmroc broker up` or point "
                           "vmroc at a cluster with VMROC_KAFKA=host:port (in tests: use "
                           "the `broker` fixture)")
        log.warning("starting the embedded Kafka broker at %s", broker.bootstrap)
        broker.start()
    return broker.bootstrap


class Broker:
    """One embedded broker, identified by its state directory."""

    def __init__(self, state_dir: str | os.PathLike | None = None, *,
                 port: int | None = None, controller_port: int | None = None,
                 jars_dir: str | os.PathLike | None = None, java: str | None = None,
                 mvn: str = "mvn", mvn_args: Sequence[str] = (), heap_mb: int = 512):
        self.state_dir = Path(state_dir) if state_dir else home.subdir("kafka", "broker")
        saved = self._saved()
        self.port = port or saved.get("port") or DEFAULT_PORT
        self.controller_port = controller_port or (
            saved.get("controller_port") if not port or port == saved.get("port") else None
        ) or self.port + 1
        self.version = kafka_version()
        pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()[:8]
        self.jars_dir = Path(jars_dir) if jars_dir else \
            home.subdir("kafka") / f"jars-{self.version}-{pom_hash}"
        self.java = java or _default_java()
        self.mvn = mvn
        self.mvn_args = list(mvn_args) or os.environ.get("VMROC_MVN_ARGS", "").split()
        self.heap_mb = heap_mb
        self._proc: subprocess.Popen | None = None

    # -- paths ---------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "broker.json"

    def _saved(self) -> dict:
        try:
            return json.loads((self.state_dir / "broker.json").read_text())
        except (OSError, ValueError):
            return {}

    # -- lifecycle -----------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of this state dir's broker if it is running, else None."""
        pid = self._proc.pid if self._proc else self._saved().get("pid")
        if not pid:
            return None
        if self._proc is not None and self._proc.poll() is not None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        config = str(self.state_dir / "server.properties").encode()
        return pid if b"kafka.Kafka" in cmdline and config in cmdline and pid_alive(pid) \
            else None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        return BrokerStatus(running=pid is not None, pid=pid, port=self.port,
                            controller_port=self.controller_port, version=self.version,
                            bootstrap=self.bootstrap, state_dir=str(self.state_dir),
                            data_dir=str(self.data_dir), log_file=str(self.log_file))

    def start(self, timeout: float = 90.0,
              progress: Callable[[str], None] | None = None) -> BrokerStatus:
        """Start the broker (no-op if running) and wait until it serves produce+fetch."""
        if self.pid():
            saved = self._saved()
            if saved.get("port") != self.port:
                raise BrokerError(f"the broker in {self.state_dir} already runs on port "
                                  f"{saved.get('port')}: `vmroc broker down` first to move "
                                  f"it to {self.port}")
            log.info("broker already running at %s (pid %s)", self.bootstrap, self.pid())
            return self.status()
        java = self._check_java()
        for port, what in ((self.port, "broker"), (self.controller_port, "controller")):
            _check_port_free(port, what)
        jars = self.ensure_jars(progress)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        classpath = f"{jars}/*"
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, classpath, config)
        t0 = time.monotonic()
        with open(self.log_file, "ab") as out:
            out.write(f"\n=== vmroc: starting Kafka {self.version} at {time.ctime()}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                [java, f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m",
                 "-XX:+UseG1GC", "-Djava.awt.headless=true",
                 "-Dorg.slf4j.simpleLogger.showDateTime=true",
                 "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
                 "-cp", classpath, "kafka.Kafka", str(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.state_dir, start_new_session=True)
        self._state_file.write_text(json.dumps({
            "pid": self._proc.pid, "port": self.port, "controller_port": self.controller_port,
            "version": self.version, "jars": str(jars), "started": time.time()}))
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("Kafka %s ready at %s in %.1f s (pid %d, log %s)", self.version,
                 self.bootstrap, time.monotonic() - t0, self._proc.pid, self.log_file)
        return self.status()

    def stop(self, timeout: float = 30.0, *, kill: bool = False, wipe: bool = False) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``; ``kill``: at once).

        Returns whether a broker was running. ``wipe`` then deletes its data and log.
        """
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                log.warning("broker pid %d ignored SIGTERM for %.0f s: killing", pid, timeout)
                os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10)
        self._proc = None
        if wipe:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return pid is not None

    # -- steps ---------------------------------------------------------------------
    def ensure_jars(self, progress: Callable[[str], None] | None = None) -> Path:
        """The jar cache directory, resolving it with Maven on first use."""
        if (self.jars_dir / ".complete").exists():
            return self.jars_dir
        mvn = shutil.which(self.mvn)
        if not mvn:
            raise BrokerError(f"Maven ({self.mvn!r}) not found, needed once to fetch the "
                              f"Kafka jars: run `bash deploy/setup.sh` or "
                              f"`apt-get install maven`")
        say = progress or log.info
        say(f"fetching Apache Kafka {self.version} jars from Maven Central into "
            f"{self.jars_dir} (once per machine, ~45 MB)")
        self.jars_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=self.jars_dir.name + ".", dir=self.jars_dir.parent))
        cmd = [mvn, "-B", "-f", str(POM), *self.mvn_args, "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={tmp}"]
        tail: list[str] = []
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True)
            for line in proc.stdout:
                line = _ANSI.sub("", line).rstrip()
                tail = (tail + [line])[-30:]
                text = line.removeprefix("[INFO] ")
                if text.startswith("Downloaded from") and ".jar (" in text \
                        or text.startswith("Copying"):
                    say(text)
            rc = proc.wait()
            jars = list(tmp.glob("kafka_2.13-*.jar"))
            if rc != 0 or not jars:
                errors = [t for t in tail if t.startswith("[ERROR]")] or tail[-3:] or ["?"]
                raise BrokerError(
                    f"could not fetch the Kafka jars with Maven (exit {rc}): "
                    f"{errors[0][8:200] if errors[0].startswith('[ERROR]') else errors[0]} "
                    f"-- check the network or proxy to Maven Central (or set VMROC_MVN_ARGS, "
                    f"e.g. '-s settings.xml' for a mirror); command: {' '.join(cmd)}")
            (tmp / ".complete").write_text(" ".join(cmd) + "\n")
            if self.jars_dir.exists():          # a concurrent resolver won: keep theirs
                shutil.rmtree(tmp)
            else:
                tmp.rename(self.jars_dir)
        finally:
            if tmp.exists() and not (self.jars_dir / ".complete").exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.jars_dir

    def _check_java(self) -> str:
        java = shutil.which(self.java) if self.java else None
        if not java:
            raise BrokerError(f"Java not found ({self.java or 'java'}): the Kafka broker "
                              f"needs Java 17+; run `bash deploy/setup.sh` or "
                              f"`apt-get install default-jre-headless`")
        out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
        major = int(match.group(1)) if match else 0
        major = int(match.group(2)) if major == 1 and match.group(2) else major
        if major < 17:
            raise BrokerError(f"{java} is Java {major or '?'}, Kafka {self.version} needs "
                              f"17+: install a newer JRE (apt-get install openjdk-17-jre-headless)")
        return java

    def _write_config(self) -> Path:
        config = self.state_dir / "server.properties"
        config.write_text(CONFIG_TEMPLATE.read_text().format(
            port=self.port, controller_port=self.controller_port, log_dirs=self.data_dir))
        return config

    def _format(self, java: str, classpath: str, config: Path) -> None:
        cluster_id = "-"
        while cluster_id.startswith("-"):   # as Kafka's Uuid: a leading '-' reads as an option
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        cmd = [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
               "-t", cluster_id, "-c", str(config)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        with open(self.log_file, "a") as out:
            out.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "?").splitlines()[-1]
            raise BrokerError(f"formatting Kafka storage in {self.data_dir} failed: {last} "
                              f"(see {self.log_file}; `vmroc broker down --wipe` starts over)",
                              self.log_file)

    def _wait_ready(self, timeout: float) -> None:
        """Until a message produced to READY_TOPIC can be fetched back."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"Kafka broker exited with status {self._proc.returncode} "
                                  f"while starting: {_last_error(self.log_file)} "
                                  f"(log: {self.log_file})", self.log_file)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError as exc:      # not listening yet (its accept comes last)
                last = exc
                time.sleep(0.1)
                continue
            try:
                _probe(self.bootstrap, min(10.0, max(1.0, deadline - time.monotonic())))
                return
            except Exception as exc:    # not up yet: any client error means "retry"
                last = exc
                time.sleep(0.2)
        raise BrokerError(f"Kafka broker at {self.bootstrap} not ready after {timeout:.0f} s "
                          f"({type(last).__name__}: {last}); see {self.log_file}",
                          self.log_file)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                try:
                    self._proc.wait(timeout=0.1)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not Path(f"/proc/{pid}").exists() or self.pid() is None:
                return True
            time.sleep(0.1)
        return False


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (for a broker of one's own)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _probe(bootstrap: str, timeout: float) -> None:
    """Create READY_TOPIC if needed, produce one message and fetch it back."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    ms = int(timeout * 1000)
    fast = dict(bootstrap_servers=bootstrap, bootstrap_timeout_ms=ms, reconnect_backoff_ms=50,
                reconnect_backoff_max_ms=500, retry_backoff_ms=50)
    admin = KafkaAdminClient(request_timeout_ms=ms, **fast)
    try:
        if READY_TOPIC not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(READY_TOPIC, 1, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    producer = KafkaProducer(max_block_ms=ms, request_timeout_ms=ms, **fast)
    try:
        meta = producer.send(READY_TOPIC, b"ready").get(timeout)
    finally:
        producer.close(timeout=1)
    tp = TopicPartition(READY_TOPIC, meta.partition)
    consumer = KafkaConsumer(enable_auto_commit=False, request_timeout_ms=max(ms, 2000),
                             **fast)
    try:
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        got = consumer.poll(timeout_ms=ms).get(tp, [])
        if not got or got[0].value != b"ready":
            raise TimeoutError("produced probe message not fetched back yet")
    finally:
        consumer.close()


def _check_port_free(port: int, what: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise BrokerError(
                f"{what} port 127.0.0.1:{port} is taken ({exc.strerror}): stop what uses it "
                f"(`ss -ltnp 'sport = :{port}'`) or pick another with "
                f"`vmroc broker up --port N`") from exc


def _default_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return "java"


def _last_error(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return "no log"
    hits = [ln for ln in lines if re.search(r"ERROR|Exception|Error:", ln)]
    return (hits or lines or ["empty log"])[-1].strip()[:300]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
