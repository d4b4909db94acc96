"""Memory layers: guest physical memory from the RAM file, kernel virtual memory on top.

``RamFile`` maps the shared RAM file read-only and applies QEMU's q35 layout: below
2816 MiB of RAM, file offset == guest physical address; from 2816 MiB up, the first
2 GiB sit at 0-2 GiB and the rest at guest physical 4 GiB onward (file offset 2 GiB).
``KernelSpace`` translates kernel virtual addresses: the direct map and the kernel
image by arithmetic, anything else by walking the 4- or 5-level page tables.
Every bad address raises ``AddressError`` naming the layer and the address.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from .errors import IntrospectError

Q35_LOWMEM_LIMIT = 0xB000_0000  # RAM at or above this size is split
Q35_LOWMEM_SPLIT = 0x8000_0000  # ... keeping 2 GiB below 4 GiB
FOUR_GIB = 1 << 32
PAGE = 4096
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
KERNEL_IMAGE_END = 0xFFFF_FFFF_C000_0000  # modules start here
PTE_ADDR = 0x000F_FFFF_FFFF_F000
_U64 = struct.Struct("<Q")


class AddressError(IntrospectError):
    """An address is unmapped or outside guest RAM; names the layer and the address."""

    def __init__(self, layer: str, address: int, why: str = "not mapped"):
        super().__init__(f"{layer} address {address:#x}: {why}")
        self.layer = layer
        self.address = address


class RamFile:
    """Guest physical memory: the guest's shared RAM file, mapped read-only."""

    name = "physical"

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise IntrospectError(f"cannot open guest RAM file {self.path}: "
                                  f"{exc.strerror}") from exc
        try:
            self.size = os.fstat(fd).st_size
            if self.size < (16 << 20):
                raise IntrospectError(f"{self.path} is {self.size} bytes: too small to be "
                                      "guest RAM")
            self.mm = mmap.mmap(fd, self.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.low = Q35_LOWMEM_SPLIT if self.size >= Q35_LOWMEM_LIMIT else self.size
        self.high = self.size - self.low

    def offset(self, paddr: int, length: int = 1) -> int:
        """File offset of guest physical ``paddr`` (the range must not cross a hole)."""
        if 0 <= paddr and paddr + length <= self.low:
            return paddr
        if FOUR_GIB <= paddr and paddr + length <= FOUR_GIB + self.high:
            return paddr - FOUR_GIB + self.low
        raise AddressError(self.name, paddr,
                           f"outside guest RAM ({self.size >> 20} MiB, q35 layout)")

    def read(self, paddr: int, length: int) -> bytes:
        off = self.offset(paddr, length)
        return self.mm[off:off + length]

    def u64(self, paddr: int) -> int:
        return _U64.unpack_from(self.mm, self.offset(paddr, 8))[0]

    def find(self, needle: bytes, start: int = 0) -> int:
        """Guest physical address of the first ``needle`` at or after file offset ``start``."""
        off = self.mm.find(needle, start)
        if off < 0:
            return -1
        return off if off < self.low else off - self.low + FOUR_GIB

    def close(self) -> None:
        self.mm.close()


class KernelSpace:
    """Kernel virtual memory of one guest, translated onto its ``RamFile``."""

    name = "kernel-virtual"

    def __init__(self, ram: RamFile, page_table: int, phys_base: int, la57: bool = False,
                 page_offset: int | None = None):
        self.ram = ram
        self.page_table = page_table  # physical address of the top-level table
        self.phys_base = phys_base
        self.la57 = la57
        self.page_offset = page_offset  # start of the direct map, once known
        self._tlb: dict[int, int] = {}
        # the direct map covers guest RAM only; vmalloc space starts >= 10 TiB above it
        self._direct_end = FOUR_GIB + ram.high if ram.high else ram.low

    def flush(self) -> None:
        """Forget cached page-table walks (call once per sample)."""
        self._tlb.clear()

    def translate(self, vaddr: int) -> int:
        """Guest physical address of kernel virtual ``vaddr``."""
        if self.page_offset is not None and 0 <= vaddr - self.page_offset < self._direct_end:
            return vaddr - self.page_offset
        if START_KERNEL_MAP <= vaddr < KERNEL_IMAGE_END:
            return vaddr - START_KERNEL_MAP + self.phys_base
        page = vaddr & ~(PAGE - 1)
        base = self._tlb.get(page)
        if base is None:
            base = self._tlb[page] = self.walk(page)
        return base + (vaddr & (PAGE - 1))

    def walk(self, vaddr: int) -> int:
        """Walk the page tables for ``vaddr`` (no shortcuts, no cache)."""
        shifts = (48, 39, 30, 21, 12) if self.la57 else (39, 30, 21, 12)
        table = self.page_table
        for level, shift in enumerate(shifts):
            try:
                entry = self.ram.u64(table + ((vaddr >> shift) & 0x1FF) * 8)
            except AddressError as exc:
                raise AddressError(self.name, vaddr,
                                   f"page table at {table:#x} outside RAM") from exc
            if not entry & 1:
                raise AddressError(self.name, vaddr, f"not present (level {len(shifts) - level})")
            if shift in (30, 21) and entry & 0x80:  # 1 GiB or 2 MiB page
                mask = (1 << shift) - 1
                return (entry & PTE_ADDR & ~mask) | (vaddr & mask)
            table = entry & PTE_ADDR
        return table | (vaddr & (PAGE - 1))

    def read(self, vaddr: int, length: int) -> bytes:
        """``length`` bytes at ``vaddr``, split at page boundaries as needed."""
        first = PAGE - (vaddr & (PAGE - 1))
        if length <= first:
            return self.ram.read(self.translate(vaddr), length)
        parts = []
        while length > 0:
            n = min(length, PAGE - (vaddr & (PAGE - 1)))
            parts.append(self.ram.read(self.translate(vaddr), n))
            vaddr += n
            length -= n
        return b"".join(parts)

    def u64(self, vaddr: int) -> int:
        if vaddr & 7 == 0:
            return self.ram.u64(self.translate(vaddr))
        return _U64.unpack(self.read(vaddr, 8))[0]
