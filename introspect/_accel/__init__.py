"""Native hot path of the sampler (C, ``vmread.c``), mirroring the pure-Python readers.

``AccelKernel`` finds the kernel exactly as ``GuestKernel`` does (VMCOREINFO or the
banner probe, banner check, per-CPU offsets), then does every read in C: the same
q35 layout, page walks and per-sample TLB as ``layers.py``, and the task walk of
``features.read_tasks`` in one call. Built by ``pip install`` (``setup.py``); without
a compiler the module is missing and ``available()`` says so.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import IntrospectError
from ..features import MAX_LIST, Inconsistent
from ..kernel import GuestKernel
from ..layers import AddressError
from ..symbols import SymbolTable

try:
    from . import _vmread
except ImportError:  # not compiled (no C compiler at install time)
    _vmread = None
else:
    _vmread.errors(AddressError, Inconsistent)


def available() -> bool:
    """Whether the C module was built."""
    return _vmread is not None


class AccelKernel(GuestKernel):
    """``GuestKernel`` whose reads and task walk run in C."""

    name = "accel"

    def __init__(self, ram_path: Path | str, symbols: SymbolTable, guest: str = "",
                 use_vmcoreinfo: bool = True):
        if _vmread is None:
            raise IntrospectError("the C accelerator is not built: run `bash deploy/setup.sh` "
                                  "(needs gcc), or sample with --backend mmap")
        super().__init__(ram_path, symbols, guest, use_vmcoreinfo)
        m = self.mem
        self.space = _vmread.Space(str(self.ram.path), m.page_table, m.phys_base, m.la57,
                                   m.page_offset)
        # instance attributes shadow the Python methods: readers call C directly
        s = self.space
        self.read, self.u64, self.u32, self.s32, self.u16, self.u64s = (
            s.read, s.u64, s.u32, s.s32, s.u16, s.u64s)
        self.flush = s.flush

    def task_rows(self, head: int, offsets: tuple[int, ...]) -> list[tuple]:
        """Raw fields of every task on the list at ``head`` (see features.task_rows)."""
        return self.space.tasks(head, offsets, MAX_LIST)

    def walk_list(self, head: int, limit: int = MAX_LIST) -> list[int]:
        return self.space.walk_list(head, limit)

    def close(self) -> None:
        self.space.close()
        super().close()
