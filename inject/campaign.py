"""Fault campaigns: a timed plan of faults on one lab, run as one unit.

    campaign = Campaign.load("deploy/campaigns/demo.yaml")   # one-line SpecError if bad
    result = run_campaign(campaign, lab, Ledger(), progress=print, stop=threading.Event())
    result.to_dict()["steps"][0]["effective"]

A campaign file (YAML or JSON)::

    name: demo
    lab: default          # optional; `--lab` wins
    workload: etcd        # optional: the lab's workload it needs (web or etcd)
    baseline: 20s         # quiet time before the first fault (detectors learn "normal")
    cooldown: 10s         # quiet time after the last fault
    duration: 20m         # optional: the whole run lasts at least this long (baseline
                          # included); with `faults: []` it is a run without faults
    seed: 7               # optional: reproducible random choices
    faults:
      - at: 0s            # after the baseline
        kind: disk-eio
        guest: g2         # or guests: [g2, g3]
        duration: 10s
        params: {iotype: write}
      - group:            # several faults at once
          at: 30s
          id: eio-and-drop  # optional (default group-1, group-2, ...)
          faults:
            - {kind: disk-eio, guest: g3, duration: 10s}
            - {kind: net-drop, guest: g3, duration: 10s, params: {loss: 60}}
      - cascade:          # each step starts after the previous one
          at: 60s
          steps:
            - {kind: net-delay, guest: g1, duration: 12s}
            - {kind: cpu-throttle, guest: g2, duration: 10s, after: 5s}   # 5 s after it started
            - {kind: net-drop, guest: g3, duration: 8s, on: effect}       # when its effect is seen
            # `on: effect` waits at most `timeout` (default: the kind's verify window)
      - flip-flop: {at: 120s, kind: net-link-down, guest: g3, on: 5s, off: 5s, times: 3}

Composed entries expand into ``Step``s that carry their ``group`` / ``cascade`` /
``flip_flop`` id, so one conflict check and one scheduler serve every step. Every fault
is validated against the registry and the lab before the first one is applied, so a
bad file applies nothing. Faults run at their times, overlapping ones at once (each in
its thread, through ``runner.prepare``/``AppliedFault``); two that would fight over
one mechanism (the same kind, or two kinds declaring one ``shared_mechanism`` such as
blkdebug, on a shared guest; two of a ``lab_wide`` kind such as bridge-down) are refused
at load time. Before a step starts, earlier faults touching
its guests (other than those of its own group or cascade) must be reverted and
recovered; that wait is bounded (``SETTLE_MAX_S``) and shifts the rest of the
schedule. Every ledger entry carries the campaign id (the composition ids are in the
result only: the ledger event has no field for them). Ctrl-C or SIGTERM stops the
campaign: active faults are reverted, faults not started yet are marked skipped, and
the result says ``interrupted``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from vmroc.deploy import Lab
from vmroc.deploy.image import WORKLOADS
from vmroc.home import subdir

from .errors import InjectError, SpecError
from .ledger import Ledger
from .registry import get_kind, resolve_params
from .runner import AppliedFault, Interrupted, prepare, raising_signals
from .spec import FaultSpec, Target, parse_duration

__all__ = ["Campaign", "Step", "CampaignResult", "run_campaign", "load_yaml"]

CAMPAIGN_KEYS = ("name", "lab", "workload", "baseline", "cooldown", "duration", "seed", "faults")
STEP_KEYS = ("at", "kind", "guest", "guests", "duration", "params", "addr", "device")
MEMBER_KEYS = STEP_KEYS[1:]                      # a group's faults: the group has the `at`
CASCADE_STEP_KEYS = MEMBER_KEYS + ("after", "on", "timeout")
GROUP_KEYS = ("at", "id", "faults")
CASCADE_KEYS = ("at", "id", "steps")
FLIP_FLOP_KEYS = ("at", "id", "kind", "guest", "guests", "params", "addr", "device",
                  "on", "off", "times")
COMPOSED = ("group", "cascade", "flip-flop")
SETTLE_MAX_S = 60.0  # longest wait for earlier faults on the same guests to recover
POLL = 0.1
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """One fault of a campaign, ``at`` seconds after the baseline.

    A step of a composed entry carries the entry's id (``group``, ``cascade`` or
    ``flip_flop``) and its position in it (``part``, from 0). A cascade step after the
    first has a ``trigger``: ``"after"`` (``delay`` seconds after the previous step
    started) or ``"effect"`` (when the previous step's effect is seen, at most ``delay``
    seconds after it started); its ``at`` is then the latest planned start and
    ``earliest`` the earliest one.
    """

    at: float
    spec: FaultSpec
    group: str | None = None
    cascade: str | None = None
    flip_flop: str | None = None
    part: int = 0
    trigger: str | None = None
    delay: float = 0.0
    earliest: float | None = None
    entry: str = ""  # where in the file, e.g. "faults[3].steps[1]"

    @property
    def composed(self) -> tuple[str, str] | None:
        """("group" | "cascade" | "flip-flop", id), or None for a plain fault."""
        for what, cid in (("group", self.group), ("cascade", self.cascade),
                          ("flip-flop", self.flip_flop)):
            if cid is not None:
                return what, cid
        return None

    def window(self) -> tuple[float, float]:
        """When the fault may be applied, at the longest (its kind may hold it longer)."""
        start = self.at if self.earliest is None else self.earliest
        return start, self.at + max(self.spec.duration, get_kind(self.spec.kind).window)

    def ids(self) -> dict[str, Any]:
        return {"group": self.group, "cascade": self.cascade, "flip_flop": self.flip_flop}

    def to_dict(self) -> dict[str, Any]:
        out = {"at": self.at, **self.spec.to_dict(), **self.ids()}
        if self.trigger is not None:
            out.update(trigger=self.trigger, delay=self.delay, earliest=self.earliest)
        return out

    def plan(self) -> dict[str, Any]:
        """The resolved step: parameters with defaults, ids (None when not composed)."""
        kind = get_kind(self.spec.kind)
        return {"kind": kind.name, "level": kind.level, "guests": list(self.spec.guests),
                "at": self.at, "duration": self.spec.duration,
                "ends": self.window()[1],
                "params": resolve_params(kind, self.spec.params), **self.ids(),
                "trigger": self.trigger,
                "delay": self.delay if self.trigger is not None else None,
                "earliest": self.earliest, "entry": self.entry}


@dataclass(frozen=True)
class Campaign:
    """A named, validated plan of faults."""

    name: str
    steps: tuple[Step, ...]
    lab: str | None = None
    baseline: float = 10.0
    cooldown: float = 10.0
    seed: int | None = None
    source: str = "<campaign>"
    duration: float | None = None  # the whole run lasts at least this long
    workload: str | None = None    # the lab workload it needs (None: any)

    @property
    def planned_s(self) -> float:
        """Planned length: baseline, the last fault's window, cooldown (recovery not
        counted), or ``duration`` if longer."""
        end = max((s.window()[1] for s in self.steps), default=0.0)
        return max(self.baseline + end + self.cooldown, self.duration or 0.0)

    @classmethod
    def load(cls, path: str | Path) -> "Campaign":
        """Read and validate a campaign file (YAML or JSON)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"campaign {path}: cannot read it ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise SpecError(f"campaign {path}: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from exc
        return cls.from_dict(load_yaml(text, f"campaign {path}"), str(path))

    @classmethod
    def from_dict(cls, obj: Any, source: str = "<campaign>") -> "Campaign":
        if not isinstance(obj, Mapping):
            raise SpecError(f"campaign {source}: expected a mapping with a `faults` list, "
                            f"got {type(obj).__name__}")
        _known(obj, CAMPAIGN_KEYS, f"campaign {source}: ")
        faults = obj.get("faults")
        seed = obj.get("seed")
        try:
            baseline = parse_duration(obj.get("baseline", 10))
            cooldown = parse_duration(obj.get("cooldown", 10))
            duration = parse_duration(obj["duration"]) if "duration" in obj else None
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise SpecError(f"bad seed {seed!r}: expected an integer")
            if not isinstance(faults, list):
                raise SpecError("`faults` must be a list of faults (`faults: []` with a "
                                "`duration` for a run without faults)")
            lab = obj.get("lab")
            if lab is not None and not isinstance(lab, str):
                raise SpecError(f"bad lab {lab!r}: expected a lab name")
            workload = obj.get("workload")
            if workload is not None and workload not in WORKLOADS:
                raise SpecError(f"unknown workload {workload!r}; use one of "
                                f"{', '.join(WORKLOADS)}")
            if not faults and not duration:
                raise SpecError("`faults` is empty: a run without faults needs a "
                                "`duration`, e.g. 20m")
        except SpecError as exc:
            raise SpecError(f"campaign {source}: {exc}") from exc
        steps = _Expander(seed).expand(faults, source)
        steps.sort(key=lambda s: s.at)
        campaign = cls(name=str(obj.get("name") or Path(source).stem), steps=tuple(steps),
                       lab=lab, baseline=baseline, cooldown=cooldown, seed=seed,
                       source=source, duration=duration, workload=workload)
        campaign._check_conflicts()
        return campaign

    def _check_conflicts(self) -> None:
        for i, a in enumerate(self.steps):
            for b in self.steps[i + 1:]:
                (a0, a1), (b0, b1) = a.window(), b.window()
                if not (a0 < b1 and b0 < a1):
                    continue
                ka, kb = a.spec.kind, b.spec.kind
                kind_a, kind_b = get_kind(ka), get_kind(kb)
                lab_wide = kind_a.lab_wide and ka == kb
                shared = set(a.spec.guests) & set(b.spec.guests)
                same = kind_a.conflict_key == kind_b.conflict_key
                if lab_wide or (shared and same):
                    raise SpecError(
                        f"campaign {self.source}: {a.entry} ({ka} at {a.at:g}s) and "
                        f"{b.entry} ({kb} at {b.at:g}s) overlap on "
                        f"{', '.join(sorted(shared)) or 'the lab'} and use the same "
                        f"mechanism; move one (the first may hold until {a1:g}s)")

    def prepare(self, lab: Lab, ledger: Ledger, progress: Progress | None = None,
                campaign_id: str | None = None) -> list[AppliedFault]:
        """Every step validated against the lab (guests up, addresses in range); nothing
        is applied. Errors name the step."""
        if self.workload is not None and lab.workload != self.workload:
            raise SpecError(f"campaign {self.source} needs a lab with the {self.workload} "
                            f"workload; lab {lab.name} runs {lab.workload} (`vmroc lab up "
                            f"--workload {self.workload}`)")
        out = []
        for step in self.steps:
            try:
                out.append(prepare(step.spec, lab, ledger, progress=progress,
                                   campaign=campaign_id))
            except InjectError as exc:
                raise type(exc)(f"campaign {self.source}: {step.entry} ({step.spec.kind} "
                                f"at {step.at:g}s): {exc}") from exc
        return out

    def composed(self) -> dict[str, int]:
        """How many groups, cascades and flip-flops the plan has."""
        seen = {s.composed for s in self.steps if s.composed}
        return {what: sum(w == what for w, _ in seen) for what in COMPOSED}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lab": self.lab, "workload": self.workload,
                "baseline": self.baseline,
                "cooldown": self.cooldown, "duration": self.duration, "seed": self.seed,
                "source": self.source, "planned_s": round(self.planned_s, 1),
                "faults": [s.to_dict() for s in self.steps]}

    def plan(self) -> dict[str, Any]:
        """The resolved schedule, no lab needed: ``at`` and ``ends`` are seconds after
        the baseline; ``planned_s`` is the whole run, baseline included."""
        return {"name": self.name, "source": self.source, "lab": self.lab,
                "workload": self.workload, "seed": self.seed, "baseline": self.baseline,
                "cooldown": self.cooldown,
                "duration": self.duration, "at_after": "baseline",
                "planned_s": round(self.planned_s, 1), "composed": self.composed(),
                "faults": [s.plan() for s in self.steps]}


