"""Small network probes run *inside* the lab namespace (``ip netns exec ... python3 -m
inject._probe``); each prints one JSON object on stdout.

    ping IP [--count N] [--interval S] [--timeout S] [--size B]
        ICMP echo with a known payload: sent, received, corrupt (reply payload differs),
        rtt_ms list
    fetch URL [--timeout S]          HTTP GET: bytes, seconds, error
    flood IP [--pps N] [--size B] [--seconds S] [--port P]
        a bounded UDP flood (stops by itself after --seconds; lab subnet only)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time
import urllib.request

LAB_SUBNET = ipaddress.ip_network("10.77.0.0/24")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(ip: str, count: int, interval: float, timeout: float, size: int) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    pattern = bytes((0xA5 + i) & 0xFF for i in range(size))
    sent_at: dict[int, float] = {}
    rtts, corrupt, received = [], 0, set()
    next_send, seq = time.monotonic(), 0
    deadline = None
    while True:
        now = time.monotonic()
        if seq < count and now >= next_send:
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            csum = _checksum(hdr + pattern)
            sock.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, seq) + pattern, (ip, 0))
            sent_at[seq] = now
            seq += 1
            next_send = now + interval
            if seq == count:
                deadline = now + timeout
        if deadline is not None and (now >= deadline or len(received) == count):
            break
        wait = max(0.0, min(next_send - now if seq < count else 0.05, 0.05))
        if select.select([sock], [], [], wait)[0]:
            pkt = sock.recv(65535)
            ihl = (pkt[0] & 0x0F) * 4
            icmp = pkt[ihl:]
            if len(icmp) < 8:
                continue
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if typ != 0 or rid != ident or rseq not in sent_at or rseq in received:
                continue
            received.add(rseq)
            if icmp[8:] != pattern:
                corrupt += 1
            else:
                rtts.append(round((time.monotonic() - sent_at[rseq]) * 1000, 2))
    return {"ip": ip, "sent": count, "received": len(received), "corrupt": corrupt,
            "loss_pct": round(100.0 * (count - len(received)) / count, 1),
            "rtt_ms": rtts}


def fetch(url: str, timeout: float) -> dict:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            n = len(r.read())
        return {"url": url, "bytes": n, "seconds": round(time.monotonic() - t0, 3)}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"url": url, "bytes": 0, "seconds": round(time.monotonic() - t0, 3),
                "error": str(exc)}


def flood(ip: str, pps: int, size: int, seconds: float, port: int) -> dict:
    if ipaddress.ip_address(ip) not in LAB_SUBNET:
        raise SystemExit(f"refusing to flood {ip}: outside the lab subnet {LAB_SUBNET}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"\x5a" * size
    t0 = time.monotonic()
    end = t0 + seconds
    sent = 0
    burst = max(1, pps // 100)
    while time.monotonic() < end:
        for _ in range(burst):
            try:
                sock.sendto(payload, (ip, port))
                sent += 1
            except OSError:
                pass
        target = t0 + sent / pps
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return {"ip": ip, "sent": sent, "seconds": round(time.monotonic() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m inject._probe")
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("ping")
    a.add_argument("ip")
    a.add_argument("--count", type=int, default=10)
    a.add_argument("--interval", type=float, default=0.1)
    a.add_argument("--timeout", type=float, default=1.0)
    a.add_argument("--size", type=int, default=56)
    b = sub.add_parser("fetch")
    b.add_argument("url")
    b.add_argument("--timeout", type=float, default=10.0)
    c = sub.add_parser("flood")
    c.add_argument("ip")
    c.add_argument("--pps", type=int, default=2000)
    c.add_argument("--size", type=int, default=512)
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--port", type=int, default=9)
    args = p.parse_args(argv)
    if args.what == "ping":
        out = ping(args.ip, args.count, args.interval, args.timeout, args.size)
    elif args.what == "fetch":
        out = fetch(args.url, args.timeout)
    else:
        out = flood(args.ip, args.pps, args.size, min(args.seconds, 600.0), args.port)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
