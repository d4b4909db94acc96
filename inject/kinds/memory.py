"""Memory faults: bits flipped in guest RAM through the shared RAM file, a memory
error at a guest physical address raised as a machine check, balloon inflation."""

from __future__ import annotations

import re

from vmroc.introspect.errors import IntrospectError
from vmroc.introspect.kernel import GuestKernel, find_vmcoreinfo
from vmroc.introspect.layers import Q35_LOWMEM_LIMIT, START_KERNEL_MAP, RamFile
from vmroc.introspect.procmem import user_pages
from vmroc.introspect.sampler import symbols_for
from vmroc.introspect.symbols import SymbolTable

from ..errors import ApplyError, SpecError, TargetError
from ..fault import Fault
from ..registry import Param, register
from . import _common as c

MIB = 1 << 20
GUEST_TROUBLE = re.compile(r"[^\n]*(?:Oops|BUG:|Kernel panic|segfault|general protection"
                           r"|Memory failure)[^\n]*")
# SRAO memory-scrub machine check: VAL UC EN MISCV ADDRV S, MCACOD 0x00c0.
SRAO_STATUS = 0xBD000000000000C0


def _ram_bytes(fx: Fault) -> int:
    return fx.guest.config["ram_mb"] * MIB


def _check_range(fx: Fault, start: int, length: int, what: str) -> None:
    ram = _ram_bytes(fx)
    if ram >= Q35_LOWMEM_LIMIT:  # from here on, file offset != guest physical address
        raise TargetError(f"{fx.kind.name}: guests with {ram // MIB} MiB RAM (>= 2816 MiB) "
                          "split RAM around the PCI hole; not supported",
                          kind=fx.kind.name, guest=fx.guest.name)
    if start < 0 or start + length > ram:
        raise TargetError(f"{fx.kind.name}: {what} {start:#x}..{start + length:#x} is outside "
                          f"guest RAM of {fx.guest.name} (0..{ram:#x})",
                          kind=fx.kind.name, guest=fx.guest.name)


def _kernel_data_range(fx: Fault) -> tuple[int, int]:
    ram = RamFile(fx.guest.ram_path)
    try:
        info = find_vmcoreinfo(ram) or {}
    finally:
        ram.close()
    try:
        phys_base = int(info["NUMBER(phys_base)"])
        uts = int(info["SYMBOL(init_uts_ns)"], 16)
    except (KeyError, ValueError):
        raise ApplyError(f"mem-bitflip: no VMCOREINFO found in {fx.guest.name}'s RAM; "
                         "cannot locate kernel data", kind="mem-bitflip") from None
    start = (uts - START_KERNEL_MAP + phys_base) & ~(MIB - 1)   # .data around init_uts_ns
    return start, 4 * MIB


def _process_pages(fx: Fault) -> list[tuple[int, int]]:
    """(vaddr, paddr) of the target process's present user pages, read from outside."""
    comm = fx.params["process"]
    try:
        k = GuestKernel(fx.guest.ram_path, SymbolTable.load(symbols_for(fx.guest).isf),
                        fx.guest.name)
        try:
            pages = user_pages(k, comm)
        finally:
            k.close()
    except IntrospectError as exc:
        raise TargetError(f"mem-bitflip: {exc}", kind="mem-bitflip",
                          guest=fx.guest.name) from exc
    if not pages:
        raise TargetError(f"mem-bitflip: process {comm} on {fx.guest.name} has no present "
                          "pages", kind="mem-bitflip", guest=fx.guest.name)
    fx.state["process"] = comm
    return pages


@register
class MemBitflip:
    name = "mem-bitflip"
    level = "memory"
    params = (Param("mode", str, "random", "where: random (anywhere in RAM or in the target "
                    "address range), kernel (the kernel's .data, found via VMCOREINFO) or "
                    "process (the pages of the process named by `process`, found by walking "
                    "its page tables from outside)", choices=("random", "kernel", "process")),
              Param("count", int, 1, "bits to flip", min=1, max=100000),
              Param("process", str, "httpd", "with mode=process: the process name (comm)"))
    effect = ("the flipped bits are in guest RAM (read back through the RAM file); any "
              "guest reaction (Oops, segfault, panic) is added to the evidence")
    mechanism = ("pwrite into the shared RAM file (guest physical memory, offset == "
                 "address below 2816 MiB); the original bytes are kept in the lease and "
                 "restored on heal where the flipped value is still in place; a guest "
                 "panicked by it is reset")
    destructive = True
    instant = True
    window = 3.0

    def check(fx: Fault) -> None:
        addr = fx.spec.target.addr
        if addr is not None:
            if fx.params["mode"] != "random":
                raise SpecError("mem-bitflip: a target address range needs mode=random",
                                kind="mem-bitflip")
            _check_range(fx, addr[0], addr[1], "address range")
        else:
            _check_range(fx, 0, 1, "address")

    def invoke(fx: Fault) -> None:
        flips = []
        if fx.params["mode"] == "process":
            pages = _process_pages(fx)
            start = min(p for _, p in pages)
            length = max(p for _, p in pages) + 4096 - start
            for _ in range(fx.params["count"]):
                vaddr, paddr = fx.rng.choice(pages)
                offset = fx.rng.randrange(4096)
                flips.append([paddr + offset, fx.rng.randrange(8)])
                fx.state.setdefault("vaddrs", []).append(hex(vaddr + offset))
        else:
            if fx.params["mode"] == "kernel":
                start, length = _kernel_data_range(fx)
            elif fx.spec.target.addr is not None:
                start, length = fx.spec.target.addr
            else:
                start, length = 0, _ram_bytes(fx)
            for _ in range(fx.params["count"]):
                flips.append([fx.rng.randrange(start, start + length), fx.rng.randrange(8)])
        with open(fx.guest.ram_path, "r+b") as f:
            for flip in flips:
                f.seek(flip[0])
                flip.append(f.read(1)[0])         # original byte
            fx.state["flips"] = flips
            fx.state["range"] = [start, length]
            fx.save()  # originals first
            for addr, bit, orig in flips:
                f.seek(addr)
                f.write(bytes([orig ^ (1 << bit)]))
            f.flush()

    def verify(fx: Fault) -> dict | None:
        flips = fx.state.get("flips", [])
        landed = 0
        with open(fx.guest.ram_path, "rb") as f:
            for addr, bit, orig in flips:
                f.seek(addr)
                landed += f.read(1)[0] == orig ^ (1 << bit)
        if not landed:
            return None
        trouble = [s.strip() for s in GUEST_TROUBLE.findall(fx.log_since(fx.guest.name))]
        out = {"flips": len(flips), "read_back_flipped": landed,
               "range": [hex(x) for x in fx.state["range"]],
               **({"process": fx.state["process"], "vaddrs": fx.state["vaddrs"][:3]}
                  if "process" in fx.state else {}),
               "first": [{"addr": hex(a), "bit": b} for a, b, _ in flips[:3]],
               "guest_reaction": trouble[:3]}
        return out

    def teardown(fx: Fault) -> None:
        restored = 0
        if fx.state.get("flips") and fx.guest.ram_path.exists():
            with open(fx.guest.ram_path, "r+b") as f:
                for addr, bit, orig in fx.state["flips"]:
                    f.seek(addr)
                    if f.read(1)[0] == orig ^ (1 << bit):
                        f.seek(addr)
                        f.write(bytes([orig]))
                        restored += 1
        fx.state["restored"] = restored
        if fx.guest.alive() and c.run_state(fx) == "guest-panicked":
            fx.cmd("system_reset")
            fx.cmd("cont")


