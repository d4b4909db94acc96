"""The repository passes ``ruff check`` with the configuration in pyproject.toml
(``[tool.ruff]``): `make test` fails on a lint finding as on a failing test."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None,
    reason=f"ruff is not installed for {sys.executable} (it comes with the [test] extra: "
           "pip install -e '.[test]')")


def test_ruff_check_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                           "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"`ruff check .` in {ROOT} exited {proc.returncode}:\n"
                    f"{proc.stdout}{proc.stderr}", pytrace=False)
