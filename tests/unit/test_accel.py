"""The C accelerator against the pure-Python layers on crafted memory: same
translations, same bytes, same errors, same list and task walks."""

from __future__ import annotations

import os
import struct

import pytest

from vmroc.introspect._accel import _vmread, available
from vmroc.introspect.features import Inconsistent
from vmroc.introspect.layers import FOUR_GIB, AddressError, KernelSpace

from .test_layers import MiB, _entry, ram_file

DMAP = 0xFFFF_8880_0000_0000
# `make test` sets it: there the module must have been built (deploy/setup.sh installs gcc)
REQUIRED = os.environ.get("VMROC_REQUIRE_ACCEL") == "1"

pytestmark = pytest.mark.skipif(not available() and not REQUIRED,
                                reason="the C accelerator was not built (no compiler at install)")


def test_module_is_built():
    assert available(), "vmroc.introspect._accel._vmread missing: run `bash deploy/setup.sh`"


def both(ram, page_table=0, phys_base=0, la57=False, page_offset=None):
    py = KernelSpace(ram, page_table, phys_base, la57, page_offset)
    c = _vmread.Space(str(ram.path), page_table, phys_base, la57, page_offset)
    return py, c


def same_error(py_call, c_call) -> str:
    with pytest.raises(AddressError) as py_err:
        py_call()
    with pytest.raises(AddressError) as c_err:
        c_call()
    assert str(c_err.value) == str(py_err.value)
    assert (c_err.value.layer, c_err.value.address) == (py_err.value.layer, py_err.value.address)
    return str(c_err.value)


@pytest.mark.parametrize("la57", [False, True])
def test_page_walks_match_python(tmp_path, la57):
    vaddr = 0xFF11_2233_4455_6789 if la57 else 0xFFFF_C900_0012_3456
    shifts = (48, 39, 30, 21, 12) if la57 else (39, 30, 21, 12)
    tables = [0x1000 * (i + 1) for i in range(len(shifts))]
    page = 0x80_0000
    writes = {t + ((vaddr >> sh) & 0x1FF) * 8: _entry(nxt)
              for t, sh, nxt in zip(tables, shifts, tables[1:] + [page])}
    writes[page + (vaddr & 0xFFF)] = b"walked"
    pd = tables[-2]  # a 2 MiB page in the next slot of the same page directory
    big_v = (vaddr & ~((1 << 21) - 1)) + (1 << 21) + 0x1234
    writes[pd + ((big_v >> 21) & 0x1FF) * 8] = _entry(0x60_0000, large=True)
    writes[0x60_0000 + 0x1234] = b"large!"
    ram = ram_file(tmp_path, 16 * MiB, writes)
    py, c = both(ram, tables[0], la57=la57)
    for v in (vaddr, big_v):
        assert c.translate(v) == py.translate(v)
        assert c.read(v, 6) == py.read(v, 6)
    missing = vaddr + (64 << 21)
    assert "not present" in same_error(lambda: py.read(missing, 8), lambda: c.read(missing, 8))
    c.flush()
    assert c.read(vaddr, 6) == b"walked"


def test_direct_map_kernel_image_and_page_crossing(tmp_path):
    ram = ram_file(tmp_path, 64 * MiB, {0x20_0000: b"text", 0x1FFE: b"abcd",
                                        0x3000: struct.pack("<QQQ", 1, 2, 3)})
    py, c = both(ram, phys_base=0x20_0000 - 0x100_0000, page_offset=DMAP)
    for v, n in ((DMAP + 0x1FFE, 4), (0xFFFF_FFFF_8100_0000, 4), (DMAP + 0x3000, 24)):
        assert c.read(v, n) == py.read(v, n)
    assert c.u64s(DMAP + 0x3000, 3) == (1, 2, 3) and c.u64(DMAP + 0x3008) == 2
    assert c.u32(DMAP + 0x3000) == 1 and c.u16(DMAP + 0x3010) == 3
    past_ram = 0xFFFF_FFFF_8100_0000 + 64 * MiB  # kernel-image arithmetic beyond the file
    assert "outside guest RAM" in same_error(lambda: py.read(past_ram, 4),
                                             lambda: c.read(past_ram, 4))
    assert "not present" in same_error(lambda: py.read(DMAP + 64 * MiB - 2, 4),
                                       lambda: c.read(DMAP + 64 * MiB - 2, 4))


