"""Disk faults on the guest's data disk (block node ``data`` on ``data-file``):
blkdebug spliced in with blockdev-add + blockdev-reopen (errors, held requests), QMP
I/O throttling, and bytes overwritten in the image file while the guest runs."""

from __future__ import annotations

import base64
import os
import re

from ..errors import ApplyError, TargetError
from ..fault import Fault, rate
from ..registry import Param, register
from . import _common as c

SECTOR = 512
WORK_AREA = 16 << 20          # the guest's disk worker writes the first 16 MiB
CHUNK_SECTORS = 128           # ... in 64 KiB rounds
QOM_BLK = "/machine/peripheral/{dev}/virtio-backend"
IO_ERROR = re.compile(r"(?:I/O error|Buffer I/O error)[^\n]*dev vda[^\n]*")


def _disk_size(fx: Fault) -> int:
    return fx.guest.disk_path.stat().st_size


def _splice(fx: Fault, extra: dict) -> str:
    """Insert a blkdebug node between ``data`` and ``data-file``; returns its name."""
    nodes = fx.cmd("query-named-block-nodes")
    busy = [n["node-name"] for n in nodes if n.get("drv") == "blkdebug"]
    if busy:
        raise ApplyError(f"{fx.kind.name}: guest {fx.guest.name} already has a blkdebug "
                         f"fault ({busy[0]}); stop it first or run `vmroc inject heal`",
                         kind=fx.kind.name, guest=fx.guest.name)
    node = f"inj-{c.short_id(fx)}"
    fx.state["node"] = node
    fx.save()  # before it exists
    fx.cmd("blockdev-add", driver="blkdebug", **{"node-name": node, "image": "data-file"},
           **extra)
    fx.cmd("blockdev-reopen", options=[{"driver": "raw", "node-name": "data", "file": node}])
    return node


def _unsplice(fx: Fault) -> None:
    node = fx.state.get("node")
    if not node or not fx.guest.alive():
        return
    names = {n["node-name"] for n in fx.cmd("query-named-block-nodes")}
    if node in names:
        fx.cmd("blockdev-reopen", options=[{"driver": "raw", "node-name": "data",
                                            "file": "data-file"}])
        fx.cmd("blockdev-del", **{"node-name": node})


def _io_errors(fx: Fault) -> dict | None:
    g = fx.guest.name
    lines = IO_ERROR.findall(fx.log_since(g))
    d = fx.delta(g, "disk_err") or 0
    if lines or d >= 1:
        return {"kernel_log": lines[:3], "io_error_lines": len(lines), "disk_err_delta": d}
    return None


@register
class DiskEio:
    name = "disk-eio"
    level = "disk"
    shared_mechanism = "blkdebug"  # one blkdebug node per guest disk
    params = (Param("iotype", str, "both", "which requests fail",
                    choices=("read", "write", "both")),
              Param("sector", int, None, "first failing sector (default: every request)",
                    min=0),
              Param("sectors", int, 1, "length of the failing sector range", min=1,
                    max=1 << 24),
              Param("rate", float, None, "instead of a range: percent of the 64 KiB chunks "
                    "of the guest's 16 MiB work area that fail", min=0.1, max=100),
              Param("errno", int, 5, "error number returned (5 = EIO)", min=1, max=133))
    effect = "the guest logs `I/O error, dev vda` or its disk worker's disk_err rises"
    mechanism = ("blkdebug node with inject-error rules (event read_aio/write_aio, iotype "
                 "set on every rule) spliced under node `data` by blockdev-add + "
                 "blockdev-reopen; reopened back to data-file and deleted on heal")

    def check(fx: Fault) -> None:
        p = fx.params
        addr = fx.spec.target.addr
        if addr is not None:
            p["sector"], p["sectors"] = addr[0] // SECTOR, max(1, -(-addr[1] // SECTOR))
        if p["sector"] is not None:
            end = (p["sector"] + p["sectors"]) * SECTOR
            size = _disk_size(fx)
            if end > size:
                last = p["sector"] + p["sectors"] - 1
                raise TargetError(f"disk-eio: sectors {p['sector']}..{last}"
                                  f" are outside {fx.guest.name}'s disk ({size // SECTOR} "
                                  "sectors)", kind="disk-eio", guest=fx.guest.name)

    def invoke(fx: Fault) -> None:
        p = fx.params
        types = ["read", "write"] if p["iotype"] == "both" else [p["iotype"]]
        if p["rate"] is not None:
            chunks = WORK_AREA // SECTOR // CHUNK_SECTORS
            n = max(1, round(chunks * p["rate"] / 100))
            sectors = sorted(fx.rng.sample(range(chunks), n))
            sectors = [s * CHUNK_SECTORS for s in sectors]
        elif p["sector"] is not None:
            step = CHUNK_SECTORS if p["sectors"] > CHUNK_SECTORS else 1
            sectors = list(range(p["sector"], p["sector"] + p["sectors"], step))[:512]
        else:
            sectors = [None]
        rules = []
        for t in types:
            for s in sectors:
                r = {"event": f"{t}_aio", "iotype": t, "errno": p["errno"]}
                if s is not None:
                    r["sector"] = s
                rules.append(r)
        fx.state["rules"] = len(rules)
        _splice(fx, {"inject-error": rules})

    verify = _io_errors
    teardown = _unsplice


