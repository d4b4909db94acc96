"""``vmroc symbols ...``: build the symbol files (ISF) of a guest kernel.

``vmroc sample`` is a sibling command registered by ``introspect.sample_cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``symbols`` command group."""
    symbols = subparsers.add_parser(
        "symbols", help="kernel symbols and types (volatility3/LibVMI ISF) from a kernel image",
        description="Build symbol files from the kernel itself: kallsyms for addresses, "
                    ".BTF for types; no debug package needed.")
    sub = symbols.add_subparsers(dest="symbols_command", metavar="SUBCOMMAND")
    build = sub.add_parser(
        "build", help="build (or find cached) ISF files for KERNEL_IMAGE",
        description="Extract vmlinux from KERNEL_IMAGE (bzImage or vmlinux), recover its "
                    "kallsyms and BTF, and write a volatility3 ISF plus a LibVMI copy under "
                    "the vmroc home (cached per kernel build).")
    build.add_argument("kernel_image", metavar="KERNEL_IMAGE", type=Path,
                       help="bzImage (e.g. /boot/vmlinuz-6.1.0-56-amd64) or an ELF vmlinux")
    build.add_argument("--module", "-m", dest="modules", metavar="KO", type=Path,
                       action="append", default=[],
                       help="module whose split BTF types to add (repeatable), e.g. virtio_net.ko")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--no-xz", action="store_true", help="do not write vmlinux.json.xz")
    build.add_argument("--json", action="store_true", help="print the result as JSON")
    build.set_defaults(func=_cmd_build)
    symbols.set_defaults(func=lambda args: (symbols.print_help(), 2)[1])


def _cmd_build(args: argparse.Namespace) -> int:
    from .symbols import build_isf

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    files = build_isf(args.kernel_image, args.modules, force=args.force,
                      write_xz=not args.no_xz, progress=progress)
    result = {
        "release": files.release,
        "cached": files.cached,
        "directory": str(files.directory),
        "isf": str(files.isf),
        "isf_xz": str(files.isf_xz) if files.isf_xz.exists() else None,
        "libvmi": str(files.libvmi),
        "counts": files.meta.get("counts", {}),
        "timings": files.meta.get("timings", {}),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{files.release}: {'cached' if files.cached else 'built'} in {files.directory}")
        print(f"  volatility3 ISF: {files.isf}")
        print(f"  LibVMI ISF:      {files.libvmi}")
        counts = result["counts"]
        if counts:
            print(f"  {counts['symbols']} symbols ({counts['typed_symbols']} typed), "
                  f"{counts['user_types']} structs/unions, {counts['enums']} enums")
    return 0
