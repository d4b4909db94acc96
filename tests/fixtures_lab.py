"""The lab fixture: one set of real QEMU guests shared by the whole test session."""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

# Separate names let several test runs share a machine without killing each other's lab.
LAB_NAME = os.environ.get("VMROC_TEST_LAB", "test")
LAB_GUESTS = 3


def require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} not found: install {package} with `bash deploy/setup.sh` "
                    "(or run `make test`)", pytrace=False)


@contextlib.contextmanager
def session_lab_paused():
    """The session's lab (if up) paused meanwhile (QMP stop/cont), so a test's own extra
    guests do not share the two cores with it; QEMU's virtual clock stops with it, so its
    guests see no jump."""
    from vmroc.deploy import Lab

    web = Lab(LAB_NAME)
    paused = [g for g in web.guests if g.alive()] if web.is_up else []
    for g in paused:
        with g.qmp() as qmp:
            qmp.cmd("stop")
    try:
        yield
    finally:
        for g in paused:
            if g.alive():
                with g.qmp() as qmp:
                    qmp.cmd("cont")


@pytest.fixture(scope="session")
def lab():
    """Three running guests g1..g3 (TCG unless KVM probes fine), removed at the end."""
    require("qemu-system-x86_64", "qemu-system-x86")
    require("busybox", "busybox-static")
    from vmroc.deploy import Lab

    Lab(LAB_NAME).down()  # a lab left over from a killed run
    lab = Lab.up(LAB_GUESTS, name=LAB_NAME)
    try:
        yield lab
    finally:
        lab.down()