@register
class DiskHang:
    name = "disk-hang"
    level = "disk"
    shared_mechanism = "blkdebug"  # one blkdebug node per guest disk
    params = (Param("iotype", str, "both", "which requests are held",
                    choices=("read", "write", "both")),)
    effect = "a request stays in flight (vda_inflight >= 1) and disk_ok stops advancing"
    mechanism = ("blkdebug node spliced under `data`; HMP `qemu-io -d "
                 "/machine/peripheral/vblk0/virtio-backend \"break write_aio TAG\"` "
                 "suspends the next request until `resume TAG` (through the device's own "
                 "backend: a temporary one would drain the node and deadlock)")
    window = 8.0

    def invoke(fx: Fault) -> None:
        _splice(fx, {})  # a blkdebug node without error rules: only breakpoints below
        types = ["read", "write"] if fx.params["iotype"] == "both" else [fx.params["iotype"]]
        tags = [f"{t}-{c.short_id(fx)}" for t in types]
        fx.state["tags"] = tags
        fx.save()
        for t, tag in zip(types, tags):
            out = fx.hmp(f'qemu-io -d {QOM_BLK.format(dev="vblk0")} "break {t}_aio {tag}"')
            if out.strip():
                raise ApplyError(f"disk-hang: qemu-io break: {out.strip()}", kind="disk-hang",
                                 guest=fx.guest.name, command="break", reply=out)

    def verify(fx: Fault) -> dict | None:
        new = fx.since(fx.guest.name)
        held = [s for s in new if s.get("vda_inflight", 0) >= 1]
        d = fx.delta(fx.guest.name, "disk_ok")
        if len(held) >= 2 and d is not None and d <= 1:
            return {"vda_inflight": held[-1]["vda_inflight"], "lines_held": len(held),
                    "disk_ok_delta": d}
        return None

    def teardown(fx: Fault) -> None:
        node = fx.state.get("node")
        if node and fx.guest.alive():
            names = {n["node-name"] for n in fx.cmd("query-named-block-nodes")}
            if node in names:
                dev = QOM_BLK.format(dev="vblk0")   # the device's own backend: no drain
                for tag in fx.state.get("tags", []):
                    fx.hmp(f'qemu-io -d {dev} "remove_break {tag}"')
                    fx.hmp(f'qemu-io -d {dev} "resume {tag}"')
        _unsplice(fx)


