"""`vmroc doctor`: every check reports a status, what it found and (unless ok) a fix."""

import json
import socket
import struct
import subprocess
import sys
import threading

import pytest

from vmroc.deploy import doctor
from vmroc.deploy.doctor import Check

NAMES = {"qemu", "accel", "privileges", "java", "maven", "broker", "gcc", "c-module", "disk",
         "shm", "image", "libvmi", "volatility3"}


def test_doctor_json_on_this_machine():
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "doctor", "--json"],
                          capture_output=True, text=True, timeout=60)
    report = json.loads(proc.stdout)
    checks = report["checks"]
    assert {c["name"] for c in checks} == NAMES
    for c in checks:
        assert c["status"] in doctor.STATUSES, c
        assert c["found"], c
        assert bool(c["fix"]) == (c["status"] != "ok"), c
        assert c["status"] != "fail" or c["required"], c
    failed = [c for c in checks if c["status"] == "fail"]
    assert report["ok"] == (not failed)
    assert proc.returncode == (1 if failed else 0), proc.stderr
    assert report["elapsed_s"] > 0   # its speed is measured by bench/bench_doctor.py


def test_a_failed_required_check_fails_the_command(monkeypatch, capsys):
    from vmroc.cli import main
    monkeypatch.setattr(doctor, "CHECKS", [
        lambda: Check("qemu", "fail", "qemu-system-x86_64 is not on PATH",
                      "apt-get install qemu-system-x86", True),
        lambda: Check("gcc", "warn", "no gcc", "apt-get install gcc")])
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "fail  qemu" in out and "fix: apt-get install qemu-system-x86" in out
    assert "1 failed, 1 warning(s)" in out


def test_warnings_alone_pass(monkeypatch, capsys):
    from vmroc.cli import main
    monkeypatch.setattr(doctor, "CHECKS", [lambda: Check("gcc", "warn", "no gcc", "install")])
    assert main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_a_check_that_raises_is_reported_not_raised():
    def check_broken():
        raise RuntimeError("boom")
    (result,) = doctor.run_checks([check_broken])
    assert result.name == "broken" and result.status == "warn" and "boom" in result.found


@pytest.fixture
def fake_kafka():
    """A server that answers one ApiVersions v0 request as a Kafka broker does."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        with conn:
            size = struct.unpack(">i", conn.recv(4))[0]
            request = conn.recv(size)
            key, version, correlation = struct.unpack(">hhi", request[:8])
            assert (key, version) == (18, 0)
            apis = [(18, 0, 4), (3, 0, 12)]
            body = struct.pack(">ihi", correlation, 0, len(apis)) + b"".join(
                struct.pack(">hhh", *a) for a in apis)
            conn.sendall(struct.pack(">i", len(body)) + body)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_broker_check_speaks_kafka(monkeypatch, fake_kafka):
    monkeypatch.setenv("VMROC_KAFKA", fake_kafka)
    check = doctor.check_broker()
    assert check.status == "ok" and "2 APIs" in check.found and check.required


def test_an_unreachable_external_cluster_fails(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]        # closed when the block ends: nothing listens
    monkeypatch.setenv("VMROC_KAFKA", f"127.0.0.1:{port}")
    check = doctor.check_broker()
    assert check.status == "fail" and "VMROC_KAFKA" in check.fix


def test_an_embedded_broker_not_running_only_warns(monkeypatch, tmp_path):
    monkeypatch.delenv("VMROC_KAFKA", raising=False)
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    monkeypatch.setattr(doctor, "Broker", lambda: _FakeBroker(port))
    check = doctor.check_broker()
    assert check.status == "warn" and not check.required and "vmroc broker up" in check.fix


class _FakeBroker:
    def __init__(self, port):
        self.bootstrap = f"127.0.0.1:{port}"

    def pid(self):
        return None


def test_disk_below_the_minimum_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    monkeypatch.setattr(doctor.shutil, "disk_usage",
                        lambda path: type("U", (), {"free": 2**29, "total": 2**34})())
    check = doctor.check_disk()
    assert check.status == "fail" and "0.5 GiB free" in check.found and check.fix


def test_no_image_warns_with_the_build_command(monkeypatch, tmp_path):
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    check = doctor.check_image()
    assert check.status == "warn" and "vmroc image build" in check.fix


def test_not_root_only_warns_and_says_how(monkeypatch):
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 1000)
    check = doctor.check_privileges()
    assert check.status == "warn" and not check.required
    assert "not root (uid 1000)" in check.found and "sudo" in check.fix