def test_q35_split_above_2816_mib(tmp_path):
    ram = ram_file(tmp_path, 3072 * MiB, {2048 * MiB: b"high", 2047 * MiB: b"low!"})
    py, c = both(ram, page_offset=DMAP)
    assert c.read(DMAP + FOUR_GIB, 4) == py.read(DMAP + FOUR_GIB, 4) == b"high"
    assert c.read(DMAP + 2047 * MiB, 4) == b"low!"
    same_error(lambda: py.read(DMAP + 2048 * MiB, 4), lambda: c.read(DMAP + 2048 * MiB, 4))


def _list(addrs: list[int], head: int) -> dict[int, bytes]:
    """A circular list_head list: head -> addrs... -> head (next, prev)."""
    ring = [head, *addrs]
    return {node: struct.pack("<QQ", DMAP + ring[(i + 1) % len(ring)],
                              DMAP + ring[i - 1]) for i, node in enumerate(ring)}


def test_walk_list_and_torn_lists(tmp_path):
    head, nodes = 0x1000, [0x2000, 0x3000, 0x4000]
    writes = _list(nodes, head)
    ram = ram_file(tmp_path, 16 * MiB, writes)
    c = _vmread.Space(str(ram.path), 0, 0, False, DMAP)
    assert c.walk_list(DMAP + head, 100) == [DMAP + n for n in nodes]
    with pytest.raises(Inconsistent, match="longer than 2"):
        c.walk_list(DMAP + head, 2)
    writes[0x3000 + 8] = struct.pack("<Q", DMAP + 0x4000)  # a prev pointer out of place
    torn = _vmread.Space(str(ram_file(tmp_path, 16 * MiB, writes).path), 0, 0, False, DMAP)
    with pytest.raises(Inconsistent, match="changed during the walk"):
        torn.walk_list(DMAP + head, 100)


def test_task_rows_match_the_python_walk(tmp_path):
    from vmroc.introspect.features import task_rows
    # task_struct: tasks@0x10 pid@0x30 tgid@0x34 state@0x38 exit@0x3c flags@0x40
    # parent@0x48 mm@0x50 utime@0x58 stime@0x60 min@0x68 maj@0x70 comm@0x78; mm rss@0x20
    offsets = (0x10, 0x30, 0x34, 0x38, 0x3C, 0x40, 0x48, 0x50, 0x58, 0x60, 0x68, 0x70, 0x78,
               0x20)
    tasks = [0x10000, 0x11000, 0x12000]
    writes = _list([t + 0x10 for t in tasks], 0x9000)
    for i, t in enumerate(tasks):
        writes[t + 0x30] = struct.pack("<iiIiI", i + 1, i + 1, 1, 0, 0x200000 * (i == 1))
        writes[t + 0x48] = struct.pack("<QQQQQQ", DMAP + tasks[0], DMAP + 0x20000 * (i != 1),
                                       10**9 * i, 5, 7 + i, i)
        writes[t + 0x78] = f"task{i}".encode() + b"\0" * 11
    writes[0x20000 + 0x20] = struct.pack("<QQQQ", 3, 4, 99, (1 << 64) - 2)  # shmem "negative"
    ram = ram_file(tmp_path, 16 * MiB, writes)

    class View:  # what task_rows needs of a kernel view, on the Python layers
        space = KernelSpace(ram, 0, 0, page_offset=DMAP)
        read = space.read
        u64 = space.u64
        s32 = staticmethod(lambda v: struct.unpack("<i", View.space.read(v, 4))[0])
        u32 = staticmethod(lambda v: struct.unpack("<I", View.space.read(v, 4))[0])
        u64s = staticmethod(lambda v, n: struct.unpack(f"<{n}Q", View.space.read(v, 8 * n)))

    c = _vmread.Space(str(ram.path), 0, 0, False, DMAP)
    rows = c.tasks(DMAP + 0x9000, offsets, 100)
    assert rows == task_rows(View, DMAP + 0x9000, offsets)
    assert [(r[1], r[3], r[4][:5]) for r in rows] == [(1, 1, b"task0"), (2, 1, b"task1"),
                                                      (3, 1, b"task2")]
    assert rows[1][12:] == (0, 0, 0) and rows[0][12:] == (3, 4, (1 << 64) - 2)
    writes[tasks[2] + 0x30] = struct.pack("<i", 0)  # pid 0 mid-list: torn
    torn = _vmread.Space(str(ram_file(tmp_path, 16 * MiB, writes).path), 0, 0, False, DMAP)
    with pytest.raises(Inconsistent, match="has pid 0"):
        torn.tasks(DMAP + 0x9000, offsets, 100)


