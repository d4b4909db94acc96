"""The etcd cluster of an etcd lab, asked from the host: who leads, and is every
acknowledged write there.

Each guest's client writes its own key ``/vmroc/<guest>`` with a growing sequence number
and prints the last one acknowledged (``etcd_acked``) and the store revision that put
returned (``etcd_arev``) on its status line. ``check_writes`` reads every key through
every member with a linearizable read (a member returning less than was acknowledged
served a stale read), and reads each key at its acknowledged revision from the history
(a different value there is a lost write).

    check = check_writes(lab)   # {"agree": True, "stale": [], "lost": [], ...}

The host reaches the members through the lab's network namespace (``ip netns exec``
running busybox ``wget`` against etcd's JSON gateway); a lab on QEMU's socket network
has no such path and gets ``None``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
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


def _revision(reply: dict) -> int:
    """The store revision a reply was served at (0 if it does not say)."""
    return int((reply.get("header") or {}).get("revision") or 0)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def check_writes(lab: "Lab", settle_s: float = 15.0) -> dict[str, Any] | None:
    """Every guest's acknowledged writes, read back through every member.

    Two questions, kept apart:

    - **stale reads**: a member whose linearizable read returned less than a client had
      acknowledged before the read (``stale``: member, key, value read, acknowledged, the
      store revision the member answered at and the acknowledged write's revision);
    - **lost writes**: an acknowledged write missing from the history: the key read at the
      revision its put returned (``etcd_arev``) holds another value, or the history no
      longer reaches that revision (``lost``). A later write of the same key cannot hide a
      lost one this way. The highest write acknowledged per key is remembered across
      checks (``etcd-acked.json`` in the lab's run directory), so a cluster that lost its
      whole history (every member's RAM gone at once) and started again is reported, once.

    Members that do not answer are asked again until ``settle_s`` has passed (a member
    just resumed or out of a partition); those that never do are ``unreachable``.
    Returns ``{"agree": bool, "leaders": {guest: leader}, "checked": n, "stale": [...],
    "lost": [...], "unverified": [keys], "unreachable": [members]}``, ``agree`` being
    every member naming the same leader; None if the lab has no network namespace to ask
    from."""
    if not lab.netns_prefix():
        return None
    acked: dict[str, tuple[int, int]] = {}  # key -> (acknowledged value, its revision)
    for g in lab.guests:
        last = g.last_status() or {}
        acked[f"{KEY_PREFIX}{g.name}"] = (int(last.get("etcd_acked", 0)),
                                          int(last.get("etcd_arev", 0)))
    # every key under the prefix: range_end is the prefix with its last byte + 1
    query = {"key": _b64(KEY_PREFIX), "range_end": _b64(KEY_PREFIX[:-1] + "0")}
    deadline = time.monotonic() + settle_s
    stale, checked = [], 0
    waiting = [g.name for g in lab.guests]
    while True:
        for member in list(waiting):
            reply = member_call(lab, member, "/v3/kv/range", query)
            got = _values(reply)
            if got is None:
                continue
            waiting.remove(member)
            for key, (want, rev) in acked.items():
                checked += 1
                if got.get(key, 0) < want:
                    stale.append({"member": member, "key": key, "value": got.get(key, 0),
                                  "acked": want, "revision": _revision(reply),
                                  "acked_revision": rev})
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    lost, unverified = _lost_writes(lab, acked, deadline)
    leads = leaders(lab)
    agree = len(set(leads.values())) == 1 and None not in leads.values()
    return {"agree": agree, "leaders": leads, "checked": checked, "stale": stale,
            "lost": lost, "unverified": unverified, "unreachable": waiting}


def _lost_writes(lab: "Lab", acked: dict[str, tuple[int, int]],
                 deadline: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Acknowledged writes not in the history at the revision their put returned, asked
    of any member that answers until ``deadline``; and the keys no member answered for
    (unverified, not counted as lost). Besides each client's last acknowledged write,
    the highest one an earlier check saw is asked when the client's sequence fell below
    it; the remembered writes are then updated (a write reported lost is forgotten)."""
    path = lab.run_dir / "etcd-acked.json"
    try:
        known = {k: tuple(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError):
        known = {}
    lost, unverified, remember = [], [], dict(known)
    for key, now in acked.items():
        fell_back = key in known and known[key][0] > now[0]  # the client's sequence
        writes = ([known[key]] if fell_back else []) + [now]
        key_lost = False
        for want, rev in writes:
            if want <= 0 or rev <= 0:
                continue  # nothing acknowledged yet (or a client from before revisions)
            found = _at_revision(lab, key, rev, deadline)
            if found is None:
                unverified.append(key)
            elif found != want:
                key_lost = True
                lost.append({"key": key, "acked": want, "acked_revision": rev,
                             "value": None if found is _GONE else found})
        if now[0] > 0 and now[1] > 0 and (key_lost or not fell_back):
            remember[key] = now  # else the earlier, higher write stays the one to ask
    try:
        path.write_text(json.dumps(remember))
    except OSError:
        pass  # the lab's directory is gone: nothing left to compare with later
    return lost, unverified


_GONE = object()  # the history no longer reaches the revision


def _at_revision(lab: "Lab", key: str, rev: int, deadline: float) -> Any:
    """The value ``key`` held at store revision ``rev`` (0: no such key then), ``_GONE``
    if a member's history ends before ``rev``, None if no member answered."""
    while True:
        for member in lab.guests:
            got = _values(member_call(lab, member.name, "/v3/kv/range",
                                      {"key": _b64(key), "revision": str(rev)}))
            if got is not None:
                return got.get(key, 0)
            # a revision beyond the member's history is refused: ask where it ends
            now = member_call(lab, member.name, "/v3/kv/range", {"key": _b64(key)})
            if now is not None and 0 < _revision(now) < rev:
                return _GONE
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)
