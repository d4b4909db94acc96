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


@pytest.mark.parametrize("argv, level", [
    (["inject", "list"], 0),
    (["-v", "inject", "list"], 1),
    (["inject", "list", "-v"], 1),
    (["inject", "list", "--verbose"], 1),
    (["-v", "inject", "list", "-vv"], 3),
    (["-v", "campaign", "-v", "plan", "x.yaml", "-v"], 3),
])
def test_verbose_is_accepted_after_a_subcommand(argv, level):
    from vmroc.cli import _merge_verbose, build_parser
    args = build_parser().parse_args(argv)
    _merge_verbose(args)
    assert args.verbose == level
    assert not [k for k in vars(args) if k.startswith("_verbose")]


def _command_parsers(parser, prefix=()):
    """(path, parser) of every subcommand of the tree."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _command_parsers(sub, (*prefix, name))


def test_every_command_accepts_verbose():
    from vmroc.cli import build_parser
    for path, parser in _command_parsers(build_parser()):
        assert "-v" in parser._option_string_actions, path


def test_verbose_after_a_subcommand_sets_the_log_level(monkeypatch):
    import logging

    from vmroc import cli
    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["vmroc.inject.cli"])
    assert cli.main(["inject", "list", "-vv"]) == 0
    assert seen["level"] == logging.DEBUG


def test_campaign_generate_json(tmp_path, capsys):
    import json

    from vmroc.cli import main
    out = tmp_path / "g.yaml"
    assert main(["campaign", "generate", "--faults", "6", "--seed", "2", "-o", str(out),
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["out"] == str(out) and info["name"] == "g" and info["seed"] == 2
    assert info["steps"] >= 6 and "text" not in info and out.read_text().startswith("#")
    assert main(["campaign", "generate", "--faults", "6", "--seed", "2", "-o", "-",
                 "--json"]) == 0
    assert "name: generated" in json.loads(capsys.readouterr().out)["text"]


# Commands that report nothing a script would parse: `serve` runs until stopped and
# prints only where it listens.
NO_JSON = {("serve",)}


def test_every_reporting_command_takes_json():
    from vmroc.cli import build_parser

    def leaves(parser, prefix=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                        yield from leaves(sub, (*prefix, name))
                    else:
                        yield (*prefix, name), sub

    found = dict(leaves(build_parser()))
    assert {("lab", "down"), ("record",), ("inject", "disk-eio"), ("doctor",)} <= set(found)
    missing = [" ".join(path) for path, sub in found.items() if path not in NO_JSON
               and "--json" not in {o for a in sub._actions for o in a.option_strings}]
    assert not missing, f"commands without --json: {missing}"


def test_lab_down_json_on_a_lab_that_is_not_up(tmp_path, monkeypatch, capsys):
    import json

    from vmroc.cli import main
    monkeypatch.setenv("VMROC_HOME", str(tmp_path))
    assert main(["lab", "down", "--name", "never-up", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"lab": "never-up", "was_up": False,
                                                   "guests": [], "down": True}
