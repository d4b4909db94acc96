"""``pytest --cpu-hog N``: N processes spinning beside the tests for the whole session.

The real tests must hold while other work shares the machine's cores (issue 15): this
is that other work, on demand. ``make test-under-load`` runs the real tests with it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest


def pytest_addoption(parser):
    parser.addoption("--cpu-hog", type=int, default=int(os.environ.get("VMROC_CPU_HOG", 0)),
                     metavar="N", help="run N busy-looping processes beside the tests")


def _spin() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the tests; the hog follows
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


@pytest.fixture(scope="session", autouse=True)
def cpu_hog(request):
    """The hog's processes, started before the first test and ended after the last."""
    n = request.config.getoption("--cpu-hog")
    procs = [mp.get_context("spawn").Process(target=_spin, daemon=True, name=f"cpu-hog-{i}")
             for i in range(n)]
    for p in procs:
        p.start()
    yield len(procs)
    for p in procs:
        p.kill()
        p.join(5)
