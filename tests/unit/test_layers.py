"""Address translation on crafted memory: q35 layout, 4- and 5-level walks, large pages, errors."""

from __future__ import annotations

import struct

import pytest

from vmroc.introspect.features import task_state
from vmroc.introspect.layers import FOUR_GIB, AddressError, KernelSpace, RamFile

MiB = 1 << 20


def ram_file(tmp_path, size: int, writes: dict[int, bytes] | None = None):
    path = tmp_path / "guest.ram"
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: costs no disk
        for off, data in (writes or {}).items():
            f.seek(off)
            f.write(data)
    return RamFile(path)


def test_small_guest_file_offset_is_physical_address(tmp_path):
    ram = ram_file(tmp_path, 256 * MiB, {0x1234: b"marker"})
    assert ram.read(0x1234, 6) == b"marker"
    with pytest.raises(AddressError, match=r"physical address 0x10000000: outside guest RAM"):
        ram.read(256 * MiB, 1)


def test_q35_split_above_2816_mib(tmp_path):
    ram = ram_file(tmp_path, 3072 * MiB, {2048 * MiB: b"high", 2047 * MiB: b"low!"})
    assert ram.low == 2048 * MiB and ram.high == 1024 * MiB
    assert ram.read(FOUR_GIB, 4) == b"high"  # file offset 2 GiB is guest physical 4 GiB
    assert ram.read(2047 * MiB, 4) == b"low!"
    with pytest.raises(AddressError, match="physical address 0x80000000"):
        ram.read(2048 * MiB, 4)  # the PCI hole below 4 GiB is not RAM
    assert ram.find(b"high", 2048 * MiB - 64) == FOUR_GIB


def test_2816_mib_is_not_split_yet(tmp_path):
    ram = ram_file(tmp_path, 2815 * MiB)
    assert ram.high == 0 and ram.low == 2815 * MiB


def _entry(addr: int, large: bool = False) -> bytes:
    return struct.pack("<Q", addr | 0x3 | (0x80 if large else 0))


def test_four_level_walk_with_4k_and_2m_pages(tmp_path):
    vaddr = 0xFFFF_C900_0012_3456
    idx = [(vaddr >> s) & 0x1FF for s in (39, 30, 21, 12)]
    pml4, pdpt, pd, pt, page = 0x1000, 0x2000, 0x3000, 0x4000, 0x80_0000
    big_v = 0xFFFF_C900_0040_0000 + 0x1234  # next 2 MiB slot of the same PD
    writes = {
        pml4 + idx[0] * 8: _entry(pdpt), pdpt + idx[1] * 8: _entry(pd),
        pd + idx[2] * 8: _entry(pt), pt + idx[3] * 8: _entry(page),
        page + 0x456: b"found",
        pd + ((big_v >> 21) & 0x1FF) * 8: _entry(0x60_0000, large=True),
        0x60_0000 + 0x1234: b"large",
    }
    ram = ram_file(tmp_path, 16 * MiB, writes)
    space = KernelSpace(ram, pml4, phys_base=0)
    assert space.read(vaddr, 5) == b"found"
    assert space.read(big_v, 5) == b"large"
    with pytest.raises(AddressError,
                       match=r"kernel-virtual address 0xffffc90000a00000: not present"):
        space.read(0xFFFF_C900_00A0_0000, 8)


def test_five_level_walk_and_1g_pages(tmp_path):
    """LA57 guests add a PML5 level on top; a 1 GiB page ends the walk at the PDPT."""
    vaddr = 0xFF11_2233_4455_6789  # a 57-bit canonical kernel address
    idx = [(vaddr >> s) & 0x1FF for s in (48, 39, 30, 21, 12)]
    pml5, pml4, pdpt, pd, pt, page = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000
    giga_v = (vaddr & ~((1 << 39) - 1)) | ((idx[2] ^ 1) << 30) | 0x12_3456
    writes = {
        pml5 + idx[0] * 8: _entry(pml4), pml4 + idx[1] * 8: _entry(pdpt),
        pdpt + idx[2] * 8: _entry(pd), pd + idx[3] * 8: _entry(pt),
        pt + idx[4] * 8: _entry(page), page + 0x789: b"five",
        pdpt + (idx[2] ^ 1) * 8: _entry(0x4000_0000, large=True),
    }
    ram = ram_file(tmp_path, 1024 * MiB + 2 * MiB,
                   {**writes, 0x4000_0000 + 0x12_3456: b"giga"})
    space = KernelSpace(ram, pml5, phys_base=0, la57=True)
    assert space.read(vaddr, 4) == b"five"
    assert space.read(giga_v, 4) == b"giga"
    four = KernelSpace(ram, pml5, phys_base=0)  # the same tables read as 4-level miss
    with pytest.raises(AddressError, match="not present"):
        four.read(vaddr, 4)


def test_direct_map_and_kernel_image_need_no_walk(tmp_path):
    ram = ram_file(tmp_path, 64 * MiB, {0x20_0000: b"text", 0x1000: b"dmap"})
    space = KernelSpace(ram, page_table=0, phys_base=0x20_0000 - 0x100_0000,
                        page_offset=0xFFFF_8880_0000_0000)
    assert space.read(0xFFFF_8880_0000_1000, 4) == b"dmap"
    assert space.read(0xFFFF_FFFF_8100_0000, 4) == b"text"  # _text at phys_base + 16 MiB


def test_read_across_a_page_boundary(tmp_path):
    ram = ram_file(tmp_path, 16 * MiB, {0x1FFE: b"abcd"})
    space = KernelSpace(ram, 0, 0, page_offset=0xFFFF_8880_0000_0000)
    assert space.read(0xFFFF_8880_0000_1FFE, 4) == b"abcd"


@pytest.mark.parametrize("state,exit_state,letter", [
    (0, 0, "R"), (1, 0, "S"), (0x2001, 0, "S"), (2, 0, "D"), (0x402, 0, "I"),
    (4, 0, "T"), (8, 0, "t"), (0, 0x20, "Z"), (0x80, 0x10, "X")])
def test_task_state_letters_match_proc(state, exit_state, letter):
    assert task_state(state, exit_state) == letter
