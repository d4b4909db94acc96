"""A process's memory as the guest sees it: its user pages, from its own page tables.

``user_pages(k, comm="httpd")`` finds the process in the task list, reads
``task->mm->pgd`` and walks the user half of that page table (4 KiB and 2 MiB pages),
returning (virtual address, guest physical address) pairs of the present pages. The
injector uses it to flip bits in one named process's memory.
"""

from __future__ import annotations

import struct

from .errors import IntrospectError
from .features import read_tasks
from .kernel import GuestKernel
from .layers import PTE_ADDR

USER_PML4_ENTRIES = 256  # the lower half of the address space belongs to user space
MAX_PAGES = 1 << 16


def find_task(k: GuestKernel, comm: str | None = None, pid: int | None = None) -> int:
    """Address of the task_struct of the first process named ``comm`` (or with ``pid``)."""
    _, tasks = read_tasks(k)
    for t in tasks:
        if (pid is not None and t["pid"] == pid) or (pid is None and t["comm"] == comm):
            if t["kthread"]:
                raise IntrospectError(f"{t['comm']} (pid {t['pid']}) is a kernel thread: "
                                      "it has no user pages")
            return t["address"]
    running = ", ".join(sorted({t["comm"] for t in tasks if not t["kthread"]}))
    raise IntrospectError(f"guest {k.guest}: no process {comm if pid is None else pid!r} "
                          f"(running: {running})")


def _table(k: GuestKernel, phys: int) -> tuple[int, ...]:
    return struct.unpack("<512Q", k.ram.read(phys, 4096))


def user_pages(k: GuestKernel, comm: str | None = None, pid: int | None = None,
               limit: int = MAX_PAGES) -> list[tuple[int, int]]:
    """(vaddr, paddr) of the present user pages of one process (4-level paging)."""
    if k.mem.la57:
        raise IntrospectError("5-level page tables: user page walk not implemented")
    task = find_task(k, comm, pid)
    mm = k.u64(task + k.off("task_struct", "mm"))
    pgd = k.mem.translate(k.u64(mm + k.off("mm_struct", "pgd")))
    pages: list[tuple[int, int]] = []
    for i4, e4 in enumerate(_table(k, pgd)[:USER_PML4_ENTRIES]):
        if not e4 & 1:
            continue
        for i3, e3 in enumerate(_table(k, e4 & PTE_ADDR)):
            if not e3 & 1 or e3 & 0x80:  # absent, or a 1 GiB page (not used for user data)
                continue
            for i2, e2 in enumerate(_table(k, e3 & PTE_ADDR)):
                if not e2 & 1:
                    continue
                base = (i4 << 39) | (i3 << 30) | (i2 << 21)
                if e2 & 0x80:  # 2 MiB page
                    pages.append((base, e2 & PTE_ADDR & ~0x1F_FFFF))
                    continue
                for i1, e1 in enumerate(_table(k, e2 & PTE_ADDR)):
                    if e1 & 1:
                        pages.append((base | (i1 << 12), e1 & PTE_ADDR))
                        if len(pages) >= limit:
                            return pages
    return pages