@register
class MemMce:
    name = "mem-mce"
    level = "memory"
    params = (Param("addr", int, None, "guest physical address (default: a random page; "
                    "also --addr via the target)", min=0),
              Param("bank", int, 1, "MCA bank", min=0, max=9))
    effect = "the guest logs the machine check and `Memory failure: 0xPFN` for that page"
    mechanism = ("HMP `mce 0 BANK 0xbd000000000000c0 0x5 ADDR 0x86` (uncorrected, "
                 "action-optional memory scrub error with a valid address); the guest "
                 "offlines the page itself, so nothing on the host needs reverting")
    instant = True

    def check(fx: Fault) -> None:
        addr = fx.params["addr"]
        if fx.spec.target.addr is not None:
            addr = fx.spec.target.addr[0]
        if addr is None:
            addr = fx.rng.randrange(16 * MIB, _ram_bytes(fx)) & ~0xFFF
        _check_range(fx, addr, 1, "address")
        fx.params["addr"] = addr

    def invoke(fx: Fault) -> None:
        line = f"mce 0 {fx.params['bank']} {SRAO_STATUS:#x} 0x5 {fx.params['addr']:#x} 0x86"
        fx.state["hmp"] = line
        out = fx.hmp(line)
        if out.strip():
            raise ApplyError(f"mem-mce: {out.strip()}", kind="mem-mce", command=line, reply=out)

    def verify(fx: Fault) -> dict | None:
        text = fx.log_since(fx.guest.name)
        pfn = f"{fx.params['addr'] >> 12:#x}"
        lines = [s.strip() for s in re.findall(r"[^\n]*(?:Memory failure|Hardware Error)"
                                               r"[^\n]*", text)]
        if any(pfn in s for s in lines) or any("Hardware Error" in s for s in lines):
            return {"pfn": pfn, "kernel_log": lines[:3]}
        return None

    def teardown(fx: Fault) -> None:
        return None


@register
class MemPressure:
    name = "mem-pressure"
    level = "memory"
    params = (Param("keep_mb", int, None, "MiB left to the guest (default: half its RAM)",
                    min=16),)
    effect = ("the balloon takes the memory: QMP query-balloon shows it and the guest's "
              "memfree_kb drops")
    mechanism = "virtio-balloon: QMP `balloon value=KEEP`; back to the full RAM on heal"
    window = 10.0

    def check(fx: Fault) -> None:
        ram_mb = fx.guest.config["ram_mb"]
        if fx.params["keep_mb"] is None:
            fx.params["keep_mb"] = ram_mb // 2
        if fx.params["keep_mb"] >= ram_mb:
            raise SpecError(f"mem-pressure: keep_mb {fx.params['keep_mb']} must be below the "
                            f"guest's {ram_mb} MiB", kind="mem-pressure")

    def invoke(fx: Fault) -> None:
        fx.state["full"] = _ram_bytes(fx)
        fx.save()
        fx.cmd("balloon", value=fx.params["keep_mb"] * MIB)

    def verify(fx: Fault) -> dict | None:
        actual = fx.cmd("query-balloon")["actual"]
        g = fx.guest.name
        base = fx.baseline.get(g) or []
        new = fx.since(g)
        if not base or not new:
            return None
        drop = base[-1]["memfree_kb"] - new[-1]["memfree_kb"]
        want = (fx.state["full"] - fx.params["keep_mb"] * MIB) // 1024
        if actual <= (fx.params["keep_mb"] + 8) * MIB and drop >= want // 4:
            return {"balloon_actual_mb": actual // MIB, "memfree_kb_drop": int(drop)}
        return None

    def teardown(fx: Fault) -> None:
        if fx.state.get("full") and fx.guest.alive():
            fx.cmd("balloon", value=fx.state["full"])
