"""Fault campaigns: a timed plan of faults on one lab, run as one unit.

    campaign = Campaign.load("deploy/campaigns/demo.yaml")   # one-line SpecError if bad
    result = run_campaign(campaign, lab, Ledger(), progress=print)
    result.to_dict()["steps"][0]["effective"]

A campaign file (YAML or JSON)::

    name: demo
    lab: default          # optional; `--lab` wins
    baseline: 20s         # quiet time before the first fault (detectors learn "normal")
    cooldown: 10s         # quiet time after the last fault
    seed: 7               # optional: reproducible random choices
    faults:
      - at: 0s            # after the baseline
        kind: disk-eio
        guest: g2         # or guests: [g2, g3]
        duration: 10s
        params: {iotype: write}

Every fault is validated against the registry and the lab before the first one is
applied, so a bad file applies nothing. Faults run at their times, overlapping ones
at once (each in its thread, through ``runner.prepare``/``AppliedFault``); two that
would fight over one mechanism (the same kind on a shared guest, two blkdebug kinds
on one disk, two bridge-downs) are refused at load time. Every ledger entry carries
the campaign id. Ctrl-C or SIGTERM stops the campaign: active faults are reverted,
faults not started yet are marked skipped, and the result says ``interrupted``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from vmroc.deploy import Lab
from vmroc.home import subdir

from .errors import InjectError, SpecError
from .ledger import Ledger
from .registry import get_kind, resolve_params
from .runner import AppliedFault, Interrupted, prepare, raising_signals
from .spec import FaultSpec, Target, parse_duration

__all__ = ["Campaign", "Step", "CampaignResult", "run_campaign"]

CAMPAIGN_KEYS = ("name", "lab", "baseline", "cooldown", "seed", "faults")
STEP_KEYS = ("at", "kind", "guest", "guests", "duration", "params", "addr", "device")
MECHANISM = {"disk-eio": "blkdebug", "disk-hang": "blkdebug"}  # kinds sharing one mechanism
LAB_WIDE = {"bridge-down"}  # kinds that touch every guest at once
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """One fault of a campaign, ``at`` seconds after the baseline."""

    at: float
    spec: FaultSpec

    def window(self) -> tuple[float, float]:
        """When the fault may be applied, at the longest (its kind may hold it longer)."""
        return self.at, self.at + max(self.spec.duration, get_kind(self.spec.kind).window)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, **self.spec.to_dict()}


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

    @property
    def planned_s(self) -> float:
        """Planned length: baseline, the last fault's window, cooldown (recovery not counted)."""
        end = max((s.window()[1] for s in self.steps), default=0.0)
        return self.baseline + end + self.cooldown

    @classmethod
    def load(cls, path: str | Path) -> "Campaign":
        """Read and validate a campaign file (YAML or JSON)."""
        import yaml
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"campaign {path}: cannot read it ({exc.strerror})") from exc
        try:
            obj = yaml.safe_load(text)  # JSON is YAML too
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise SpecError(f"campaign {path}: not YAML or JSON{line}: "
                            f"{getattr(exc, 'problem', None) or exc}".splitlines()[0]) from exc
        return cls.from_dict(obj, str(path))

    @classmethod
    def from_dict(cls, obj: Any, source: str = "<campaign>") -> "Campaign":
        if not isinstance(obj, Mapping):
            raise SpecError(f"campaign {source}: expected a mapping with a `faults` list, "
                            f"got {type(obj).__name__}")
        _known(obj, CAMPAIGN_KEYS, f"campaign {source}: ")
        faults = obj.get("faults")
        if not isinstance(faults, list) or not faults:
            raise SpecError(f"campaign {source}: `faults` must be a non-empty list")
        seed = obj.get("seed")
        try:
            baseline = parse_duration(obj.get("baseline", 10))
            cooldown = parse_duration(obj.get("cooldown", 10))
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise SpecError(f"bad seed {seed!r}: expected an integer")
        except SpecError as exc:
            raise SpecError(f"campaign {source}: {exc}") from exc
        steps = []
        for i, raw in enumerate(faults):
            try:
                steps.append(_step(raw, None if seed is None else seed + i))
            except InjectError as exc:
                raise SpecError(f"campaign {source}: faults[{i}]: {exc}") from exc
        steps.sort(key=lambda s: s.at)
        campaign = cls(name=str(obj.get("name") or Path(source).stem), steps=tuple(steps),
                       lab=obj.get("lab"), baseline=baseline, cooldown=cooldown, seed=seed,
                       source=source)
        campaign._check_conflicts()
        return campaign

    def _check_conflicts(self) -> None:
        for i, a in enumerate(self.steps):
            for b in self.steps[i + 1:]:
                if b.window()[0] >= a.window()[1]:
                    continue
                ka, kb = a.spec.kind, b.spec.kind
                lab_wide = ka in LAB_WIDE and ka == kb
                shared = set(a.spec.guests) & set(b.spec.guests)
                same = MECHANISM.get(ka, ka) == MECHANISM.get(kb, kb)
                if lab_wide or (shared and same):
                    raise SpecError(
                        f"campaign {self.source}: {ka} at {a.at:g}s and {kb} at {b.at:g}s "
                        f"overlap on {', '.join(sorted(shared)) or 'the lab'} and use the same "
                        f"mechanism; move one (the first may hold until "
                        f"{a.window()[1]:g}s)")

    def prepare(self, lab: Lab, ledger: Ledger, progress: Progress | None = None,
                campaign_id: str | None = None) -> list[AppliedFault]:
        """Every step validated against the lab (guests up, addresses in range); nothing
        is applied. Errors name the step."""
        out = []
        for i, step in enumerate(self.steps):
            try:
                out.append(prepare(step.spec, lab, ledger, progress=progress,
                                   campaign=campaign_id))
            except InjectError as exc:
                raise type(exc)(f"campaign {self.source}: fault at {step.at:g}s "
                                f"({step.spec.kind}): {exc}") from exc
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lab": self.lab, "baseline": self.baseline,
                "cooldown": self.cooldown, "seed": self.seed, "source": self.source,
                "planned_s": round(self.planned_s, 1),
                "faults": [s.to_dict() for s in self.steps]}


