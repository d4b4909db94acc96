"""Readers of guest kernel state, one per feature group, on a ``GuestKernel``.

Each reader is a function ``read_x(k) -> dict[str, number]`` with the kernel symbols
it needs declared in ``REQUIRES``; the sampler skips (and reports) a group whose
symbols a kernel lacks. Every list walk is bounded and checks ``next->prev``; a walk
that catches a list mid-update raises ``Inconsistent`` and the sampler retries.
Feature names mirror the guest's status line where both exist (``tasks``,
``memfree_kb``, ``vda_rd``, ``eth0_rxp``...) so they can be compared directly.
What each feature is (counter, gauge or event; the part it measures; its unit; whether
the detector watches it) is declared once, in ``catalog.py``: a name a reader produces
needs its row there (``tests/unit/test_feature_catalog.py`` fails otherwise).
"""

from __future__ import annotations

import struct
from typing import Callable, Iterator

from .errors import IntrospectError
from .kernel import GuestKernel

MAX_LIST = 16384  # no kernel list vmroc walks is longer in a lab guest
PF_KTHREAD = 0x0020_0000
TASK_IDLE = 0x402
TASK_REPORT = 0x7F
STATE_LETTERS = "RSDTtXZP"  # as /proc/<pid>/stat: by highest bit of (state | exit_state) & 0x7f
FSHIFT = 11
NSEC = 1e9
RSS_VALID = 1 << 62  # an RSS counter read as unsigned above this is a transient negative

ZONE_STATS = ["NR_FREE_PAGES", "NR_ZONE_ACTIVE_ANON", "NR_ZONE_INACTIVE_ANON",
              "NR_ZONE_ACTIVE_FILE", "NR_ZONE_INACTIVE_FILE", "NR_ZONE_WRITE_PENDING", "NR_MLOCK"]
NODE_STATS = ["NR_FILE_PAGES", "NR_ANON_MAPPED", "NR_SHMEM", "NR_FILE_DIRTY", "NR_WRITEBACK",
              "NR_SLAB_RECLAIMABLE_B", "NR_SLAB_UNRECLAIMABLE_B", "NR_KERNEL_STACK_KB",
              "NR_PAGETABLE", "WORKINGSET_REFAULT_FILE"]
VM_EVENTS = ["PGPGIN", "PGPGOUT", "PSWPIN", "PSWPOUT", "PGFAULT", "PGMAJFAULT", "PGFREE",
             "PGSTEAL_KSWAPD", "PGSTEAL_DIRECT", "PGSCAN_KSWAPD", "PGSCAN_DIRECT",
             "ALLOCSTALL_NORMAL", "ALLOCSTALL_DMA32", "OOM_KILL", "COMPACTSTALL",
             "BALLOON_INFLATE", "BALLOON_DEFLATE"]
CPU_STATS = ["USER", "NICE", "SYSTEM", "SOFTIRQ", "IRQ", "IDLE", "IOWAIT", "STEAL"]


class Inconsistent(IntrospectError):
    """A walk saw a list or record change under it; retry or flag the sample."""


def walk_list(k: GuestKernel, head: int, limit: int = MAX_LIST) -> Iterator[int]:
    """Addresses of the ``list_head`` nodes after ``head`` (bounded, next->prev checked)."""
    native = getattr(k, "walk_list", None)  # the C accelerator walks in one call
    if native is not None:
        yield from native(head, limit)
        return
    node = head
    for _ in range(limit):
        nxt = k.u64(node)
        if nxt == head:
            return
        if k.u64(nxt + 8) != node:
            raise Inconsistent(f"list at {head:#x} changed during the walk (node {nxt:#x})")
        yield nxt
        node = nxt
    raise Inconsistent(f"list at {head:#x} longer than {limit}: a loop or a torn read")


# -- tasks -------------------------------------------------------------------------
def task_state(state: int, exit_state: int) -> str:
    """The one-letter state ``ps`` shows, computed as the kernel's task_state_index()."""
    if state == TASK_IDLE:
        return "I"
    report = (state | exit_state) & TASK_REPORT
    return STATE_LETTERS[report.bit_length()]


def task_offsets(k: GuestKernel) -> tuple[int, ...]:
    """Member offsets the task walk reads, in the order ``task_rows`` (and C) take them."""
    off = lambda m: k.off("task_struct", m)  # noqa: E731
    return (off("tasks"), off("pid"), off("tgid"), off("__state"), off("exit_state"),
            off("flags"), off("real_parent"), off("mm"), off("utime"), off("stime"),
            off("min_flt"), off("maj_flt"), off("comm"), k.off("mm_struct", "rss_stat"))


