"""Turn BTF types + kallsyms symbols into a volatility3 ISF (format 6.2.0).

``make_isf(...)`` returns the ISF as a dict; ``libvmi_variant(isf)`` returns the copy
LibVMI needs (``phys_startup_64`` added, kernel addresses as signed 64-bit integers
because LibVMI's bundled json-c misreads unsigned ones).

Mapping: structs/unions -> ``user_types`` (anonymous ones get ``unnamed_*`` names and
anonymous members the 6.2.0 ``"anonymous": true`` form), enums -> ``enums``, ints and
floats -> ``base_types``; typedefs and qualifiers collapse to their target. BTF has no
addresses and types only per-CPU variables, so other symbols get their type from
``SYMBOL_TYPES`` below (C-like specs resolved against BTF).
"""

from __future__ import annotations

import base64
import datetime
import logging
import re

from . import btf as B
from .btf import Btf, BtfType
from .errors import BTFError
from .kallsyms import Kallsyms

log = logging.getLogger(__name__)

ISF_FORMAT = "6.2.0"
START_KERNEL_MAP = 0xFFFFFFFF80000000  # x86_64 __START_KERNEL_map (LOAD_OFFSET)

# Symbols that need a type by hand: BTF only types per-CPU variables.
# Spec: "<type name>[ *...][[N]]"; N is a number, an enum constant, or empty (sized by
# the gap to the next symbol). Per-CPU variables found in BTF do not need an entry.
SYMBOL_TYPES: dict[str, str] = {
    "init_task": "struct task_struct",
    "init_net": "struct net",
    "init_mm": "struct mm_struct",
    "init_pid_ns": "struct pid_namespace",
    "init_uts_ns": "struct uts_namespace",
    "init_files": "struct files_struct",
    "init_fs": "struct fs_struct",
    "init_cred": "struct cred",
    "prb": "struct printk_ringbuffer *",
    "printk_rb_static": "struct printk_ringbuffer",
    "printk_rb_dynamic": "struct printk_ringbuffer",
    "log_buf": "char *",
    "log_buf_len": "u32",
    "avenrun": "unsigned long[3]",
    "jiffies_64": "u64",
    "jiffies": "unsigned long",
    "vm_zone_stat": "atomic_long_t[NR_VM_ZONE_STAT_ITEMS]",
    "vm_node_stat": "atomic_long_t[NR_VM_NODE_STAT_ITEMS]",
    "vm_numa_event": "atomic_long_t[NR_VM_NUMA_EVENT_ITEMS]",
    "vm_event_states": "struct vm_event_state",
    "kernel_cpustat": "struct kernel_cpustat",
    "kstat": "struct kernel_stat",
    "runqueues": "struct rq",
    "current_task": "struct task_struct *",
    "block_class": "struct class",
    "modules": "struct list_head",
    "module_kset": "struct kset *",
    "mod_tree": "struct mod_tree_root",
    "net_namespace_list": "struct list_head",
    "super_blocks": "struct list_head",
    "tty_drivers": "struct list_head",
    "iomem_resource": "struct resource",
    "ioport_resource": "struct resource",
    "mem_section": "struct mem_section **",
    "node_data": "struct pglist_data *[]",
    "__per_cpu_offset": "unsigned long[]",
    "vmemmap_base": "unsigned long",
    "page_offset_base": "unsigned long",
    "vmalloc_base": "unsigned long",
    "max_pfn": "unsigned long",
    "nr_cpu_ids": "unsigned int",
    "nr_threads": "int",
    "total_forks": "unsigned long",
    "pid_max": "int",
    "_totalram_pages": "atomic_long_t",
    "vm_committed_as": "struct percpu_counter",
    "__cpu_online_mask": "struct cpumask",
    "__cpu_possible_mask": "struct cpumask",
    "__cpu_present_mask": "struct cpumask",
    "mount_hashtable": "struct hlist_head *",
    "socket_file_ops": "struct file_operations",
    "sockfs_dentry_operations": "struct dentry_operations",
    "prog_idr": "struct idr",
    "keyboard_notifier_list": "struct atomic_notifier_head",
    "ftrace_ops_list": "struct ftrace_ops *",
    "ftrace_list_end": "struct ftrace_ops",
    "idt_table": "struct gate_struct[256]",
    "sys_call_table": "void *[]",
    "loops_per_jiffy": "unsigned long",
    "taint_flags": "struct taint_flag[]",
    "cap_last_cap": "int",
    "bpf_kallsyms": "struct list_head",
    "ftrace_mod_maps": "struct list_head",
    "num_registered_fb": "int",
    "registered_fb": "struct fb_info *[32]",
    "__start___tracepoints_ptrs": "tracepoint_ptr_t",
    "tk_core": "struct vmroc_tk_core",
    "_text": "char",
    "_stext": "char",
    "_etext": "char",
    "_end": "char",
}