def _known(obj: Mapping, keys: tuple[str, ...], where: str) -> None:
    unknown = [k for k in obj if k not in keys]
    if unknown:
        raise SpecError(f"{where}unknown key {unknown[0]!r} (known: {', '.join(keys)})")


def _step(raw: Any, seed: int | None) -> Step:
    """One entry of ``faults``, checked against the registry (the lab comes later)."""
    if not isinstance(raw, Mapping):
        raise SpecError("expected a mapping with at least `kind` and `guest`")
    _known(raw, STEP_KEYS, "")
    if "kind" not in raw:
        raise SpecError("missing `kind` (see `vmroc inject list`)")
    resolve_params(get_kind(raw["kind"]), raw.get("params") or {})  # unknown kind, bad value
    guests = raw.get("guests", raw.get("guest", ()))
    if isinstance(guests, str):
        guests = [g for g in guests.split(",") if g]
    addr = raw.get("addr")
    target = Target(guests=tuple(guests or ()), device=raw.get("device"),
                    addr=tuple(addr) if isinstance(addr, (list, tuple)) else addr)
    spec = FaultSpec(raw["kind"], target, raw.get("params") or {},
                     duration=raw.get("duration", 10), seed=seed)
    return Step(parse_duration(raw.get("at", 0)), spec)


# -- running ----------------------------------------------------------------------------------
@dataclass
class StepRun:
    """What happened to one step."""

    step: Step
    fault: AppliedFault
    state: str = "pending"  # pending -> running -> done | failed | skipped
    started_s: float | None = None  # seconds after the campaign start
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        f = self.fault
        out = {"at": self.step.at, "kind": self.step.spec.kind,
               "guests": list(self.step.spec.guests), "fault_id": f.id, "state": self.state,
               "started_s": None if self.started_s is None else round(self.started_s, 2)}
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

    @property
    def effective(self) -> int:
        return sum(bool(r.fault.effective) for r in self.runs if r.state == "done")

    def to_dict(self) -> dict[str, Any]:
        return {"campaign_id": self.id, "name": self.campaign.name, "lab": self.lab,
                "source": self.campaign.source, "started": self.started, "ended": self.ended,
                "interrupted": self.interrupted, "baseline": self.campaign.baseline,
                "cooldown": self.campaign.cooldown, "faults": len(self.runs),
                "effective": self.effective,
                "recovered": sum(bool(r.fault.recovered) for r in self.runs),
                "steps": [r.to_dict() for r in self.runs]}

    def save(self) -> Path:
        path = subdir("campaigns") / f"{self.id}.json"
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        return path


def run_campaign(campaign: Campaign, lab: Lab, ledger: Ledger | None = None, *,
                 progress: Progress | None = None,
                 stop: threading.Event | None = None) -> CampaignResult:
    """Run every step at its time; always reverts. Validates all steps before the first."""
    say = progress or (lambda msg: None)
    ledger = ledger if ledger is not None else Ledger()
    stop = stop or threading.Event()
    cid = f"{campaign.name}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"
    runs = [StepRun(s, f) for s, f in zip(campaign.steps,
                                          campaign.prepare(lab, ledger, say, cid))]
    result = CampaignResult(cid, campaign, lab.name, runs)
    n = len(runs)
    say(f"{cid}: {n} fault(s) on lab {lab.name}, ~{campaign.planned_s:.0f}s "
        f"planned (baseline {campaign.baseline:g}s)")
    t0 = time.monotonic()
    with raising_signals():
        try:
            if stop.wait(campaign.baseline):
                raise Interrupted("stopped")
            for i, run in enumerate(runs, 1):
                delay = t0 + campaign.baseline + run.step.at - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    raise Interrupted("stopped")
                run.started_s = time.monotonic() - t0
                say(f"{cid}: [{i}/{n}] +{run.started_s:.1f}s {run.step.spec.kind} "
                    f"on {','.join(run.step.spec.guests)}")
                run.state = "running"
                threading.Thread(target=_hold, args=(run, stop), name=f"fault-{run.fault.id}",
                                 daemon=True).start()
            _join(runs)
            if stop.wait(campaign.cooldown):
                raise Interrupted("stopped")
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM/SIGHUP (Interrupted) or stop
            result.interrupted = True
            stop.set()
            say(f"{cid}: interrupted; reverting active faults")
            _join(runs, patient=say)
    for run in runs:
        if run.state == "pending":
            run.state = "skipped"
    result.ended = time.time()
    say(f"{cid}: {result.effective}/{n} effective, "
        f"{sum(bool(r.fault.recovered) for r in runs)}/{n} recovered"
        + (" (interrupted)" if result.interrupted else ""))
    return result


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
