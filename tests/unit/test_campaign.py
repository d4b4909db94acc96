"""Campaign files: what loads, and a one-line error naming the entry for what does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmroc.inject import SpecError
from vmroc.inject.campaign import Campaign

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "campaigns" / "demo.yaml"


def load(tmp_path, text: str) -> Campaign:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return Campaign.load(path)


def test_demo_campaign_loads():
    c = Campaign.load(DEMO)
    levels = {s.spec.kind.split("-")[0] for s in c.steps}
    assert c.name == "demo" and len(c.steps) >= 4 and {"disk", "net", "cpu", "mem"} <= levels
    assert [s.at for s in c.steps] == sorted(s.at for s in c.steps)
    assert c.planned_s > c.baseline + c.steps[-1].at


def test_steps_are_sorted_seeded_and_typed(tmp_path):
    c = load(tmp_path, """
name: t
seed: 5
baseline: 2s
cooldown: 500ms
faults:
  - {at: 20s, kind: cpu-nmi, guest: g1, duration: 0}
  - {at: 1s, kind: net-drop, guests: [g2, g3], duration: 4s, params: {loss: 40}}
""")
    assert (c.baseline, c.cooldown) == (2.0, 0.5)
    assert [(s.at, s.spec.kind) for s in c.steps] == [(1.0, "net-drop"), (20.0, "cpu-nmi")]
    assert c.steps[0].spec.guests == ("g2", "g3") and c.steps[0].spec.params["loss"] == 40
    assert {s.spec.seed for s in c.steps} == {5, 6}
    plan = c.to_dict()
    assert [f["at"] for f in plan["faults"]] == [1.0, 20.0] and plan["planned_s"] > 20


BAD = {
    "not yaml": ("faults: [\n", r"not YAML or JSON \(line 2\)"),
    "a list": ("[]\n", "expected a mapping with a `faults` list"),
    "no faults": ("name: x\n", "`faults` must be a non-empty list"),
    "top-level typo": ("faultz: []\n", "unknown key 'faultz'"),
    "bad baseline": ("baseline: soon\nfaults: [{kind: cpu-nmi, guest: g1}]\n",
                     "bad duration 'soon'"),
    "step typo": ("faults:\n  - {kind: net-drop, guest: g3, duraton: 5s}\n",
                  r"faults\[0\]: unknown key 'duraton'"),
    "unknown kind": ("faults:\n  - {kind: disk-eoi, guest: g2}\n",
                     r"faults\[0\]: unknown fault kind 'disk-eoi'"),
    "missing kind": ("faults:\n  - {guest: g2}\n", r"faults\[0\]: missing `kind`"),
    "bad param": ("faults:\n  - {kind: net-drop, guest: g3}\n  - {kind: net-drop, guest: g2, "
                  "at: 30s, params: {loss: 500}}\n", r"faults\[1\]: net-drop: bad value 500"),
    "bad at": ("faults:\n  - {kind: cpu-nmi, guest: g1, at: -3}\n", "between 0 and 24h"),
    "blkdebug twice": ("faults:\n  - {kind: disk-eio, guest: g2}\n"
                       "  - {kind: disk-hang, guest: g2, at: 5s}\n",
                       "disk-eio at 0s and disk-hang at 5s overlap on g2"),
    "same kind overlapping": ("faults:\n  - {kind: net-drop, guests: [g2, g3], duration: 20s}\n"
                              "  - {kind: net-drop, guest: g3, at: 10s}\n",
                              "overlap on g3"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_one_line_errors(tmp_path, case):
    text, pattern = BAD[case]
    with pytest.raises(SpecError, match=pattern) as err:
        load(tmp_path, text)
    assert "\n" not in str(err.value)


def test_overlap_on_different_guests_or_mechanisms_is_fine(tmp_path):
    c = load(tmp_path, "faults:\n  - {kind: disk-eio, guest: g2, duration: 20s}\n"
                       "  - {kind: disk-eio, guest: g3, at: 1s}\n"
                       "  - {kind: net-drop, guest: g2, at: 2s}\n")
    assert len(c.steps) == 3


def test_cli_check_of_a_bad_file_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD["unknown kind"][0])
    proc = subprocess.run([sys.executable, "-m", "vmroc.cli", "campaign", "check", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("SpecError: campaign ")