def task_rows(k: GuestKernel, head: int, offsets: tuple[int, ...]) -> list[tuple]:
    """Raw fields of every task on the list at ``head``: (address, pid, tgid, ppid, comm
    bytes, state, exit_state, flags, utime ns, stime ns, min_flt, maj_flt, rss_file,
    rss_anon, rss_shmem). The C accelerator's ``task_rows`` returns the same rows."""
    (o_tasks, o_pid, o_tgid, o_state, o_exit, o_flags, o_parent, o_mm, o_ut, o_st, o_min,
     o_maj, o_comm, o_rss) = offsets
    rows = []
    for node in walk_list(k, head):
        t = node - o_tasks
        pid = k.s32(t + o_pid)
        if not 0 < pid < (1 << 22):
            raise Inconsistent(f"task at {t:#x} has pid {pid}")
        parent, mm = k.u64(t + o_parent), k.u64(t + o_mm)
        file_, anon, _swap, shmem = k.u64s(mm + o_rss, 4) if mm else (0, 0, 0, 0)
        rows.append((t, pid, k.s32(t + o_tgid), k.s32(parent + o_tgid) if parent else 0,
                     k.read(t + o_comm, 16), k.u32(t + o_state), k.s32(t + o_exit),
                     k.u32(t + o_flags), k.u64(t + o_ut), k.u64(t + o_st), k.u64(t + o_min),
                     k.u64(t + o_maj), file_, anon, shmem))
    return rows


def read_tasks(k: GuestKernel, top: int = 5) -> tuple[dict[str, float], list[dict]]:
    """Task counts by state and totals; returns (features, per-task records)."""
    offsets = task_offsets(k)
    rows_of = getattr(k, "task_rows", None) or (lambda h, o: task_rows(k, h, o))
    tasks = []
    for (t, pid, tgid, ppid, comm, state, exit_state, flags, utime, stime, min_flt, maj_flt,
         *rss) in rows_of(k.sym("init_task") + offsets[0], offsets):
        tasks.append({
            "address": t, "pid": pid, "tgid": tgid, "ppid": ppid,
            "comm": comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
            "state": task_state(state, exit_state),
            "kthread": bool(flags & PF_KTHREAD),
            "utime": utime / NSEC, "stime": stime / NSEC,
            "min_flt": min_flt, "maj_flt": maj_flt,
            "rss_pages": sum(filter(RSS_VALID.__gt__, rss)),  # per-CPU drift can go "negative"
        })
    states = [t["state"] for t in tasks]
    f = {
        "tasks": len(tasks),
        "tasks_running": states.count("R"), "tasks_sleeping": states.count("S"),
        "tasks_blocked": states.count("D"), "tasks_idle": states.count("I"),
        "tasks_stopped": states.count("T") + states.count("t"), "tasks_zombie": states.count("Z"),
        "tasks_kthreads": sum(t["kthread"] for t in tasks),
        "tasks_utime_s": sum(t["utime"] for t in tasks),
        "tasks_stime_s": sum(t["stime"] for t in tasks),
        "tasks_minflt": sum(t["min_flt"] for t in tasks),
        "tasks_majflt": sum(t["maj_flt"] for t in tasks),
        "tasks_rss_pages": sum(t["rss_pages"] for t in tasks),
    }
    busiest = sorted(tasks, key=lambda t: t["utime"] + t["stime"], reverse=True)[:top]
    for i, t in enumerate(busiest):
        f[f"top{i + 1}_cpu_s"] = t["utime"] + t["stime"]
    return f, tasks


read_tasks.REQUIRES = ["init_task"]


# -- load, scheduler, time ------------------------------------------------------
def read_load(k: GuestKernel) -> dict[str, float]:
    a1, a5, a15 = k.u64s(k.sym("avenrun"), 3)
    return {"load1": a1 / (1 << FSHIFT), "load5": a5 / (1 << FSHIFT), "load15": a15 / (1 << FSHIFT)}


read_load.REQUIRES = ["avenrun"]


def read_runqueues(k: GuestKernel) -> dict[str, float]:
    o_run, o_sw = k.off("rq", "nr_running"), k.off("rq", "nr_switches")
    o_io, o_un = k.off("rq", "nr_iowait"), k.off("rq", "nr_uninterruptible")
    names = ["rq_nr_running", "rq_nr_switches", "rq_nr_iowait", "rq_nr_uninterruptible"]
    f = dict.fromkeys(names, 0)
    for cpu in range(k.nr_cpus):
        rq = k.percpu("runqueues", cpu)
        vals = (k.u32(rq + o_run), k.u64(rq + o_sw), k.s32(rq + o_io), k.s32(rq + o_un))
        for name, v in zip(names, vals):
            f[name] += v
            f[f"cpu{cpu}_{name}"] = v
    return f


read_runqueues.REQUIRES = ["runqueues"]