def _accel_view(tmp_path, synthetic):
    """An ``AccelKernel`` on a RAM file holding the synthetic kernel's pages (its
    addresses are in the direct map, so the file offset is the address - DMAP)."""
    from vmroc.introspect.backends import AccelKernel
    path = tmp_path / "synthetic.ram"
    with open(path, "wb") as f:
        f.truncate(max(page for page in synthetic.pages) * 4096 + 4096 - DMAP)
        for page, data in synthetic.pages.items():
            f.seek(page * 4096 - DMAP)
            f.write(data)
    k = object.__new__(AccelKernel)  # no kernel to find: the synthetic one's tables
    k.guest, k.symbols, k.kaslr = "synthetic", synthetic.symbols, 0
    k.nr_cpus, k.per_cpu_offset = synthetic.nr_cpus, synthetic.per_cpu_offset
    k.space = s = _vmread.Space(str(path), 0, 0, False, DMAP)
    k.read, k.u64, k.u32, k.s32, k.u16, k.u64s, k.flush = (s.read, s.u64, s.u32, s.s32, s.u16,
                                                           s.u64s, s.flush)
    return k


def _same(a, b):
    """Equal, in the same order, with the same types (an int is not a float here)."""
    assert a == b
    assert [(k, type(v)) for k, v in a.items()] == [(k, type(v)) for k, v in b.items()]


def test_whole_groups_in_c_match_the_python_readers(tmp_path):
    """read_tasks and the fixed-address groups' plans give what features' readers give
    (same names, order, values and types) on the synthetic kernel."""
    from vmroc.introspect.features import GROUPS, read_tasks

    from .synthetic_kernel import SyntheticKernel
    synthetic = SyntheticKernel()
    k = _accel_view(tmp_path, synthetic)
    features, tasks = k.read_tasks()
    want_features, want_tasks = read_tasks(synthetic)
    _same(features, want_features)
    assert len(tasks) == len(want_tasks) >= 3
    for got, want in zip(tasks, want_tasks):
        _same(got, want)
    planned = []
    for name, fn in GROUPS.items():
        plan = k.plan(name, 250)
        if plan is None:
            continue
        planned.append((name, plan))
        want = fn(synthetic, hz=250) if name in ("time", "block") else fn(synthetic)
        _same(k.space.read_plan(plan), want)
    assert [n for n, _ in planned] == list(GROUPS)  # every group: one C call per sample
    out = {}
    planned = tuple(planned)
    assert k.space.read_plans(planned, out) == []
    assert len(out) == sum(len(k.space.read_plan(p)) for _, p in planned)
    broken = (("bad", (("bad1", "Q", 0, (8,), 1, 2048.0),)), *planned)  # an unmapped address
    again = {}
    assert k.space.read_plans(broken, again) == ["bad"] and again == out  # the rest are read
    again = {}
    assert k.space.read_plans(planned, again) == [] and again == out  # parsed again: the same
    with pytest.raises(AddressError):
        k.space.read_plan(broken[0][1])


