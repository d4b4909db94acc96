"""Network faults. The host kernel has no netem, so: nftables bridge rules in the lab
namespace (drop, corrupt, bandwidth policing), QEMU ``filter-buffer`` (delay), QMP
``set_link`` (link down), and a bounded UDP flood from the lab namespace."""

from __future__ import annotations

import sys

from ..errors import TargetError
from ..fault import Fault, rate
from ..registry import Param, register
from . import _common as c


def _both_ways(fx: Fault, action: str, pct: float) -> dict[str, list[str]]:
    t = c.tap(fx, fx.guest.name)
    m = c.pct_match(pct)
    return {"forward": [f'iifname "{t}" {m}{action}', f'oifname "{t}" {m}{action}'],
            "input": [f'iifname "{t}" {m}{action}'],
            "output": [f'oifname "{t}" {m}{action}']}


def _nft_teardown(fx: Fault) -> None:
    c.nft_remove(fx)


@register
class NetDrop:
    name = "net-drop"
    level = "network"
    params = (Param("loss", float, 30.0, "percent of frames dropped, each direction",
                    min=1, max=100),)
    effect = "pings from the lab namespace to the guest are lost (loss > 0)"
    mechanism = ("nftables bridge-family rule `numgen random mod 100 < LOSS drop` on the "
                 "guest's tap (forward, input, output hooks) in the lab namespace")

    def invoke(fx: Fault) -> None:
        c.nft_apply(fx, _both_ways(fx, "drop", fx.params["loss"]))

    def verify(fx: Fault) -> dict | None:
        p = c.ping(fx, fx.guest.ip)
        lost = p.get("sent", 0) - p.get("received", 0)
        return {"ping": p} if p.get("sent") and lost >= 2 else None

    teardown = _nft_teardown


@register
class NetCorrupt:
    name = "net-corrupt"
    level = "network"
    params = (Param("pct", float, 30.0, "percent of frames whose payload is overwritten",
                    min=1, max=100),
              Param("offset", int, 32, "byte offset into the L4 header+payload", min=0,
                    max=1400))
    effect = ("ping replies come back with a different payload, or corrupted requests "
              "are discarded by the guest (checksum): corrupt + lost > 0")
    mechanism = ("nftables bridge-family payload mangling `@th,OFFSET*8,16 set 0x5a5a` on "
                 "PCT% of the guest's frames (forward, input, output hooks)")

    def invoke(fx: Fault) -> None:
        action = f"@th,{fx.params['offset'] * 8},16 set 0x5a5a"
        c.nft_apply(fx, _both_ways(fx, action, fx.params["pct"]))

    def verify(fx: Fault) -> dict | None:
        p = c.ping(fx, fx.guest.ip)
        bad = p.get("corrupt", 0) + p.get("sent", 0) - p.get("received", 0)
        return {"ping": p} if p.get("sent") and bad >= 2 else None

    teardown = _nft_teardown


@register
class NetDelay:
    name = "net-delay"
    level = "network"
    params = (Param("delay_ms", int, 200, "buffer release interval (ms); each direction "
                    "waits up to this long", min=10, max=10000),)
    effect = "ping round-trip time rises by at least a quarter of delay_ms"
    mechanism = ("QEMU `filter-buffer` object on netdev net0 (queue all) with interval "
                 "delay_ms, added with QMP object-add, removed with object-del")

    def setup(fx: Fault) -> None:
        p = c.ping(fx, fx.guest.ip, count=5, interval=0.1)
        fx.state["rtt_before_ms"] = p.get("rtt_median_ms")

    def invoke(fx: Fault) -> None:
        oid = f"inj-{c.short_id(fx)}"
        fx.state["object"] = oid
        fx.save()
        fx.cmd("object-add", **{"qom-type": "filter-buffer", "id": oid, "netdev": "net0",
                                "queue": "all", "interval": fx.params["delay_ms"] * 1000})

    def verify(fx: Fault) -> dict | None:
        p = c.ping(fx, fx.guest.ip, count=6, interval=0.1,
                   timeout=2 * fx.params["delay_ms"] / 1000 + 1)
        before = fx.state.get("rtt_before_ms") or 0
        during = p.get("rtt_median_ms")
        if during is not None and during - before >= fx.params["delay_ms"] / 4:
            return {"rtt_before_ms": before, "rtt_during_ms": during, "ping": p}
        return None

    def teardown(fx: Fault) -> None:
        oid = fx.state.get("object")
        if not oid or not fx.guest.alive():
            return
        objs = {o["name"] for o in fx.cmd("qom-list", path="/objects")}
        if oid in objs:
            fx.cmd("object-del", id=oid)


