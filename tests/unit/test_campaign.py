"""Campaign files: what loads, and a one-line error naming the entry for what does not."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vmroc.inject import SpecError
from vmroc.inject import campaign as campaign_mod
from vmroc.inject.campaign import Campaign, run_campaign

CAMPAIGNS = Path(__file__).resolve().parents[2] / "deploy" / "campaigns"
DEMO = CAMPAIGNS / "demo.yaml"


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
    "no faults": ("name: x\n", "`faults` must be a list of faults"),
    "empty without duration": ("faults: []\n", "`faults` is empty: a run without faults "
                               "needs a `duration`"),
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
                       r"faults\[0\] \(disk-eio at 0s\) and faults\[1\] \(disk-hang at 5s\) "
                       "overlap on g2"),
    "lab-wide twice": ("faults:\n  - {kind: bridge-down, duration: 20s}\n"
                       "  - {kind: bridge-down, at: 10s}\n", "overlap on the lab"),
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


# -- composed entries ---------------------------------------------------------------------
COMPOSED = """
name: composed
seed: 100
faults:
  - {at: 0s, kind: cpu-nmi, guest: g1, duration: 0}
  - group:
      at: 20s
      faults:
        - {kind: disk-eio, guest: g2, duration: 10s, params: {iotype: write}}
        - {kind: net-drop, guest: g2, duration: 10s}
  - cascade:
      at: 40s
      id: spread
      steps:
        - {kind: net-delay, guest: g1, duration: 12s}
        - {kind: cpu-throttle, guest: g2, duration: 10s, after: 5s}
        - {kind: net-drop, guest: g3, duration: 8s, on: effect, timeout: 4s}
  - flip-flop: {at: 80s, kind: net-link-down, guest: g3, on: 5s, off: 5s, times: 3}
