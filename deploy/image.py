"""Guest images: a Debian kernel, a busybox initramfs running the workload, a data disk.

``build_image(flavour)`` fetches the current Debian ``linux-image-6.1.*`` package with
``apt-get download`` (nothing is installed on the host), keeps the kernel and the
modules the guest needs, and packs an initramfs around ``deploy/guest/init.sh``.
Everything is cached under ``$VMROC_HOME/images/<kernel-release>/``; a second build
is a no-op. The initramfs is keyed by a hash of its inputs, so editing the init
script rebuilds only the initramfs.

``build_image(flavour, workload="etcd")`` adds Debian's ``etcd-server`` binary (fetched
the same way, cached under ``images/etcd/``) with the C library and loader it needs,
so the guests can form a real etcd cluster (``deploy/guest/init.sh``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vmroc.home import subdir

from .errors import ImageError

log = logging.getLogger(__name__)

FLAVOURS = {"generic": "linux-image-amd64", "cloud": "linux-image-cloud-amd64"}
# Modules the guest loads, by name; load order is derived from their `depends=`.
GUEST_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_balloon", "pvpanic-mmio"]
GUEST_DIR = Path(__file__).parent / "guest"
BUSYBOX = Path("/bin/busybox")
DATA_DISK_MB = 32
WWW_PAGE_BYTES = 16 * 1024
WORKLOADS = ("web", "etcd")  # web: httpd + HTTP clients; etcd: the same plus an etcd cluster
ETCD_PACKAGE = "etcd-server"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class GuestImage:
    """A built guest image; paths are inside the cache."""

    flavour: str
    release: str  # kernel release, e.g. 6.1.0-56-amd64
    package: str  # Debian package and version it came from
    kernel: Path
    initrd: Path
    disk: Path  # base data disk; each guest gets its own copy
    modules: dict[str, Path] = field(default_factory=dict)  # name -> .ko (for symbols)
    workload: str = "web"

    def to_json(self) -> dict:
        return {
            "flavour": self.flavour, "workload": self.workload, "release": self.release,
            "package": self.package,
            "kernel": str(self.kernel), "initrd": str(self.initrd), "disk": str(self.disk),
            "modules": {k: str(v) for k, v in self.modules.items()},
        }


def run_tool(cmd: list[str], what: str, *, check: bool = True, error: type = ImageError,
             **kw) -> subprocess.CompletedProcess:
    """Run a host tool; a missing tool or (with ``check``) a failure is one ``error`` line."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as exc:
        raise error(f"{what}: {cmd[0]} not found; run `bash deploy/setup.sh`") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise error(f"{what} failed: {detail[-1] if detail else proc.returncode}")
    return proc


def current_kernel_package(flavour: str) -> str:
    """The versioned Debian kernel package the flavour's meta-package points at."""
    if flavour not in FLAVOURS:
        raise ImageError(f"unknown kernel flavour {flavour!r}; use one of {sorted(FLAVOURS)}")
    meta = FLAVOURS[flavour]
    out = run_tool(["apt-cache", "depends", meta], f"apt-cache depends {meta}").stdout
    for line in out.splitlines():
        dep = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and dep.startswith("linux-image-6.1"):
            return dep
    raise ImageError(f"no linux-image-6.1 package behind {meta}; run `apt-get update`")


def _check_busybox() -> None:
    if not BUSYBOX.exists():
        raise ImageError("busybox not found; install it with `apt-get install busybox-static`")
    with BUSYBOX.open("rb") as f:
        if b"ld-linux" in f.read(4096):
            raise ImageError("/bin/busybox is dynamically linked; "
                             "install the static one with `apt-get install busybox-static`")


def check_workload(workload: str) -> str:
    if workload not in WORKLOADS:
        raise ImageError(f"unknown workload {workload!r}; use one of {', '.join(WORKLOADS)}")
    return workload


def build_image(flavour: str = "generic", progress: Progress | None = None,
                workload: str = "web") -> GuestImage:
    """Build (or find in the cache) the guest image for a kernel flavour and workload."""
    say = progress or (lambda msg: log.info("%s", msg))
    check_workload(workload)
    package = current_kernel_package(flavour)
    release = package.removeprefix("linux-image-")
    kdir = subdir("images", release)
    manifest = kdir / "kernel.json"
    if not manifest.exists():
        _fetch_kernel(package, release, kdir, say)
    meta = json.loads(manifest.read_text())
    modules = {name: kdir / "modules" / f"{name}.ko" for name in meta["modules"]}
    extra = _etcd_files(say) if workload == "etcd" else {}
    initrd = _build_initramfs(kdir, meta["load_order"], modules, say, extra)
    disk = kdir / "data.img"
    if not disk.exists():
        with open(disk.with_suffix(".tmp"), "wb") as f:
            f.truncate(DATA_DISK_MB << 20)
        disk.with_suffix(".tmp").rename(disk)
    say(f"image ready: {release} ({flavour}, {workload})")
    return GuestImage(flavour, release, meta["package"], kdir / "vmlinuz", initrd, disk,
                      modules, workload)


