"""The lab: QEMU guests whose RAM the host can read and whose devices it can break.

``Lab.up(3)`` boots guests ``g1..g3`` on a bridge inside a network namespace that
the lab owns (``vmroc-<lab>``; the host's own network is never touched). Each guest
has its RAM on a shared file (``guest.ram_path``), a QMP socket (``guest.qmp()``), a
serial log carrying its status lines (``guest.status_lines()``) and a data disk with
the block node name ``data`` (format) on ``data-file`` (protocol).

``Lab.up(3, workload="etcd")`` also runs a real etcd cluster over the guests, each with
a client writing and reading through its member (``deploy/guest/init.sh``); ``up`` waits
until every guest names the same leader (``wait_cluster``).

All state lives in ``$VMROC_HOME/run/lab-<name>/lab.json``, so ``Lab(name).down()``
cleans up even after the process that called ``up`` was killed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
import zlib
from pathlib import Path
from typing import Callable

from vmroc.home import home, subdir
from vmroc.proc import alive as pid_alive

from .errors import GuestError, ImageError, LabError
from .image import GuestImage, build_image, check_workload, run_tool
from .qmp import QMP
from .status import StatusLine, read_status_lines

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
SUBNET = "10.77.0"
BRIDGE = "br0"
BRIDGE_IP = f"{SUBNET}.1"
SHM_DIR = Path("/dev/shm")
BOOT_TIMEOUT = 180.0  # seconds to the first status line, all guests booting at once
# MiB of RAM per guest by workload: an etcd member keeps its data, WAL and snapshots in
# the guest's RAM (about 60 MB after half an hour), so at 256 MiB the balloon of
# mem-pressure (half the RAM) left it nothing and the kernel panicked
RAM_MB = {"web": 256, "etcd": 512}
CLUSTER_TIMEOUT = 180.0  # seconds from boot until an etcd lab's guests agree on a leader
QEMU_OVERHEAD_MB = 120  # host memory a TCG guest uses beyond its RAM
DEAD = "dead"
# An Intel model under TCG, so machine checks are logged rather than fatal.
CPU_MODEL = {"tcg": "Nehalem", "kvm": "max"}

Progress = Callable[[str], None]


def guest_name(index: int) -> str:
    return f"g{index}"


def _run(cmd: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_tool(cmd, what, check=check, error=LabError)


class Guest:
    """One lab guest. Cheap to create: it reads and writes the lab's state only."""

    def __init__(self, lab: "Lab", config: dict):
        self.lab = lab
        self.config = config
        self.name: str = config["name"]
        self.ip: str = config["ip"]
        self.log = log.getChild(self.name)
        run = lab.run_dir
        self.ram_path = Path(config["ram_path"])
        self.qmp_path = run / f"{self.name}.qmp"
        self.qmp_events_path = run / f"{self.name}.qmp-events"
        self.serial_path = run / f"{self.name}.serial.log"
        self.disk_path = run / f"{self.name}.data.img"
        self.pid_path = run / f"{self.name}.pid"

    def __repr__(self) -> str:
        return f"Guest({self.name!r}, ip={self.ip}, pid={self.pid})"

    # -- process -----------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def qmp(self, timeout: float = 10.0) -> QMP:
        """A QMP client (``qemu.qmp``) connected to this guest; use it as a context manager."""
        if not self.alive():
            raise GuestError(f"guest {self.name} is dead (no QEMU process); "
                             f"restart it with `vmroc lab up` or check {self.serial_path}",
                             self.name)
        return QMP(self.qmp_path, self.name, timeout)

    def event_monitor(self, timeout: float = 10.0) -> QMP:
        """A QMP client on the guest's second socket, kept free for listening to events
        (``GUEST_PANICKED``, ``STOP``...) while ``qmp()`` sends commands."""
        if not self.alive():
            raise GuestError(f"guest {self.name} is dead (no QEMU process)", self.name)
        return QMP(self.qmp_events_path, self.name, timeout)

    def state(self) -> str:
        """QMP run state (running, paused, guest-panicked, shutdown, ...) or ``dead``."""
        if not self.alive():
            return DEAD
        try:
            with self.qmp(timeout=5) as qmp:
                return qmp.cmd("query-status")["status"]
        except GuestError:
            return DEAD if not self.alive() else "unresponsive"

    # -- the guest's own view ------------------------------------------------------
    def status_lines(self) -> list[StatusLine]:
        """Every status line the guest printed since it was (re)launched, oldest first."""
        return read_status_lines(self.serial_path)

    def last_status(self) -> StatusLine | None:
        lines = self.status_lines()
        return lines[-1] if lines else None

    def serial_text(self) -> str:
        try:
            return self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_status(self, timeout: float = BOOT_TIMEOUT,
                        where: Callable[[StatusLine], bool] | None = None) -> StatusLine:
        """Wait until the guest prints a status line (matching ``where``, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.last_status()
            if line is not None and (where is None or where(line)):
                return line
            if not self.alive():
                raise GuestError(f"guest {self.name} died; see {self.serial_path}", self.name)
            if time.monotonic() > deadline:
                raise GuestError(f"guest {self.name}: no matching status line after "
                                 f"{timeout:.0f}s; see {self.serial_path}", self.name)
            time.sleep(0.25)

    # -- lifecycle -------------------------------------------------------------------
    def launch(self) -> None:
        """Start this guest's QEMU (no-op if it is running)."""
        if self.alive():
            return
        self.serial_path.unlink(missing_ok=True)
        for sock in (self.qmp_path, self.qmp_events_path):
            sock.unlink(missing_ok=True)
        if not self.disk_path.exists():
            with open(self.disk_path, "wb") as f:
                f.truncate(Path(self.config["disk"]).stat().st_size)
        cmd = self.lab.netns_prefix() + self.qemu_command()
        self.log.info("launching: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError as exc:
            raise GuestError(f"guest {self.name}: {cmd[0]} not found; install qemu-system-x86 "
                             "with `bash deploy/setup.sh`", self.name) from exc
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
            raise GuestError(f"guest {self.name}: QEMU failed to start: {err}", self.name)
        self.config["started"] = time.time()
        self.lab.save()

    def qemu_command(self) -> list[str]:
        c = self.config
        accel = self.lab.state["accel"]
        append = (f"console=ttyS0 quiet panic=0 vmroc.name={self.name} "
                  f"vmroc.ip={self.ip} vmroc.peer={c['peer']}")
        if self.lab.workload == "etcd":
            members = ",".join(f"{g['name']}={g['ip']}" for g in self.lab.state["guests"])
            append += f" vmroc.workload=etcd vmroc.cluster={members}"
        if self.lab.state.get("kernel_args"):
            append += f" {self.lab.state['kernel_args']}"
        cmd = [
            QEMU, "-name", f"vmroc:{self.lab.name}:{self.name},debug-threads=on",
            "-accel", accel, "-cpu", CPU_MODEL[accel],
            "-smp", str(c["vcpus"]), "-m", f"{c['ram_mb']}M",
            "-machine", "q35,memory-backend=ram0",
            "-object", f"memory-backend-file,id=ram0,size={c['ram_mb']}M,"
                       f"mem-path={self.ram_path},share=on",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", c["kernel"], "-initrd", c["initrd"], "-append", append,
            "-chardev", f"file,id=ser0,path={self.serial_path},append=on",
            "-serial", "chardev:ser0",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-qmp", f"unix:{self.qmp_events_path},server=on,wait=off",
            "-blockdev", f"driver=file,node-name=data-file,filename={self.disk_path}",
            "-blockdev", "driver=raw,node-name=data,file=data-file",
            "-device", "virtio-blk-pci,drive=data,id=vblk0",
            "-device", f"virtio-net-pci,netdev=net0,mac={c['mac']},id=nic0",
            "-device", "virtio-balloon-pci,id=balloon0",
            "-device", "pvpanic", "-action", "panic=pause",
            "-pidfile", str(self.pid_path), "-daemonize",
        ]
        if self.lab.state["net"] == "tap":
            cmd += ["-netdev", f"tap,id=net0,ifname={c['tap']},script=no,downscript=no"]
        else:
            cmd += ["-netdev", f"socket,id=net0,mcast={self.lab.state['mcast']},"
                               "localaddr=127.0.0.1"]
        return cmd

    def kill(self, sig: int = signal.SIGKILL) -> None:
        pid = self.pid
        if pid_alive(pid):
            os.kill(pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop QEMU: ask nicely (QMP quit), then SIGTERM, then SIGKILL."""
        pid = self.pid
        if not pid_alive(pid):
            return
        try:
            with QMP(self.qmp_path, self.name, timeout=2) as qmp:
                qmp.cmd("quit")
        except GuestError:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pid_alive(pid):
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        while pid_alive(pid):
            time.sleep(0.05)

    def describe(self) -> dict:
        """What ``vmroc lab status --json`` prints for this guest."""
        state = self.state()
        last = self.last_status() if state != DEAD else None
        return {
            "name": self.name, "pid": self.pid if state != DEAD else None, "state": state,
            "ip": self.ip, "uptime": last["up"] if last else None,
            "qmp_socket": str(self.qmp_path), "ram_file": str(self.ram_path),
            "serial_log": str(self.serial_path), "ram_mb": self.config["ram_mb"],
            "vcpus": self.config["vcpus"], "kernel": self.config["release"],
        }


class Lab:
    """A named set of guests and their network. ``Lab(name)`` attaches to its state."""

    def __init__(self, name: str = "default"):
        if not name.replace("-", "").isalnum() or len(name) > 20:
            raise LabError(f"bad lab name {name!r}: use up to 20 letters, digits or '-'")
        self.name = name
        self.run_dir = home() / "run" / f"lab-{name}"
        self.state_path = self.run_dir / "lab.json"
        self.state: dict = self._load()

    def _load(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise LabError(f"lab state {self.state_path} is corrupt ({exc}); "
                           f"run `vmroc lab down --name {self.name}`") from exc

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    @property
    def netns(self) -> str:
        return f"vmroc-{self.name}"

    def netns_prefix(self) -> list[str]:
        """Command prefix that runs a program inside the lab's network namespace."""
        return ["ip", "netns", "exec", self.netns] if self.state.get("net") == "tap" else []

    @property
    def is_up(self) -> bool:
        return bool(self.state.get("guests"))

    @property
    def guests(self) -> list[Guest]:
        if not self.is_up:
            raise LabError(f"lab {self.name} is not up; run `vmroc lab up`")
        return [Guest(self, cfg) for cfg in self.state["guests"]]

    def guest(self, name: str) -> Guest:
        """The guest called ``name``; ``GuestError`` naming the known guests otherwise."""
        for g in self.guests:
            if g.name == name:
                return g
        known = ", ".join(g.name for g in self.guests)
        raise GuestError(f"unknown guest {name!r}; lab {self.name} has {known}", name)

    @property
    def workload(self) -> str:
        """``web`` (HTTP server and clients) or ``etcd`` (the same, plus an etcd cluster)."""
        return self.state.get("workload", "web")

    def dependencies(self) -> dict[str, list[str]]:
        """Guest -> the guests it calls (its HTTP client's peer; on an etcd lab also every
        other member, which its writes are replicated to): who depends on whom."""
        by_ip = {g.ip: g.name for g in self.guests}
        deps = {g.name: [by_ip[g.config["peer"]]] for g in self.guests
                if g.config.get("peer") in by_ip and by_ip[g.config["peer"]] != g.name}
        if self.workload == "etcd":
            for g in self.guests:
                deps[g.name] = list(dict.fromkeys(
                    deps.get(g.name, []) + [o.name for o in self.guests if o.name != g.name]))
        return deps

    def wait_cluster(self, timeout: float = CLUSTER_TIMEOUT) -> str:
        """Wait until every guest of an etcd lab names the same leader and has written;
        returns the leader's name. ``LabError`` naming the guests that are not there."""
        deadline = time.monotonic() + timeout
        while True:
            last = {g.name: g.last_status() for g in self.guests}
            leads = {n: int(s.get("etcd_lead", 0)) if s else 0 for n, s in last.items()}
            wrote = {n: bool(s and s.get("etcd_wok", 0) > 0) for n, s in last.items()}
            if len(set(leads.values())) == 1 and 0 not in leads.values() and all(wrote.values()):
                return guest_name(next(iter(leads.values())))
            if time.monotonic() > deadline:
                lagging = [n for n in leads if not leads[n] or not wrote[n]] or sorted(leads)
                detail = ", ".join(f"{n} sees leader {guest_name(leads[n]) if leads[n] else 'none'}"
                                   for n in lagging)
                raise LabError(f"lab {self.name}: the etcd cluster did not become healthy in "
                               f"{timeout:.0f}s ({detail}); see /tmp/etcd.log in the guest "
                               f"and {self.run_dir}/<guest>.serial.log")
            time.sleep(0.5)

    # -- up ----------------------------------------------------------------------
    @classmethod
    def up(cls, guests: int = 3, name: str = "default", ram_mb: int | None = None,
           vcpus: int = 1, flavour: str = "generic", accel: str = "auto", wait: bool = True,
           progress: Progress | None = None, workload: str = "web",
           kernel_args: str = "") -> "Lab":
        """Boot ``guests`` guests (or re-launch dead ones of a lab already up) running
        ``workload`` (``web`` or ``etcd``), each with ``ram_mb`` MiB (default per
        workload: ``RAM_MB``); ``kernel_args`` are added to every guest's kernel command
        line (``vmroc.busy=1``: the guest's busy worker, for bench/bench_overhead.py)."""
        say = progress or (lambda msg: log.info("%s", msg))
        ram_mb = ram_mb or RAM_MB.get(workload, RAM_MB["web"])
        lab = cls(name)
        if guests < 1:
            raise LabError("--guests must be at least 1")
        try:
            check_workload(workload)
        except ImageError as exc:
            raise LabError(str(exc)) from None
        if workload == "etcd" and guests < 3:
            raise LabError("--workload etcd needs at least 3 guests (a majority must survive "
                           "a fault of one)")
        if lab.is_up and not any(g.alive() for g in lab.guests):
            say(f"lab {name}: no guest alive (left from an earlier run); starting afresh")
            lab.down(progress=say)
        if lab.is_up:
            have = len(lab.state["guests"])
            if have != guests or lab.workload != workload:
                raise LabError(f"lab {name} is already up with {have} guests ({lab.workload}); "
                               f"run `vmroc lab down --name {name}` first")
        else:
            _check_memory(guests, ram_mb)
            image = build_image(flavour, progress=say, workload=workload)
            lab._create(guests, ram_mb, vcpus, image, _choose_accel(accel, image, say), say,
                        kernel_args)
        started = time.monotonic()
        for g in lab.guests:
            if not g.alive():
                say(f"starting {g.name} ({g.ip}, {g.config['ram_mb']} MiB, {lab.state['accel']})")
                g.launch()
        if wait:
            for g in lab.guests:
                g.wait_for_status()
                say(f"{g.name} is up ({time.monotonic() - started:.1f}s)")
            if lab.workload == "etcd":
                say("waiting for the etcd cluster to elect a leader")
                try:
                    leader = lab.wait_cluster()
                except LabError:
                    lab.down(progress=say)
                    raise
                say(f"etcd cluster healthy: leader {leader} "
                    f"({time.monotonic() - started:.1f}s)")
        return lab

    def _create(self, n: int, ram_mb: int, vcpus: int, image: GuestImage, accel: str,
                say: Progress, kernel_args: str = "") -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ips = [f"{SUBNET}.{10 + i}" for i in range(1, n + 1)]
        port = 20000 + zlib.crc32(self.name.encode()) % 20000
        self.state = {
            "name": self.name, "created": time.time(), "accel": accel, "net": "tap",
            "netns": self.netns, "mcast": f"230.77.0.1:{port}", "guests": [],
            "workload": image.workload, "kernel_args": kernel_args,
        }
        for i in range(1, n + 1):
            gname = guest_name(i)
            # g1 serves; every other guest calls g1, and g1 calls g2 so it has a client too
            peer = ips[1] if i == 1 and n > 1 else ips[0]
            self.state["guests"].append({
                "name": gname, "index": i, "ip": ips[i - 1], "peer": peer,
                "mac": f"52:54:00:77:00:{10 + i:02x}", "tap": f"tap-{gname}",
                "ram_mb": ram_mb, "vcpus": vcpus, "flavour": image.flavour,
                "release": image.release, "kernel": str(image.kernel),
                "initrd": str(image.initrd), "disk": str(image.disk),
                "ram_path": str(SHM_DIR / f"vmroc-{self.name}-{gname}.ram"),
            })
        self.save()  # before creating anything, so `down` can always find it
        if os.environ.get("VMROC_LAB_NET", "tap") == "socket" or not self._make_netns(say):
            self.state["net"] = "socket"
            say(f"lab network: QEMU socket multicast {self.state['mcast']} "
                "(network namespaces not permitted here)")
            self.save()

    def _make_netns(self, say: Progress) -> bool:
        """Create the namespace, bridge and taps; False if namespaces are not permitted."""
        if _run(["ip", "netns", "add", self.netns], "ip netns add", check=False).returncode:
            if self.netns in _run(["ip", "netns", "list"], "ip netns list").stdout.split():
                pass  # left over from a lab killed mid-up: reuse it
            else:
                return False
        ns = ["ip", "-n", self.netns]
        _run(ns + ["link", "set", "lo", "up"], "set lo up")
        if _run(ns + ["link", "show", BRIDGE], "check bridge", check=False).returncode:
            _run(ns + ["link", "add", BRIDGE, "type", "bridge"], "create bridge")
            _run(ns + ["addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE], "address bridge")
        _run(ns + ["link", "set", BRIDGE, "up"], "bridge up")
        for cfg in self.state["guests"]:
            tap = cfg["tap"]
            if _run(ns + ["link", "show", tap], "check tap", check=False).returncode:
                _run(ns + ["tuntap", "add", tap, "mode", "tap"], f"create {tap}")
            _run(ns + ["link", "set", tap, "master", BRIDGE, "up"], f"attach {tap}")
        say(f"lab network: bridge {BRIDGE} ({SUBNET}.0/24) in namespace {self.netns}")
        return True

    # -- status and down -----------------------------------------------------------
    def status(self) -> list[dict]:
        return [g.describe() for g in self.guests] if self.is_up else []

    def down(self, progress: Progress | None = None) -> None:
        """Remove every process, tap, bridge, namespace and RAM file of this lab."""
        say = progress or (lambda msg: log.info("%s", msg))
        guests = [Guest(self, cfg) for cfg in self.state.get("guests", [])]
        for g in guests:
            if g.alive():
                say(f"stopping {g.name} (pid {g.pid})")
            g.stop()
        for pid in _lab_processes(self.name):  # QEMUs the state file did not know
            say(f"killing stray QEMU pid {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.netns in _run(["ip", "netns", "list"], "ip netns list", check=False).stdout.split():
            _run(["ip", "netns", "del", self.netns], "ip netns del")
            say(f"removed namespace {self.netns}")
        for ram in SHM_DIR.glob(f"vmroc-{self.name}-*.ram"):
            ram.unlink(missing_ok=True)
        for g in guests:
            Path(g.config["ram_path"]).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.state = {}


def _lab_processes(lab: str) -> list[int]:
    """Live QEMU processes started for ``lab`` (found by their ``-name`` argument)."""
    marker = f"vmroc:{lab}:".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"\0-name\0" + marker in cmdline and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def list_labs() -> list[str]:
    """Names of labs with state under the vmroc home."""
    return sorted(p.name.removeprefix("lab-") for p in subdir("run").glob("lab-*"))


def _check_memory(guests: int, ram_mb: int) -> None:
    need = guests * (ram_mb + QEMU_OVERHEAD_MB)
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) // 1024
    shm = shutil.disk_usage(SHM_DIR).free // (1 << 20)
    if need > avail or guests * ram_mb > shm:
        raise LabError(f"not enough memory: {guests} guests x {ram_mb} MiB need ~{need} MiB "
                       f"({avail} MiB available, {shm} MiB free in {SHM_DIR}); "
                       "use fewer --guests or a smaller --ram")


def _choose_accel(accel: str, image: GuestImage, say: Progress) -> str:
    """``tcg``, ``kvm``, or for ``auto`` KVM only if a quick probe boot succeeds."""
    if accel == "tcg":
        return "tcg"
    kvm_ok = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if accel == "kvm":
        if not kvm_ok:
            raise LabError("KVM requested but /dev/kvm is missing or not accessible; "
                           "use --accel tcg (or auto)")
        return "kvm"
    if accel != "auto":
        raise LabError(f"unknown accelerator {accel!r}; use auto, tcg or kvm")
    if not kvm_ok:
        return "tcg"
    cache = home() / "accel-probe.json"
    key = f"{_qemu_version()} {image.release}"
    try:
        known = json.loads(cache.read_text())
    except (FileNotFoundError, ValueError):
        known = {}
    if key not in known:
        say("probing KVM with a quick boot (once per QEMU and kernel)")
        known[key] = "kvm" if probe_kvm(image) else "tcg"
        cache.write_text(json.dumps(known))
        say(f"KVM probe: using {known[key]}")
    return known[key]


def _qemu_version() -> str:
    out = _run([QEMU, "--version"], "qemu version").stdout
    return out.split("\n", 1)[0].split("version")[-1].strip()


def probe_kvm(image: GuestImage, timeout: float = 15.0) -> bool:
    """Boot the image under KVM once; True if the guest reaches its init in time."""
    serial = home() / "kvm-probe.log"
    serial.unlink(missing_ok=True)
    cmd = [QEMU, "-accel", "kvm", "-cpu", CPU_MODEL["kvm"], "-m", "128M", "-nodefaults",
           "-no-user-config", "-display", "none", "-no-reboot",
           "-kernel", str(image.kernel), "-initrd", str(image.initrd),
           "-append", "console=ttyS0 quiet vmroc.probe=1",
           "-chardev", f"file,id=ser0,path={serial}", "-serial", "chardev:ser0"]
    try:
        subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("KVM probe hung for %.0fs; falling back to TCG", timeout)
    try:
        return "VMROC-PROBE-OK" in serial.read_text(errors="replace")
    except FileNotFoundError:
        return False
