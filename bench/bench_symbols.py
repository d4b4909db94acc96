"""Symbol builder costs per kernel flavour: each build step, file sizes, load times.

Run: python bench/bench_symbols.py [--flavour generic|cloud ...] [--json]. Builds into
a temporary directory (the vmroc cache is left alone); kernels come from the vmroc image
cache (``deploy.build_image``). Volatility load times assume its schema-validation cache
is warm (the first load of a new ISF validates it: ~25 s). Not a test: it prints numbers.

``--quick`` (what the test suite runs): the generic flavour only (the one a lab boots),
without the volatility load times.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vmroc.deploy import build_image
from vmroc.introspect import SymbolTable, build_isf


def volatility_load(path: Path) -> float:
    import volatility3.plugins
    from volatility3 import framework
    from volatility3.framework import contexts
    from volatility3.framework.symbols.linux import LinuxKernelIntermedSymbols
    framework.import_files(volatility3.plugins, True)
    started = time.perf_counter()
    ctx = contexts.Context()
    table = LinuxKernelIntermedSymbols(ctx, "bench", "vmlinux", isf_url=path.resolve().as_uri(),
                                       validate=False)
    ctx.symbol_space.append(table)
    table.get_type("task_struct")
    return time.perf_counter() - started


def bench(flavour: str, volatility: bool = True) -> dict:
    image = build_image(flavour)
    mods = [image.modules["virtio_net"], image.modules["virtio_blk"]]
    with tempfile.TemporaryDirectory(prefix="vmroc-bench-symbols-") as tmp:
        started = time.perf_counter()
        files = build_isf(image.kernel, mods, cache_dir=Path(tmp))
        total = time.perf_counter() - started
        started = time.perf_counter()
        again = build_isf(image.kernel, mods, cache_dir=Path(tmp))
        hit = time.perf_counter() - started
        assert again.cached
        started = time.perf_counter()
        table = SymbolTable.load(files.isf)
        table_load = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(10_000):
            table.address("init_task")
            table.offset("task_struct", "pid")
        lookup_us = (time.perf_counter() - started) / 20_000 * 1e6
        out = {
            "flavour": flavour, "release": files.release,
            "counts": files.meta["counts"], "timings_s": files.meta["timings"],
            "build_total_s": round(total, 3), "cache_hit_s": round(hit, 4),
            "sizes_bytes": files.meta["sizes"],
            "symbol_table_load_s": round(table_load, 3),
            "symbol_table_lookup_us": round(lookup_us, 3),
        }
        if volatility:
            out["volatility_load_json_s"] = round(volatility_load(files.isf), 3)
            out["volatility_load_xz_s"] = round(volatility_load(files.isf_xz), 3)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", action="append", choices=["generic", "cloud"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="generic only, no volatility load times")
    args = parser.parse_args()
    flavours = args.flavour or (["generic"] if args.quick else ["generic", "cloud"])
    results = [bench(f, volatility=not args.quick) for f in flavours]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for r in results:
        print(f"{r['flavour']} ({r['release']}):")
        for key, value in r.items():
            if key not in ("flavour", "release"):
                print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
