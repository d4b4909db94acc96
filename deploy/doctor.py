"""``vmroc doctor``: is this machine ready to run vmroc? One check per prerequisite.

    checks = run_checks()                 # every check at once (threads), ~1 s
    [c.to_dict() for c in checks]         # name, status (ok|warn|fail), required, found, fix
    any(c.status == "fail" for c in checks)

Each check says what it found and, when it is not ok, the one line that fixes it. A
check is *required* when vmroc cannot work without it: QEMU with an accelerator, disk
space in the vmroc home, Java and the Kafka jars for the embedded broker (not needed
when ``VMROC_KAFKA`` names a cluster, which must then answer). The others only warn:
vmroc runs without them, with less (the pure-Python sampler instead of the C one, a
QEMU socket network instead of the lab's bridge, no broker until ``vmroc broker up``).

Nothing is started, installed or changed; the only subprocesses are version queries,
``unshare --net true`` and ``apt-cache depends`` (which kernel the image should have).
The C sampler is checked by loading its compiled file under its own name, without
importing the introspect stage (deploy sits below it).
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from vmroc.home import home

from . import image as _image
from . import lab as _lab
from .broker import DEFAULT_PORT, Broker, _default_java, kafka_version
from .errors import ImageError, LabError

__all__ = ["Check", "run_checks", "CHECKS", "STATUSES"]

STATUSES = ("ok", "warn", "fail")
MIN_FREE_GIB = 1.0          # below: fail (a kernel image, the Kafka jars and data, a recording)
LOW_FREE_GIB = 5.0          # below: warn
LAB_SHM_MIB = 3 * 256       # the default lab: 3 guests of 256 MiB, their RAM in /dev/shm
MIN_JAVA = 17               # Kafka 4 brokers
TIMEOUT_S = 5.0             # per subprocess; the checks run in parallel
BROKER_TIMEOUT_S = 1.0
SETUP = "bash deploy/setup.sh"


@dataclass(frozen=True)
class Check:
    """One prerequisite: what was found and, unless ``ok``, the fix (one line)."""

    name: str
    status: str                 # ok | warn | fail (fail only when required)
    found: str
    fix: str = ""
    required: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _result(name: str, good: bool, found: str, fix: str, required: bool) -> Check:
    """ok, or fail for a required check and warn for the others."""
    if good:
        return Check(name, "ok", found, "", required)
    return Check(name, "fail" if required else "warn", found, fix, required)


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    """The command's result, or None if it is missing or hangs."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _external_kafka() -> str:
    return os.environ.get("VMROC_KAFKA", "").strip()


def _once(fn: Callable[[], str | None]) -> Callable[[], str | None]:
    """``fn`` runs once even when several checks ask for it at the same time."""
    lock = threading.Lock()

    @functools.wraps(fn)
    def wrapper() -> str | None:
        with lock:
            if not hasattr(wrapper, "value"):
                wrapper.value = fn()
            return wrapper.value
    return wrapper


# -- QEMU and the accelerator -------------------------------------------------------------
@_once
def _qemu_version() -> str | None:
    """As the lab keys its KVM probe cache (``lab._qemu_version``), or None."""
    if not shutil.which(_lab.QEMU):
        return None
    try:
        return _lab._qemu_version()
    except LabError:
        return None


@_once
def _current_release() -> str | None:
    """The generic kernel release the lab would build now (apt, ~1 s), or None."""
    try:
        return _image.current_kernel_package("generic").removeprefix("linux-image-")
    except (ImageError, OSError):
        return None


def check_qemu() -> Check:
    path = shutil.which(_lab.QEMU)
    fix = f"apt-get install qemu-system-x86 (or {SETUP})"
    if not path:
        return _result("qemu", False, f"{_lab.QEMU} is not on PATH", fix, True)
    version = _qemu_version()
    if not version:
        return _result("qemu", False, f"{path} does not answer --version", fix, True)
    major = re.match(r"(\d+)", version)
    if major and int(major.group(1)) < 7:
        return Check("qemu", "warn", f"QEMU {version} at {path}; vmroc is tested with 7.2",
                     "use QEMU 7.2 or newer (Debian 12's qemu-system-x86)", True)
    return _result("qemu", True, f"QEMU {version} at {path}", "", True)