class _Loader:
    """``yaml.SafeLoader`` with YAML 1.2 booleans: ``on``/``off``/``yes``/``no`` stay
    strings, so a flip-flop's ``on: 5s`` is a key ``on`` (built on first use)."""

    cls = None

    @classmethod
    def get(cls):
        if cls.cls is None:
            import yaml
            bool_tag = "tag:yaml.org,2002:bool"

            class Loader(yaml.SafeLoader):
                pass
            Loader.yaml_implicit_resolvers = {
                ch: [(tag, rx) for tag, rx in rs if tag != bool_tag]
                for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
            Loader.add_implicit_resolver(
                bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
            cls.cls = Loader
        return cls.cls


def load_yaml(text: str, where: str) -> Any:
    """YAML (or JSON) text as data; ``SpecError`` naming ``where`` and the line."""
    import yaml
    try:
        return yaml.load(text, Loader=_Loader.get())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpecError(f"{where}: not YAML or JSON{line}: "
                        f"{getattr(exc, 'problem', None) or exc}".splitlines()[0]) from exc
    except (ValueError, RecursionError) as exc:  # a value YAML cannot build (an int past
        # 4300 digits, a date out of range), nesting deeper than Python's recursion limit
        raise SpecError(f"{where}: not YAML or JSON: {type(exc).__name__}: "
                        f"{exc}".splitlines()[0]) from exc


def _known(obj: Mapping, keys: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in keys]
    if unknown:
        raise SpecError(f"{where}unknown key {unknown[0]!r} (known: {', '.join(keys)})")


def _on_off(raw: Mapping) -> dict:
    """Keys as written: YAML 1.1 readers turn ``on``/``off`` into True/False."""
    return {{True: "on", False: "off"}.get(k, k) if isinstance(k, bool) else k: v
            for k, v in raw.items()}


def _mapping(raw: Any, what: str) -> Mapping:
    if not isinstance(raw, Mapping):
        raise SpecError(f"expected {what}, got {type(raw).__name__}")
    return raw


def _spec(raw: Any, keys: tuple[str, ...], seed: int | None,
          duration: Any = None) -> FaultSpec:
    """A fault entry as a FaultSpec, checked against the registry (the lab comes later)."""
    raw = _mapping(raw, "a mapping with at least `kind` and `guest`")
    _known(raw, keys, "")
    if "kind" not in raw:
        raise SpecError("missing `kind` (see `vmroc inject list`)")
    params = raw.get("params") or {}
    if not isinstance(params, Mapping):
        raise SpecError(f"`params` must be a mapping, e.g. {{loss: 40}}, got {params!r}")
    resolve_params(get_kind(raw["kind"]), params)  # unknown kind, bad value
    target = Target(guests=raw.get("guests", raw.get("guest")) or (),
                    device=raw.get("device"), addr=raw.get("addr"))
    return FaultSpec(raw["kind"], target, params,
                     duration=raw.get("duration", 10) if duration is None else duration,
                     seed=seed)


class _Expander:
    """``faults`` entries -> Steps; composed entries get ids, seeds count every step."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self.n = 0
        self.taken: set[str] = set()
        self.counts = {what: 0 for what in COMPOSED}

    def next_seed(self) -> int | None:
        self.n += 1
        return None if self.seed is None else self.seed + self.n - 1

    def expand(self, faults: list, source: str) -> list[Step]:
        named = {}
        for i, raw in enumerate(faults):  # explicit ids first: auto ids avoid them
            try:
                body = _composed(raw)
            except SpecError as exc:
                raise SpecError(f"campaign {source}: faults[{i}]: {exc}") from exc
            if body is not None and isinstance(body[1], Mapping) and "id" in body[1]:
                cid = body[1]["id"]
                where = f"campaign {source}: faults[{i}]: {body[0]}: "
                if not isinstance(cid, str) or not _ID.match(cid):
                    raise SpecError(f"{where}bad id {cid!r}: use letters, digits, '-', '_'")
                if cid in named:
                    raise SpecError(f"{where}id {cid!r} is also faults[{named[cid]}]'s")
                named[cid] = i
        self.taken = set(named)
        steps: list[Step] = []
        for i, raw in enumerate(faults):
            where = f"faults[{i}]"
            try:
                body = _composed(raw)
                if body is None:
                    spec = _spec(raw, STEP_KEYS, self.next_seed())
                    steps.append(Step(parse_duration(raw.get("at", 0)), spec, entry=where))
                else:
                    what, inner = body
                    try:
                        inner = _on_off(_mapping(inner, f"a mapping under `{what}`"))
                        steps += getattr(self, what.replace("-", "_"))(inner, where)
                    except InjectError as exc:
                        raise SpecError(f"{what}: {exc}") from exc
            except InjectError as exc:
                raise SpecError(f"campaign {source}: {where}: {exc}") from exc
        return steps

    def new_id(self, what: str, inner: Mapping) -> str:
        if "id" in inner:
            return inner["id"]
        while True:
            self.counts[what] += 1
            cid = f"{what}-{self.counts[what]}"
            if cid not in self.taken:
                self.taken.add(cid)
                return cid

    def group(self, inner: Mapping, where: str) -> list[Step]:
        _known(inner, GROUP_KEYS, "")
        at = parse_duration(inner.get("at", 0))
        members = inner.get("faults")
        if not isinstance(members, list) or len(members) < 2:
            raise SpecError("`faults` must list at least two faults (one fault is a plain "
                            "entry)")
        gid = self.new_id("group", inner)
        out = []
        for j, raw in enumerate(members):
            try:
                if isinstance(raw, Mapping) and "at" in raw:
                    raise SpecError("`at` belongs to the group, not to its faults")
                spec = _spec(raw, MEMBER_KEYS, self.next_seed())
            except InjectError as exc:
                raise SpecError(f"faults[{j}]: {exc}") from exc
            out.append(Step(at, spec, group=gid, part=j, entry=f"{where}.faults[{j}]"))
        return out

    def cascade(self, inner: Mapping, where: str) -> list[Step]:
        _known(inner, CASCADE_KEYS, "")
        at = parse_duration(inner.get("at", 0))
        raws = inner.get("steps")
        if not isinstance(raws, list) or len(raws) < 2:
            raise SpecError("`steps` must list at least two faults")
        cid = self.new_id("cascade", inner)
        out: list[Step] = []
        for j, raw in enumerate(raws):
            try:
                raw = _on_off(_mapping(raw, "a mapping with at least `kind` and `guest`"))
                if "at" in raw:
                    raise SpecError("`at` belongs to the cascade; later steps use `after: 5s`"
                                    " or `on: effect`")
                _known(raw, CASCADE_STEP_KEYS, "")
                spec = _spec({k: v for k, v in raw.items()
                              if k not in ("after", "on", "timeout")},
                             MEMBER_KEYS, self.next_seed())
                step = Step(at, spec, cascade=cid, part=j, entry=f"{where}.steps[{j}]")
                if j == 0:
                    if {"after", "on", "timeout"} & set(raw):
                        raise SpecError("the first step starts at the cascade's `at`; "
                                        "`after`/`on` belong to later steps")
                else:
                    step = _triggered(step, raw, out[-1])
            except InjectError as exc:
                raise SpecError(f"steps[{j}]: {exc}") from exc
            out.append(step)
        return out

    def flip_flop(self, inner: Mapping, where: str) -> list[Step]:
        _known(inner, FLIP_FLOP_KEYS, "")
        at = parse_duration(inner.get("at", 0))
        on = parse_duration(inner.get("on", 5))
        off = parse_duration(inner.get("off", 5))
        times = inner.get("times", 3)
        if on <= 0:
            raise SpecError("`on` must be longer than 0s")
        if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= 1000:
            raise SpecError(f"bad times {times!r}: expected an integer from 1 to 1000")
        member = {k: v for k, v in inner.items() if k not in ("at", "id", "on", "off", "times")}
        fid = self.new_id("flip-flop", inner)
        out = []
        for j in range(times):
            spec = _spec(member, MEMBER_KEYS, self.next_seed(), duration=on)
            out.append(Step(at + j * (on + off), spec, flip_flop=fid, part=j,
                            entry=f"{where} (cycle {j + 1})"))
        return out


def _composed(raw: Any) -> tuple[str, Any] | None:
    """("group" | "cascade" | "flip-flop", body) for a composed entry, else None."""
    if not isinstance(raw, Mapping):
        return None
    which = [k for k in COMPOSED if k in raw]
    if not which:
        return None
    if len(raw) > 1:
        other = next(k for k in raw if k != which[0])
        raise SpecError(f"a `{which[0]}` entry has only the `{which[0]}` key (found "
                        f"{other!r}; put `at` and the rest under `{which[0]}`)")
    return which[0], raw[which[0]]


def _triggered(step: Step, raw: Mapping, prev: Step) -> Step:
    """A later cascade step: when it starts, relative to the previous one."""
    if "after" in raw and "on" in raw:
        raise SpecError("give `after` or `on`, not both")
    prev_earliest = prev.at if prev.earliest is None else prev.earliest
    if "after" in raw:
        if "timeout" in raw:
            raise SpecError("`timeout` goes with `on: effect`")
        after = parse_duration(raw["after"])
        return replace(step, at=prev.at + after, trigger="after", delay=after,
                       earliest=prev_earliest + after)
    if "on" in raw:
        if raw["on"] != "effect":
            raise SpecError(f"`on` must be `effect` (when the previous step's effect is "
                            f"seen), got {raw['on']!r}")
        timeout = (parse_duration(raw["timeout"]) if "timeout" in raw
                   else get_kind(prev.spec.kind).window)
        if timeout <= 0:
            raise SpecError("`timeout` must be longer than 0s")
        return replace(step, at=prev.at + timeout, trigger="effect", delay=timeout,
                       earliest=prev_earliest)
    raise SpecError("needs `after: 5s` (after the previous step starts) or `on: effect` "
                    "(when the previous step's effect is seen)")


# -- running ----------------------------------------------------------------------------------
@dataclass
class StepRun:
    """What happened to one step."""

    step: Step
    fault: AppliedFault
    state: str = "pending"  # pending -> running -> done | failed | skipped
    started_s: float | None = None  # seconds after the campaign start
    error: str | None = None
    waited_s: float = 0.0  # held back for earlier faults on its guests to recover
    started_by: str | None = None  # cascade steps: after | effect | timeout | no-effect
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        f = self.fault
        out = {"at": self.step.at, "kind": self.step.spec.kind,
               "guests": list(self.step.spec.guests), **self.step.ids(), "fault_id": f.id,
               "state": self.state,
               "started_s": None if self.started_s is None else round(self.started_s, 2)}
        if self.step.trigger is not None:
            out.update(trigger=self.step.trigger, started_by=self.started_by)
        if self.waited_s:
            out["waited_s"] = round(self.waited_s, 2)
        if self.state in ("done", "failed"):
            result = f.result()
            out.update({k: result[k] for k in ("effective", "evidence", "apply_s", "held_s",
                                               "recovered", "time_to_recover")})
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class CampaignResult:
    """The outcome of one campaign run (also saved as JSON under the vmroc home)."""

    id: str
    campaign: Campaign
    lab: str
    runs: list[StepRun]
    started: float = field(default_factory=time.time)
    ended: float | None = None
    interrupted: bool = False
    shift_s: float = 0.0  # how far the schedule moved waiting for recoveries

    @property
    def effective(self) -> int:
        return sum(bool(r.fault.effective) for r in self.runs if r.state == "done")

    def to_dict(self) -> dict[str, Any]:
        return {"campaign_id": self.id, "name": self.campaign.name, "lab": self.lab,
                "source": self.campaign.source, "started": self.started, "ended": self.ended,
                "interrupted": self.interrupted, "baseline": self.campaign.baseline,
                "cooldown": self.campaign.cooldown,
                "planned_s": round(self.campaign.planned_s, 1),
                "shift_s": round(self.shift_s, 2), "composed": self.campaign.composed(),
                "faults": len(self.runs), "effective": self.effective,
                "recovered": sum(bool(r.fault.recovered) for r in self.runs),
                "steps": [r.to_dict() for r in self.runs]}

    def save(self) -> Path:
        path = subdir("campaigns") / f"{self.id}.json"
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        return path


class _Clock:
    """Seconds since the start, and the planned end moved by the waits so far."""

    def __init__(self, planned_s: float):
        self.t0 = time.monotonic()
        self.planned_s = planned_s
        self.shift = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def tail(self, eta: float | None = None) -> str:
        now = self.now()
        eta = max(0.0, self.planned_s + self.shift - now) if eta is None else eta
        return f" (elapsed {hms(now)}, ETA {hms(eta)})"


def hms(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``3725`` -> ``1h02m05s``."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    if h:
        return f"{h}h{m:02d}m{s % 60:02d}s"
    return f"{m}m{s % 60:02d}s" if m else f"{s}s"


def run_campaign(campaign: Campaign, lab: Lab, ledger: Ledger | None = None, *,
                 progress: Progress | None = None,
                 stop: threading.Event | None = None) -> CampaignResult:
    """Run every step at its time; always reverts. Validates all steps before the first.

    ``progress`` gets one line per phase (baseline, each fault, cooldown) with the time
    elapsed and the ETA; ``stop`` (set from any thread) ends the run as Ctrl-C does."""
    say = progress or (lambda msg: None)
    ledger = ledger if ledger is not None else Ledger()
    stop = stop or threading.Event()
    cid = f"{campaign.name}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"
    runs = [StepRun(s, f) for s, f in zip(campaign.steps,
                                          campaign.prepare(lab, ledger, say, cid))]
    result = CampaignResult(cid, campaign, lab.name, runs)
    n = len(runs)
    composed = ", ".join(f"{v} {k}(s)" for k, v in campaign.composed().items() if v)
    say(f"{cid}: {n} fault(s){f' ({composed})' if composed else ''} on lab {lab.name}, "
        f"~{hms(campaign.planned_s)} planned (baseline {campaign.baseline:g}s)")
    clock = _Clock(campaign.planned_s)
    with raising_signals():
        try:
            say(f"{cid}: baseline {campaign.baseline:g}s{clock.tail()}")
            if stop.wait(campaign.baseline):
                raise Interrupted("stopped")
            _schedule(cid, runs, campaign, [g.name for g in lab.guests] if n else [],
                      clock, stop, say)
            _join(runs)
            rest = max(campaign.cooldown, (campaign.duration or 0.0) - clock.now())
            say(f"{cid}: cooldown {rest:.0f}s{clock.tail(rest)}")
            if stop.wait(rest):
                raise Interrupted("stopped")
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM/SIGHUP (Interrupted) or stop
            result.interrupted = True
            stop.set()
            say(f"{cid}: interrupted; reverting active faults")
            _join(runs, patient=say)
    for run in runs:
        if run.state == "pending":
            run.state = "skipped"
    result.shift_s = clock.shift
    result.ended = time.time()
    say(f"{cid}: {result.effective}/{n} effective, "
        f"{sum(bool(r.fault.recovered) for r in runs)}/{n} recovered in {hms(clock.now())}"
        + (f", {clock.shift:.0f}s behind the plan" if clock.shift >= 1 else "")
        + (" (interrupted)" if result.interrupted else ""))
    return result


def _schedule(cid: str, runs: list[StepRun], campaign: Campaign, lab_guests: list[str],
              clock: _Clock, stop: threading.Event, say: Progress) -> None:
    """Start every step when it is due, in plan order; returns once all have started."""
    by_part = {(r.step.cascade, r.step.part): r for r in runs if r.step.cascade is not None}
    previous = {id(r): by_part[(r.step.cascade, r.step.part - 1)] for r in runs
                if r.step.trigger is not None}
    pending = list(runs)
    started = 0
    while pending:
        now = clock.now()
        offset = campaign.baseline + clock.shift
        ready, how = None, None
        for run in pending:
            how = _due(run, previous.get(id(run)), offset, now)
            if how:
                ready = run
                break
        if ready is None:
            nxt = min((offset + r.step.at for r in pending if r.step.trigger is None),
                      default=now + POLL)
            if stop.wait(min(POLL, max(0.0, nxt - now))):
                raise Interrupted("stopped")
            continue
        pending.remove(ready)
        ready.waited_s = _settle(cid, ready, runs, lab_guests, clock, stop, say)
        ready.started_by = how if ready.step.trigger is not None else None
        ready.started_s = clock.now()
        started += 1
        spec = ready.step.spec
        say(f"{cid}: fault [{started}/{len(runs)}] +{ready.started_s:.1f}s {spec.kind} on "
            f"{','.join(spec.guests) or 'the lab'}{_tag(ready, runs)}{clock.tail()}")
        ready.state = "running"
        threading.Thread(target=_hold, args=(ready, stop), name=f"fault-{ready.fault.id}",
                         daemon=True).start()


def _due(run: StepRun, previous: StepRun | None, offset: float, now: float) -> str | None:
    """Why ``run`` may start now, or None. A cascade step after the first is timed from
    the previous step's real start."""
    step = run.step
    if step.trigger is None:
        return "time" if now >= offset + step.at else None
    if previous is None or previous.started_s is None:
        return None
    since = now - previous.started_s
    if step.trigger == "after":
        return "after" if since >= step.delay else None
    if previous.fault.effective:
        return "effect"
    if previous.done.is_set():
        return "no-effect"
    return "timeout" if since >= step.delay else None


def _touches(step: Step, lab_guests: list[str]) -> set[str]:
    """Guests a step targets (every guest for a lab-wide kind)."""
    kind = get_kind(step.spec.kind)
    if kind.lab_wide or kind.affected is not None:
        return set(lab_guests) | set(step.spec.guests)
    return set(step.spec.guests)


def _settle(cid: str, run: StepRun, runs: list[StepRun], lab_guests: list[str],
            clock: _Clock, stop: threading.Event, say: Progress) -> float:
    """Wait until earlier faults on ``run``'s guests are reverted and recovered, at most
    ``SETTLE_MAX_S``; faults of its own group or cascade do not count (they are meant to
    overlap), earlier cycles of its flip-flop do. The schedule moves by the wait."""
    mine = run.step.composed
    want = _touches(run.step, lab_guests)
    if mine is not None and not any(r.started_s is not None for r in runs
                                    if r.step.composed == mine):
        for r in runs:  # the first step of a composed entry waits for all of its guests
            if r.step.composed == mine:
                want |= _touches(r.step, lab_guests)
    blockers = [r for r in runs if r.started_s is not None and not r.done.is_set()
                and (mine is None or r.step.composed != mine or mine[0] == "flip-flop")
                and want & (_touches(r.step, lab_guests)
                            | set(getattr(r.fault, "watch", None) or ()))]
    if not blockers:
        return 0.0
    kind = run.step.spec.kind
    say(f"{cid}: {kind} waits for {', '.join(r.fault.id for r in blockers)} to revert and "
        f"recover (at most {SETTLE_MAX_S:g}s)")
    t0 = time.monotonic()
    deadline = t0 + SETTLE_MAX_S
    for r in blockers:
        while not r.done.wait(min(POLL, max(0.0, deadline - time.monotonic()))):
            if stop.is_set():
                raise Interrupted("stopped")
            if time.monotonic() >= deadline:
                break
    waited = time.monotonic() - t0
    clock.shift += waited
    late = [r.fault.id for r in blockers if not r.done.is_set()]
    say(f"{cid}: {kind} waited {waited:.1f}s"
        + (f"; {', '.join(late)} still not recovered, starting anyway" if late else "")
        + f"; the rest of the schedule moves by {waited:.1f}s (total {clock.shift:.1f}s)")
    return waited


def _tag(run: StepRun, runs: list[StepRun]) -> str:
    step = run.step
    if step.group is not None:
        return f" (group {step.group})"
    if step.cascade is not None:
        how = {None: "first", "after": f"{step.delay:g}s after the previous",
               "effect": "on the previous one's effect",
               "timeout": f"no effect in {step.delay:g}s, started anyway",
               "no-effect": "the previous one ended without effect"}[run.started_by]
        return f" (cascade {step.cascade} step {step.part + 1}: {how})"
    if step.flip_flop is not None:
        times = sum(r.step.flip_flop == step.flip_flop for r in runs)
        return f" (flip-flop {step.flip_flop} cycle {step.part + 1}/{times})"
    return ""


def _hold(run: StepRun, stop: threading.Event) -> None:
    """Worker thread: apply, hold (verifying), revert; errors end up in the step."""
    try:
        run.fault.start()
        run.fault.hold(stop=stop)
        run.state = "done"
    except Exception as exc:  # noqa: BLE001 - one failed fault must not stop the others
        run.state, run.error = "failed", f"{type(exc).__name__}: {exc}"
        run.fault.fault.log.warning("campaign step failed: %s", exc)
    finally:
        try:
            run.fault.stop()
        except Exception as exc:  # noqa: BLE001 - reported, and left for `vmroc inject heal`
            run.state, run.error = "failed", f"{type(exc).__name__}: {exc}"
        run.done.set()


def _join(runs: list[StepRun], patient: Progress | None = None) -> None:
    """Wait for every started step. ``patient``: a further Ctrl-C only gets a message,
    since the threads are reverting their faults. (An event per step, not
    ``Thread.join``: a join cut short by Ctrl-C may report a live thread as ended.)"""
    for run in runs:
        while run.started_s is not None and not run.done.is_set():
            try:
                run.done.wait()
            except KeyboardInterrupt:
                if patient is None:
                    raise
                patient(f"still reverting {run.fault.id}; it will not be left applied")
