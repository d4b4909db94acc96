"""Symbol files built from the real Debian 6.1 kernels, read by volatility3 and LibVMI.

Kernels come from the vmroc image cache (``deploy.build_image``: generic and cloud);
the ISF builds are cached in the vmroc home, so a second session only hashes files.
The live checks run volatility3 (pslist, kmsg) and LibVMI on a lab guest's RAM file.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmroc.introspect import SymbolTable, build_isf

pytestmark = pytest.mark.real

FLAVOURS = ("generic", "cloud")
MODULES = ("virtio_net", "virtio_blk")


def _need(module: str, how: str):
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"python module {module} missing: {how}", pytrace=False)


@pytest.fixture(scope="session")
def kernels():
    """flavour -> (GuestImage, SymbolFiles); built once per session (and cached on disk)."""
    from vmroc.deploy import ImageError, build_image
    out = {}
    for flavour in FLAVOURS:
        try:
            image = build_image(flavour)
        except ImageError as exc:
            pytest.fail(f"cannot get the {flavour} kernel: {exc} (needs apt-get access; "
                        "run `bash deploy/setup.sh`)", pytrace=False)
        mods = [image.modules[m] for m in MODULES]
        out[flavour] = (image, build_isf(image.kernel, mods))
    return out


@pytest.fixture(scope="session")
def tables(kernels):
    return {f: files.table() for f, (_, files) in kernels.items()}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_known_kernel_facts(kernels, tables, flavour):
    image, files = kernels[flavour]
    st: SymbolTable = tables[flavour]
    assert files.release == image.release
    assert len(st.symbols) > 50_000 and files.meta["counts"]["kallsyms"] > 50_000
    ts = {m: st.offset("task_struct", m) for m in ("__state", "pid", "comm", "tasks")}
    assert ts["__state"] < 64 < ts["tasks"] < ts["pid"] < ts["comm"] < st.size("task_struct")
    assert st.size("task_struct") > 4000
    assert st.symbol_type("init_task") == {"kind": "struct", "name": "task_struct"}
    assert st.symbol_type("prb") == {"kind": "pointer",
                                     "subtype": {"kind": "struct", "name": "printk_ringbuffer"}}
    for name in ("init_net", "avenrun", "jiffies_64", "runqueues", "vm_zone_stat",
                 "vm_node_stat", "vm_event_states", "kernel_cpustat", "block_class"):
        assert st.symbol_type(name), f"{name} has no type"
    # per-CPU symbols are small offsets inside the per-CPU area; the rest are kernel text/data
    pcpu_end = st.address("__per_cpu_end")
    for name in ("runqueues", "vm_event_states", "kernel_cpustat"):
        assert st.is_percpu(name) and st.address(name) < pcpu_end
    text = st.address("_text")
    assert text == st.address("_stext") == st.address("startup_64") == 0xFFFFFFFF81000000
    assert text < st.address("_etext") < st.address("init_task") < st.address("_end")
    kernel_addrs = [s["address"] for s in st.symbols.values() if s["address"] >= 1 << 63]
    assert min(kernel_addrs) >= 0xFFFFFFFF80000000
    banner = base64.b64decode(st.symbols["linux_banner"]["constant_data"]).decode()
    assert banner.startswith("Linux version 6.1") and image.release in banner
    assert st.size("virtnet_info") > 0 and st.offset("virtnet_info", "max_queue_pairs") > 0
    assert st.size("virtio_blk") > 0  # module-private type from split BTF


def test_kallsyms_sorted(kernels):
    """Addresses come out of kallsyms sorted: per-CPU offsets first, then _text onward."""
    from vmroc.introspect.kallsyms import parse_kallsyms
    from vmroc.introspect.kernel_image import ElfImage, extract_vmlinux
    image, _ = kernels["cloud"]  # the LZ4-compressed one
    ks = parse_kallsyms(ElfImage(extract_vmlinux(image.kernel)))
    assert ks.addresses == sorted(ks.addresses)
    assert ks.layout.seqs_gap >= 3 * len(ks)  # 6.1.19x: kallsyms_seqs_of_names is there
    first_kernel = next(i for i, a in enumerate(ks.addresses) if a >= 1 << 63)
    assert set(ks.types[:first_kernel]) == {"A"}


def test_second_build_is_a_cache_hit(kernels):
    image, files = kernels["generic"]
    started = time.perf_counter()
    again = build_isf(image.kernel, [image.modules[m] for m in MODULES])
    assert again.cached and again.directory == files.directory
    assert time.perf_counter() - started < 1.0


def test_cli_json(kernels):
    image, files = kernels["generic"]
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "symbols", "build",
                           str(image.kernel), "--module", str(image.modules["virtio_net"]),
                           "--module", str(image.modules["virtio_blk"]), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cached"] and out["isf"] == str(files.isf) and out["libvmi"] == str(files.libvmi)


def _without_btf(vmlinux: bytes) -> bytes:
    """The same ELF with its .BTF section renamed, as if built without BTF."""
    from vmroc.introspect.kernel_image import ElfImage
    shstrtab = ElfImage(vmlinux).sections[".shstrtab"]
    at = vmlinux.index(b".BTF\0", shstrtab.offset, shstrtab.offset + shstrtab.size)
    return vmlinux[:at] + b".NOB\0" + vmlinux[at + 5:]


def test_kernel_without_btf_is_one_line(kernels, tmp_path):
    from vmroc.introspect.kernel_image import extract_vmlinux
    image, _ = kernels["generic"]
    kernel = tmp_path / "vmlinux-nobtf"
    kernel.write_bytes(_without_btf(extract_vmlinux(image.kernel)))
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "symbols", "build", str(kernel)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VMROC_HOME": str(tmp_path / "home")})
    assert proc.returncode == 1
    *progress, error = proc.stderr.strip().splitlines()
    assert error.startswith("KernelImageError: ") and "no .BTF section" in error, proc.stderr
    assert "CONFIG_DEBUG_INFO_BTF" in error and "recovering symbols" not in proc.stderr


def _volatility_table(path: Path, validate: bool):
    _need("volatility3", "pip install 'vmroc[volatility]'")
    import volatility3.plugins
    from volatility3 import framework
    from volatility3.framework import contexts
    from volatility3.framework.symbols.linux import LinuxKernelIntermedSymbols
    framework.import_files(volatility3.plugins, True)
    ctx = contexts.Context()
    table = LinuxKernelIntermedSymbols(ctx, "vmroc", "vmlinux", isf_url=path.resolve().as_uri(),
                                       validate=validate)
    ctx.symbol_space.append(table)
    return table


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_volatility_loads_isf(kernels, tables, flavour):
    _, files = kernels[flavour]
    # schema validation of a 10 MB ISF takes ~25 s once (volatility caches the verdict)
    table = _volatility_table(files.isf if flavour == "generic" else files.isf_xz,
                              validate=flavour == "generic")
    task = table.get_type("task_struct")
    st = tables[flavour]
    for member in ("pid", "comm", "tasks", "__state", "mm"):
        assert task.vol.members[member][0] == st.offset("task_struct", member)
    assert table.get_symbol("init_task").type.vol.type_name.endswith("task_struct")
    assert table.get_symbol("linux_banner").constant_data.startswith(b"Linux version 6.1")
    assert table.get_type("virtnet_info").vol.size == st.size("virtnet_info")


@pytest.fixture(scope="module")
def guest(lab, kernels):
    """A running lab guest (generic kernel) and the symbol files of its kernel."""
    g = lab.guests[0]
    g.wait_for_status()
    image, files = kernels["generic"]
    assert g.config["release"] == image.release, "lab runs another kernel than the image cache"
    return g, files


def _vol(files, ram: Path, plugin: str, tmp: Path) -> str:
    symdir = tmp / "symbols" / "linux"
    symdir.mkdir(parents=True, exist_ok=True)
    link = symdir / f"vmroc-{files.release}.json"
    if not link.exists():
        link.symlink_to(files.isf)
    vol = Path(sys.executable).with_name("vol")
    if not vol.exists():
        vol = shutil.which("vol")
        if vol is None:
            pytest.fail("volatility3's `vol` command not found: pip install 'vmroc[volatility]'",
                        pytrace=False)
    proc = subprocess.run(
        [str(vol), "-q", "-s", str(tmp / "symbols"), "-f", str(ram), plugin],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_volatility_pslist_and_kmsg_on_live_guest(guest, tmp_path):
    g, files = guest
    tasks = int(g.last_status()["tasks"])
    out = _vol(files, g.ram_path, "linux.pslist", tmp_path)
    rows = [line.split("\t") for line in out.splitlines() if line.startswith("0x")]
    pids = {int(r[1]): r[4] for r in rows}
    assert pids.get(1) == "init" and pids.get(2) == "kthreadd"
    assert abs(len(rows) - tasks) <= 10, (len(rows), tasks)
    kmsg = _vol(files, g.ram_path, "linux.kmsg", tmp_path)
    assert "Linux version 6.1" in kmsg and "virtio" in kmsg.lower()


def test_libvmi_walks_tasks_on_live_guest(guest):
    g, files = guest
    libvmi = _need("libvmi", "pip install 'vmroc[libvmi]' (the PyPI wheel bundles the FILE driver)")
    cfg = {"ostype": "Linux", "volatility_ist": str(files.libvmi)}
    with libvmi.Libvmi(str(g.ram_path), mode=libvmi.VMIMode.FILE,
                       config_mode=libvmi.VMIConfig.DICT, config=cfg) as vmi:
        tasks_off, name_off, pid_off = (vmi.get_offset(k) for k in
                                        ("linux_tasks", "linux_name", "linux_pid"))
        head = vmi.translate_ksym2v("init_task") + tasks_off
        seen, cur = {}, head
        for _ in range(10_000):
            proc = cur - tasks_off
            seen[vmi.read_32_va(proc + pid_off, 0)] = vmi.read_str_va(proc + name_off, 0)
            cur = vmi.read_addr_va(cur, 0)
            if cur == head:
                break
    st = files.table()
    assert tasks_off == st.offset("task_struct", "tasks")
    assert seen.get(0, "").startswith("swapper") and seen.get(1) == "init"
    assert len(seen) >= 20