def read_time(k: GuestKernel, hz: int) -> dict[str, float]:
    jiffies = k.u64(k.sym("jiffies_64"))
    initial = (-300 * hz) & 0xFFFF_FFFF  # INITIAL_JIFFIES
    return {"jiffies": jiffies, "uptime_s": ((jiffies - initial) & (2**64 - 1)) / hz}


read_time.REQUIRES = ["jiffies_64"]


def read_cpustat(k: GuestKernel) -> dict[str, float]:
    index = k.enum("cpu_usage_stat")
    totals = dict.fromkeys(CPU_STATS, 0)
    for cpu in range(k.nr_cpus):
        values = k.u64s(k.percpu("kernel_cpustat", cpu), index["NR_STATS"])
        for name in CPU_STATS:
            totals[name] += values[index[f"CPUTIME_{name}"]]
    return {f"cpu_{name.lower()}_s": v / NSEC for name, v in totals.items()}


read_cpustat.REQUIRES = ["kernel_cpustat"]


# -- memory -----------------------------------------------------------------------
def _stat_array(k: GuestKernel, symbol: str, enum: str, wanted: list[str], prefix: str) -> dict:
    index = k.enum(enum)
    names = [n for n in wanted if n in index]
    count = max(index[n] for n in names) + 1
    raw = struct.unpack(f"<{count}q", k.read(k.sym(symbol), 8 * count))
    return {prefix + n.lower(): raw[index[n]] for n in names}


def read_vmstat(k: GuestKernel) -> dict[str, float]:
    f = _stat_array(k, "vm_zone_stat", "zone_stat_item", ZONE_STATS, "vm_")
    f.update(_stat_array(k, "vm_node_stat", "node_stat_item", NODE_STATS, "vm_"))
    f["memfree_kb"] = f["vm_nr_free_pages"] * 4
    index = k.enum("vm_event_item")
    names = [n for n in VM_EVENTS if n in index]
    count = max(index[n] for n in names) + 1
    events = dict.fromkeys(names, 0)
    for cpu in range(k.nr_cpus):
        raw = k.u64s(k.percpu("vm_event_states", cpu), count)
        for n in names:
            events[n] += raw[index[n]]
    f.update({"vm_" + n.lower(): v for n, v in events.items()})
    return f


read_vmstat.REQUIRES = ["vm_zone_stat", "vm_node_stat", "vm_event_states"]


# -- block devices ------------------------------------------------------------------
def block_devices(k: GuestKernel) -> Iterator[tuple[str, int]]:
    """(name, block_device address) of every whole disk in ``block_class``."""
    p = k.u64(k.sym("block_class") + k.off("class", "p"))
    head = p + k.off("subsys_private", "klist_devices") + k.off("klist", "k_list")
    o_node = k.off("klist_node", "n_node")
    o_knode, o_dev = k.off("device_private", "knode_class"), k.off("device_private", "device")
    o_name = k.off("device", "kobj") + k.off("kobject", "name")
    o_bd, o_partno = k.off("block_device", "bd_device"), k.off("block_device", "bd_partno")
    for node in walk_list(k, head, limit=1024):
        dev = k.u64(node - o_node - o_knode + o_dev)
        bdev = dev - o_bd
        if k.read(bdev + o_partno, 1)[0] == 0:
            yield k.cstring(k.u64(dev + o_name), 32), bdev


