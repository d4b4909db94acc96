"""Where vmroc keeps its files: ``VMROC_HOME`` (default ``~/.cache/vmroc``).

Layout::

    $VMROC_HOME/images/<kernel-release>/   kernel, initramfs, data disk (cache)
    $VMROC_HOME/run/lab-<name>/            state of a running lab (pids, paths)
    $VMROC_HOME/kafka/                     broker jars, data and logs
"""

import os
from pathlib import Path


def home() -> Path:
    """The vmroc home directory, created on first use."""
    path = Path(os.environ.get("VMROC_HOME") or Path.home() / ".cache" / "vmroc")
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(*parts: str) -> Path:
    """A directory under the vmroc home, created on first use."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