# Variables of anonymous struct type: laid out here from their C definition
# (natural alignment), e.g. kernel/time/timekeeping.c ``static struct {...} tk_core``.
SYNTHETIC_TYPES: dict[str, list[tuple[str, str]]] = {
    "vmroc_tk_core": [("seq", "seqcount_raw_spinlock_t"), ("timekeeper", "struct timekeeper")],
}

_SPEC = re.compile(r"^\s*(?P<base>[A-Za-z_][\w ]*?)\s*(?P<ptr>[* ]*)(?:\[(?P<n>\w*)\])?\s*$")


class _Namer:
    """Stable ISF names for struct/union/enum types across vmlinux and modules."""

    def __init__(self, btfs: list[tuple[str, Btf]]):
        self.names: dict[tuple[str, int], str] = {}
        self.primary: dict[tuple[str, str], tuple[str, BtfType]] = {}  # (ns, name) -> best
        for owner, btf in btfs:
            for t in btf.own_types:
                if t.kind in (B.STRUCT, B.UNION, B.ENUM, B.ENUM64) and t.name:
                    key = ("enum" if t.kind in (B.ENUM, B.ENUM64) else "user", t.name)
                    best = self.primary.get(key)
                    if best is None or len(t.members) > len(best[1].members):
                        self.primary[key] = (owner, t)
        # an anonymous type behind a typedef takes the typedef's name (atomic64_t, kuid_t)
        typedef_names: dict[tuple[str, int], str] = {}
        for owner, btf in btfs:
            for t in btf.own_types:
                if t.kind == B.TYPEDEF and t.type:
                    target = btf.types[t.type]
                    if not target.name and target.kind in (B.STRUCT, B.UNION, B.ENUM, B.ENUM64):
                        ns = "enum" if target.kind in (B.ENUM, B.ENUM64) else "user"
                        tgt_owner = owner if t.type >= btf.first_id else "vmlinux"
                        if (ns, t.name) not in self.primary:
                            typedef_names.setdefault((tgt_owner, t.type), t.name)
        taken: set[str] = set()
        for owner, btf in btfs:
            for t in btf.own_types:
                if t.kind not in (B.STRUCT, B.UNION, B.ENUM, B.ENUM64):
                    continue
                tag = "" if owner == "vmlinux" else owner + "_"
                if not t.name:
                    name = typedef_names.get((owner, t.id))
                    if name is None or name in taken:
                        name = f"unnamed_{tag}{B.KIND_NAMES[t.kind]}_{t.id}"
                    taken.add(name)
                else:
                    key = ("enum" if t.kind in (B.ENUM, B.ENUM64) else "user", t.name)
                    p_owner, p = self.primary[key]
                    if p is t or _same_shape(p, t):
                        name = t.name
                    else:
                        name = f"{t.name}__{tag}{t.id}"
                self.names[(owner, t.id)] = name

    def name(self, owner: str, t: BtfType) -> str:
        return self.names[(owner, t.id)]


def _same_shape(a: BtfType, b: BtfType) -> bool:
    return a.kind == b.kind and a.size == b.size and \
        [getattr(m, "name", m) for m in a.members] == [getattr(m, "name", m) for m in b.members]


