"""The installed package is one namespace: ``vmroc.inject``, never a top-level ``inject``."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("inject", "introspect", "detect", "rca", "service", "deploy")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    return next(out.glob("vmroc-*.whl"))


def test_wheel_holds_only_the_vmroc_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"vmroc"}
    for stage in STAGES:
        assert f"vmroc/{stage}/__init__.py" in names
    assert "vmroc/deploy/campaigns/demo.yaml" in names
    assert "vmroc/deploy/guest/init.sh" in names


def test_wheel_in_a_fresh_venv_imports_vmroc_inject_not_inject(wheel, tmp_path):
    venv = tmp_path / "venv"
    # system site-packages give the dependencies; the venv's own vmroc comes first
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True)
    probe = ("import importlib.util, sys, vmroc.inject, vmroc.rca\n"
             "print(vmroc.inject.__file__)\n"
             f"print([s for s in {STAGES!r} if importlib.util.find_spec(s)])\n")
    out = subprocess.run([py, "-c", probe], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out[0].startswith(str(venv)), out
    assert out[1] == "[]"
