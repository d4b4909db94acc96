"""What the benchmarks' ``--quick`` modes share (not a benchmark: bench_*.py are)."""

from __future__ import annotations

import atexit
import lzma
import shutil
import tempfile
from pathlib import Path


def recording_slice(path: str | Path, lines: int = 6000) -> Path:
    """The header and the first ``lines`` events of a recording (in the order recorded:
    about ``lines / 30`` seconds of a 3-guest lab at 10 Hz), as a plain JSON lines file
    in a temporary directory, removed when the process exits."""
    path = Path(path)
    opener = lzma.open if path.suffix == ".xz" else open
    tmp = tempfile.mkdtemp(prefix="vmroc-bench-quick-")
    atexit.register(shutil.rmtree, tmp, True)
    out = Path(tmp) / (
        path.name.removesuffix(".xz").removesuffix(".jsonl") + "-quick.jsonl")
    with opener(path, "rt") as f, open(out, "w") as w:
        for i, line in enumerate(f):
            if i > lines:
                break
            w.write(line)
    return out