@register
class NetSlow:
    name = "net-slow"
    level = "network"
    params = (Param("kbytes", int, 8, "bandwidth cap in KiB/s, each direction", min=1,
                    max=100000),)
    effect = "fetching the guest's 16 KiB page from the lab namespace takes 4x longer"
    mechanism = ("nftables bridge-family policer `limit rate over KBYTES kbytes/second "
                 "burst 4 kbytes drop` on the guest's tap, both directions")

    def setup(fx: Fault) -> None:
        out = c.probe(fx, "fetch", f"http://{fx.guest.ip}/index.html", "--timeout", "5")
        fx.state["fetch_before_s"] = out.get("seconds")

    def invoke(fx: Fault) -> None:
        k = fx.params["kbytes"]
        c.nft_apply(fx, _both_ways(fx, f"limit rate over {k} kbytes/second burst 4 kbytes "
                                        "drop", 100))

    def verify(fx: Fault) -> dict | None:
        out = c.probe(fx, "fetch", f"http://{fx.guest.ip}/index.html", "--timeout", "8")
        before = fx.state.get("fetch_before_s") or 0.05
        if out.get("seconds", 0) >= max(4 * before, 0.2):
            return {"fetch_before_s": before, "fetch_during": out}
        return None

    teardown = _nft_teardown


@register
class NetLinkDown:
    name = "net-link-down"
    level = "network"
    params = ()
    effect = "every ping to the guest is lost while the link is down"
    mechanism = "HMP `set_link nic0 off` (virtio-net link state), `on` to heal"

    def invoke(fx: Fault) -> None:
        fx.state["link"] = "down"
        fx.save()
        fx.hmp("set_link nic0 off")  # QMP set_link's `name` clashes with deploy QMP.cmd

    def verify(fx: Fault) -> dict | None:
        p = c.ping(fx, fx.guest.ip, count=5, interval=0.1, timeout=0.5)
        return {"ping": p} if p.get("sent") and p.get("received") == 0 else None

    def teardown(fx: Fault) -> None:
        if fx.state.get("link") == "down" and fx.guest.alive():
            fx.hmp("set_link nic0 on")


@register
class NetFlood:
    name = "net-flood"
    level = "network"
    params = (Param("pps", int, 3000, "UDP packets per second", min=1, max=200000),
              Param("size", int, 512, "payload bytes per packet", min=1, max=1400),
              Param("port", int, 9, "destination UDP port", min=1, max=65535))
    effect = "the guest's eth0 receive rate rises at least fivefold"
    mechanism = ("a bounded UDP flood (python, stops by itself) from the lab namespace to "
                 "the guest's lab address; the target must be in 10.77.0.0/24")

    def check(fx: Fault) -> None:
        if not fx.guest.ip.startswith("10.77.0."):
            raise TargetError(f"net-flood: {fx.guest.ip} is outside the lab subnet",
                              kind="net-flood", guest=fx.guest.name)

    def invoke(fx: Fault) -> None:
        bound = fx.spec.duration + fx.kind.window + 5
        c.spawn(fx, fx.lab.netns_prefix() + [
            sys.executable, "-m", "vmroc.inject._probe", "flood", fx.guest.ip,
            "--pps", str(fx.params["pps"]), "--size", str(fx.params["size"]),
            "--port", str(fx.params["port"]), "--seconds", str(bound)])

    def verify(fx: Fault) -> dict | None:
        g = fx.guest.name
        before = fx.base_rate(g, "eth0_rxp", q=0.25) or 0
        new = fx.since(g)
        during = rate(new, "eth0_rxp") if len(new) >= 2 else None
        if during is not None and during >= max(5 * before, 100):
            return {"rx_pps_before": round(before, 1), "rx_pps_during": round(during, 1)}
        return None

    def teardown(fx: Fault) -> None:
        c.kill_spawned(fx)
