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
from .errors import IntrospectError
from .features import MAX_LIST
from .kernel import GuestKernel, KernelMismatchError, KernelView
from .layers import AddressError
from .symbols import SymbolFiles, SymbolTable

log = logging.getLogger(__name__)

BACKENDS = ("accel", "mmap", "libvmi", "volatility")


def default_backend() -> str:
    """``accel`` when the C module is built, else ``mmap``."""
    return "accel" if _accel.available() else "mmap"


class AccelKernel(GuestKernel):
    """``GuestKernel`` whose reads and task walk run in C.

    It finds the kernel exactly as ``GuestKernel`` does (VMCOREINFO or the banner probe,
    banner check, per-CPU offsets), then does every read in C: the same q35 layout, page
    walks and per-sample TLB as ``layers.py``, and the task walk of ``features.read_tasks``
    in one call."""

    name = "accel"

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
