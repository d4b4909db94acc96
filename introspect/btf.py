"""Parse BTF (the kernel's compact type format) from ``.BTF`` sections.

``parse_btf(data)`` reads vmlinux's BTF; ``parse_btf(data, base=vmlinux_btf)`` reads a
module's *split* BTF, whose type ids and string offsets continue from the base.
Every kind up to ENUM64 is decoded. ``kind_flag`` means: bitfield-encoded member
offsets on STRUCT/UNION, signed values on ENUM/ENUM64, a union on FWD.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

from .errors import BTFError

log = logging.getLogger(__name__)

BTF_MAGIC = 0xEB9F

# kinds (include/uapi/linux/btf.h)
UNKN, INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, \
    FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(20)
KIND_NAMES = ("void", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef",
              "volatile", "const", "restrict", "func", "func_proto", "var", "datasec",
              "float", "decl_tag", "type_tag", "enum64")
# kinds that only qualify or rename another type
QUALIFIERS = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


@dataclass(slots=True)
class Member:
    """A struct/union member; ``bitfield_size`` is 0 for ordinary members."""

    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0


@dataclass(slots=True)
class BtfType:
    """One BTF type. Fields not meaningful for a kind keep their default."""

    id: int
    kind: int
    name: str
    kind_flag: bool = False
    size: int = 0          # INT, STRUCT, UNION, ENUM, ENUM64, DATASEC, FLOAT
    type: int = 0          # PTR, TYPEDEF, qualifiers, FUNC, FUNC_PROTO (return), VAR,
                           # DECL_TAG, ARRAY (elem)
    members: list = field(default_factory=list)
    # INT: (encoding, bit offset, bits); ARRAY: nelems; VAR: linkage; DECL_TAG: component index
    extra: object = None

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def is_union(self) -> bool:
        return self.kind == UNION or (self.kind == FWD and self.kind_flag)

    @property
    def signed(self) -> bool:
        """Signedness of an INT or ENUM/ENUM64."""
        if self.kind == INT:
            return bool(self.extra[0] & INT_SIGNED)
        return self.kind_flag


class Btf:
    """A parsed BTF blob; ``types[id]`` is the type with that id (0 is void)."""

    def __init__(self, types: list[BtfType], str_len: int, first_id: int, name: str,
                 base_strings: bytes = b""):
        self.types = types
        self.base_strings = base_strings  # the string section of the base (vmlinux) blob
        self.str_len = str_len        # total string bytes incl. the base's (for split BTF)
        self.first_id = first_id      # first id defined by this blob
        self.name = name
        self._by_name: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.types)

    def __getitem__(self, type_id: int) -> BtfType:
        try:
            return self.types[type_id]
        except IndexError:
            raise BTFError(f"{self.name}: type id {type_id} out of range") from None

    @property
    def own_types(self) -> list[BtfType]:
        """Types defined by this blob (not the base's)."""
        return self.types[self.first_id:]

    def find(self, name: str, kinds: tuple[int, ...] = (STRUCT, UNION)) -> BtfType:
        """The first type named ``name`` of one of ``kinds``."""
        if self._by_name is None:
            by_name: dict[str, list[int]] = {}
            for t in self.types:
                if t.name:
                    by_name.setdefault(t.name, []).append(t.id)
            self._by_name = by_name
        for tid in self._by_name.get(name, ()):
            if self.types[tid].kind in kinds:
                return self.types[tid]
        raise BTFError(f"{self.name}: no {'/'.join(KIND_NAMES[k] for k in kinds)} named {name!r}")

    def resolve(self, type_id: int) -> BtfType:
        """Skip typedefs and qualifiers."""
        t = self[type_id]
        for _ in range(64):
            if t.kind not in QUALIFIERS:
                return t
            t = self[t.type]
        raise BTFError(f"{self.name}: qualifier loop at type id {type_id}")

    def size_of(self, type_id: int) -> int:
        """Size in bytes of a type (pointers are 8)."""
        t = self.resolve(type_id)
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY:
            return t.extra * self.size_of(t.type)
        return t.size


def parse_btf(data: bytes, base: Btf | None = None, name: str = "vmlinux") -> Btf:
    """Parse a ``.BTF`` section; with ``base``, as split BTF continuing ``base``."""
    if len(data) < 24:
        raise BTFError(f"{name}: BTF blob too short ({len(data)} bytes)")
    magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != BTF_MAGIC:
        raise BTFError(f"{name}: bad BTF magic {magic:#x} (want {BTF_MAGIC:#x})")
    if version != 1:
        raise BTFError(f"{name}: BTF version {version} not supported")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    t0, s0 = hdr_len + type_off, hdr_len + str_off
    if t0 + type_len > len(data) or s0 + str_len > len(data):
        raise BTFError(f"{name}: BTF sections exceed the blob ({len(data)} bytes)")
    strings = data[s0:s0 + str_len]
    base_str = base.str_len if base else 0
    base_types = base.types if base else []
    base_strings = base.base_strings if base else b""

    cache: dict[int, str] = {}

    def string(off: int) -> str:
        s = cache.get(off)
        if s is None:
            if off >= base_str:
                buf, o = strings, off - base_str
            else:
                buf, o = base_strings, off
            if o >= len(buf):
                raise BTFError(f"{name}: string offset {off} out of range")
            s = cache[off] = buf[o:buf.index(b"\0", o)].decode("utf-8", "replace")
        return s

    types: list[BtfType] = list(base_types) if base else [BtfType(0, UNKN, "void")]
    first_id = len(types)
    unpack3 = struct.Struct("<III").unpack_from
    pos, end = t0, t0 + type_len
    while pos < end:
        tid = len(types)
        if pos + 12 > end:
            raise BTFError(f"{name}: truncated type header of id {tid} at offset {pos - t0}")
        name_off, info, size_or_type = unpack3(data, pos)
        pos += 12
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        t = BtfType(tid, kind, string(name_off) if name_off else "", kflag)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, DATASEC, FLOAT):
            t.size = size_or_type
        else:
            t.type = size_or_type
        if kind == INT:
            enc, = struct.unpack_from("<I", data, pos)
            pos += 4
            t.extra = ((enc >> 24) & 0x0F, (enc >> 16) & 0xFF, enc & 0xFF)
        elif kind == ARRAY:
            t.type, _index_type, t.extra = unpack3(data, pos)
            pos += 12
        elif kind in (STRUCT, UNION):
            mem = []
            for i in range(vlen):
                m_name, m_type, m_off = unpack3(data, pos + 12 * i)
                if kflag:
                    mem.append(Member(string(m_name) if m_name else "", m_type,
                                      m_off & 0xFFFFFF, m_off >> 24))
                else:
                    mem.append(Member(string(m_name) if m_name else "", m_type, m_off))
            t.members = mem
            pos += 12 * vlen
        elif kind == ENUM:
            fmt = "<Ii" if kflag else "<II"
            t.members = [(string(n), v) for n, v in
                         (struct.unpack_from(fmt, data, pos + 8 * i) for i in range(vlen))]
            pos += 8 * vlen
        elif kind == ENUM64:
            vals = []
            for i in range(vlen):
                n, lo, hi = unpack3(data, pos + 12 * i)
                v = lo | (hi << 32)
                if kflag and v >= 1 << 63:
                    v -= 1 << 64
                vals.append((string(n), v))
            t.members = vals
            pos += 12 * vlen
        elif kind == FUNC_PROTO:
            t.members = [(string(n) if n else "", ty) for n, ty in
                         (struct.unpack_from("<II", data, pos + 8 * i) for i in range(vlen))]
            pos += 8 * vlen
        elif kind == VAR:
            t.extra, = struct.unpack_from("<I", data, pos)
            pos += 4
        elif kind == DATASEC:
            t.members = [unpack3(data, pos + 12 * i) for i in range(vlen)]
            pos += 12 * vlen
        elif kind == DECL_TAG:
            t.extra, = struct.unpack_from("<i", data, pos)
            pos += 4
        elif kind in (UNKN,) or kind > ENUM64:
            raise BTFError(f"{name}: unknown BTF kind {kind} for type id {tid} "
                           f"at offset {pos - 12 - t0}")
        types.append(t)
    if pos != end:
        raise BTFError(f"{name}: type section overran by {pos - end} bytes")
    btf = Btf(types, base_str + str_len, first_id, name,
              strings if base is None else base_strings)
    log.debug("%s: %d BTF types (%d own)", name, len(types), len(types) - first_id)
    return btf