"""


def test_composed_entries_expand_into_steps_with_ids(tmp_path):
    c = load(tmp_path, COMPOSED)
    rows = [(s.at, s.spec.kind, s.spec.guests, s.group, s.cascade, s.flip_flop, s.part)
            for s in c.steps]
    assert rows == [
        (0.0, "cpu-nmi", ("g1",), None, None, None, 0),
        (20.0, "disk-eio", ("g2",), "group-1", None, None, 0),
        (20.0, "net-drop", ("g2",), "group-1", None, None, 1),
        (40.0, "net-delay", ("g1",), None, "spread", None, 0),
        (45.0, "cpu-throttle", ("g2",), None, "spread", None, 1),
        (49.0, "net-drop", ("g3",), None, "spread", None, 2),   # 45 + timeout 4 s at the latest
        (80.0, "net-link-down", ("g3",), None, None, "flip-flop-1", 0),
        (90.0, "net-link-down", ("g3",), None, None, "flip-flop-1", 1),
        (100.0, "net-link-down", ("g3",), None, None, "flip-flop-1", 2)]
    by_part = {(s.cascade, s.part): s for s in c.steps if s.cascade}
    assert (by_part["spread", 1].trigger, by_part["spread", 1].delay) == ("after", 5.0)
    effect = by_part["spread", 2]
    assert (effect.trigger, effect.delay, effect.earliest) == ("effect", 4.0, 45.0)
    assert effect.window() == (45.0, 57.0)  # 49 + 8 s
    assert [s.spec.duration for s in c.steps if s.flip_flop] == [5.0] * 3
    assert sorted(s.spec.seed for s in c.steps) == list(range(100, 109))  # one per step
    assert c.composed() == {"group": 1, "cascade": 1, "flip-flop": 1}
    d = c.to_dict()["faults"]
    assert {"group", "cascade", "flip_flop"} <= set(d[0]) and d[0]["group"] is None
    assert d[5]["cascade"] == "spread" and d[5]["trigger"] == "effect"
    assert [s.entry for s in c.steps][-3:] == [f"faults[3] (cycle {i})" for i in (1, 2, 3)]


def test_on_and_off_keys_survive_yaml_1_1_readers():
    """yaml.safe_load reads `on:`/`off:` as True/False; from_dict takes either."""
    import yaml
    obj = yaml.safe_load(COMPOSED)
    assert True in obj["faults"][3]["flip-flop"]
    c = Campaign.from_dict(obj)
    assert [s.at for s in c.steps if s.flip_flop] == [80.0, 90.0, 100.0]
    assert any(s.trigger == "effect" for s in c.steps)


BAD_COMPOSED = {
    "group member with at": (
        "faults:\n  - group: {at: 5s, faults: [{kind: cpu-nmi, guest: g1, at: 3s}, "
        "{kind: cpu-nmi, guest: g2}]}\n",
        r"faults\[0\]: group: faults\[0\]: `at` belongs to the group"),
    "group of one": ("faults:\n  - group: {faults: [{kind: cpu-nmi, guest: g1}]}\n",
                     r"faults\[0\]: group: `faults` must list at least two faults"),
    "unknown kind in a group": (
        "faults:\n  - group: {faults: [{kind: cpu-nmi, guest: g1}, {kind: cpu-nmo, "
        "guest: g2}]}\n", r"faults\[0\]: group: faults\[1\]: unknown fault kind 'cpu-nmo'"),
    "group key typo": ("faults:\n  - group: {at: 1s, fualts: []}\n",
                       r"faults\[0\]: group: unknown key 'fualts'"),
    "composed plus other keys": (
        "faults:\n  - {at: 3s, group: {faults: []}}\n",
        r"faults\[0\]: a `group` entry has only the `group` key"),
    "same mechanism in a group": (
        "faults:\n  - group: {faults: [{kind: disk-eio, guest: g2}, "
        "{kind: disk-hang, guest: g2}]}\n",
        r"faults\[0\]\.faults\[0\] \(disk-eio at 0s\) and faults\[0\]\.faults\[1\] "
        r"\(disk-hang at 0s\) overlap on g2"),
    "cascade first step timed": (
        "faults:\n  - cascade: {steps: [{kind: cpu-nmi, guest: g1, after: 2s}, "
        "{kind: cpu-nmi, guest: g2, after: 2s}]}\n",
        r"faults\[0\]: cascade: steps\[0\]: the first step starts at the cascade's `at`"),
    "cascade step untimed": (
        "faults:\n  - cascade: {steps: [{kind: cpu-nmi, guest: g1}, "
        "{kind: cpu-nmi, guest: g2}]}\n",
        r"cascade: steps\[1\]: needs `after: 5s` .* or `on: effect`"),
    "cascade on what": (
        "faults:\n  - cascade: {steps: [{kind: cpu-nmi, guest: g1}, "
        "{kind: cpu-nmi, guest: g2, on: recovery}]}\n",
        r"steps\[1\]: `on` must be `effect`"),
    "cascade bad after": (
        "faults:\n  - cascade: {steps: [{kind: cpu-nmi, guest: g1}, "
        "{kind: cpu-nmi, guest: g2, after: soon}]}\n",
        r"steps\[1\]: bad duration 'soon'"),
    "flip-flop times": ("faults:\n  - flip-flop: {kind: net-drop, guest: g2, times: 0}\n",
                        r"faults\[0\]: flip-flop: bad times 0"),
    "flip-flop duration": (
        "faults:\n  - flip-flop: {kind: net-drop, guest: g2, duration: 5s}\n",
        r"flip-flop: unknown key 'duration' \(known: at, id, kind"),
    "flip-flop overlaps itself": (
        "faults:\n  - flip-flop: {kind: guest-reboot, guest: g2, on: 5s, off: 5s}\n",
        r"faults\[0\] \(cycle 1\) \(guest-reboot at 0s\) and faults\[0\] \(cycle 2\)"),
    "duplicate id": (
        "faults:\n  - group: {id: x, faults: [{kind: cpu-nmi, guest: g1}, "
        "{kind: cpu-nmi, guest: g2}]}\n  - flip-flop: {id: x, kind: net-drop, guest: g2, "
        "at: 60s}\n", r"faults\[1\]: flip-flop: id 'x' is also faults\[0\]'s"),
    "composed entry not a mapping": ("faults:\n  - group: [1, 2]\n",
                                     r"faults\[0\]: group: expected a mapping under `group`"),
}


@pytest.mark.parametrize("case", list(BAD_COMPOSED))
def test_bad_composed_entries_are_one_line_errors(tmp_path, case):
    text, pattern = BAD_COMPOSED[case]
    with pytest.raises(SpecError, match=pattern) as err:
        load(tmp_path, text)
    assert "\n" not in str(err.value)


def test_auto_ids_skip_the_ones_given(tmp_path):
    c = load(tmp_path, "faults:\n"
                       "  - group: {faults: [{kind: cpu-nmi, guest: g1}, "
                       "{kind: cpu-nmi, guest: g2}]}\n"
                       "  - group: {at: 30s, id: group-1, faults: [{kind: cpu-nmi, guest: g1}, "
                       "{kind: cpu-nmi, guest: g2}]}\n")
    assert sorted({s.group for s in c.steps}) == ["group-1", "group-2"]


def test_a_run_without_faults_needs_a_duration(tmp_path):
    c = load(tmp_path, "baseline: 30s\ncooldown: 0s\nduration: 20m\nfaults: []\n")
    assert c.steps == () and c.planned_s == 1200.0


# -- the shipped campaign files -----------------------------------------------------------
def test_shipped_campaigns_load_and_fit_their_purpose():
    smoke = Campaign.load(CAMPAIGNS / "smoke.yaml")
    from vmroc.inject.registry import get_kind
    assert {get_kind(s.spec.kind).level for s in smoke.steps} == {
        "cpu", "memory", "disk", "network", "cluster"}
    assert smoke.baseline == 30 and smoke.planned_s <= 240
    mixed = Campaign.load(CAMPAIGNS / "mixed.yaml")
    counts = mixed.composed()
    assert counts["group"] + counts["cascade"] >= 10 and mixed.planned_s <= 40 * 60
    assert mixed.source.endswith("mixed.yaml") and mixed.name == "mixed"
    normal = Campaign.load(CAMPAIGNS / "normal.yaml")
    assert normal.steps == () and normal.planned_s >= 20 * 60
    for path in sorted(CAMPAIGNS.glob("*.yaml")):
        assert Campaign.load(path).steps is not None


def test_cli_plan_json_is_the_resolved_schedule(tmp_path, capsys):
    from vmroc.cli import main
    path = tmp_path / "c.yaml"
    path.write_text(COMPOSED)
    assert main(["campaign", "plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["at_after"] == "baseline" and plan["planned_s"] == 10 + 100 + 6 + 10
    first = plan["faults"][0]
    assert {"kind", "guests", "at", "duration", "params", "group", "cascade",
            "flip_flop"} <= set(first)
    assert first["group"] is first["cascade"] is first["flip_flop"] is None
    drop = plan["faults"][2]
    assert drop["kind"] == "net-drop" and drop["params"] == {"loss": 30.0}  # default filled
    assert drop["group"] == "group-1"
    assert main(["campaign", "plan", str(path)]) == 0
    text = capsys.readouterr().out
    assert "planned 2m06s" in text and "spread#3 on effect" in text and "flip-flop-1#2" in text


# -- the scheduler, with fake faults ---------------------------------------------------------
class FakeFault:
    """An AppliedFault stand-in: effect after ``effect_s`` (never if None), held for the
    spec's duration, ``recover_s`` to recover after the revert."""

    log_lines: list = []

    def __init__(self, spec, effect_s=0.05, recover_s=0.05):
        self.spec, self.effect_s, self.recover_s = spec, effect_s, recover_s
        self.id = f"{spec.kind}-{'-'.join(spec.guests)}-{spec.seed}"
        self.effective = self.recovered = None
        self.watch = {g: [] for g in spec.guests}
        self.times: dict[str, float] = {}

    def start(self):
        self.times["start"] = time.monotonic()
        if self.effect_s is not None:
            threading.Timer(self.effect_s, setattr, (self, "effective", True)).start()

    def hold(self, stop=None):
        end = self.times["start"] + self.spec.duration
        while time.monotonic() < end and not (stop and stop.is_set()):
            time.sleep(0.01)

    def stop(self):
        self.times["reverted"] = time.monotonic()
        time.sleep(self.recover_s)
        self.recovered = True
        self.times["done"] = time.monotonic()

    def result(self):
        return {"effective": bool(self.effective), "evidence": None, "apply_s": 0.0,
                "held_s": self.spec.duration, "recovered": self.recovered,
                "time_to_recover": self.recover_s}


