"""The lab fixture: one set of real QEMU guests shared by the whole test session."""

from __future__ import annotations

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
