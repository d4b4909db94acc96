"""``vmroc image`` and ``vmroc lab``: build guest images, bring guests up and down."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .image import FLAVOURS, WORKLOADS, build_image
from .lab import Lab


def _progress(msg: str) -> None:
    print(f"vmroc: {msg}", file=sys.stderr, flush=True)


def _lab_name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=os.environ.get("VMROC_LAB", "default"),
                   help="lab name (default: $VMROC_LAB or 'default')")


def register(subparsers) -> None:
    image = subparsers.add_parser("image", help="build guest images (kernel, initramfs, disk)")
    isub = image.add_subparsers(dest="image_cmd", metavar="ACTION", required=True)
    build = isub.add_parser("build", help="fetch a Debian kernel and build the guest image "
                                          "(cached; a second build is a no-op)")
    build.add_argument("--kernel-flavour", choices=[*FLAVOURS, "all"], default="generic",
                       help="Debian kernel flavour (default generic; 'all' builds both)")
    build.add_argument("--json", action="store_true", help="print the image as JSON")
    build.set_defaults(func=cmd_image_build)

    lab = subparsers.add_parser("lab", help="boot, inspect and remove lab guests")
    lsub = lab.add_subparsers(dest="lab_cmd", metavar="ACTION", required=True)
    up = lsub.add_parser("up", help="boot guests g1..gN (harmless if already up)")
    _lab_name_arg(up)
    up.add_argument("--guests", type=int, default=3, help="number of guests (default 3)")
    up.add_argument("--ram", type=int, default=None,
                    help="MiB of RAM per guest (default 256; 512 with --workload etcd, whose "
                         "members keep their data in guest RAM)")
    up.add_argument("--vcpus", type=int, default=1, help="vCPUs per guest (default 1)")
    up.add_argument("--workload", choices=list(WORKLOADS), default="web",
                    help="web: an HTTP server and clients; etcd: the same plus a real etcd "
                         "cluster over the guests with a client per guest (default web)")
    up.add_argument("--kernel-flavour", choices=list(FLAVOURS), default="generic")
    up.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto",
                    help="auto uses KVM only if a quick probe boot succeeds (default)")
    up.add_argument("--no-wait", action="store_true",
                    help="return without waiting for the guests' first status line")
    up.add_argument("--json", action="store_true", help="print status as JSON when up")
    up.set_defaults(func=cmd_lab_up)

    status = lsub.add_parser("status", help="state of each guest (QMP run state, or dead)")
    _lab_name_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_lab_status)

    down = lsub.add_parser("down", help="remove every guest, tap, bridge, namespace and "
                                        "RAM file of the lab (harmless if already down)")
    _lab_name_arg(down)
    down.add_argument("--json", action="store_true",
                      help="print the result as JSON (lab, whether it was up, guests removed)")
    down.set_defaults(func=cmd_lab_down)


def cmd_image_build(args) -> int:
    flavours = list(FLAVOURS) if args.kernel_flavour == "all" else [args.kernel_flavour]
    images = [build_image(f, progress=_progress) for f in flavours]
    if args.json:
        print(json.dumps([i.to_json() for i in images], indent=1))
    return 0


def _print_status(rows: list[dict], as_json: bool, lab: Lab) -> None:
    if as_json:
        print(json.dumps({"lab": lab.name, "network": lab.state.get("net"),
                          "accel": lab.state.get("accel"), "workload": lab.workload,
                          "guests": rows}, indent=1))
        return
    if not rows:
        print(f"lab {lab.name} is down")
        return
    print(f"lab {lab.name}: {lab.state.get('accel')}, network {lab.state.get('net')}, "
          f"workload {lab.workload}")
    print(f"{'GUEST':6} {'STATE':15} {'PID':>8} {'IP':12} {'UPTIME':>8}  RAM FILE")
    for r in rows:
        up = f"{r['uptime']:.0f}s" if r["uptime"] is not None else "-"
        print(f"{r['name']:6} {r['state']:15} {r['pid'] or '-':>8} {r['ip']:12} {up:>8}  "
              f"{r['ram_file']}")


def cmd_lab_up(args) -> int:
    lab = Lab.up(args.guests, name=args.name, ram_mb=args.ram, vcpus=args.vcpus,
                 flavour=args.kernel_flavour, accel=args.accel, wait=not args.no_wait,
                 progress=_progress, workload=args.workload)
    _print_status(lab.status(), args.json, lab)
    return 0


def cmd_lab_status(args) -> int:
    lab = Lab(args.name)
    _print_status(lab.status(), args.json, lab)
    return 0


def cmd_lab_down(args) -> int:
    lab = Lab(args.name)
    was_up = lab.is_up
    guests = [cfg["name"] for cfg in lab.state.get("guests", [])]
    lab.down(progress=_progress)
    if args.json:
        print(json.dumps({"lab": args.name, "was_up": was_up, "guests": guests, "down": True}))
    else:
        _progress(f"lab {args.name} is down")
    return 0