class IsfBuilder:
    """Accumulates types and symbols; ``isf()`` gives the finished dict."""

    def __init__(self, vmlinux: Btf, modules: dict[str, Btf] | None = None):
        self.vmlinux = vmlinux
        self.modules = dict(modules or {})
        self.btfs = [("vmlinux", vmlinux)] + list(self.modules.items())
        self.namer = _Namer(self.btfs)
        self.base_types: dict[str, dict] = {
            "pointer": {"size": 8, "signed": False, "kind": "int", "endian": "little"},
            "void": {"size": 0, "signed": False, "kind": "void", "endian": "little"},
        }
        self.user_types: dict[str, dict] = {}
        self.enums: dict[str, dict] = {}
        self.symbols: dict[str, dict] = {}
        self._desc: dict[tuple[str, int], dict] = {}
        self._pending: list[tuple[str, BtfType, str]] = []
        self.bitfield_straddles = 0

    # -- types --------------------------------------------------------------
    def _owner(self, owner: str, type_id: int) -> str:
        return "vmlinux" if type_id < len(self.vmlinux.types) else owner

    def _btf(self, owner: str) -> Btf:
        return self.vmlinux if owner == "vmlinux" else self.modules[owner]

    def add_all_types(self) -> None:
        """Emit every struct, union and enum of every BTF blob."""
        for owner, btf in self.btfs:
            for t in btf.own_types:
                if t.kind in (B.STRUCT, B.UNION, B.ENUM, B.ENUM64, B.INT, B.FLOAT):
                    self.descriptor(owner, t.id)

    def finish_types(self) -> None:
        """Fill in the fields of every struct/union referenced so far."""
        while self._pending:
            owner, t, name = self._pending.pop()
            self.user_types[name]["fields"] = self._make_fields(owner, t)

    def descriptor(self, owner: str, type_id: int) -> dict:
        """The ISF type descriptor for BTF ``type_id`` (emitting what it names)."""
        owner = self._owner(owner, type_id)
        key = (owner, type_id)
        desc = self._desc.get(key)
        if desc is None:
            desc = self._desc[key] = self._make_descriptor(owner, type_id)
        return desc

    def _make_descriptor(self, owner: str, type_id: int) -> dict:
        btf = self._btf(owner)
        t = btf[type_id]
        k = t.kind
        if k == B.UNKN:
            return {"kind": "base", "name": "void"}
        if k in B.QUALIFIERS:
            return self.descriptor(owner, t.type)
        if k in (B.INT, B.FLOAT):
            self._add_base(t)
            return {"kind": "base", "name": t.name}
        if k == B.PTR:
            return {"kind": "pointer", "subtype": self.descriptor(owner, t.type)}
        if k == B.ARRAY:
            return {"kind": "array", "count": t.extra, "subtype": self.descriptor(owner, t.type)}
        if k in (B.FUNC_PROTO, B.FUNC):
            return {"kind": "function"}
        if k in (B.ENUM, B.ENUM64):
            name = self.namer.name(owner, t)
            if name not in self.enums:
                self.enums[name] = self._make_enum(t)
            return {"kind": "enum", "name": name}
        if k in (B.STRUCT, B.UNION):
            name = self.namer.name(owner, t)
            kind = "union" if k == B.UNION else "struct"
            if name not in self.user_types:  # fields later: no deep recursion
                self.user_types[name] = {"kind": kind, "size": t.size, "fields": {}}
                self._pending.append((owner, t, name))
            return {"kind": kind, "name": name}
        if k == B.FWD:
            kind = "union" if t.is_union else "struct"
            prim = self.namer.primary.get(("user", t.name))
            if prim is not None:
                return self.descriptor(prim[0], prim[1].id)
            if t.name not in self.user_types:
                self.user_types[t.name] = {"kind": kind, "size": 0, "fields": {}}
            return {"kind": kind, "name": t.name}
        raise BTFError(f"{btf.name}: type id {type_id} ({t.kind_name}) is not a data type")

    def _add_base(self, t: BtfType) -> None:
        if t.name in self.base_types:
            return
        if t.kind == B.FLOAT:
            kind, signed = "float", True
        else:
            enc = t.extra[0]
            kind = ("bool" if enc & B.INT_BOOL
                    else "char" if (enc & B.INT_CHAR or t.name == "char") else "int")
            signed = bool(enc & B.INT_SIGNED)
        self.base_types[t.name] = {"size": t.size, "signed": signed, "kind": kind,
                                   "endian": "little"}

    def _int_base(self, size: int, signed: bool) -> str:
        name = {(1, True): "signed char", (1, False): "unsigned char",
                (2, True): "short int", (2, False): "short unsigned int",
                (4, True): "int", (4, False): "unsigned int",
                (8, True): "long long int", (8, False): "long long unsigned int"}[(size, signed)]
        self.base_types.setdefault(name, {"size": size, "signed": signed, "kind": "int",
                                          "endian": "little"})
        return name

    def _make_enum(self, t: BtfType) -> dict:
        signed = t.kind_flag or any(v < 0 for _, v in t.members)
        size = t.size if t.size in (1, 2, 4, 8) else 4
        constants: dict[str, int] = {}
        for n, v in t.members:
            constants.setdefault(n, v)
        return {"size": size, "base": self._int_base(size, signed), "constants": constants}

    def _make_fields(self, owner: str, t: BtfType) -> dict:
        btf = self._btf(owner)
        fields: dict[str, dict] = {}
        for i, m in enumerate(t.members):
            mtype = btf.resolve(m.type) if m.type < len(btf.types) else None
            if mtype is None:
                raise BTFError(f"{btf.name}: member {t.name}.{m.name} has bad type id {m.type}")
            bit_off, bits = m.bit_offset, m.bitfield_size
            if not bits and mtype.kind == B.INT:
                _enc, int_off, nr_bits = mtype.extra
                if int_off or nr_bits != mtype.size * 8:
                    bit_off, bits = bit_off + int_off, nr_bits
            if not m.name:
                if mtype.kind in (B.STRUCT, B.UNION):
                    fields[f"unnamed_field_{i}"] = {
                        "type": self.descriptor(owner, mtype.id),
                        "offset": bit_off // 8, "anonymous": True}
                continue  # unnamed padding bitfield
            if bits:
                fields[m.name] = self._bitfield(owner, mtype, bit_off, bits)
            else:
                fields[m.name] = {"type": self.descriptor(owner, m.type), "offset": bit_off // 8}
        return fields

    def _bitfield(self, owner: str, mtype: BtfType, bit_off: int, bits: int) -> dict:
        unit = mtype.size if mtype.size in (1, 2, 4, 8) else 4
        byte_off = (bit_off // (unit * 8)) * unit
        pos = bit_off - byte_off * 8
        if pos + bits > unit * 8:  # straddles its natural unit (packed struct)
            self.bitfield_straddles += 1
            byte_off, pos = bit_off // 8, bit_off % 8
        if mtype.kind in (B.ENUM, B.ENUM64):
            inner = self.descriptor(owner, mtype.id)
        elif mtype.kind == B.INT:
            self._add_base(mtype)
            inner = {"kind": "base", "name": mtype.name}
        else:
            inner = {"kind": "base", "name": self._int_base(unit, False)}
        return {"type": {"kind": "bitfield", "bit_position": pos, "bit_length": bits,
                         "type": inner}, "offset": byte_off}

    # -- symbols ------------------------------------------------------------
    def add_symbols(self, ksyms: Kallsyms, banner: bytes | None = None) -> None:
        """All kallsyms symbols; typed from BTF VARs, then ``SYMBOL_TYPES``."""
        for name, i in ksyms.index().items():
            self.symbols[name] = {"address": ksyms.addresses[i]}
        for var_name, type_id in self._btf_vars():
            sym = self.symbols.get(var_name)
            if sym is not None:
                sym["type"] = self.descriptor("vmlinux", type_id)
        for name, spec in SYMBOL_TYPES.items():
            sym = self.symbols.get(name)
            if sym is None or "type" in sym:
                continue
            try:
                sym["type"] = self.spec_descriptor(spec, ksyms, sym["address"])
            except BTFError as exc:
                log.debug("no type for symbol %s (%s): %s", name, spec, exc)
        if banner is not None and "linux_banner" in self.symbols:
            sym = self.symbols["linux_banner"]
            sym["type"] = {"kind": "array", "count": len(banner) + 1,
                           "subtype": self.spec_descriptor("char", ksyms, 0)}
            sym["constant_data"] = base64.b64encode(banner).decode()

    def _btf_vars(self):
        btf = self.vmlinux
        for t in btf.types:
            if t.kind == B.DATASEC:
                for var_id, _off, _size in t.members:
                    var = btf[var_id]
                    if var.kind == B.VAR:
                        yield var.name, var.type

    def spec_descriptor(self, spec: str, ksyms: Kallsyms | None, address: int) -> dict:
        """Descriptor for a C-like type spec such as ``struct rq`` or ``u64[NR_X]``."""
        m = _SPEC.match(spec)
        if not m:
            raise BTFError(f"bad type spec {spec!r}")
        base = m["base"].strip()
        if base.startswith("struct ") and base[7:] in SYNTHETIC_TYPES:
            desc = self._synthetic(base[7:], ksyms)
            t = None
        elif base.startswith(("struct ", "union ")):
            kind, _, tname = base.partition(" ")
            t = self.vmlinux.find(tname, (B.STRUCT, B.UNION))
        elif base == "void":
            t = self.vmlinux[0]
        else:
            t = self.vmlinux.find(_C_ALIASES.get(base, base), (B.INT, B.TYPEDEF, B.FLOAT))
        if t is not None:
            desc = self.descriptor("vmlinux", t.id)
        for _ in range(m["ptr"].count("*")):
            desc = {"kind": "pointer", "subtype": desc}
        if m["n"] is not None:
            desc = {"kind": "array", "count": self._count(m["n"], desc, spec, ksyms, address),
                    "subtype": desc}
        return desc

    def _synthetic(self, name: str, ksyms: Kallsyms | None) -> dict:
        if name not in self.user_types:
            fields, offset, align = {}, 0, 1
            for member, spec in SYNTHETIC_TYPES[name]:
                desc = self.spec_descriptor(spec, ksyms, 0)
                self.finish_types()
                size = self._desc_size(desc)
                a = min(8, size & -size) if size else 1
                offset = (offset + a - 1) // a * a
                fields[member] = {"type": desc, "offset": offset}
                offset, align = offset + size, max(align, a)
            self.user_types[name] = {"kind": "struct",
                                     "size": (offset + align - 1) // align * align,
                                     "fields": fields}
        return {"kind": "struct", "name": name}

    def _count(self, n: str, elem: dict, spec: str, ksyms: Kallsyms | None, address: int) -> int:
        if n.isdigit():
            return int(n)
        if n:
            for t in self.vmlinux.types:
                if t.kind in (B.ENUM, B.ENUM64):
                    for cname, v in t.members:
                        if cname == n:
                            return v
            raise BTFError(f"enum constant {n} of {spec!r} not in BTF")
        nxt = ksyms.next_address(address) if ksyms else None
        if nxt is None:
            raise BTFError(f"cannot size {spec!r}: no next symbol after {address:#x}")
        return max(1, (nxt - address) // max(1, self._desc_size(elem)))

    def _desc_size(self, desc: dict) -> int:
        kind = desc["kind"]
        if kind == "pointer":
            return 8
        if kind == "base":
            return self.base_types[desc["name"]]["size"]
        if kind == "array":
            return desc["count"] * self._desc_size(desc["subtype"])
        if kind == "enum":
            return self.enums[desc["name"]]["size"]
        return self.user_types[desc["name"]]["size"]

    def isf(self, producer_version: str, hashes: dict[str, str] | None = None) -> dict:
        self.finish_types()
        linux_meta = {"symbols": [], "types": []}
        for name, digest in (hashes or {}).items():
            linux_meta["symbols"].append({"kind": "symtab", "name": name,
                                          "hash_type": "sha256", "hash_value": digest})
        return {
            "metadata": {
                "format": ISF_FORMAT,
                "producer": {"name": "vmroc", "version": producer_version,
                             "datetime": datetime.datetime.now(datetime.timezone.utc)
                             .isoformat(timespec="seconds")},
                "linux": linux_meta,
            },
            "base_types": self.base_types,
            "user_types": self.user_types,
            "enums": self.enums,
            "symbols": self.symbols,
        }


_C_ALIASES = {"unsigned long": "long unsigned int", "unsigned short": "short unsigned int",
              "long": "long int", "short": "short int",
              "unsigned long long": "long long unsigned int", "long long": "long long int"}


def libvmi_variant(isf: dict, ksyms: Kallsyms) -> dict:
    """A shallow copy of ``isf`` for LibVMI: signed addresses + ``phys_startup_64``."""
    symbols = {}
    for name, sym in isf["symbols"].items():
        addr = sym["address"]
        symbols[name] = {"address": addr - (1 << 64) if addr >= 1 << 63 else addr}
    try:
        symbols["phys_startup_64"] = {"address": ksyms.address("startup_64") - START_KERNEL_MAP}
    except Exception:  # noqa: BLE001 - a kernel without startup_64 is not x86_64
        log.warning("no startup_64 symbol: LibVMI variant lacks phys_startup_64")
    out = dict(isf)
    out["symbols"] = symbols
    return out
