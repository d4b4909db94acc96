"""One running guest kernel: its RAM file, its symbols, KASLR, and typed reads.

``GuestKernel(ram_path, symbols)`` finds the KASLR offset and the page-table root in
guest RAM (the VMCOREINFO note; without it, the banner plus a page-table probe),
checks the running kernel's banner against the symbol table, and then reads kernel
variables and struct members by name::

    k = GuestKernel(guest.ram_path, SymbolTable.load(files.isf))
    k.u64(k.sym("jiffies_64"))
    k.off("task_struct", "comm")
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from .errors import IntrospectError
from .layers import START_KERNEL_MAP, AddressError, KernelSpace, RamFile
from .symbols import SymbolTable

log = logging.getLogger(__name__)

KASLR_ALIGN = 0x20_0000  # CONFIG_PHYSICAL_ALIGN: virtual KASLR offsets are 2 MiB multiples
KASLR_MAX = 1 << 30


class KernelMismatchError(IntrospectError):
    """The symbol table does not describe the kernel running in the guest."""


class NotAGuestError(IntrospectError):
    """The RAM file does not hold a Linux kernel vmroc can find."""


def vmcoreinfo_notes(ram: RamFile) -> Iterator[dict[str, str]]:
    """Every VMCOREINFO note in guest RAM, in address order. A guest that rebooted or
    was relaunched on the same RAM file may still hold its previous kernel's note."""
    start = 0
    while True:
        at = ram.mm.find(b"\nKERNELOFFSET=", start)
        if at < 0:
            return
        start = at + 1
        head = ram.mm.rfind(b"OSRELEASE=", max(0, at - 4096), at)
        if head < 0:
            continue
        end = ram.mm.find(b"\0", at, at + 4096)
        text = ram.mm[head:end if end > 0 else at + 4096].decode("ascii", "replace")
        info = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if "SYMBOL(init_top_pgt)" in info and "NUMBER(phys_base)" in info:
            yield info


def find_vmcoreinfo(ram: RamFile) -> dict[str, str] | None:
    """The kernel's VMCOREINFO note as a dict, found by scanning guest RAM."""
    return next(vmcoreinfo_notes(ram), None)


def _layout(info: dict[str, str]) -> tuple[int, int, int, bool]:
    """KASLR offset, phys_base, page-table root and LA57 from a VMCOREINFO note."""
    phys_base = int(info["NUMBER(phys_base)"])
    top = int(info["SYMBOL(init_top_pgt)"], 16) - START_KERNEL_MAP + phys_base
    return (int(info["KERNELOFFSET"], 16), phys_base, top,
            info.get("NUMBER(pgtable_l5_enabled)") == "1")


class KernelView:
    """Typed reads by symbol and member name; subclasses provide ``read`` and ``sym``.

    Set by subclasses: ``guest``, ``symbols``, ``nr_cpus``, ``per_cpu_offset``.
    """

    guest: str
    symbols: SymbolTable
    nr_cpus: int
    per_cpu_offset: list[int]

    def read(self, vaddr: int, length: int) -> bytes:
        raise NotImplementedError

    def sym(self, name: str) -> int:
        """Runtime address of a global kernel symbol (KASLR applied)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Drop cached translations before a new sample."""

    def percpu(self, name: str, cpu: int) -> int:
        """Address of per-CPU variable ``name`` on ``cpu``."""
        return self.symbols.address(name) + self.per_cpu_offset[cpu]

    @lru_cache(maxsize=None)
    def off(self, type_name: str, member: str) -> int:
        """Offset of ``member`` (dotted path allowed) in struct ``type_name``."""
        return self.symbols.offset(type_name, member)

    @lru_cache(maxsize=None)
    def size(self, type_name: str) -> int:
        return self.symbols.size(type_name)

    @lru_cache(maxsize=None)
    def enum(self, name: str) -> dict[str, int]:
        return self.symbols.enum(name)

    def u64(self, vaddr: int) -> int:
        return struct.unpack("<Q", self.read(vaddr, 8))[0]

    def s64(self, vaddr: int) -> int:
        return struct.unpack("<q", self.read(vaddr, 8))[0]

    def u32(self, vaddr: int) -> int:
        return struct.unpack("<I", self.read(vaddr, 4))[0]

    def s32(self, vaddr: int) -> int:
        return struct.unpack("<i", self.read(vaddr, 4))[0]

    def u16(self, vaddr: int) -> int:
        return struct.unpack("<H", self.read(vaddr, 2))[0]

    def u64s(self, vaddr: int, count: int) -> tuple[int, ...]:
        return struct.unpack(f"<{count}Q", self.read(vaddr, 8 * count))

    def cstring(self, vaddr: int, limit: int = 64) -> str:
        return self.read(vaddr, limit).split(b"\0", 1)[0].decode("utf-8", "replace")

    def _load_percpu_offsets(self) -> None:
        self.nr_cpus = self.u32(self.sym("nr_cpu_ids"))
        if not 0 < self.nr_cpus <= 8192:
            raise KernelMismatchError(f"guest {self.guest}: nr_cpu_ids reads {self.nr_cpus}")
        self.per_cpu_offset = list(self.u64s(self.sym("__per_cpu_offset"), self.nr_cpus))

    def close(self) -> None:
        pass


