"""Helpers shared by kinds: nftables tables in the lab namespace, probes, processes."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time

from vmroc.proc import start_time

from ..errors import ApplyError
from ..fault import Fault


def short_id(fx: Fault) -> str:
    return fx.id.rsplit("-", 1)[-1]


# -- nftables (bridge family, lab namespace) ------------------------------------------------
HOOKS = {"fwd_c": "forward", "in_c": "input", "out_c": "output"}


def nft_apply(fx: Fault, rules: dict[str, list[str]]) -> str:
    """Create table ``bridge inj_<id>`` with ``rules`` per hook (forward/input/output)."""
    table = f"inj_{short_id(fx)}"
    fx.state["nft_table"] = table
    fx.save()  # before it exists: heal then knows what to delete
    text = [f"table bridge {table} {{"]
    for chain, hook in HOOKS.items():
        text.append(f" chain {chain} {{")
        text.append(f"  type filter hook {hook} priority 0; policy accept;")
        text += [f"  {r}" for r in rules.get(hook, [])]
        text.append(" }")
    text.append("}")
    fx.netns(["nft", "-f", "-"], input="\n".join(text) + "\n")
    return table


def nft_remove(fx: Fault) -> None:
    table = fx.state.get("nft_table")
    if not table or not fx.lab.is_up:
        return
    proc = fx.netns(["nft", "list", "tables", "bridge"], check=False)
    if proc.returncode == 0 and f"table bridge {table}" in proc.stdout:
        fx.netns(["nft", "delete", "table", "bridge", table])


def tap(fx: Fault, guest: str) -> str:
    return fx.lab.guest(guest).config["tap"]


def pct_match(pct: float) -> str:
    """An nft expression true for ``pct`` percent of packets ('' for all)."""
    n = int(round(pct))
    if n >= 100:
        return ""
    return f"numgen random mod 100 < {max(n, 1)} "


# -- probes in the lab namespace -------------------------------------------------------------
def probe(fx: Fault, *args: str, timeout: float = 30.0) -> dict:
    proc = fx.netns([sys.executable, "-m", "vmroc.inject._probe", *args], check=False,
                    timeout=timeout)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def ping(fx: Fault, ip: str, count: int = 20, interval: float = 0.05,
         timeout: float = 1.0) -> dict:
    out = probe(fx, "ping", ip, "--count", str(count), "--interval", str(interval),
                "--timeout", str(timeout))
    if out.get("rtt_ms"):
        out["rtt_median_ms"] = round(statistics.median(out["rtt_ms"]), 2)
    out.pop("rtt_ms", None)
    return out


# -- host processes we start (hogs, floods) ----------------------------------------------------
def spawn(fx: Fault, argv: list[str], key: str = "procs") -> int:
    """Start a helper process in its own session; remember pid + start time."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise ApplyError(f"{fx.kind.name}: cannot start {argv[0]}: {exc}",
                         kind=fx.kind.name, command=argv) from exc
    fx.state.setdefault(key, []).append([proc.pid, start_time(proc.pid)])
    fx.save()
    return proc.pid


def kill_spawned(fx: Fault, key: str = "procs") -> None:
    for pid, started in fx.state.get(key, []):
        if started is not None and start_time(pid) == started:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def run_state(fx: Fault, guest=None) -> str:
    return (guest or fx.guest).state()


def silent_for(fx: Fault, guest: str, seconds: float) -> float | None:
    """Seconds the guest has printed nothing (since invoke, or since the last line this
    check saw appear after it), if at least ``seconds``. A line already on its way when
    the fault was invoked (printed between the baseline mark and the invoke, or flushed
    by the serial device just after) must not make a stopped guest look alive forever."""
    if fx.t_invoke is None:
        return None
    now = time.monotonic()
    count = len(fx.since(guest))
    seen, since = fx.last_line.get(guest, (0, fx.t_invoke))
    if count != seen:
        fx.last_line[guest] = (count, now)
        return None
    quiet = now - since
    return round(quiet, 2) if quiet >= seconds else None
