"""Host processes as ``/proc`` shows them (live or not, when they started), and the
stop signal of long-running workers."""

from __future__ import annotations

import signal
import threading


def start_time(pid: int | None) -> str | None:
    """Start time (clock ticks since boot, field 22 of ``/proc/<pid>/stat``) of a live
    process; ``None`` if it is gone or a zombie. Together with the pid it names one
    process for good: a reused pid has another start time."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def alive(pid: int | None) -> bool:
    """True if ``pid`` is a live (not zombie) process."""
    return start_time(pid) is not None


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (also when started in the background, where
    SIGINT may be ignored): long-running workers loop until it is set."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
