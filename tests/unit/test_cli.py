import argparse
import subprocess
import sys

import pytest


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "vmroc.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: vmroc" in out


def test_no_command_prints_help_and_fails():
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "usage: vmroc" in proc.stdout


def _command_paths(parser, prefix=()):
    """Every command path of the parser tree, e.g. ('inject', 'disk-eio')."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


def test_every_command_has_help(capsys):
    from vmroc.cli import build_parser, main
    paths = list(_command_paths(build_parser()))
    assert {("lab", "up"), ("broker", "up"), ("sample",), ("inject", "disk-eio"),
            ("symbols", "build"), ("image", "build")} <= set(paths)
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.startswith("usage: vmroc " + " ".join(path)), path