def check_accel() -> Check:
    """Which accelerator ``vmroc lab up`` (``--accel auto``) will use, as the lab decides."""
    path = shutil.which(_lab.QEMU)
    if not path:
        return _result("accel", False, "no QEMU, so neither KVM nor TCG",
                       f"apt-get install qemu-system-x86 (or {SETUP})", True)
    out = _run([path, "-accel", "help"])
    accels = set(out.stdout.split()) if out and out.returncode == 0 else set()
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        kvm = "/dev/kvm opens"
    except OSError as exc:
        kvm = f"/dev/kvm: {exc.strerror.lower() if exc.strerror else exc}"
    kvm_ok = os.access("/dev/kvm", os.R_OK | os.W_OK)        # the lab's own test
    if "tcg" not in accels and not (kvm_ok and "kvm" in accels):
        return _result("accel", False, f"{path} offers no usable accelerator ({kvm})",
                       "install Debian's qemu-system-x86 (it has TCG)", True)
    if not kvm_ok or "kvm" not in accels:
        return _result("accel", True, f"the lab uses TCG (emulation; {kvm})", "", True)
    cache = home() / "accel-probe.json"
    release = _current_release() or _newest_image()
    key = f"{_qemu_version()} {release}"
    try:
        known = json.loads(cache.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        known = None
    if known == "kvm":
        return _result("accel", True, f"the lab uses KVM ({kvm}; the probe boot of "
                                      f"{release} reached init)", "", True)
    if known == "tcg":
        return _result("accel", True, f"the lab uses TCG: {kvm} but the KVM probe boot of "
                                      f"{release} hung (cached in {cache}; delete it to "
                                      f"probe again)", "", True)
    return _result("accel", True, f"{kvm}: the first `vmroc lab up` probes KVM with one "
                                  f"boot (at most 15 s) and falls back to TCG", "", True)


# -- privileges: network namespaces, nftables, cgroups ------------------------------------
def check_privileges() -> Check:
    """What the lab's network (a bridge in a network namespace), the nftables faults and
    cpu-throttle (a cgroup) need: root, namespaces, ip, nft, a writable cgroup."""
    root = os.geteuid() == 0
    tools = {t: shutil.which(t) for t in ("ip", "nft", "unshare")}
    found = ["root" if root else f"not root (uid {os.geteuid()})"]
    problems: list[tuple[str, str]] = []           # (what, its fix), the first fix shown
    if not root:
        problems.append(("", "run the lab and faults as root (e.g. `sudo -E vmroc lab up`): "
                             "without `ip netns add` guests share a QEMU socket network and "
                             "the nftables and bridge faults cannot run"))
    if tools["unshare"]:
        netns = _run([tools["unshare"], "--net", "true"])
        if netns is not None and netns.returncode == 0:
            found.append("network namespaces allowed")
        elif root:
            problems.append(("network namespaces refused (a container without "
                             "CAP_SYS_ADMIN?)", "run vmroc on the host or in a privileged "
                                                "container"))
        if not root:
            userns = _run([tools["unshare"], "--user", "--map-root-user", "--net", "true"])
            found.append("user namespaces " + ("allowed" if userns is not None
                                               and userns.returncode == 0 else "refused")
                         + " (the lab still needs root)")
    missing = [t for t in ("ip", "nft") if not tools[t]]
    if missing:
        packages = " ".join({"ip": "iproute2", "nft": "nftables"}[t] for t in missing)
        problems.append((f"{' and '.join(missing)} not found", f"apt-get install {packages}"))
    cgroup_cpu = Path("/sys/fs/cgroup/cpu")
    if cgroup_cpu.is_dir() and os.access(cgroup_cpu, os.W_OK):
        found.append("cgroup v1 cpu writable")
    else:
        problems.append((f"no writable cgroup v1 cpu controller at {cgroup_cpu} "
                         "(cpu-throttle cannot run)",
                         "run as root on a host with cgroup v1 controllers mounted under "
                         "/sys/fs/cgroup (only cpu-throttle needs it)"))
    text = "; ".join(found + [what for what, _ in problems if what])
    return _result("privileges", not problems, text, problems[0][1] if problems else "",
                   False)


# -- the broker: Java, Maven, reachable ---------------------------------------------------
def check_java() -> Check:
    external = _external_kafka()
    need = f"the embedded broker runs Apache Kafka {kafka_version()} (Java {MIN_JAVA}+)"
    java = shutil.which(_default_java())
    fix = f"apt-get install default-jre-headless (Java {MIN_JAVA}+; or {SETUP})"
    if external:
        return _result("java", True, f"not needed: VMROC_KAFKA={external} (no embedded "
                                     f"broker){'; java at ' + java if java else ''}", "", False)
    if not java:
        return _result("java", False, f"java not found; {need}", fix, True)
    out = _run([java, "-version"])
    text = (out.stderr or out.stdout) if out else ""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    major = int(match.group(1)) if match else 0
    major = int(match.group(2)) if major == 1 and match.group(2) else major
    first = text.strip().splitlines()[0] if text.strip() else "no answer to -version"
    if major < MIN_JAVA:
        return _result("java", False, f"{first} at {java}; {need}", fix, True)
    return _result("java", True, f"Java {major} at {java}; {need}", "", True)


def check_maven() -> Check:
    external = _external_kafka()
    mvn = shutil.which("mvn")
    at = f"mvn at {mvn}" if mvn else "no mvn"
    if external:
        return _result("maven", True, f"not needed: VMROC_KAFKA={external}; {at}", "", False)
    jars = Broker().jars_dir
    if (jars / ".complete").exists():
        return _result("maven", True, f"Kafka jars cached in {jars} (Maven is not needed "
                                      f"again); {at}", "", True)
    return _result("maven", bool(mvn),
                   f"{at}; the Kafka jars are not fetched yet: the first `vmroc broker up` "
                   f"fetches them from Maven Central (~45 MB)",
                   f"apt-get install maven (or {SETUP})", True)


def _api_versions(host: str, port: int, timeout: float) -> int:
    """Number of APIs the Kafka broker at host:port lists (an ApiVersions v0 request)."""
    client = b"vmroc-doctor"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        head = _recv(sock, 4)
        (size,) = struct.unpack(">i", head)
        reply = _recv(sock, min(size, 1 << 16))
    correlation, error, count = struct.unpack(">ihi", reply[:10])
    if correlation != 1:
        raise ConnectionError(f"not a Kafka reply (correlation id {correlation})")
    if error:
        raise ConnectionError(f"ApiVersions error code {error}")
    return count


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def check_broker() -> Check:
    """Whether the configured bootstrap server answers Kafka (nothing is started)."""
    external = _external_kafka()
    if external:
        servers, where = external, f"VMROC_KAFKA={external}"
        fix = "start that cluster, or unset VMROC_KAFKA to use the embedded broker"
    else:
        broker = Broker()
        pid = broker.pid()
        servers = broker.bootstrap
        where = f"embedded broker {'pid ' + str(pid) if pid else 'not running'}"
        fix = "vmroc broker up (commands that need it also start it)"
    errors = []
    for server in (s.strip() for s in servers.split(",") if s.strip()):
        host, _, port = server.rpartition(":") if ":" in server else (server, "", "")
        try:
            apis = _api_versions(host.strip("[]") or "127.0.0.1", int(port or DEFAULT_PORT),
                                 BROKER_TIMEOUT_S)
        except (OSError, ValueError, struct.error) as exc:
            errors.append(f"{server}: {exc.strerror or exc if isinstance(exc, OSError) else exc}")
            continue
        return _result("broker", True, f"Kafka answers at {server} ({apis} APIs; {where})",
                       "", bool(external))
    return _result("broker", False, f"no Kafka at {'; '.join(errors) or servers} ({where})",
                   fix, bool(external))


# -- the C sampler ------------------------------------------------------------------------
def check_gcc() -> Check:
    gcc = shutil.which("gcc")
    if not gcc:
        built = _accel_file() is not None
        return _result("gcc", built, "no gcc" + ("; not needed now: the C sampler is built"
                                                  if built else ""),
                       f"apt-get install gcc python3-dev, then {SETUP}",
                       False)
    out = _run([gcc, "--version"])
    first = out.stdout.splitlines()[0] if out and out.stdout else "no answer to --version"
    return _result("gcc", True, f"{first} at {gcc}", "", False)


def _accel_file() -> Path | None:
    """The compiled C sampler of this installation, found without importing its stage."""
    spec = importlib.util.find_spec("vmroc.introspect")   # imports `vmroc` only
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "_accel"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (folder / f"_vmread{suffix}").exists():
            return folder / f"_vmread{suffix}"
    return None


def check_c_module() -> Check:
    name = "vmroc.introspect._accel._vmread"
    fix = f"apt-get install gcc python3-dev, then {SETUP}"
    path = _accel_file()
    if path is None:
        return _result("c-module", False, f"{name} is not built: sampling falls back to "
                                          "pure Python (--backend mmap; the C task walk is "
                                          "~60x faster)",
                       fix, False)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        importlib.util.module_from_spec(spec)     # runs the module's init: it loads here
    except ImportError as exc:
        return _result("c-module", False, f"{path} does not load: {exc}", fix, False)
    source = path.parent / "vmread.c"
    if source.exists() and source.stat().st_mtime > path.stat().st_mtime:
        return _result("c-module", False, f"{path} is older than {source.name}",
                       f"{SETUP} (rebuilds it)", False)
    return _result("c-module", True, f"{name} loads ({path})", "", False)


# -- space and the guest image ------------------------------------------------------------
def check_disk() -> Check:
    where = home()
    usage = shutil.disk_usage(where)
    free = usage.free / 2**30
    found = f"{free:.1f} GiB free of {usage.total / 2**30:.0f} GiB at {where}"
    fix = "free some space, or point VMROC_HOME at a larger disk"
    if free < MIN_FREE_GIB:
        return _result("disk", False, found + f" (below {MIN_FREE_GIB:g} GiB)", fix, True)
    if free < LOW_FREE_GIB:
        return Check("disk", "warn", found + f" (images, Kafka data and recordings want "
                                             f"{LOW_FREE_GIB:g} GiB)", fix, True)
    return _result("disk", True, found, fix, True)


def check_shm() -> Check:
    shm = _lab.SHM_DIR
    try:
        free = shutil.disk_usage(shm).free / 2**20
    except OSError as exc:
        return _result("shm", False, f"{shm}: {exc.strerror}",
                       "mount a tmpfs on /dev/shm (guest RAM lives there)", False)
    found = (f"{free / 1024:.1f} GiB free in {shm} (guest RAM files; the default lab "
             f"needs {LAB_SHM_MIB} MiB)")
    return _result("shm", free >= LAB_SHM_MIB, found,
                   f"mount -o remount,size=2G {shm}, or start fewer or smaller guests "
                   "(vmroc lab up --guests N --ram MiB)", False)


def _built_images() -> dict[str, Path]:
    """Release -> image folder of every complete image in the cache."""
    out = {}
    root = home() / "images"
    for kdir in sorted(root.iterdir()) if root.is_dir() else ():
        if all((kdir / f).exists() for f in ("kernel.json", "vmlinuz", "data.img")) \
                and any(kdir.glob("initramfs-*.cpio.gz")):
            out[kdir.name] = kdir
    return out


def _newest_image() -> str | None:
    built = [r for r in _built_images() if "cloud" not in r]
    return built[-1] if built else None


def check_image() -> Check:
    built = _built_images()
    current = _current_release()
    fix = "vmroc image build (fetches a Debian kernel with apt-get download, ~1 min)"
    try:
        _image._check_busybox()
        busybox = ""
    except ImageError as exc:
        busybox = f"; {exc}"
    names = ", ".join(built) or "none"
    where = home() / "images"
    if not built:
        return _result("image", False, f"no guest image in {where}{busybox}",
                       fix if not busybox else "apt-get install busybox-static, then " + fix,
                       False)
    if busybox:
        return _result("image", False, f"built: {names}{busybox} (the initramfs is "
                                       "rebuilt when the guest's init changes)",
                       "apt-get install busybox-static", False)
    if current is None:
        return _result("image", True, f"built: {names} in {where} (Debian's current kernel "
                                      "unknown: apt-cache did not say)", "", False)
    if current not in built:
        return _result("image", False, f"built: {names}; Debian's current generic kernel is "
                                       f"{current}, which `vmroc lab up` would fetch first",
                       fix, False)
    return _result("image", True, f"{current} (Debian's current generic kernel) in "
                                  f"{built[current]}; built: {names}", "", False)


# -- Python extras ------------------------------------------------------------------------
def _module_check(name: str, module: str, dist: str, role: str,
                  extra: str) -> Callable[[], Check]:
    def check() -> Check:
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is the finding
            return _result(name, False, f"{module} does not import ({type(exc).__name__}: "
                                        f"{exc}); {role}",
                           f"pip install 'vmroc[{extra}]' (or {SETUP}, which installs every extra)",
                           False)
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return _result(name, True, f"{dist} {version} imports; {role}", "", False)
    check.__name__ = f"check_{name}"
    return check


CHECKS: list[Callable[[], Check]] = [
    check_qemu, check_accel, check_privileges, check_java, check_maven, check_broker,
    check_gcc, check_c_module, check_disk, check_shm, check_image,
    _module_check("libvmi", "libvmi", "libvmi", "for `vmroc sample --backend libvmi`",
                  "libvmi"),
    _module_check("volatility3", "volatility3.framework", "volatility3",
                  "for `vmroc sample --backend volatility`", "volatility"),
]


def run_checks(checks: list[Callable[[], Check]] | None = None) -> list[Check]:
    """Every check, in parallel (they wait on subprocesses); in ``CHECKS`` order. A check
    that raises is reported as failed (required) with the error, not raised."""
    checks = CHECKS if checks is None else checks

    def safe(fn: Callable[[], Check]) -> Check:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the doctor reports, it does not crash
            name = fn.__name__.removeprefix("check_").replace("_", "-")
            return Check(name, "warn", f"the check itself failed: {type(exc).__name__}: "
                                       f"{exc}", "report this as a vmroc bug", False)
    with ThreadPoolExecutor(max_workers=len(checks) or 1) as pool:
        return list(pool.map(safe, checks))


# -- command line -------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "doctor", help="check this machine: QEMU, KVM/TCG, root, Java, Maven, gcc and the C "
                       "sampler, the broker, disk space, the guest image",
        description="Check every prerequisite of vmroc without changing anything. Each "
                    "check prints what it found and, unless ok, the one line that fixes "
                    "it. Exit status 1 if a required check fails, else 0.")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_doctor)


def _vmroc_version() -> str:
    try:
        return importlib.metadata.version("vmroc")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def cmd_doctor(args) -> int:
    t0 = time.monotonic()
    checks = run_checks()
    failed = [c for c in checks if c.status == "fail"]
    warned = [c for c in checks if c.status == "warn"]
    if args.json:
        print(json.dumps({"vmroc": _vmroc_version(), "python": sys.version.split()[0],
                          "home": str(home()), "ok": not failed,
                          "elapsed_s": round(time.monotonic() - t0, 2),
                          "checks": [c.to_dict() for c in checks]}, indent=1))
        return 1 if failed else 0
    print(f"vmroc {_vmroc_version()}, Python {sys.version.split()[0]}, home {home()}")
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.status:<5} {c.name:<{width}}  {c.found}")
        if c.fix:
            print(f"{'':<5} {'':<{width}}  fix: {c.fix}")
    verdict = "not ready: fix the failed checks" if failed else "ready"
    print(f"{len(failed)} failed, {len(warned)} warning(s): {verdict}")
    return 1 if failed else 0