def test_a_task_record_is_given_again_until_one_of_its_values_changes(tmp_path):
    """read_tasks hands out the previous sample's record of a task none of whose values
    changed (the cost of a sample is mostly new records), and a new one when any did; the
    older sample keeps what it read."""
    from vmroc.introspect.features import read_tasks

    from .synthetic_kernel import SyntheticKernel
    synthetic = SyntheticKernel()
    k = _accel_view(tmp_path, synthetic)
    _, first = k.read_tasks()
    _, second = k.read_tasks()
    assert all(a is b for a, b in zip(first, second)) and len(first) == 4
    worker = next(i for i, t in enumerate(first) if t["comm"] == "worker")
    at = synthetic.tasks[worker] + synthetic.off("task_struct", "utime")
    synthetic.put(at, "Q", 7 * 10**9)  # the worker ran: 7 s of user time
    _write_pages(tmp_path / "synthetic.ram", synthetic)
    k.flush()
    _, third = k.read_tasks()
    assert third[worker] is not second[worker]
    assert (third[worker]["utime"], second[worker]["utime"]) == (7.0, 5.0)
    assert all(third[i] is second[i] for i in range(4) if i != worker)
    assert third == read_tasks(synthetic)[1]


def _write_pages(path, synthetic):
    with open(path, "r+b") as f:  # in place: a Space mapping the file sees the change
        for page, data in synthetic.pages.items():
            f.seek(page * 4096 - DMAP)
            f.write(data)


def test_kernel_log_in_c_matches_read_new(tmp_path):
    """AccelLog.read_lines gives the lines and error count the sampler makes of
    KernelLog.read_new on the same ring: finalized, data-less, wrapped and pending
    records, then resuming where it stopped."""
    from vmroc.introspect.backends import AccelLog
    from vmroc.introspect.printk import KernelLog

    from .synthetic_kernel import SyntheticKernel
    syn = SyntheticKernel()
    members = syn.symbols.members
    members["printk_ringbuffer"] = {"desc_ring": 0, "text_data_ring": 256}
    members["prb_desc_ring"] = {"count_bits": 0, "descs": 8, "infos": 16, "head_id": 24,
                                "tail_id": 32}
    members["prb_data_ring"] = {"size_bits": 0, "data": 8}
    members["prb_desc"] = {"state_var": 0, "text_blk_lpos": 8}
    members["printk_info"] = {"seq": 0, "ts_nsec": 8, "text_len": 16, "caller_id": 20}
    rb, size = syn.alloc(), 4096
    syn.put(syn.alloc(symbol="prb"), "Q", rb)
    descs, infos, data = syn.alloc(4 * 65536), syn.alloc(4 * 65536), syn.alloc(size)
    syn.put(rb, "IxxxxQQ", 2, descs, infos)  # count_bits 2: four descriptors
    syn.put(rb + 256, "IxxxxQ", 12, data)

    def record(ident, state, begin, nxt, seq, ts, level, text):
        idx = ident & 3
        syn.put(descs + idx * 65536, "QQQ", (state << 62) | ident, begin, nxt)
        syn.put(infos + idx * 65536, "QQHBB", seq, ts, len(text), 0, level << 5)
        if not begin & 1 and begin != nxt:
            start = 0 if begin // size != nxt // size else begin % size
            syn.write(data + start + 8, text)

    def head(tail, head_id):
        syn.put(rb + 24, "QQ", head_id, tail)

    record(8, 2, 100, 140, 50, 1_500_000_000, 6, "first line".encode())
    record(9, 2, 1, 1, 51, 1_600_000_000, 6, b"")  # data-less
    record(10, 2, size + 4000, 2 * size + 60, 52, 123_456_789_012, 3, "wr\xe4pped".encode())
    record(11, 1, 300, 340, 53, 130_000_000_000, 4, b"still being written")
    head(8, 11)
    k = _accel_view(tmp_path, syn)
    py, c = KernelLog(syn), AccelLog(k)

    def same():
        records = py.read_new()
        want = ([str(r) for r in records], sum(r.level <= 3 for r in records))
        assert c.read_lines() == want
        assert (c.next_id, c.next_seq) == (py.next_id, py.next_seq)
        return want

    lines, errors = same()
    assert len(lines) == 2 and errors == 1 and lines[1] == "[  123.456789] wräpped"
    assert same() == ([], 0)  # nothing new: the pending record stops both
    record(11, 2, 300, 340, 53, 130_000_000_000, 4, b"now done \xff")
    record(12, 2, 400, 420, 54, 131_000_000_000, 2, b"more")
    head(9, 12)
    _write_pages(tmp_path / "synthetic.ram", syn)
    lines, errors = same()
    assert len(lines) == 2 and errors == 1 and lines[0].endswith("now done \ufffd")