class GuestKernel(KernelView):
    """The direct reader: guest RAM file + our own address translation (no agent)."""

    def __init__(self, ram_path: Path | str, symbols: SymbolTable, guest: str = "",
                 use_vmcoreinfo: bool = True):
        self.guest = guest or Path(ram_path).stem
        self.symbols = symbols
        self.ram = RamFile(ram_path)
        self.log = log.getChild(self.guest)
        notes = list(vmcoreinfo_notes(self.ram)) if use_vmcoreinfo else []
        info = self._live(notes) if len(notes) > 1 else (notes[0] if notes else None)
        if info is not None:
            self.kaslr, phys_base, top, la57 = _layout(info)
            self.source = "vmcoreinfo"
        else:
            self.kaslr, phys_base, top, la57 = self._probe_by_banner()
            self.source = "banner-probe"
        self.mem = KernelSpace(self.ram, top, phys_base, la57)
        self._check_banner()
        self.mem.page_offset = self.u64(self.sym("page_offset_base"))
        self._load_percpu_offsets()
        self.log.debug("kaslr=%#x phys_base=%#x cpus=%d via %s", self.kaslr, phys_base,
                       self.nr_cpus, self.source)

    # -- finding the kernel -------------------------------------------------------
    def _live(self, notes: list[dict[str, str]], wait_s: float = 0.05) -> dict[str, str]:
        """The note of the kernel running now: the first whose ``jiffies_64`` advances,
        else (an idle tickless guest may not tick in ``wait_s``) the first whose task
        list walks back to its head, else the first whose clock reads, else the first."""
        spaces = []
        for info in notes:
            kaslr, phys_base, top, la57 = _layout(info)
            spaces.append((kaslr, KernelSpace(self.ram, top, phys_base, la57)))

        def clock(kaslr: int, space: KernelSpace) -> int | None:
            try:
                return space.u64(self.symbols.address("jiffies_64") + kaslr)
            except (AddressError, KeyError, IntrospectError):
                return None

        before = [clock(*s) for s in spaces]
        time.sleep(wait_s)
        after = [clock(*s) for s in spaces]
        ticking = [n for n, a, b in zip(notes, before, after)
                   if a is not None and b is not None and b > a]
        walking = [n for n, s, a in zip(notes, spaces, after)
                   if a is not None and not ticking and self._walks(*s)]
        readable = [n for n, a in zip(notes, after) if a is not None]
        chosen = (ticking or walking or readable or notes)[0]
        why = ("its clock ticks" if ticking else "its task list walks" if walking
               else "its clock reads" if readable else "nothing reads")
        self.log.info("%d VMCOREINFO notes in RAM (a previous boot's left behind); using "
                      "KERNELOFFSET=%s (%s)", len(notes), chosen.get("KERNELOFFSET"), why)
        return chosen

    def _walks(self, kaslr: int, space: KernelSpace, limit: int = 4096) -> bool:
        """True if ``init_task.tasks`` leads back to itself within ``limit`` steps."""
        try:
            head = self.symbols.address("init_task") + kaslr + \
                self.symbols.offset("task_struct", "tasks")
            node = space.u64(head)
            for _ in range(limit):
                if node == head:
                    return True
                node = space.u64(node)
        except (AddressError, KeyError, IntrospectError):
            return False
        return False

    def _probe_by_banner(self) -> tuple[int, int, int, bool]:
        """KASLR without VMCOREINFO: locate the banner, then test offsets on page tables."""
        banner = self.symbols.banner.encode("latin-1")
        if not banner:
            raise NotAGuestError("symbol table has no linux_banner to search for")
        link_banner = self.symbols.address("linux_banner")
        link_pgt = self.symbols.address("init_top_pgt")
        at = -1
        while True:
            at = self.ram.find(banner[:80], at + 1)
            if at < 0:
                raise NotAGuestError(f"{self.ram.path}: no kernel matching "
                                     f"{banner[:60]!r} found in guest RAM")
            delta = at - (link_banner - START_KERNEL_MAP)  # phys_base + kaslr
            if delta < 0 or delta % 0x1000:
                continue
            top = link_pgt - START_KERNEL_MAP + delta
            space = KernelSpace(self.ram, top, 0)
            for kaslr in range(0, KASLR_MAX, KASLR_ALIGN):
                try:
                    if space.walk(link_banner + kaslr) == at:
                        return kaslr, delta - kaslr, top, False
                except AddressError:
                    continue

    def _check_banner(self) -> None:
        want = self.symbols.banner.encode("latin-1")
        try:
            got = self.read(self.sym("linux_banner"), len(want) or 64)
        except AddressError as exc:
            raise KernelMismatchError(f"guest {self.guest}: linux_banner unreadable ({exc}); "
                                      "the symbols do not match the running kernel") from exc
        if want and got != want:
            running = got.split(b"\0")[0][:70].decode("latin-1")
            raise KernelMismatchError(
                f"guest {self.guest} runs {running!r} but the symbols are for "
                f"{want[:70].decode('latin-1')!r}; build them with `vmroc symbols build` "
                "from the guest's kernel image")

    def sym(self, name: str) -> int:
        return self.symbols.address(name) + self.kaslr

    def flush(self) -> None:
        self.mem.flush()

    def read(self, vaddr: int, length: int) -> bytes:
        return self.mem.read(vaddr, length)

    def u64(self, vaddr: int) -> int:
        return self.mem.u64(vaddr)

    def close(self) -> None:
        self.ram.close()