@register
class DiskSlow:
    name = "disk-slow"
    level = "disk"
    params = (Param("iops", int, 5, "I/O operations per second allowed", min=1),
              Param("bps", int, 0, "bytes per second allowed (0 = no byte limit)", min=0))
    effect = "the guest's disk is busy far longer: vda_ioms per second at least 3x baseline"
    mechanism = ("QMP `block_set_io_throttle` on the device's QOM path "
                 "(/machine/peripheral/vblk0/virtio-backend); all limits 0 to heal")

    def invoke(fx: Fault) -> None:
        fx.state["throttled"] = QOM_BLK.format(dev="vblk0")
        fx.save()
        fx.cmd("block_set_io_throttle", id=fx.state["throttled"], bps=fx.params["bps"],
               bps_rd=0, bps_wr=0, iops=fx.params["iops"], iops_rd=0, iops_wr=0)

    def verify(fx: Fault) -> dict | None:
        g = fx.guest.name
        before = fx.base_rate(g, "vda_ioms", q=0.25) or 0
        new = fx.since(g)
        during = rate(new, "vda_ioms") if len(new) >= 2 else None
        if during is not None and during >= max(3 * before, 300):
            return {"vda_ioms_per_s_before": round(before), "vda_ioms_per_s_during": round(during)}
        return None

    def teardown(fx: Fault) -> None:
        if fx.state.get("throttled") and fx.guest.alive():
            fx.cmd("block_set_io_throttle", id=fx.state["throttled"], bps=0, bps_rd=0,
                   bps_wr=0, iops=0, iops_rd=0, iops_wr=0)


@register
class DiskCorrupt:
    name = "disk-corrupt"
    level = "disk"
    params = (Param("offset", int, None, "byte offset in the disk (default: random, after "
                    "the worker's 16 MiB area)", min=0),
              Param("length", int, 512, "bytes overwritten with random data", min=1,
                    max=1 << 20))
    effect = ("the image QEMU serves the guest's disk from holds the overwritten bytes "
              "(read back; QEMU reads through the host page cache)")
    mechanism = ("pwrite of random bytes into the image file while the guest runs; the "
                 "original bytes are kept in the lease and restored on heal where the "
                 "corruption is still in place")
    instant = True

    def check(fx: Fault) -> None:
        p = fx.params
        if fx.spec.target.addr is not None:
            p["offset"], p["length"] = fx.spec.target.addr
        size = _disk_size(fx)
        if p["offset"] is None:
            p["offset"] = fx.rng.randrange(WORK_AREA, size - p["length"]) // SECTOR * SECTOR
        if p["offset"] + p["length"] > size:
            raise TargetError(f"disk-corrupt: bytes {p['offset']}..{p['offset'] + p['length']}"
                              f" are outside {fx.guest.name}'s disk ({size} bytes)",
                              kind="disk-corrupt", guest=fx.guest.name)

    def invoke(fx: Fault) -> None:
        off, n = fx.params["offset"], fx.params["length"]
        with open(fx.guest.disk_path, "r+b") as f:
            f.seek(off)
            orig = f.read(n)
            new = bytes(fx.rng.getrandbits(8) for _ in range(n))
            if new == orig:
                new = bytes(b ^ 0xFF for b in orig)
            fx.state.update(offset=off, orig=base64.b64encode(orig).decode(),
                            new=base64.b64encode(new).decode())
            fx.save()  # originals first
            f.seek(off)
            f.write(new)
            f.flush()

    def verify(fx: Fault) -> dict | None:
        off = fx.state["offset"]
        new = base64.b64decode(fx.state["new"])
        with open(fx.guest.disk_path, "rb") as f:
            seen = os.pread(f.fileno(), len(new), off)
        if seen == new:
            return {"offset": off, "bytes": len(new), "image_holds_new_bytes": True,
                    "first_bytes": new[:8].hex()}
        return None

    def teardown(fx: Fault) -> None:
        if "orig" not in fx.state:
            return
        off = fx.state["offset"]
        orig, new = (base64.b64decode(fx.state[k]) for k in ("orig", "new"))
        with open(fx.guest.disk_path, "r+b") as f:
            f.seek(off)
            now = f.read(len(new))
            if now == new:
                f.seek(off)
                f.write(orig)
        fx.state["restored"] = now == new