def _etcd_files(say: Progress) -> dict[str, Path]:
    """Path in the guest -> host file: the etcd binary, its C library and loader."""
    edir = subdir("images", "etcd")
    binary = edir / "etcd"
    if not binary.exists():
        with tempfile.TemporaryDirectory(prefix="vmroc-etcd-") as tmp:
            say(f"downloading {ETCD_PACKAGE} (apt-get download)")
            deb = _download_deb(ETCD_PACKAGE, Path(tmp))
            root = Path(tmp) / "x"
            run_tool(["dpkg-deb", "-x", str(deb), str(root)], "dpkg-deb -x")
            (edir / "package").write_text(deb.name.removesuffix(".deb") + "\n")
            shutil.copy(root / "usr" / "bin" / "etcd", binary.with_suffix(".tmp"))
            binary.with_suffix(".tmp").rename(binary)
    files = {"bin/etcd": binary}
    for lib in _shared_libraries(binary):
        files[str(lib).lstrip("/")] = lib.resolve()
    return files


def _shared_libraries(binary: Path) -> list[Path]:
    """The loader and libraries ``binary`` links against, as the host resolves them."""
    out = run_tool(["ldd", str(binary)], f"ldd {binary.name}").stdout
    libs = []
    for line in out.splitlines():
        words = line.split()
        path = words[2] if len(words) > 2 and words[1] == "=>" else words[0] if words else ""
        if path.startswith("/"):
            libs.append(Path(path))
    if not libs:
        raise ImageError(f"ldd {binary}: no libraries found (is it a dynamic x86-64 binary?)")
    return libs


def _download_deb(package: str, into: Path) -> Path:
    """``apt-get download`` of ``package`` into ``into`` (nothing is installed); its .deb."""
    try:
        run_tool(["apt-get", "download", package], f"apt-get download {package}", cwd=into)
    except ImageError as exc:
        raise ImageError(f"{exc}; run `apt-get update` (the package list may be stale) "
                         "and check that the Debian mirror is reachable") from exc
    debs = list(into.glob("*.deb"))
    if not debs:
        raise ImageError(f"apt-get download {package} produced no .deb")
    return debs[0]


def _fetch_kernel(package: str, release: str, kdir: Path, say: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="vmroc-kernel-") as tmp:
        say(f"[1/3] downloading {package} (apt-get download)")
        deb = _download_deb(package, Path(tmp))
        say(f"[2/3] unpacking {deb.name}")
        root = Path(tmp) / "x"
        run_tool(["dpkg-deb", "-x", str(deb), str(root)], "dpkg-deb -x")
        say("[3/3] keeping kernel and guest modules")
        shutil.copy(root / "boot" / f"vmlinuz-{release}", kdir / "vmlinuz")
        shutil.copy(root / "boot" / f"config-{release}", kdir / "config")
        mod_root = root / "lib" / "modules" / release / "kernel"
        found = {p.name.removesuffix(".ko"): p for p in mod_root.rglob("*.ko")}
        order = _load_order(GUEST_MODULES, found)
        (kdir / "modules").mkdir(exist_ok=True)
        for name in order:
            shutil.copy(found[name], kdir / "modules" / f"{name}.ko")
        info = {"package": deb.name.removesuffix(".deb"), "release": release,
                "modules": order, "load_order": order}
        tmp_manifest = kdir / "kernel.json.tmp"
        tmp_manifest.write_text(json.dumps(info, indent=1))
        tmp_manifest.rename(kdir / "kernel.json")


def _module_depends(path: Path) -> list[str]:
    data = path.read_bytes()
    start = data.find(b"\0depends=")
    if start < 0:
        return []
    value = data[start + 9:data.index(b"\0", start + 1)].decode()
    return [d for d in value.split(",") if d]


def _load_order(wanted: list[str], found: dict[str, Path]) -> list[str]:
    """Wanted modules plus their dependencies, each after what it depends on."""
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in found:
            raise ImageError(f"kernel module {name} not in the package (needed by {chain})")
        for dep in _module_depends(found[name]):
            visit(dep, chain + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


class _Cpio:
    """A minimal writer for the newc cpio format the kernel unpacks."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        raw = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % v for v in fields) + raw)
        self.buf.write(b"\0" * (-(110 + len(raw)) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _build_initramfs(kdir: Path, order: list[str], modules: dict[str, Path],
                     say: Progress, extra: dict[str, Path] | None = None) -> Path:
    """The initramfs: busybox, /init, the modules and ``extra`` (path in guest -> file)."""
    init = (GUEST_DIR / "init.sh").read_bytes()
    _check_busybox()
    busybox = BUSYBOX.read_bytes()
    extra = extra or {}
    digest = hashlib.sha256(init + busybox + "\n".join(order).encode())
    for name in order:
        digest.update(modules[name].read_bytes())
    for dest, src in sorted(extra.items()):
        digest.update(dest.encode() + src.read_bytes())
    path = kdir / f"initramfs-{digest.hexdigest()[:12]}.cpio.gz"
    if path.exists():
        return path
    say(f"building initramfs {path.name}")
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "www", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("init", init, 0o755)
    cpio.file("lib/modules/load-order", "\n".join(order).encode() + b"\n")
    for name in order:
        cpio.file(f"lib/modules/{name}.ko", modules[name].read_bytes())
    page = b"<html><body>vmroc guest</body></html>\n"
    cpio.file("www/index.html", page + b"x" * (WWW_PAGE_BYTES - len(page)))
    made = {"bin", "lib"}
    for dest, src in sorted(extra.items()):
        parts = dest.split("/")
        for d in ("/".join(parts[:i]) for i in range(1, len(parts))):
            if d not in made:
                cpio.dir(d)
                made.add(d)
        cpio.file(dest, src.read_bytes(), 0o755)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=6) as f:
        f.write(cpio.finish())
    os.replace(tmp, path)  # older initramfs files stay: running labs relaunch from them
    return path