def read_block(k: GuestKernel, hz: int) -> dict[str, float]:
    o_stats = k.off("block_device", "bd_stats")
    o_sec, o_ios, o_ticks = (k.off("disk_stats", m) for m in ("sectors", "ios", "io_ticks"))
    f: dict[str, float] = {}
    for name, bdev in block_devices(k):
        if name.startswith(("loop", "ram")):
            continue
        stats = k.u64(bdev + o_stats)
        rd = rs = wr = ws = ticks = 0
        for cpu in range(k.nr_cpus):
            s = stats + k.per_cpu_offset[cpu]
            sectors, ios = k.u64s(s + o_sec, 4), k.u64s(s + o_ios, 4)
            rd, rs, wr, ws = rd + ios[0], rs + sectors[0], wr + ios[1], ws + sectors[1]
            ticks += k.u64(s + o_ticks)
        f.update({f"{name}_rd": rd, f"{name}_rsec": rs, f"{name}_wr": wr, f"{name}_wsec": ws,
                  f"{name}_ioms": ticks * 1000 // hz})
    return f


read_block.REQUIRES = ["block_class"]


# -- network ------------------------------------------------------------------------
def net_devices(k: GuestKernel) -> Iterator[tuple[str, int]]:
    """(name, net_device address) of every interface in the initial namespace."""
    head = k.sym("init_net") + k.off("net", "dev_base_head")
    o_list, o_name = k.off("net_device", "dev_list"), k.off("net_device", "name")
    for node in walk_list(k, head, limit=1024):
        dev = node - o_list
        yield k.cstring(dev + o_name, 16), dev


def _virtio_counters(k: GuestKernel, dev: int) -> dict[str, int]:
    """Packets and bytes of a virtio-net device, from its driver-private queues."""
    priv = dev + ((k.size("net_device") + 31) & ~31)  # netdev_priv(): NETDEV_ALIGN = 32
    pairs = k.u16(priv + k.off("virtnet_info", "curr_queue_pairs"))
    if not 0 < pairs <= 256:
        raise Inconsistent(f"virtio-net device at {dev:#x} reports {pairs} queue pairs")
    rq, sq = k.u64(priv + k.off("virtnet_info", "rq")), k.u64(priv + k.off("virtnet_info", "sq"))
    rq_size, sq_size = k.size("receive_queue"), k.size("send_queue")
    o_rs, o_ss = k.off("receive_queue", "stats"), k.off("send_queue", "stats")
    c = {"rxp": 0, "rxb": 0, "rxdrop": 0, "txp": 0, "txb": 0}
    for q in range(pairs):
        p, b, d = k.u64s(rq + q * rq_size + o_rs + k.off("virtnet_rq_stats", "packets"), 3)
        c["rxp"] += p; c["rxb"] += b; c["rxdrop"] += d  # noqa: E702
        p, b = k.u64s(sq + q * sq_size + o_ss + k.off("virtnet_sq_stats", "packets"), 2)
        c["txp"] += p; c["txb"] += b  # noqa: E702
    return c


def read_net(k: GuestKernel) -> dict[str, float]:
    o_stats, o_core = k.off("net_device", "stats"), k.off("net_device", "core_stats")
    o_rxe, o_txe, o_rxd, o_txd = (k.off("net_device_stats", m) for m in
                                  ("rx_errors", "tx_errors", "rx_dropped", "tx_dropped"))
    virtio = "virtnet_info" in k.symbols.user_types
    f: dict[str, float] = {"net_devices": 0}
    for name, dev in net_devices(k):
        f["net_devices"] += 1
        if name == "lo" or not (virtio and name.startswith("eth")):
            continue
        c = _virtio_counters(k, dev)
        st = dev + o_stats
        rx_drop, tx_drop = c["rxdrop"] + k.u64(st + o_rxd), k.u64(st + o_txd)
        core = k.u64(dev + o_core)
        if core:
            for cpu in range(k.nr_cpus):
                rd, td = k.u64s(core + k.per_cpu_offset[cpu], 2)
                rx_drop, tx_drop = rx_drop + rd, tx_drop + td
        f.update({f"{name}_rxp": c["rxp"], f"{name}_txp": c["txp"], f"{name}_rxb": c["rxb"],
                  f"{name}_txb": c["txb"], f"{name}_rxdrop": rx_drop, f"{name}_txdrop": tx_drop,
                  f"{name}_rxerr": k.u64(st + o_rxe), f"{name}_txerr": k.u64(st + o_txe)})
    return f


read_net.REQUIRES = ["init_net"]

# (feature, netns_mib member, enumerator): what `netstat -s` shows; packet loss on the
# path shows up as TCP retransmissions and timeouts, not in the NIC's counters
SNMP = (("tcp_retrans", "tcp_statistics", "TCP_MIB_RETRANSSEGS"),
        ("tcp_inerrs", "tcp_statistics", "TCP_MIB_INERRS"),
        ("tcp_outrsts", "tcp_statistics", "TCP_MIB_OUTRSTS"),
        ("tcp_timeouts", "net_statistics", "LINUX_MIB_TCPTIMEOUTS"),
        ("tcp_lost_retrans", "net_statistics", "LINUX_MIB_TCPLOSTRETRANSMIT"))


def read_snmp(k: GuestKernel) -> dict[str, float]:
    """TCP counters of the initial network namespace (per-CPU MIBs, summed)."""
    mib = k.sym("init_net") + k.off("net", "mib")
    f = {}
    for name, member, enumerator in SNMP:
        table = k.u64(mib + k.off("netns_mib", member))  # __percpu pointer
        at = table + 8 * k.symbols.constant(enumerator)
        f[name] = sum(k.u64(at + k.per_cpu_offset[cpu]) for cpu in range(k.nr_cpus))
    return f


read_snmp.REQUIRES = ["init_net"]

# name -> reader; readers taking ``hz`` get the guest's tick rate
GROUPS: dict[str, Callable] = {
    "load": read_load, "runqueues": read_runqueues, "time": read_time,
    "cpustat": read_cpustat, "vmstat": read_vmstat, "block": read_block, "net": read_net,
    "snmp": read_snmp,
}
