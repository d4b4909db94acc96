"""Cluster faults: a whole guest paused, killed or reset; guests cut off from each
other; the lab bridge removed."""

from __future__ import annotations

import signal

from vmroc.deploy.lab import BRIDGE, BRIDGE_IP

from ..errors import SpecError
from ..fault import Fault
from ..registry import register
from . import _common as c


def _all(fx: Fault) -> list[str]:
    return [g.name for g in fx.lab.guests]


@register
class GuestSuspend:
    name = "guest-suspend"
    level = "cluster"
    part = "guest"
    params = ()
    effect = "QMP run state is paused and the guest prints no status line"
    mechanism = "QMP `stop`; `cont` to heal"

    def invoke(fx: Fault) -> None:
        fx.state["stopped"] = True
        fx.save()
        fx.cmd("stop")

    def verify(fx: Fault) -> dict | None:
        quiet = c.silent_for(fx, fx.guest.name, 2.0)
        if quiet is None:
            return None
        st = c.run_state(fx)
        return {"run_state": st, "silent_s": quiet} if st == "paused" else None

    def teardown(fx: Fault) -> None:
        if fx.state.get("stopped") and fx.guest.alive() and c.run_state(fx) == "paused":
            fx.cmd("cont")


@register
class GuestCrash:
    name = "guest-crash"
    level = "cluster"
    part = "guest"
    params = ()
    effect = "the guest's QEMU process is gone (it is relaunched on recovery)"
    mechanism = "SIGKILL to the guest's QEMU process; `Guest.launch()` to heal"
    destructive = True
    recover_timeout = 150.0

    def invoke(fx: Fault) -> None:
        g = fx.guest
        fx.state["killed_pid"] = g.pid
        fx.save()
        g.kill(signal.SIGKILL)

    def verify(fx: Fault) -> dict | None:
        g = fx.guest
        return None if g.alive() else {"pid": fx.state.get("killed_pid"), "alive": False}

    def teardown(fx: Fault) -> None:
        if "killed_pid" not in fx.state:
            return
        g = fx.guest
        if not g.alive():
            import time
            deadline = time.monotonic() + 5  # let the killed process be reaped
            while c.start_time(fx.state["killed_pid"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            g.launch()


@register
class GuestReboot:
    name = "guest-reboot"
    level = "cluster"
    part = "guest"
    params = ()
    effect = "the guest boots again: a status line with a smaller uptime"
    mechanism = "QMP `system_reset` (the QEMU process stays)"
    destructive = True
    window = 30.0
    recover_timeout = 120.0

    def invoke(fx: Fault) -> None:
        base = fx.baseline.get(fx.guest.name) or []
        fx.state["up_before"] = base[-1]["up"] if base else None
        fx.save()
        fx.cmd("system_reset")

    def verify(fx: Fault) -> dict | None:
        before = fx.state.get("up_before")
        for s in fx.since(fx.guest.name):
            if before is not None and s["up"] < before:
                return {"up_before": before, "up_after": s["up"]}
        return None

    def teardown(fx: Fault) -> None:
        g = fx.guest
        if g.alive() and c.run_state(fx) in ("paused", "guest-panicked"):
            fx.cmd("cont")


@register
class NetPartition:
    name = "net-partition"
    level = "cluster"
    part = "network"  # what breaks is the network between guests
    params = ()
    guests = (1, None)
    effect = ("HTTP requests across the cut fail: http_err rises on a guest whose peer "
              "is on the other side")
    mechanism = ("nftables bridge-family rules dropping every frame between the taps of "
                 "the target guests and the taps of all other guests")
    affected = _all

    def check(fx: Fault) -> None:
        if not set(_all(fx)) - set(fx.spec.guests):
            raise SpecError("net-partition: the target guests are the whole lab; leave at "
                            "least one guest on the other side", kind="net-partition")

    def invoke(fx: Fault) -> None:
        a = [c.tap(fx, n) for n in fx.spec.guests]
        b = [c.tap(fx, n) for n in _all(fx) if n not in fx.spec.guests]
        sa = "{ " + ", ".join(f'"{t}"' for t in a) + " }"
        sb = "{ " + ", ".join(f'"{t}"' for t in b) + " }"
        c.nft_apply(fx, {"forward": [f"iifname {sa} oifname {sb} drop",
                                     f"iifname {sb} oifname {sa} drop"]})

    def verify(fx: Fault) -> dict | None:
        side = set(fx.spec.guests)
        ips = {g.ip: g.name for g in fx.lab.guests}
        for g in fx.lab.guests:
            peer = ips.get(g.config.get("peer"))
            if peer is None or (g.name in side) == (peer in side):
                continue
            d = fx.delta(g.name, "http_err")
            if d and d >= 1:
                return {"guest": g.name, "peer": peer, "http_err_delta": d}
        return None

    def teardown(fx: Fault) -> None:
        c.nft_remove(fx)


@register
class BridgeDown:
    name = "bridge-down"
    level = "cluster"
    part = "network"
    lab_wide = True
    params = ()
    guests = (0, None)
    effect = "the bridge is gone and HTTP requests between guests fail (http_err rises)"
    mechanism = ("`ip link del br0` in the lab namespace; heal recreates br0 with "
                 f"{BRIDGE_IP}/24 and re-attaches every guest tap")
    affected = _all

    def invoke(fx: Fault) -> None:
        fx.state["bridge"] = BRIDGE
        fx.save()
        fx.netns(["ip", "link", "del", BRIDGE])

    def verify(fx: Fault) -> dict | None:
        gone = fx.netns(["ip", "link", "show", BRIDGE], check=False).returncode != 0
        for g in fx.lab.guests:
            d = fx.delta(g.name, "http_err")
            if gone and d and d >= 1:
                return {"bridge_present": False, "guest": g.name, "http_err_delta": d}
        return None

    def teardown(fx: Fault) -> None:
        if not fx.state.get("bridge") or not fx.lab.is_up:
            return
        if fx.netns(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
            fx.netns(["ip", "link", "add", BRIDGE, "type", "bridge"])
            fx.netns(["ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE])
        fx.netns(["ip", "link", "set", BRIDGE, "up"])
        for g in fx.lab.guests:
            fx.netns(["ip", "link", "set", g.config["tap"], "master", BRIDGE, "up"])
