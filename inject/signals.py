"""Signals around a held fault: Ctrl-C, SIGTERM or SIGHUP never leave it applied.

While a fault is held, ``raising_signals()`` turns SIGTERM and SIGHUP into
``Interrupted`` (a ``KeyboardInterrupt``, as Ctrl-C is), so the ``finally`` that
reverts it runs; while it is reverted, ``blocked_signals()`` defers SIGINT, SIGTERM and
SIGHUP, so a second Ctrl-C cannot cut the teardown short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["Interrupted", "raising_signals", "blocked_signals"]


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP arrived while a fault was held (teardown still runs)."""


@contextlib.contextmanager
def raising_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Interrupted`` (main thread only; no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(f"signal {signal.Signals(signum).name}")
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def blocked_signals() -> Iterator[None]:
    """Defer SIGINT/SIGTERM/SIGHUP while reverting, so teardown finishes."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
