"""Fast checks of the lab's pieces (no QEMU)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from vmroc.deploy import LabError
from vmroc.deploy import image as image_mod
from vmroc.deploy import lab as lab_mod
from vmroc.deploy.status import parse_line, read_status_lines

LINE = ("\x1b[0mVMROC1 name=g1 up=5.89 load1=0.00 load5=0.01 load15=0.00 runnable=3 "
        "memfree_kb=179772 tasks=52 vda_rd=51 vda_wr=51 eth0_rxp=13 http_ok=4 http_err=0 "
        "http_ms=50 disk_ok=3 disk_err=0 cpu_ops=21")


def test_status_line_parses_after_escape_codes():
    s = parse_line(LINE)
    assert s.name == "g1" and s["up"] == 5.89 and s["tasks"] == 52 and s["http_ok"] == 4


@pytest.mark.parametrize("bad", ["no marker here", LINE[:60], LINE.replace("tasks=52", "tasks=5x")])
def test_status_line_rejects_torn_or_foreign_lines(bad):
    assert parse_line(bad) is None


def test_read_status_lines_skips_kernel_noise(tmp_path):
    log = tmp_path / "serial.log"
    log.write_text(f"[    1.0] virtio_blk virtio1: [vda]\n{LINE}\n{LINE[:40]}")
    assert len(read_status_lines(log)) == 1
    assert read_status_lines(tmp_path / "missing") == []


def test_cpio_writer_produces_newc_entries():
    c = image_mod._Cpio()
    c.dir("bin")
    c.file("init", b"#!/bin/sh\n", 0o755)
    c.chardev("dev/console", 5, 1)
    data = c.finish()
    assert data.startswith(b"070701") and b"TRAILER!!!" in data
    assert len(data) % 4 == 0
    # the mode field of the 'init' entry says regular + 0755
    i = data.index(b"init\0") - 110
    assert int(data[i + 14:i + 22], 16) == stat.S_IFREG | 0o755


def test_module_load_order_puts_dependencies_first(tmp_path):
    def ko(name, deps):
        p = tmp_path / f"{name}.ko"
        p.write_bytes(b"\x7fELF\0license=GPL\0depends=" + deps.encode() + b"\0name=x\0")
        return p
    found = {"virtio_ring": ko("virtio_ring", ""), "virtio": ko("virtio", "virtio_ring"),
             "virtio_net": ko("virtio_net", "virtio_ring,virtio,net_failover"),
             "net_failover": ko("net_failover", "failover"), "failover": ko("failover", "")}
    order = image_mod._load_order(["virtio_net"], found)
    for a, b in [("virtio_ring", "virtio"), ("virtio", "virtio_net"),
                 ("failover", "net_failover"), ("net_failover", "virtio_net")]:
        assert order.index(a) < order.index(b)
    with pytest.raises(LabError, match="missing_mod"):
        image_mod._load_order(["missing_mod"], found)


def test_unknown_flavour_is_one_line_error():
    with pytest.raises(LabError, match="unknown kernel flavour 'debug'"):
        image_mod.current_kernel_package("debug")


def _fake_tool(bindir, name: str, script: str) -> None:
    tool = bindir / name
    tool.write_text("#!/bin/sh\n" + script + "\n")
    tool.chmod(0o755)


def test_missing_debian_package_is_one_line(tmp_path):
    """apt knows the meta-package's kernel but cannot fetch it: one line, what to do."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    kernel = "linux-image-6.1.0-99-amd64"
    _fake_tool(bindir, "apt-cache", f"echo linux-image-amd64; echo '  Depends: {kernel}'")
    _fake_tool(bindir, "apt-get", f"echo 'E: Unable to locate package {kernel}' >&2; exit 100")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "VMROC_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "image", "build"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    *_, error = proc.stderr.strip().splitlines()
    assert error.startswith(f"ImageError: apt-get download {kernel} failed: "
                            "E: Unable to locate package"), proc.stderr
    assert "apt-get update" in error
    _fake_tool(bindir, "apt-cache", "echo linux-image-amd64")  # no 6.1 kernel behind it
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "image", "build"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no linux-image-6.1 package behind" in proc.stderr


def test_not_enough_memory_says_what_to_do():
    with pytest.raises(LabError, match="not enough memory.*fewer --guests"):
        lab_mod._check_memory(1000, 1 << 20)


def test_kvm_requested_without_dev_kvm(monkeypatch):
    monkeypatch.setattr(os, "access", lambda *a: False)
    with pytest.raises(LabError, match="KVM requested.*--accel tcg"):
        lab_mod._choose_accel("kvm", None, print)
    assert lab_mod._choose_accel("auto", None, print) == "tcg"


def test_lab_that_is_not_up(tmp_path, monkeypatch):
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    lab = lab_mod.Lab("nothere")
    assert lab.status() == []
    with pytest.raises(LabError, match="not up.*vmroc lab up"):
        lab.guest("g1")
    with pytest.raises(LabError, match="bad lab name"):
        lab_mod.Lab("../x")


def test_a_qemu_that_accepts_but_never_greets_is_a_one_line_error_not_a_hang(tmp_path):
    """QEMU's main loop blocked (a frozen TCG vCPU holding the big lock): the socket
    accepts, no greeting comes. The client gives up at its deadline instead of hanging
    the fault that would have thawed it (seen: a cpu-stall left on for 7 minutes)."""
    import socket
    import threading
    import time

    from vmroc.deploy.errors import GuestError
    from vmroc.deploy.qmp import QMP

    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)          # the kernel accepts; nobody ever writes a greeting
    errors: list[Exception] = []

    def connect() -> None:
        try:
            QMP(path, "g9", timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - judged below
            errors.append(exc)
    try:
        t0 = time.monotonic()
        waiter = threading.Thread(target=connect, daemon=True)
        waiter.start()
        waiter.join(10)
        assert not waiter.is_alive(), "QMP() hung on a socket that never greets"
        assert time.monotonic() - t0 < 5
        assert len(errors) == 1 and isinstance(errors[0], GuestError), errors
        assert "does not answer" in str(errors[0])
    finally:
        server.close()


def test_the_guests_canary_page_is_one_page_that_begins_with_the_marker():
    """deploy/guest/init.sh's ``canary_page``, run by the guest's own shell: the host finds
    the memory canary by this marker at a page boundary, so it must open the page."""
    import subprocess
    from pathlib import Path

    from vmroc.deploy.image import BUSYBOX
    from vmroc.deploy.status import MEM_CANARY_MARKER

    assert BUSYBOX.exists(), f"{BUSYBOX} (the guest's shell) is missing: bash deploy/setup.sh"
    text = (Path(__file__).resolve().parents[2] / "deploy" / "guest" / "init.sh").read_text()
    start = text.index("canary_page() {")
    body = text[start:text.index("\n}\n", start) + 3]
    page = subprocess.run([str(BUSYBOX), "sh", "-c", f"NAME=g2\n{body}\ncanary_page 12.5"],
                          capture_output=True, check=True, timeout=30).stdout
    assert len(page) == 4096
    assert page.startswith(MEM_CANARY_MARKER + b"g2 boot=12.5\n")
    assert set(page[page.index(b"\n") + 1:]) == {ord(".")}
