"""Memory readers behind one interface (``KernelView``): C accelerator, direct mmap,
LibVMI, volatility3.

- ``accel`` (the default when built): ``AccelKernel``, the mmap reader with its reads
  and task walk in C (``_accel``: ``vmread.c`` and the binding that loads it); every
  feature.
- ``mmap``: our own translation on the RAM file in pure Python (``GuestKernel``);
  every feature; the default where the C module could not be built.
- ``libvmi``: LibVMI (python bindings, FILE mode on the RAM file) does KASLR and
  address translation; the same feature readers run on top, so it is a reference
  for every feature. Its page caches are flushed before each sample.
- ``volatility``: volatility3 as a library: task list (``linux.pslist``) and kernel
  log (``linux.kmsg``) only, the reference for those two.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import _accel
from . import features as _f
from .errors import IntrospectError
from .features import MAX_LIST
from .kernel import GuestKernel, KernelMismatchError, KernelView
from .layers import AddressError
from .printk import MAX_RECORDS, KernelLog
from .symbols import SymbolFiles, SymbolTable

log = logging.getLogger(__name__)

BACKENDS = ("accel", "mmap", "libvmi", "volatility")


def default_backend() -> str:
    """``accel`` when the C module is built, else ``mmap``."""
    return "accel" if _accel.available() else "mmap"


class AccelLog(KernelLog):
    """``KernelLog`` read in C (``Space.read_log``): ``read_lines`` gives the lines the
    sampler makes of ``read_new``'s records (``str(record)``) and how many of them are
    errors (level <= 3), from the same descriptors, with the same resume state."""

    def __init__(self, k: "AccelKernel"):
        super().__init__(k)
        self._params = (k.sym("prb"), self.o_desc_ring, self.o_text_ring, self.o_count_bits,
                        self.o_descs, self.o_infos, self.o_head, self.o_tail, self.o_size_bits,
                        self.o_data, self.desc_size, self.info_size, self.o_lpos, self.o_seq,
                        self.o_len)

    def read_lines(self, limit: int = MAX_RECORDS) -> tuple[list[str], int]:
        lines, errors, self.next_id, self.next_seq = self.k.space.read_log(
            self._params, self.next_id, self.next_seq, limit)
        return lines, errors


class AccelKernel(GuestKernel):
    """``GuestKernel`` whose reads, task walk and feature groups run in C.

    It finds the kernel exactly as ``GuestKernel`` does (VMCOREINFO or the banner probe,
    banner check, per-CPU offsets), then does every read in C: the same q35 layout, page
    walks and per-sample TLB as ``layers.py``; ``read_tasks`` is ``features.read_tasks``
    (records and features) in one call, and ``plan`` turns every feature group into the
    offsets and addresses C needs to read it (``Space.read_plans``: all groups, one call);
    the sampler only wraps the result."""

    name = "accel"
    kernel_log = AccelLog  # the sampler's reader of the kernel log
    _task_walk: tuple | None = None  # (head, offsets, limit) of read_tasks, found once

    def __init__(self, ram_path: Path | str, symbols: SymbolTable, guest: str = "",
                 use_vmcoreinfo: bool = True):
        if not _accel.available():
            raise IntrospectError("the C accelerator is not built: run `bash deploy/setup.sh` "
                                  "(needs gcc), or sample with --backend mmap")
        super().__init__(ram_path, symbols, guest, use_vmcoreinfo)
        m = self.mem
        self.space = _accel._vmread.Space(str(self.ram.path), m.page_table, m.phys_base,
                                          m.la57, m.page_offset)
        # instance attributes shadow the Python methods: readers call C directly
        s = self.space
        self.read, self.u64, self.u32, self.s32, self.u16, self.u64s = (
            s.read, s.u64, s.u32, s.s32, s.u16, s.u64s)
        self.flush = s.flush

    def task_rows(self, head: int, offsets: tuple[int, ...]) -> list[tuple]:
        """Raw fields of every task on the list at ``head`` (see features.task_rows)."""
        return self.space.tasks(head, offsets, MAX_LIST)

    def read_tasks(self, top: int = 5) -> tuple[dict[str, float], list[dict]]:
        """``features.read_tasks`` in one C call: the same features and task records."""
        if self._task_walk is None:  # the same for the life of this kernel
            offsets = _f.task_offsets(self)
            self._task_walk = (self.sym("init_task") + offsets[0], offsets, MAX_LIST)
        return self.space.read_tasks(*self._task_walk, top)

    def plan(self, group: str, hz: int = 0) -> tuple | None:
        """The reads of feature group ``group`` as a plan for C (``Space.read_plan``): the
        same features as its reader in ``features``, from addresses fixed for the life
        of this kernel (the block and net groups: the offsets their list walks use);
        None for a group without a plan (its Python reader runs)."""
        make = {"load": self._plan_load, "runqueues": self._plan_runqueues,
                "time": self._plan_time, "cpustat": self._plan_cpustat,
                "vmstat": self._plan_vmstat, "block": self._plan_block, "net": self._plan_net,
                "snmp": self._plan_snmp}.get(group)
        return tuple(make(hz)) if make else None

    def _cpus(self, base: int) -> tuple[int, ...]:
        return tuple(base + self.per_cpu_offset[cpu] for cpu in range(self.nr_cpus))

    def _plan_load(self, hz: int) -> list:
        at = self.sym("avenrun")
        return [(name, "Q", 0, (at + 8 * i,), 1, float(1 << _f.FSHIFT))
                for i, name in enumerate(("load1", "load5", "load15"))]

    def _plan_runqueues(self, hz: int) -> list:
        members = (("rq_nr_running", "nr_running", "I"), ("rq_nr_switches", "nr_switches", "Q"),
                   ("rq_nr_iowait", "nr_iowait", "i"),
                   ("rq_nr_uninterruptible", "nr_uninterruptible", "i"))
        rqs = [self.percpu("runqueues", cpu) for cpu in range(self.nr_cpus)]
        items = [(name, t, 0, tuple(rq + self.off("rq", m) for rq in rqs), 0, 1)
                 for name, m, t in members]
        for cpu, rq in enumerate(rqs):
            items += [(f"cpu{cpu}_{name}", t, 0, (rq + self.off("rq", m),), 0, 1)
                      for name, m, t in members]
        return items

    def _plan_time(self, hz: int) -> list:
        at = self.sym("jiffies_64")
        initial = (-300 * hz) & 0xFFFF_FFFF  # INITIAL_JIFFIES
        return [("jiffies", "Q", 0, (at,), 0, 1), ("uptime_s", "Q", 0, (at,), 2, float(hz),
                                                    -initial)]

    def _plan_cpustat(self, hz: int) -> list:
        index = self.enum("cpu_usage_stat")
        return [(f"cpu_{name.lower()}_s", "Q", 0,
                 tuple(a + 8 * index[f"CPUTIME_{name}"]
                       for a in self._cpus(self.symbols.address("kernel_cpustat"))), 1, _f.NSEC)
                for name in _f.CPU_STATS]

    def _plan_vmstat(self, hz: int) -> list:
        items = []
        for symbol, enum, wanted in (("vm_zone_stat", "zone_stat_item", _f.ZONE_STATS),
                                     ("vm_node_stat", "node_stat_item", _f.NODE_STATS)):
            index, at = self.enum(enum), self.sym(symbol)
            items += [("vm_" + n.lower(), "q", 0, (at + 8 * index[n],), 0, 1)
                      for n in wanted if n in index]
        free = self.sym("vm_zone_stat") + 8 * self.enum("zone_stat_item")["NR_FREE_PAGES"]
        items.append(("memfree_kb", "q", 0, (free,), 0, 4))
        index = self.enum("vm_event_item")
        cpus = self._cpus(self.symbols.address("vm_event_states"))
        items += [("vm_" + n.lower(), "Q", 0, tuple(a + 8 * index[n] for a in cpus), 0, 1)
                  for n in _f.VM_EVENTS if n in index]
        return items

    def _plan_block(self, hz: int) -> list:
        o = self.off
        return [("", "B", self.sym("block_class") + o("class", "p"),
                 o("subsys_private", "klist_devices") + o("klist", "k_list"),
                 o("klist_node", "n_node"), o("device_private", "knode_class"),
                 o("device_private", "device"), o("device", "kobj") + o("kobject", "name"),
                 o("block_device", "bd_device"), o("block_device", "bd_partno"),
                 o("block_device", "bd_stats"), o("disk_stats", "sectors"),
                 o("disk_stats", "ios"), o("disk_stats", "io_ticks"), hz,
                 *self.per_cpu_offset)]

    def _plan_net(self, hz: int) -> list:
        o = self.off
        virtio = "virtnet_info" in self.symbols.user_types
        vio = (1, (self.size("net_device") + 31) & ~31, o("virtnet_info", "curr_queue_pairs"),
               o("virtnet_info", "rq"), o("virtnet_info", "sq"), self.size("receive_queue"),
               self.size("send_queue"),
               o("receive_queue", "stats") + o("virtnet_rq_stats", "packets"),
               o("send_queue", "stats") + o("virtnet_sq_stats", "packets")) if virtio \
            else (0,) * 9
        return [("", "N", self.sym("init_net") + o("net", "dev_base_head"),
                 o("net_device", "dev_list"), o("net_device", "name"), o("net_device", "stats"),
                 o("net_device", "core_stats"),
                 *(o("net_device_stats", m) for m in ("rx_errors", "tx_errors", "rx_dropped",
                                                      "tx_dropped")),
                 *vio, *self.per_cpu_offset)]

    def _plan_snmp(self, hz: int) -> list:
        mib = self.sym("init_net") + self.off("net", "mib")
        return [(name, "Q", mib + self.off("netns_mib", member),  # a __percpu pointer
                 tuple(8 * self.symbols.constant(enumerator) + off
                       for off in self.per_cpu_offset), 0, 1)
                for name, member, enumerator in _f.SNMP]

    def walk_list(self, head: int, limit: int = MAX_LIST) -> list[int]:
        return self.space.walk_list(head, limit)

    def close(self) -> None:
        self.space.close()
        super().close()


class LibvmiKernel(KernelView):
    """``KernelView`` whose reads and symbol addresses come from LibVMI."""

    name = "libvmi"

    def __init__(self, ram_path: Path, files: SymbolFiles, symbols: SymbolTable, guest: str):
        try:
            from libvmi import Libvmi, LibvmiError, VMIConfig, VMIMode
        except ImportError as exc:
            raise IntrospectError("LibVMI python bindings missing: pip install 'vmroc[libvmi]' "
                                  "(CPython 3.11 x86_64 only)") from exc
        self.guest, self.symbols, self._error = guest, symbols, LibvmiError
        try:
            self.vmi = Libvmi(str(ram_path), mode=VMIMode.FILE, config_mode=VMIConfig.DICT,
                              config={"ostype": "Linux", "volatility_ist": str(files.libvmi)})
        except LibvmiError as exc:
            raise IntrospectError(f"guest {guest}: LibVMI init on {ram_path} failed ({exc}); "
                                  "is the ISF built for this guest's kernel?") from exc
        self._check_banner()
        self._load_percpu_offsets()

    def _check_banner(self) -> None:
        want = self.symbols.banner.encode("latin-1")
        got = self.read(self.sym("linux_banner"), len(want))
        if got != want:
            raise KernelMismatchError(f"guest {self.guest}: LibVMI reads banner {got[:60]!r}, "
                                      f"symbols are for {want[:60]!r}")

    def sym(self, name: str) -> int:
        if self.symbols.is_percpu(name):
            return self.symbols.address(name)
        try:
            return self.vmi.translate_ksym2v(name)
        except self._error as exc:
            raise AddressError("libvmi", 0, f"symbol {name} not translated") from exc

    def flush(self) -> None:
        self.vmi.pagecache_flush()
        self.vmi.v2pcache_flush()

    def read(self, vaddr: int, length: int) -> bytes:
        try:
            data, got = self.vmi.read_va(vaddr, 0, length)
        except self._error as exc:
            raise AddressError("libvmi", vaddr, "not readable") from exc
        if got != length:
            raise AddressError("libvmi", vaddr, f"read {got} of {length} bytes")
        return data

    def close(self) -> None:
        self.vmi.destroy()


def open_kernel(backend: str, ram_path: Path, files: SymbolFiles, symbols: SymbolTable,
                guest: str) -> KernelView:
    """The ``KernelView`` for ``backend`` (``accel``, ``mmap`` or ``libvmi``)."""
    if backend == "accel":
        return AccelKernel(ram_path, symbols, guest)
    if backend == "mmap":
        return GuestKernel(ram_path, symbols, guest)
    if backend == "libvmi":
        return LibvmiKernel(ram_path, files, symbols, guest)
    raise IntrospectError(f"unknown sampler backend {backend!r}; use one of {', '.join(BACKENDS)}")