class FakeLab:
    name = "fake"
    workload = "web"
    guests = [type("G", (), {"name": f"g{i}"})() for i in (1, 2, 3)]


def run_fake(monkeypatch, tmp_path, text, behaviour=None, stop=None):
    behaviour = behaviour or {}
    made = {}

    def fake_prepare(spec, lab, ledger, progress=None, campaign=None):
        f = FakeFault(spec, **behaviour.get((spec.kind, spec.guests[0] if spec.guests
                                             else None), {}))
        made[spec.seed] = f
        return f
    monkeypatch.setattr(campaign_mod, "prepare", fake_prepare)
    real_kind = campaign_mod.get_kind  # no verify windows: plans of a few seconds
    monkeypatch.setattr(campaign_mod, "get_kind",
                        lambda name: dataclasses.replace(real_kind(name), window=0.0))
    monkeypatch.setattr(campaign_mod.CampaignResult, "save", lambda self: tmp_path / "r.json")
    c = load(tmp_path, text)
    lines: list[str] = []
    result = run_campaign(c, FakeLab(), ledger=object(), progress=lines.append, stop=stop)
    return result, lines


def test_progress_names_the_phase_with_elapsed_and_eta(monkeypatch, tmp_path):
    result, lines = run_fake(monkeypatch, tmp_path, """
baseline: 100ms
cooldown: 100ms
faults:
  - {at: 0s, kind: cpu-nmi, guest: g1, duration: 100ms}
  - {at: 100ms, kind: net-drop, guest: g2, duration: 100ms}
""")
    assert not result.interrupted and [r.state for r in result.runs] == ["done", "done"]
    phases = [line.split(": ", 1)[1] for line in lines]
    assert any(p.startswith("baseline 0.1s (elapsed 0s, ETA ") for p in phases), phases
    assert any(p.startswith("fault [2/2] +0.2s net-drop on g2 (elapsed") for p in phases)
    assert any(p.startswith("cooldown ") and "ETA 0s" in p for p in phases)
    assert "2/2 effective, 2/2 recovered" in lines[-1]


