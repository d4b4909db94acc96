import subprocess
import sys


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "vmroc.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: vmroc" in out


def test_no_command_prints_help_and_fails():
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "usage: vmroc" in proc.stdout
