"""The etcd cluster of an etcd lab, asked from the host: who leads, and is every
acknowledged write there.

Each guest's client writes its own key ``/vmroc/<guest>`` with a growing sequence number
and prints the last one acknowledged (``etcd_acked``) on its status line. ``check_writes``
reads every key through every member with a linearizable read and reports any member
that returns less than what was acknowledged before the read: a lost write.

    check = check_writes(lab)   # {"agree": True, "leaders": {...}, "lost": [], ...}

The host reaches the members through the lab's network namespace (``ip netns exec``
running busybox ``wget`` against etcd's JSON gateway); a lab on QEMU's socket network
has no such path and gets ``None``.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .lab import Lab

__all__ = ["check_writes", "member_call", "leaders"]

CLIENT_PORT = 2379
KEY_PREFIX = "/vmroc/"


def member_call(lab: "Lab", guest: str, path: str, body: dict,
                timeout: float = 5.0) -> dict | None:
    """POST ``body`` to ``path`` of ``guest``'s member; the JSON reply, or None if it
    did not answer (down, partitioned, no leader)."""
    prefix = lab.netns_prefix()
    if not prefix:
        return None
    url = f"http://{lab.guest(guest).ip}:{CLIENT_PORT}{path}"
    # (no -T: busybox 1.35's wget crashes with it; the subprocess timeout bounds the call)
    cmd = prefix + ["busybox", "wget", "-q", "-O", "-", "--post-data", json.dumps(body), url]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 2)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def leaders(lab: "Lab") -> dict[str, str | None]:
    """Guest -> the guest its member names as leader (None: no answer or no leader)."""
    names: dict[str, str] = {}
    out: dict[str, str | None] = {}
    for g in lab.guests:
        status = member_call(lab, g.name, "/v3/maintenance/status", {})
        if status is None:
            out[g.name] = None
            continue
        if not names:
            members = member_call(lab, g.name, "/v3/cluster/member/list", {}) or {}
            names = {m["ID"]: m.get("name", "") for m in members.get("members", [])}
        out[g.name] = names.get(status.get("leader", ""))
    return out


def _values(reply: dict | None) -> dict[str, int] | None:
    """Key -> integer value of a range reply (None: no reply)."""
    if reply is None:
        return None
    return {base64.b64decode(kv["key"]).decode(): int(base64.b64decode(kv.get("value", "")) or 0)
            for kv in reply.get("kvs") or []}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def check_writes(lab: "Lab") -> dict[str, Any] | None:
    """Every guest's acknowledged writes, read back through every member.

    Returns ``{"agree": bool, "leaders": {guest: leader}, "checked": n, "lost": [...],
    "unreachable": [...]}``: ``lost`` lists (member, key, value read, acknowledged)
    where a member returned less than acknowledged; ``agree`` is every member naming the
    same leader. None if the lab has no network namespace to ask from."""
    if not lab.netns_prefix():
        return None
    acked = {}
    for g in lab.guests:
        last = g.last_status()
        acked[f"{KEY_PREFIX}{g.name}"] = int(last.get("etcd_acked", 0)) if last else 0
    # every key under the prefix: range_end is the prefix with its last byte + 1
    query = {"key": _b64(KEY_PREFIX), "range_end": _b64(KEY_PREFIX[:-1] + "0")}
    lost, unreachable, checked = [], [], 0
    for member in lab.guests:
        got = _values(member_call(lab, member.name, "/v3/kv/range", query))
        if got is None:
            unreachable.append(member.name)
            continue
        for key, want in acked.items():
            checked += 1
            if got.get(key, 0) < want:
                lost.append({"member": member.name, "key": key, "value": got.get(key, 0),
                             "acked": want})
    leads = leaders(lab)
    agree = len(set(leads.values())) == 1 and None not in leads.values()
    return {"agree": agree, "leaders": leads, "checked": checked, "lost": lost,
            "unreachable": unreachable}
