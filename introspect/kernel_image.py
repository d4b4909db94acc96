"""Unpack a Linux x86 bzImage into its ELF vmlinux and read ELF sections.

``extract_vmlinux(path)`` returns the ELF bytes (an ELF input is returned as is);
``ElfImage`` gives sections by name and reads bytes at kernel virtual addresses.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import KernelImageError

log = logging.getLogger(__name__)

ELF_MAGIC = b"\x7fELF"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_LZ4_BLOCK_MAX = 8 << 20  # legacy-frame blocks decompress to at most 8 MiB


def extract_vmlinux(image: Path | bytes) -> bytes:
    """The uncompressed ELF vmlinux inside a bzImage (XZ or gzip payload)."""
    data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
    name = "<bytes>" if isinstance(image, (bytes, bytearray)) else str(image)
    if data[:4] == ELF_MAGIC:
        return bytes(data)
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise KernelImageError(f"{name}: not a bzImage (no 'HdrS' setup header) nor ELF")
    setup_sects = data[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = data[start:start + payload_length]
    if len(payload) != payload_length or not payload_length:
        raise KernelImageError(
            f"{name}: payload {payload_offset:#x}+{payload_length:#x} lies outside the file")
    try:
        if payload.startswith(_XZ_MAGIC):
            vmlinux = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(_GZIP_MAGIC):
            vmlinux = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        elif payload.startswith(_LZ4_LEGACY_MAGIC):
            vmlinux = _unlz4_legacy(payload, name)
        else:
            raise KernelImageError(
                f"{name}: payload compression {payload[:6].hex()} not supported "
                "(XZ, gzip and LZ4 are)")
    except (lzma.LZMAError, zlib.error, gzip.BadGzipFile) as exc:
        raise KernelImageError(f"{name}: payload does not decompress: {exc}") from exc
    if vmlinux[:4] != ELF_MAGIC:
        raise KernelImageError(f"{name}: decompressed payload is not ELF")
    log.debug("%s: vmlinux %d bytes", name, len(vmlinux))
    return vmlinux


def _unlz4_legacy(payload: bytes, name: str) -> bytes:
    """Decompress an LZ4 legacy frame (the kernel's ``CONFIG_KERNEL_LZ4``)."""
    try:
        import lz4.block
    except ImportError:
        return _unlz4_cli(payload, name)
    out, pos = [], 4
    while pos + 4 <= len(payload):
        size, = struct.unpack_from("<I", payload, pos)
        if size == int.from_bytes(_LZ4_LEGACY_MAGIC, "little"):
            pos += 4  # concatenated frame
            continue
        if size == 0 or pos + 4 + size > len(payload):
            break  # the trailing 4-byte uncompressed size, or the end
        try:
            out.append(lz4.block.decompress(payload[pos + 4:pos + 4 + size],
                                            uncompressed_size=_LZ4_BLOCK_MAX))
        except lz4.block.LZ4BlockError as exc:
            if out:  # trailing bytes after the last block
                break
            raise KernelImageError(f"{name}: LZ4 block at {pos:#x} is corrupt: {exc}") from exc
        pos += 4 + size
    return b"".join(out)


def _unlz4_cli(payload: bytes, name: str) -> bytes:
    import subprocess
    try:
        proc = subprocess.run(["lz4", "-dc"], input=payload, capture_output=True)
    except FileNotFoundError:
        raise KernelImageError(
            f"{name}: LZ4-compressed kernel; install the Python package `lz4` "
            "(pip install lz4) or the `lz4` tool (apt-get install lz4)") from None
    if not proc.stdout:
        raise KernelImageError(f"{name}: lz4 -dc failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@dataclass(frozen=True)
class Section:
    """One ELF section header."""

    name: str
    type: int
    addr: int
    offset: int
    size: int

    @property
    def has_bits(self) -> bool:
        return self.type != 8  # SHT_NOBITS


class ElfImage:
    """A little-endian ELF64 file held in memory (vmlinux or a ``.ko``)."""

    def __init__(self, data: bytes, name: str = "<elf>"):
        if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
            raise KernelImageError(f"{name}: not a little-endian ELF64 file")
        self.data = data
        self.name = name
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
        if not raw:
            raise KernelImageError(f"{name}: no section headers")
        strtab_off, strtab_size = raw[shstrndx][4], raw[shstrndx][5]
        strtab = data[strtab_off:strtab_off + strtab_size]
        self.sections: dict[str, Section] = {}
        for sh_name, sh_type, _flags, addr, offset, size in raw:
            end = strtab.index(b"\0", sh_name)
            sec = Section(strtab[sh_name:end].decode(), sh_type, addr, offset, size)
            self.sections.setdefault(sec.name, sec)

    @classmethod
    def from_path(cls, path: Path) -> "ElfImage":
        return cls(Path(path).read_bytes(), str(path))

    def section(self, name: str) -> bytes:
        """The bytes of section ``name``."""
        sec = self.sections.get(name)
        if sec is None:
            raise KernelImageError(f"{self.name}: no {name} section")
        return self.data[sec.offset:sec.offset + sec.size]

    def section_at(self, addr: int) -> Section | None:
        """The allocated section holding virtual address ``addr``."""
        for sec in self.sections.values():
            if sec.addr and sec.has_bits and sec.addr <= addr < sec.addr + sec.size:
                return sec
        return None

    def read(self, addr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual address ``addr``."""
        sec = self.section_at(addr)
        if sec is None or addr + size > sec.addr + sec.size:
            raise KernelImageError(f"{self.name}: address {addr:#x}+{size} not in a loaded section")
        start = sec.offset + addr - sec.addr
        return self.data[start:start + size]

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        """The NUL-terminated string at ``addr`` (without the NUL)."""
        sec = self.section_at(addr)
        if sec is None:
            raise KernelImageError(f"{self.name}: address {addr:#x} not in a loaded section")
        start = sec.offset + addr - sec.addr
        end = self.data.find(b"\0", start, min(start + limit, sec.offset + sec.size))
        if end < 0:
            raise KernelImageError(f"{self.name}: no NUL within {limit} bytes of {addr:#x}")
        return self.data[start:end]