def test_an_independent_step_waits_for_earlier_faults_on_its_guests(monkeypatch, tmp_path):
    result, lines = run_fake(monkeypatch, tmp_path, """
baseline: 0s
cooldown: 0s
faults:
  - {at: 0s, kind: net-drop, guest: g2, duration: 200ms}
  - {at: 300ms, kind: cpu-nmi, guest: g3, duration: 0}
  - {at: 300ms, kind: cpu-nmi, guest: g2, duration: 0}
  - {at: 1s, kind: cpu-hog, guest: g1, duration: 0}
""", behaviour={("net-drop", "g2"): {"recover_s": 0.5}})
    drop, other, same, late = result.runs
    assert other.waited_s == 0 and other.started_s == pytest.approx(0.3, abs=0.1)
    assert same.started_s == pytest.approx(0.7, abs=0.1)  # 0.2 s held + 0.5 s to recover
    assert same.waited_s == pytest.approx(0.4, abs=0.1)
    assert late.started_s == pytest.approx(1.0 + same.waited_s, abs=0.1)  # schedule moved
    assert result.shift_s == pytest.approx(same.waited_s, abs=0.01)
    assert result.to_dict()["steps"][2]["waited_s"] > 0.3
    assert any("cpu-nmi waits for net-drop-g2" in line for line in lines)
    assert any("the rest of the schedule moves by" in line for line in lines)


def test_group_members_start_together_and_flip_flop_cycles_do_not_overlap(monkeypatch,
                                                                          tmp_path):
    result, _ = run_fake(monkeypatch, tmp_path, """
baseline: 0s
cooldown: 0s
faults:
  - group:
      faults:
        - {kind: net-drop, guest: g2, duration: 300ms}
        - {kind: cpu-throttle, guest: g2, duration: 300ms}
  - flip-flop: {at: 500ms, kind: net-drop, guest: g3, on: 100ms, off: 50ms, times: 3}
""", behaviour={("net-drop", "g3"): {"recover_s": 0.2}})
    a, b, *cycles = result.runs
    assert abs(a.started_s - b.started_s) < 0.05 and not a.waited_s and not b.waited_s
    for first, second in zip(cycles, cycles[1:]):
        assert second.fault.times["start"] >= first.fault.times["done"]
    assert [r.to_dict()["flip_flop"] for r in cycles] == ["flip-flop-1"] * 3


def test_cascade_steps_follow_the_previous_start_or_effect(monkeypatch, tmp_path):
    # times a few times the scheduling jitter of a loaded 2-core machine
    result, lines = run_fake(monkeypatch, tmp_path, """
baseline: 0s
cooldown: 0s
faults:
  - cascade:
      steps:
        - {kind: net-delay, guest: g1, duration: 2s}
        - {kind: cpu-throttle, guest: g2, duration: 2s, on: effect, timeout: 8s}
        - {kind: net-drop, guest: g3, duration: 1200ms, after: 800ms}
        - {kind: cpu-hog, guest: g3, duration: 0, on: effect, timeout: 1200ms}
""", behaviour={("net-delay", "g1"): {"effect_s": 0.6},
                ("net-drop", "g3"): {"effect_s": None}})
    delay, throttle, drop, hog = result.runs
    assert throttle.started_by == "effect"
    assert throttle.started_s - delay.started_s == pytest.approx(0.6, abs=0.25)
    assert drop.started_by == "after"
    assert drop.started_s - throttle.started_s == pytest.approx(0.8, abs=0.25)
    assert hog.started_by == "timeout"  # no effect from net-drop: started anyway
    assert hog.started_s - drop.started_s == pytest.approx(1.2, abs=0.25)
    assert not any(r.waited_s for r in result.runs)  # a cascade's steps overlap on purpose
    assert result.to_dict()["steps"][3]["started_by"] == "timeout"
    assert any("no effect in 1.2s, started anyway" in line for line in lines)


def test_stop_reverts_and_skips_the_rest(monkeypatch, tmp_path):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    result, lines = run_fake(monkeypatch, tmp_path, """
baseline: 0s
faults:
  - {at: 0s, kind: net-drop, guest: g2, duration: 30s}
  - {at: 20s, kind: cpu-nmi, guest: g1, duration: 0}
""", stop=stop)
    assert result.interrupted and [r.state for r in result.runs] == ["done", "skipped"]
    assert result.runs[0].fault.recovered
    assert any("interrupted; reverting" in line for line in lines)
