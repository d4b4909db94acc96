"""Recover the kernel symbol table from the kallsyms tables inside vmlinux.

The tables (``kallsyms_token_table``/``_token_index``, ``_names``, ``_markers``,
``_num_syms``, ``_offsets`` + ``_relative_base``) have no ELF symbols in a stripped
vmlinux, so they are found by their shape:

1. the token table holds the digits ``"0".."9"`` as one-character tokens at indices
   0x30..0x39, and is followed by ``kallsyms_token_index`` (256 u16 offsets);
2. ``kallsyms_markers`` is a run of increasing offsets starting at 0 somewhere before
   the token table -- right before it, or before ``kallsyms_seqs_of_names`` (6.1.19x
   stable kernels and 6.2+), so the gap is not assumed;
3. ``kallsyms_num_syms`` precedes the names; a candidate is accepted only when decoding
   that many names ends at the markers and hits every marker;
4. the offsets table is tried before ``num_syms`` (<= 6.3) and after the token index
   (6.4+); the decoded addresses must be sorted.

``parse_kallsyms(elf)`` returns a ``Kallsyms`` with names, addresses and type letters.
Per-CPU symbols (type ``'A'`` with absolute per-CPU kallsyms) are section offsets, not
addresses: they must not be shifted by KASLR.
"""

from __future__ import annotations

import bisect
import logging
import struct
from array import array
from dataclasses import dataclass, field

from .errors import KallsymsError
from .kernel_image import ElfImage

log = logging.getLogger(__name__)

_DIGITS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")
_MIN_NAME_BYTES, _MAX_NAME_BYTES = 2, 300  # compressed bytes per entry incl. length


@dataclass
class Layout:
    """Where each table was found (offsets in the searched blob)."""

    token_table: int
    token_index: int
    markers: int
    marker_size: int
    num_markers: int
    num_syms_at: int
    names: int
    offsets: int
    relative_base_at: int
    seqs_gap: int  # bytes between markers end and token table (seqs_of_names + padding)


@dataclass
class Kallsyms:
    """The decoded symbol table, in kallsyms order (sorted by address)."""

    names: list[str]
    addresses: list[int]
    types: str
    layout: Layout | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        """name -> position; the first occurrence wins for duplicated local names."""
        if not self._index:
            idx: dict[str, int] = {}
            for i, name in enumerate(self.names):
                idx.setdefault(name, i)
            # prefer global symbols over static ones of the same name
            for i, name in enumerate(self.names):
                if self.types[i].isupper() and not self.types[idx[name]].isupper():
                    idx[name] = i
            self._index = idx
        return self._index

    def address(self, name: str) -> int:
        try:
            return self.addresses[self.index()[name]]
        except KeyError:
            raise KallsymsError(f"symbol {name!r} not in kallsyms") from None

    def type_of(self, name: str) -> str:
        return self.types[self.index()[name]]

    def is_percpu(self, name: str) -> bool:
        return self.type_of(name) == "A"

    def next_address(self, address: int) -> int | None:
        """The smallest symbol address greater than ``address`` (for sizing arrays)."""
        i = bisect.bisect_right(self.sorted_addresses, address)
        return self.sorted_addresses[i] if i < len(self.sorted_addresses) else None

    @property
    def sorted_addresses(self) -> list[int]:
        cached = getattr(self, "_sorted", None)
        if cached is None:
            cached = self._sorted = sorted(set(self.addresses))
        return cached


def parse_kallsyms(elf: ElfImage | bytes) -> Kallsyms:
    """Find and decode the kallsyms tables of ``elf`` (an ElfImage or a raw blob).

    For an ElfImage the ``.rodata`` section is searched; for raw bytes the whole blob.
    """
    if isinstance(elf, ElfImage):
        sec = elf.sections.get(".rodata")
        if sec is None:
            raise KallsymsError(f"{elf.name}: no .rodata section")
        blob, where = memoryview(elf.data)[sec.offset:sec.offset + sec.size], elf.name
    else:
        blob, where = memoryview(elf), "<blob>"
    data = blob.obj if isinstance(blob.obj, bytes) and len(blob) == len(blob.obj) else bytes(blob)
    tokens, t_table, t_index = _find_token_table(data, where)
    for m_start, m_size, markers in _marker_candidates(data, t_table):
        found = _find_names(data, m_start, markers, tokens)
        if found is None:
            continue
        num_at, names_at, names, types = found
        n = len(names)
        addrs = _find_addresses(data, num_at, t_index + 512, n)
        if addrs is None:
            continue
        addresses, off_at, rb_at = addrs
        layout = Layout(t_table, t_index, m_start, m_size, len(markers), num_at, names_at,
                        off_at, rb_at, t_table - (m_start + m_size * len(markers)))
        log.debug("%s: kallsyms layout %s", where, layout)
        return Kallsyms(names, addresses, types, layout)
    raise KallsymsError(
        f"{where}: kallsyms tables not recognised (token table at {t_table:#x}, "
        f"no markers/num_syms/offsets combination decodes consistently)")


