"""BTF parsing and ISF conversion on small hand-made BTF blobs."""

import base64
import struct

import pytest

from vmroc.introspect import btf as B
from vmroc.introspect.btf import parse_btf
from vmroc.introspect.errors import BTFError
from vmroc.introspect.isf import IsfBuilder, libvmi_variant
from vmroc.introspect.kallsyms import Kallsyms
from vmroc.introspect.symbols import SymbolTable


class BtfWriter:
    """Encodes BTF the way pahole does (type ids from ``first_id``, strings from ``str_base``)."""

    def __init__(self, first_id=1, str_base=0):
        self.types = b""
        self.strings = b"" if str_base else b"\0"
        self.str_base = str_base
        self.next_id = first_id
        self._str = {}

    def s(self, text):
        if not text:
            return 0
        if text not in self._str:
            self._str[text] = self.str_base + len(self.strings)
            self.strings += text.encode() + b"\0"
        return self._str[text]

    def add(self, kind, name="", vlen=0, kflag=0, size_or_type=0, extra=b""):
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name, size, signed=False, char=False, boolean=False):
        enc = (B.INT_SIGNED if signed else 0) | (B.INT_CHAR if char else 0) | \
              (B.INT_BOOL if boolean else 0)
        return self.add(B.INT, name, size_or_type=size,
                        extra=struct.pack("<I", (enc << 24) | size * 8))

    def struct(self, name, size, members, union=False, kflag=0):
        extra = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(B.UNION if union else B.STRUCT, name, len(members), kflag, size, extra)

    def blob(self):
        hdr = struct.pack("<HBBIIIII", B.BTF_MAGIC, 1, 0, 24, 0, len(self.types),
                          len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def sample_btf():
    """A vmlinux-like blob covering every kind; returns (blob, ids)."""
    w = BtfWriter()
    ids = {}
    ids["int"] = w.int_("int", 4, signed=True)
    ids["uint"] = w.int_("unsigned int", 4)
    ids["char"] = w.int_("char", 1, signed=True, char=True)
    ids["bool"] = w.int_("_Bool", 1, boolean=True)
    ids["ulong"] = w.int_("long unsigned int", 8)
    ids["list_head"] = w.next_id
    ids["ptr_lh"] = ids["list_head"] + 1
    w.struct("list_head", 16, [("next", ids["ptr_lh"], 0), ("prev", ids["ptr_lh"], 64)])
    w.add(B.PTR, size_or_type=ids["list_head"])
    ids["arr_comm"] = w.add(B.ARRAY, extra=struct.pack("<III", ids["char"], ids["int"], 16))
    # anonymous union { int a; unsigned int b; }
    ids["anon_u"] = w.struct("", 4, [("a", ids["int"], 0), ("b", ids["uint"], 0)], union=True)
    # signed enum with a negative value, unsigned enum, enum64
    ids["enum_s"] = w.add(B.ENUM, "e_signed", 2, 1, 4,
                          struct.pack("<Ii", w.s("NEG"), -1) + struct.pack("<Ii", w.s("ONE"), 1))
    ids["enum_u"] = w.add(B.ENUM, "e_unsigned", 2, 0, 4,
                          struct.pack("<II", w.s("NR_A"), 0)
                          + struct.pack("<II", w.s("NR_ITEMS"), 3))
    ids["enum64"] = w.add(B.ENUM64, "e64", 1, 0, 8,
                          struct.pack("<III", w.s("BIG"), 0, 1))
    ids["const_int"] = w.add(B.CONST, size_or_type=ids["int"])
    ids["volatile_ulong"] = w.add(B.VOLATILE, size_or_type=ids["ulong"])
    ids["typedef_u64"] = w.add(B.TYPEDEF, "u64", size_or_type=ids["ulong"])
    ids["restrict_ptr"] = w.add(B.RESTRICT, size_or_type=ids["ptr_lh"])
    ids["type_tag"] = w.add(B.TYPE_TAG, "user", size_or_type=ids["int"])
    ids["proto"] = w.add(B.FUNC_PROTO, vlen=1, size_or_type=ids["int"],
                         extra=struct.pack("<II", w.s("x"), ids["int"]))
    ids["ptr_proto"] = w.add(B.PTR, size_or_type=ids["proto"])
    ids["func"] = w.add(B.FUNC, "do_thing", size_or_type=ids["proto"])
    ids["float"] = w.add(B.FLOAT, "double", size_or_type=8)
    ids["fwd_union"] = w.add(B.FWD, "only_declared", kflag=1)
    ids["ptr_fwd"] = w.add(B.PTR, size_or_type=ids["fwd_union"])
    # typedef struct { long long counter; } atomic64_t;
    ids["anon_atomic"] = w.struct("", 8, [("counter", ids["ulong"], 0)])
    ids["atomic64_t"] = w.add(B.TYPEDEF, "atomic64_t", size_or_type=ids["anon_atomic"])
    # task: bitfields (kind_flag), anonymous union member, arrays, pointers
    ids["task"] = w.struct("task", 64, [
        ("state", ids["volatile_ulong"], 0),
        ("flags", ids["uint"], (3 << 24) | 64),       # 3 bits at bit 64
        ("kind", ids["enum_u"], (2 << 24) | 67),      # enum bitfield at bit 67
        ("", ids["anon_u"], 96),                      # anonymous member
        ("tasks", ids["list_head"], 128),
        ("comm", ids["arr_comm"], 256),
        ("fn", ids["ptr_proto"], 384),
        ("opaque", ids["ptr_fwd"], 448),
    ], kflag=1)
    ids["arr_task"] = w.add(B.ARRAY, extra=struct.pack("<III", ids["task"], ids["int"], 2))
    ids["var_rq"] = w.add(B.VAR, "runqueues", size_or_type=ids["task"],
                          extra=struct.pack("<I", 1))
    ids["datasec"] = w.add(B.DATASEC, ".data..percpu", 1, 0, 64,
                           struct.pack("<III", ids["var_rq"], 0, 64))
    ids["decl_tag"] = w.add(B.DECL_TAG, "tag", size_or_type=ids["task"],
                            extra=struct.pack("<i", 2))
    return w, ids


def test_parse_every_kind():
    w, ids = sample_btf()
    btf = parse_btf(w.blob())
    assert len(btf) == w.next_id
    task = btf.find("task")
    assert task.size == 64 and task.kind_flag
    flags = task.members[1]
    assert (flags.name, flags.bit_offset, flags.bitfield_size) == ("flags", 64, 3)
    assert btf[ids["enum_s"]].members == [("NEG", -1), ("ONE", 1)]
    assert btf[ids["enum_s"]].signed and not btf[ids["enum_u"]].signed
    assert btf[ids["enum64"]].members == [("BIG", 1 << 32)]
    assert btf[ids["fwd_union"]].is_union
    assert btf[ids["decl_tag"]].extra == 2
    assert btf[ids["var_rq"]].extra == 1
    assert btf[ids["datasec"]].members == [(ids["var_rq"], 0, 64)]
    assert btf[ids["proto"]].members == [("x", ids["int"])]
    assert btf.resolve(ids["typedef_u64"]).name == "long unsigned int"
    assert btf.size_of(ids["arr_comm"]) == 16 and btf.size_of(ids["restrict_ptr"]) == 8


def test_split_btf_continues_ids_and_strings():
    w, ids = sample_btf()
    base = parse_btf(w.blob())
    m = BtfWriter(first_id=len(base), str_base=len(w.strings))
    priv = m.struct("virtnet_info", 24, [("list", ids["list_head"], 0),
                                         ("max_queue_pairs", ids["uint"], 128)])
    mod = parse_btf(m.blob(), base=base, name="virtio_net")
    assert mod.first_id == len(base) and priv == len(base)
    info = mod.find("virtnet_info")
    assert info.id == priv and [x.name for x in info.members] == ["list", "max_queue_pairs"]
    assert mod.resolve(info.members[0].type).name == "list_head"


def test_bad_blobs_raise_btf_error():
    w, _ = sample_btf()
    blob = bytearray(w.blob())
    with pytest.raises(BTFError, match="magic"):
        parse_btf(b"\0" * 24 + bytes(blob[24:]))
    blob[24 + 7] = 0x1F  # kind 31 in the first type's info
    with pytest.raises(BTFError, match="unknown BTF kind"):
        parse_btf(bytes(blob))
    with pytest.raises(BTFError, match="exceed"):
        parse_btf(w.blob()[:-5])


def build_isf_dict():
    w, ids = sample_btf()
    btf = parse_btf(w.blob())
    ks = Kallsyms(["runqueues", "init_task", "linux_banner", "startup_64", "avenrun", "end"],
                  [0x2F280, 0xFFFFFFFF82A1AA40, 0xFFFFFFFF82A1C000, 0xFFFFFFFF81000000,
                   0xFFFFFFFF82A20000, 0xFFFFFFFF82A20018], "ADDTDD")
    builder = IsfBuilder(btf)
    builder.add_all_types()
    import vmroc.introspect.isf as isf_mod
    saved = dict(isf_mod.SYMBOL_TYPES)
    isf_mod.SYMBOL_TYPES.clear()
    isf_mod.SYMBOL_TYPES.update({"init_task": "struct task", "avenrun": "unsigned long[]"})
    try:
        builder.add_symbols(ks, b"Linux version 6.1.0-test (x)\n")
    finally:
        isf_mod.SYMBOL_TYPES.clear()
        isf_mod.SYMBOL_TYPES.update(saved)
    return builder.isf("test"), ks


def test_isf_types_and_symbols():
    isf, _ = build_isf_dict()
    assert isf["metadata"]["format"] == "6.2.0"
    task = isf["user_types"]["task"]
    f = task["fields"]
    assert f["state"] == {"type": {"kind": "base", "name": "long unsigned int"}, "offset": 0}
    assert f["flags"]["type"] == {"kind": "bitfield", "bit_position": 0, "bit_length": 3,
                                  "type": {"kind": "base", "name": "unsigned int"}}
    assert f["flags"]["offset"] == 8
    assert f["kind"]["type"]["type"] == {"kind": "enum", "name": "e_unsigned"}
    assert f["kind"]["type"]["bit_position"] == 3
    anon = [v for k, v in f.items() if v.get("anonymous")]
    assert len(anon) == 1 and anon[0]["offset"] == 12 and anon[0]["type"]["kind"] == "union"
    assert f["comm"]["type"] == {"kind": "array", "count": 16,
                                 "subtype": {"kind": "base", "name": "char"}}
    assert f["fn"]["type"] == {"kind": "pointer", "subtype": {"kind": "function"}}
    assert isf["user_types"]["only_declared"] == {"kind": "union", "size": 0, "fields": {}}
    assert "atomic64_t" in isf["user_types"]  # anonymous struct named by its typedef
    assert isf["enums"]["e_signed"]["base"] == "int"
    assert isf["enums"]["e_unsigned"] == {"size": 4, "base": "unsigned int",
                                          "constants": {"NR_A": 0, "NR_ITEMS": 3}}
    assert isf["base_types"]["char"]["kind"] == "char"
    assert isf["base_types"]["_Bool"]["kind"] == "bool"
    assert isf["base_types"]["double"]["kind"] == "float"
    assert isf["base_types"]["pointer"]["size"] == 8
    syms = isf["symbols"]
    assert syms["runqueues"] == {"address": 0x2F280, "type": {"kind": "struct", "name": "task"}}
    assert syms["init_task"]["type"] == {"kind": "struct", "name": "task"}
    assert syms["avenrun"]["type"]["count"] == 3  # sized by the gap to the next symbol
    banner = base64.b64decode(syms["linux_banner"]["constant_data"])
    assert banner.startswith(b"Linux version 6.1")


def test_isf_validates_against_volatility_schema():
    schemas = pytest.importorskip("volatility3.schemas", reason="the [volatility] extra")
    isf, _ = build_isf_dict()
    assert schemas.validate(isf, use_cache=False)


def test_libvmi_variant_signed_addresses():
    isf, ks = build_isf_dict()
    v = libvmi_variant(isf, ks)
    assert v["symbols"]["init_task"]["address"] == 0xFFFFFFFF82A1AA40 - (1 << 64)
    assert v["symbols"]["runqueues"]["address"] == 0x2F280
    assert v["symbols"]["phys_startup_64"]["address"] == 0x1000000
    assert isf["symbols"]["init_task"]["address"] > 0  # the original is untouched


def test_symbol_table_lookups():
    isf, _ = build_isf_dict()
    st = SymbolTable(isf)
    assert st.offset("task", "a") == 12 and st.offset("task", "b") == 12  # flattened
    assert st.offset("task", "tasks.prev") == 24
    assert st.offset("task", "comm[3]") == 35
    assert st.size("task") == 64 and st.is_percpu("runqueues")
    assert not st.is_percpu("init_task")
    assert st.banner.startswith("Linux version 6.1")
    with pytest.raises(KeyError, match="no member 'nope'"):
        st.offset("task", "nope")
