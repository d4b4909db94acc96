"""A small synthetic guest kernel in memory, enough for every feature reader of
``introspect.features``: three tasks, two CPUs, a disk ``vda`` (with a partition and a
loop device the block reader skips), ``lo`` and a virtio ``eth0``, vmstat arrays and
TCP MIBs. Struct members get their own slot each, in the order the readers first ask
for them, so the layout follows whatever the readers read: 4 KiB in a struct, 64 bytes in
the small structs that others embed (so that an embedded one fits in its slot)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmroc.introspect.features import (
    CPU_STATS,
    NODE_STATS,
    PF_KTHREAD,
    SNMP,
    TASK_IDLE,
    VM_EVENTS,
    ZONE_STATS,
)
from vmroc.introspect.kernel import KernelView

PAGE = 4096
SLOT, SMALL_SLOT = 4096, 64
EMBEDDED = {"device", "kobject", "klist", "klist_node", "net_device_stats", "netns_mib",
            "virtnet_rq_stats", "virtnet_sq_stats", "disk_stats"}
TYPE_SIZE = 16 * SLOT
HEAP = 0xFFFF_8880_0100_0000
PERCPU = 0xFFFF_8880_4000_0000  # per-CPU areas; per-CPU symbols are offsets into them
PERCPU_STRIDE = 0x10_0000


class Symbols:
    """What the readers ask of a ``SymbolTable``: addresses, offsets, sizes, enums."""

    def __init__(self) -> None:
        self.addresses: dict[str, int] = {}
        self.members: dict[str, dict[str, int]] = {}
        self.enums: dict[str, dict[str, int]] = {}
        self.constants: dict[str, int] = {}
        self.user_types = {"virtnet_info": {}}

    def address(self, name: str) -> int:
        return self.addresses[name]

    def has_symbol(self, name: str) -> bool:
        return name in self.addresses

    def offset(self, type_name: str, member: str) -> int:
        slots = self.members.setdefault(type_name, {})
        if member not in slots:
            slots[member] = len(slots) * (SMALL_SLOT if type_name in EMBEDDED else SLOT)
        return slots[member]

    def size(self, type_name: str) -> int:
        return TYPE_SIZE

    def enum(self, name: str) -> dict[str, int]:
        return self.enums[name]

    def constant(self, name: str) -> int:
        return self.constants[name]


@dataclass
class Task:
    pid: int
    comm: str
    state: int
    flags: int = 0
    utime_s: float = 0.0
    with_mm: bool = True


class SyntheticKernel(KernelView):
    guest = "synthetic"

    def __init__(self, nr_cpus: int = 2) -> None:
        self.symbols = Symbols()
        self.nr_cpus = nr_cpus
        self.per_cpu_offset = [PERCPU + cpu * PERCPU_STRIDE for cpu in range(nr_cpus)]
        self.pages: dict[int, bytearray] = {}
        self.heap = HEAP
        self.percpu_next = 0x1000
        self._tasks()
        self._globals()
        self._block()
        self._net()

    # -- memory ------------------------------------------------------------------
    def read(self, vaddr: int, length: int) -> bytes:
        out = bytearray()
        while length:
            page, at = divmod(vaddr, PAGE)
            n = min(length, PAGE - at)
            out += self.pages.get(page, bytes(PAGE))[at:at + n]
            vaddr, length = vaddr + n, length - n
        return bytes(out)

    def write(self, vaddr: int, data: bytes) -> None:
        while data:
            page, at = divmod(vaddr, PAGE)
            n = min(len(data), PAGE - at)
            self.pages.setdefault(page, bytearray(PAGE))[at:at + n] = data[:n]
            vaddr, data = vaddr + n, data[n:]

    def put(self, vaddr: int, fmt: str, *values) -> None:
        self.write(vaddr, struct.pack("<" + fmt, *values))

    def sym(self, name: str) -> int:
        return self.symbols.address(name)

    def alloc(self, size: int = TYPE_SIZE, symbol: str | None = None) -> int:
        at, self.heap = self.heap, self.heap + size
        if symbol:
            self.symbols.addresses[symbol] = at
        return at

    def alloc_percpu(self, symbol: str | None = None) -> int:
        """A per-CPU variable: its offset (what a __percpu pointer holds)."""
        at, self.percpu_next = self.percpu_next, self.percpu_next + TYPE_SIZE
        if symbol:
            self.symbols.addresses[symbol] = at
        return at

    def link(self, head: int, nodes: list[int]) -> None:
        """A circular list_head list: head, then nodes."""
        ring = [head, *nodes]
        for i, node in enumerate(ring):
            self.put(node, "QQ", ring[(i + 1) % len(ring)], ring[i - 1])

    # -- contents ----------------------------------------------------------------
    def _tasks(self) -> None:
        off = lambda m: self.off("task_struct", m)  # noqa: E731
        init = self.alloc(symbol="init_task")
        self.tasks: list[int] = []  # each task_struct's address, in list order
        tasks = [Task(1, "init", 1, utime_s=2.0), Task(2, "kthreadd", TASK_IDLE, PF_KTHREAD,
                                                      with_mm=False),
                 Task(30, "worker", 0, utime_s=5.0), Task(31, "writer", 2)]
        nodes = []
        for t in tasks:
            a = self.alloc()
            for member, fmt, value in (("pid", "i", t.pid), ("tgid", "i", t.pid),
                                       ("__state", "I", t.state), ("exit_state", "i", 0),
                                       ("flags", "I", t.flags), ("real_parent", "Q", init),
                                       ("utime", "Q", int(t.utime_s * 1e9)),
                                       ("stime", "Q", 10**8), ("min_flt", "Q", 7),
                                       ("maj_flt", "Q", 1)):
                self.put(a + off(member), fmt, value)
            self.write(a + off("comm"), t.comm.encode().ljust(16, b"\0"))
            if t.with_mm:
                mm = self.alloc()
                self.put(mm + self.off("mm_struct", "rss_stat"), "4Q", 100, 200, 0, 5)
                self.put(a + off("mm"), "Q", mm)
            nodes.append(a + off("tasks"))
            self.tasks.append(a)
        self.link(init + off("tasks"), nodes)

    def _globals(self) -> None:
        self.put(self.alloc(symbol="avenrun"), "3Q", 2048, 1024, 512)
        self.put(self.alloc(symbol="jiffies_64"), "Q", ((-300 * 250) & 0xFFFF_FFFF) + 25_000)
        rq = self.alloc_percpu("runqueues")
        stat = self.alloc_percpu("kernel_cpustat")
        events = self.alloc_percpu("vm_event_states")
        self.symbols.enums["cpu_usage_stat"] = {
            **{f"CPUTIME_{n}": i for i, n in enumerate(CPU_STATS)},
            "CPUTIME_GUEST": len(CPU_STATS), "NR_STATS": len(CPU_STATS) + 1}
        self.symbols.enums["vm_event_item"] = {n: i for i, n in enumerate(VM_EVENTS)}
        for cpu, base in enumerate(self.per_cpu_offset):
            r = base + rq
            self.put(r + self.off("rq", "nr_running"), "I", cpu + 1)
            self.put(r + self.off("rq", "nr_switches"), "Q", 1000 * (cpu + 1))
            self.put(r + self.off("rq", "nr_iowait"), "i", cpu)
            self.put(r + self.off("rq", "nr_uninterruptible"), "i", 0)
            self.put(base + stat, f"{len(CPU_STATS) + 1}Q",
                     *(i * 10**9 for i in range(1, len(CPU_STATS) + 2)))
            self.put(base + events, f"{len(VM_EVENTS)}Q", *range(1, len(VM_EVENTS) + 1))
        for symbol, enum, names in (("vm_zone_stat", "zone_stat_item", ZONE_STATS),
                                    ("vm_node_stat", "node_stat_item", NODE_STATS)):
            self.symbols.enums[enum] = {n: i for i, n in enumerate(names)}
            self.put(self.alloc(symbol=symbol), f"{len(names)}q", *range(100, 100 + len(names)))

    def _block(self) -> None:
        klass = self.alloc(symbol="block_class")
        p = self.alloc()
        self.put(klass + self.off("class", "p"), "Q", p)
        head = p + self.off("subsys_private", "klist_devices") + self.off("klist", "k_list")
        o_name = self.off("device", "kobj") + self.off("kobject", "name")
        nodes = []
        for name, partno in (("vda", 0), ("vda1", 1), ("loop0", 0)):
            bdev = self.alloc()
            dev = bdev + self.off("block_device", "bd_device")
            self.put(bdev + self.off("block_device", "bd_partno"), "B", partno)
            label = self.alloc(32)
            self.write(label, name.encode() + b"\0")
            self.put(dev + o_name, "Q", label)
            stats = self.alloc_percpu()
            self.put(bdev + self.off("block_device", "bd_stats"), "Q", stats)
            for base in self.per_cpu_offset:
                self.put(base + stats + self.off("disk_stats", "sectors"), "4Q", 80, 160, 0, 0)
                self.put(base + stats + self.off("disk_stats", "ios"), "4Q", 10, 20, 0, 0)
                self.put(base + stats + self.off("disk_stats", "io_ticks"), "Q", 50)
            private = self.alloc()
            self.put(private + self.off("device_private", "device"), "Q", dev)
            nodes.append(private + self.off("device_private", "knode_class")
                         + self.off("klist_node", "n_node"))
        self.link(head, nodes)

    def _net(self) -> None:
        net = self.alloc(symbol="init_net")
        nodes = []
        for name in ("lo", "eth0"):
            dev = self.alloc(2 * TYPE_SIZE)  # the device, then its driver's private part
            self.write(dev + self.off("net_device", "name"), name.encode() + b"\0")
            self.put(dev + self.off("net_device", "stats")
                     + self.off("net_device_stats", "rx_errors"), "Q", 0)
            priv = dev + ((self.size("net_device") + 31) & ~31)
            self.put(priv + self.off("virtnet_info", "curr_queue_pairs"), "H", 1)
            rq, sq = self.alloc(), self.alloc()
            self.put(priv + self.off("virtnet_info", "rq"), "Q", rq)
            self.put(priv + self.off("virtnet_info", "sq"), "Q", sq)
            self.put(rq + self.off("receive_queue", "stats")
                     + self.off("virtnet_rq_stats", "packets"), "3Q", 40, 4000, 1)
            self.put(sq + self.off("send_queue", "stats")
                     + self.off("virtnet_sq_stats", "packets"), "2Q", 30, 3000)
            nodes.append(dev + self.off("net_device", "dev_list"))
        self.link(net + self.off("net", "dev_base_head"), nodes)
        mib = net + self.off("net", "mib")
        tables = {}
        for i, (_, member, enumerator) in enumerate(SNMP):
            if member not in tables:
                tables[member] = self.alloc_percpu()
                self.put(mib + self.off("netns_mib", member), "Q", tables[member])
            self.symbols.constants[enumerator] = i + 1
            for base in self.per_cpu_offset:
                self.put(base + tables[member] + 8 * (i + 1), "Q", i)