def _find_token_table(data: bytes, where: str) -> tuple[list[bytes], int, int]:
    """(tokens, token_table offset, token_index offset)."""
    pos, seen = -1, 0
    while True:
        pos = data.find(_DIGITS, pos + 1)
        if pos < 0:
            raise KallsymsError(
                f"{where}: no kallsyms token table (digit tokens found {seen} times, "
                "never followed by a matching token index)" if seen else
                f"{where}: no kallsyms token table (digit tokens not found)")
        seen += 1
        rel, q = [], pos
        try:
            for _ in range(256 - 0x30):
                rel.append(q - pos)
                q = data.index(b"\0", q) + 1
        except ValueError:
            continue
        for pad in range(16):
            ti = q + pad
            if ti + 512 > len(data):
                break
            idx = struct.unpack_from("<256H", data, ti)
            if idx[0] != 0 or any(idx[0x30 + k] - idx[0x30] != r for k, r in enumerate(rel)):
                continue
            start = pos - idx[0x30]
            if start < 0 or any(idx[i] >= idx[i + 1] for i in range(255)):
                continue
            tokens = []
            for off in idx:
                end = data.index(b"\0", start + off)
                tokens.append(data[start + off:end])
            return tokens, start, ti


def _marker_candidates(data: bytes, t_table: int, window: int = 8 << 20):
    """Yield (start, element size, markers) runs before the token table, longest first."""
    cands = []
    for size, code in ((4, "I"), (8, "Q")):
        lo = max(0, t_table - window)
        lo -= lo % size
        hi = t_table - (t_table - lo) % size
        vals = array(code, data[lo:hi])
        n = len(vals)
        i = n - 1
        while i >= 0:
            if vals[i] == 0:
                j = i
                while (j + 1 < n and _MIN_NAME_BYTES * 256 <= vals[j + 1] - vals[j]
                       <= _MAX_NAME_BYTES * 256):
                    j += 1
                cands.append((j - i + 1, lo + i * size, size, list(vals[i:j + 1])))
            i -= 1
    cands.sort(key=lambda c: (-c[0], -c[1]))
    for _, start, size, markers in cands:
        yield start, size, markers


def _decode_names(data: bytes, start: int, count: int, tokens: list[bytes],
                  markers: list[int] | None = None, limit: int | None = None):
    """Decode ``count`` compressed names at ``start``; None when inconsistent."""
    out, pos = [], start
    end_limit = len(data) if limit is None else limit
    for k in range(count):
        if markers is not None and k % 256 == 0:
            mk = k // 256
            if mk >= len(markers) or markers[mk] != pos - start:
                return None
        if pos >= end_limit:
            return None
        length = data[pos]
        pos += 1
        if length & 0x80:
            length = (length & 0x7F) | (data[pos] << 7)
            pos += 1
        if length == 0 or pos + length > end_limit:
            return None
        out.append(b"".join([tokens[c] for c in data[pos:pos + length]]))
        pos += length
    return out, pos


def _find_names(data: bytes, m_start: int, markers: list[int], tokens: list[bytes]):
    """Locate num_syms + names ending at the markers; (num_at, names_at, names, types)."""
    m = len(markers)
    lo_n, hi_n = 256 * (m - 1) + 1, 256 * m
    max_len = markers[-1] + 256 * _MAX_NAME_BYTES + 16
    q = m_start - 4
    q -= q % 4
    stop = max(0, m_start - max_len)
    while q >= stop:
        n, = struct.unpack_from("<I", data, q)
        if lo_n <= n <= hi_n:
            for names_at in (q + 4, q + 8):
                if names_at + markers[-1] >= m_start:
                    continue
                got = _decode_names(data, names_at, n, tokens, markers, m_start)
                if got is None:
                    continue
                raw, end = got
                if m_start - end >= 16 or not all(raw):
                    continue
                types = "".join(chr(r[0]) for r in raw)
                names = [r[1:].decode("ascii", "replace") for r in raw]
                return q, names_at, names, types
        q -= 4
    return None


def _find_addresses(data: bytes, num_at: int, index_end: int, n: int):
    """(addresses, offsets_at, relative_base_at) from the offsets table, or None."""
    cands = []
    rb = num_at - 8 - (num_at % 8)
    for rb_at in {rb, num_at - 8, num_at - 4}:  # <= 6.3: offsets, relative_base, num_syms
        for gap in (0, 4):
            cands.append((rb_at - 4 * n - gap, rb_at))
    off_at = index_end + (-index_end) % 8  # 6.4+: ... token_index, offsets, relative_base
    end = off_at + 4 * n
    cands.append((off_at, end + (-end) % 8))
    for off_at, rb_at in cands:
        if off_at < 0 or rb_at + 8 > len(data):
            continue
        base, = struct.unpack_from("<Q", data, rb_at)
        if base < 0xFFFF800000000000 and base >= 1 << 32:
            continue
        offs = array("i", data[off_at:off_at + 4 * n])
        absolute_percpu = any(o < 0 for o in offs)
        if absolute_percpu:
            addrs = [o if o >= 0 else base - 1 - o for o in offs]
        else:
            addrs = [base + (o & 0xFFFFFFFF) for o in offs]
        if all(addrs[i] <= addrs[i + 1] for i in range(n - 1)):
            return addrs, off_at, rb_at
    # no base-relative table: absolute u64 kallsyms_addresses before num_syms
    for gap in (0, 4):
        start = num_at - 8 * n - gap
        if start >= 0:
            addrs = list(array("Q", data[start:start + 8 * n]))
            if addrs and addrs[-1] >= 0xFFFF800000000000 and all(
                    addrs[i] <= addrs[i + 1] for i in range(n - 1)):
                return addrs, start, -1
    return None
