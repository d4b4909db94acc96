"""Kernel log lines read as evidence: the part of the machine a line names.

    part_of("blk_update_request: I/O error, dev vda, sector 400")   # -> "disk"
    part_of("vmroc-guest: heartbeat 12")                            # -> None

A statistical feature says that something moved; a kernel line such as an I/O error or
a machine check says what failed. The patterns are the kernel's own wording (6.1):
block-layer and filesystem errors and hung tasks waiting on I/O are the disk; memory
failure, EDAC, the OOM killer and bad page faults are memory; machine checks, NMIs,
soft lockups and RCU stalls are the CPU; transmit timeouts and link changes are the
network. A line may name one part only; the first matching part wins.
"""

from __future__ import annotations

import re

__all__ = ["LOG_PARTS", "part_of"]

_PATTERNS = (
    ("memory", r"Memory failure|EDAC|Out of memory|oom-kill|oom_reaper|page allocation failure"
               r"|Bad page|unable to handle page fault|general protection fault|segfault"
               r"|Corrupted low memory|invalid opcode"),
    ("disk", r"I/O error|blk_update_request|EXT4-fs error|Buffer I/O|critical medium error"
             r"|blocked for more than \d+ seconds|print_req_error"),
    ("cpu", r"Machine Check|mce: |NMI received|soft lockup|hard LOCKUP|rcu_sched|rcu_preempt"
            r"|self-detected stall|detected stalls"),
    ("network", r"NETDEV WATCHDOG|transmit queue \d+ timed out|[Ll]ink is [Dd]own|link down"
                r"|nf_conntrack: table full|neighbour table overflow"),
)
LOG_PARTS = tuple(part for part, _ in _PATTERNS)
_COMPILED = tuple((part, re.compile(pattern)) for part, pattern in _PATTERNS)


def part_of(line: str) -> str | None:
    """The part a kernel log line names, or None for ordinary lines."""
    for part, pattern in _COMPILED:
        if pattern.search(line):
            return part
    return None
