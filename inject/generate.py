"""Seeded campaign files: ``vmroc campaign generate``.

    gen = generate(60, seed=1, kinds="all", out="mixed.yaml")
    Path("mixed.yaml").write_text(gen.text)      # same arguments -> the same bytes
    gen.campaign.planned_s                        # validated like any campaign file

The file is a plain campaign (``Campaign.load`` reads it; nothing here is needed to run
it). Every choice comes from ``random.Random(seed)`` over sorted lists, and the file has
no timestamp, so the same arguments write the same bytes.

What it draws:

- kinds: from ``--kinds`` (``all``: every registered kind); each at least once when
  there are at least as many faults as kinds;
- targets among ``g1..gN`` (lab convention: g1 serves HTTP, the others are its
  clients); ``bridge-down`` has none (the whole lab), ``net-partition`` cuts one guest
  off;
- parameters in ranges that produce the kind's verified effect (``PROFILES``; a kind
  without a profile gets its defaults and is only used as a plain fault);
- durations 8-15 s, and a gap after each entry's window (``gap``; doubled after a
  destructive kind) so the lab is back to normal before the next one;
- composed entries: ``groups``, ``cascades`` and ``flip_flops`` are the shares of the
  faults in each (a group or cascade of k faults counts k; a flip-flop counts one).
  Groups put several kinds on one guest (distinct mechanisms, none that stops the
  guest) or one kind on several guests; cascade steps are on distinct guests; only
  kinds marked composable take part, so no plan conflicts (same mechanism on a guest,
  two lab-wide faults) can arise.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .campaign import Campaign, hms, load_yaml
from .errors import SpecError
from .registry import all_kinds, get_kind
from .spec import parse_duration

__all__ = ["generate", "Generated", "Profile", "PROFILES", "summary"]

DURATION = (8, 15)       # seconds a fault is held
FLIP_ON = (5, 8)         # a flip-flop's on and off times
FLIP_TIMES = (2, 4)
AFTER = (3, 6)           # a cascade step's `after`
ATTEMPTS = 50            # draws before giving up on covering every kind


@dataclass(frozen=True)
class Profile:
    """How the generator uses a kind: parameters that bite, and where it may go."""

    params: Callable[[random.Random], dict[str, Any]]
    compose: bool = True   # may be part of a group or a cascade
    flip: bool = False     # may flip-flop (held, reverted and applied again)
    pauses: bool = False   # stops the guest: never grouped with another kind on its guest


def _none(rng: random.Random) -> dict[str, Any]:
    return {}


def _pick(*values: Any) -> Callable[[random.Random], Any]:
    return lambda rng: rng.choice(values)


def _params(**draws: Callable[[random.Random], Any]) -> Callable[[random.Random], dict]:
    return lambda rng: {k: draw(rng) for k, draw in sorted(draws.items())}


# Ranges around the defaults that produce each kind's effect (see `vmroc inject list`).
PROFILES: dict[str, Profile] = {
    "cpu-hog": Profile(_params(hogs=_pick(2, 3, 4))),
    "cpu-mce": Profile(_params(severity=_pick("uncorrected"))),  # corrected: logged in 5 min
    "cpu-nmi": Profile(_none),
    "cpu-stall": Profile(_none, flip=True, pauses=True),
    "cpu-throttle": Profile(_params(quota_pct=lambda r: r.randint(2, 10)), flip=True),
    "mem-bitflip": Profile(_params(mode=_pick("random"), count=_pick(1, 4, 16)),
                           compose=False),
    "mem-mce": Profile(_none),
    "mem-pressure": Profile(_none, flip=True),  # keep_mb: half the guest's RAM
    "disk-corrupt": Profile(_params(length=_pick(4096, 16384, 65536))),
    "disk-eio": Profile(_params(iotype=_pick("both", "write")), flip=True),
    "disk-hang": Profile(_params(iotype=_pick("both", "write")), flip=True),
    "disk-slow": Profile(_params(iops=lambda r: r.randint(2, 10)), flip=True),
    "net-corrupt": Profile(_params(pct=lambda r: r.randrange(30, 81, 5))),
    "net-delay": Profile(_params(delay_ms=lambda r: r.randrange(200, 801, 100)), flip=True),
    "net-drop": Profile(_params(loss=lambda r: r.randrange(30, 81, 5)), flip=True),
    "net-flood": Profile(_params(pps=lambda r: r.randrange(2000, 5001, 500),
                                 size=_pick(512, 1024, 1200))),
    "net-link-down": Profile(_none, flip=True),
    "net-slow": Profile(_params(kbytes=_pick(2, 4, 8))),
    "bridge-down": Profile(_none, compose=False),
    "guest-crash": Profile(_none, compose=False),
    "guest-reboot": Profile(_none, compose=False),
    "guest-suspend": Profile(_none, flip=True, pauses=True),
    "net-partition": Profile(_none, compose=False),
}
PLAIN_ONLY = Profile(_none, compose=False)  # a kind the generator has no profile for


@dataclass(frozen=True)
class Generated:
    """A generated campaign: the file's text and the campaign it loads as."""

    text: str
    campaign: Campaign
    command: str

    def summary(self) -> str:
        return summary(self.campaign)


def summary(campaign: Campaign) -> str:
    """``60 faults of 23 kinds: 24 plain, 7 groups, ...; planned 25m10s (...)``"""
    c = campaign.composed()
    plain = sum(s.composed is None for s in campaign.steps)
    used = {s.spec.kind for s in campaign.steps}
    return (f"{_count_faults(campaign)} faults of {len(used)} kinds: {plain} plain, "
            f"{_n(c['group'], 'group')}, {_n(c['cascade'], 'cascade')}, "
            f"{_n(c['flip-flop'], 'flip-flop')}; "
            f"planned {hms(campaign.planned_s)} ({campaign.planned_s:.0f} s, baseline "
            f"{campaign.baseline:g}s and cooldown {campaign.cooldown:g}s included)")


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _count_faults(campaign: Campaign) -> int:
    """Faults as the generator counts them: a flip-flop is one."""
    flips = {s.flip_flop for s in campaign.steps if s.flip_flop is not None}
    return sum(s.flip_flop is None for s in campaign.steps) + len(flips)


def generate(faults: int, seed: int, *, kinds: str | Iterable[str] = "all", guests: int = 3,
             groups: float = 0.25, cascades: float = 0.25, flip_flops: float = 0.1,
             gap: float | str = 15.0, baseline: float | str = 30.0,
             cooldown: float | str = 30.0, max_duration: float | str | None = None,
             name: str = "generated", out: str | None = None,
             workload: str | None = None) -> Generated:
    """A campaign of ``faults`` faults drawn with ``seed``; ``SpecError`` (one line) for
    arguments that cannot make one."""
    names = _kinds(kinds)
    gap, baseline, cooldown = (parse_duration(x) for x in (gap, baseline, cooldown))
    limit = None if max_duration is None else parse_duration(max_duration)
    if isinstance(faults, bool) or not isinstance(faults, int) or faults < 1:
        raise SpecError(f"--faults {faults}: need at least 1 fault")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"--seed {seed!r}: expected an integer")
    if isinstance(guests, bool) or not isinstance(guests, int) or guests < 2:
        raise SpecError(f"--guests {guests}: need at least 2 (g1 serves, the others are its "
                        "clients)")
    shares = {"--groups": groups, "--cascades": cascades, "--flip-flops": flip_flops}
    for opt, share in shares.items():
        if not 0 <= share <= 1:
            raise SpecError(f"{opt} {share:g}: a share of the faults, from 0 to 1")
    if sum(shares.values()) > 1:
        raise SpecError(f"--groups + --cascades + --flip-flops is {sum(shares.values()):g}; "
                        "the shares of the faults add up to at most 1")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
        raise SpecError(f"--name {name!r}: use letters, digits, '-', '_', '.'")
    rng = random.Random(seed)
    draw = _Draw(rng, names, [f"g{i}" for i in range(1, guests + 1)])
    shape = draw.shape(faults, groups, cascades, flip_flops)
    entries = None
    for _ in range(ATTEMPTS):
        entries = draw.fill(shape)
        if entries is not None:
            break
    if entries is None:
        raise SpecError(f"--faults {faults} with these shares leaves too few plain faults to "
                        f"use each of the {len(names)} kinds once (some kinds are never "
                        "composed); lower --groups/--cascades/--flip-flops or raise --faults")
    faults_yaml = _timeline(entries, gap)
    command = _command(faults, seed, kinds, guests, groups, cascades, flip_flops, gap,
                       baseline, cooldown, max_duration, name, out, workload)
    body = (f"name: {name}\n" + (f"workload: {workload}\n" if workload else "")
            + f"baseline: {baseline:g}s\ncooldown: {cooldown:g}s\n"
            f"seed: {seed}\nfaults:\n" + "".join(faults_yaml))
    campaign = Campaign.from_dict(load_yaml(body, "generated campaign"),
                                  out or "<generated>")
    if limit is not None and campaign.planned_s > limit:
        raise SpecError(f"{faults} faults plan {hms(campaign.planned_s)}, more than "
                        f"--max-duration {hms(limit)}; lower --faults or --gap")
    return Generated(f"# generated by: {command}\n# {summary(campaign)}\n{body}", campaign,
                     command)


def _kinds(kinds: str | Iterable[str]) -> list[str]:
    if isinstance(kinds, str):
        if kinds.strip() == "all":
            return sorted(k.name for k in all_kinds())
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    names = sorted(set(kinds))
    if not names:
        raise SpecError("--kinds: name at least one kind, or `all`")
    for name in names:
        try:
            get_kind(name)
        except SpecError as exc:
            raise SpecError(f"--kinds: {exc}") from exc
    return names


def _profile(kind: str) -> Profile:
    return PROFILES.get(kind, PLAIN_ONLY)


class _Draw:
    """The random choices, in a fixed order."""

    def __init__(self, rng: random.Random, kinds: list[str], guests: list[str]):
        self.rng, self.kinds, self.guests = rng, kinds, guests
        self.composable = [k for k in kinds if _profile(k).compose and not get_kind(k).lab_wide]
        self.flippable = [k for k in self.composable if _profile(k).flip]
        self.side = [k for k in self.composable if not _profile(k).pauses]  # share a guest

    def shape(self, n: int, groups: float, cascades: float, flips: float) -> list[tuple]:
        """Entry types and sizes, in timeline order: ("plain",), ("group", k), ..."""
        def sizes(total: int) -> list[int]:
            if total < 2:
                return []
            out = [2] * (total // 2)
            if total % 2:
                out[-1] = 3
            return out
        k_max = min(3, len(self.guests))
        g = sizes(round(n * groups)) if len(self.composable) >= 1 else []
        c = sizes(round(n * cascades)) if self.composable else []
        c = [min(k, k_max) for k in c]
        g = [min(k, k_max) for k in g]
        f = round(n * flips) if self.flippable else 0
        plain = n - sum(g) - sum(c) - f
        if plain < 0:  # rounding: take it from the flip-flops
            f += plain
            plain = 0
        shape = ([("group", k) for k in g] + [("cascade", k) for k in c]
                 + [("flip-flop",)] * f + [("plain",)] * plain)
        self.rng.shuffle(shape)
        return shape

    def fill(self, shape: list[tuple]) -> list[dict] | None:
        """Kinds, guests and parameters for each entry; None if a kind was left out."""
        unused = set(self.kinds) if sum(_size(s) for s in shape) >= len(self.kinds) else set()
        entries: list[dict | None] = [None] * len(shape)
        order = sorted(range(len(shape)), key=lambda i: (shape[i][0] == "plain", i))
        for i in order:  # composed entries first: plain faults take the kinds left over
            entries[i] = getattr(self, shape[i][0].replace("-", "_"))(*shape[i][1:],
                                                                       unused=unused)
        if unused:
            return None
        return entries

    def kind(self, candidates: list[str], unused: set[str]) -> str:
        fresh = [k for k in candidates if k in unused]
        kind = self.rng.choice(fresh or candidates)
        unused.discard(kind)
        return kind

    def fault(self, kind: str, guests: list[str], duration: int) -> dict:
        out: dict[str, Any] = {"kind": kind}
        if len(guests) == 1:
            out["guest"] = guests[0]
        elif guests:
            out["guests"] = guests
        out["duration"] = f"{duration}s"
        params = _profile(kind).params(self.rng)
        if params:
            out["params"] = params
        return out

    def duration(self) -> int:
        return self.rng.randint(*DURATION)

    def plain(self, unused: set[str]) -> dict:
        kind = self.kind(self.kinds, unused)
        k = get_kind(kind)
        if k.lab_wide or k.guests[0] == 0:
            guests: list[str] = []
        else:
            guests = [self.rng.choice(self.guests)]
        return {"plain": self.fault(kind, guests, self.duration())}

    def group(self, size: int, unused: set[str]) -> dict:
        duration = self.duration()
        fresh_side = [k for k in self.side if k in unused]
        mechanisms = {get_kind(k).conflict_key for k in self.side}
        if len(mechanisms) >= size and (len(fresh_side) >= 2 or self.rng.random() < 0.5):
            guest = self.rng.choice(self.guests)  # several kinds on one guest
            kinds: list[str] = []
            for _ in range(size):
                taken = {get_kind(k).conflict_key for k in kinds}
                kinds.append(self.kind([k for k in self.side
                                        if get_kind(k).conflict_key not in taken], unused))
            members = [self.fault(k, [guest], duration) for k in kinds]
        else:  # one kind on several guests
            kind = self.kind(self.composable, unused)
            targets = sorted(self.rng.sample(self.guests, size))
            members = [self.fault(kind, [g], duration) for g in targets]
        return {"group": members}

    def cascade(self, size: int, unused: set[str]) -> dict:
        targets = self.rng.sample(self.guests, size)  # distinct guests: no conflict
        steps = []
        for j, guest in enumerate(targets):
            step = self.fault(self.kind(self.composable, unused), [guest], self.duration())
            if j:
                if self.rng.random() < 0.5:
                    step["after"] = f"{self.rng.randint(*AFTER)}s"
                else:
                    step["on"] = "effect"
            steps.append(step)
        return {"cascade": steps}

    def flip_flop(self, unused: set[str]) -> dict:
        kind = self.kind(self.flippable, unused)
        on = self.rng.randint(*FLIP_ON)
        off = max(self.rng.randint(*FLIP_ON), math.ceil(get_kind(kind).window - on))
        fault = self.fault(kind, [self.rng.choice(self.guests)], on)
        del fault["duration"]
        fault.update(on=f"{on}s", off=f"{off}s", times=self.rng.randint(*FLIP_TIMES))
        return {"flip-flop": fault}


def _size(shape: tuple) -> int:
    return shape[1] if shape[0] in ("group", "cascade") else 1


def _timeline(entries: list[dict], gap: float) -> list[str]:
    """Each entry at its time (seconds after the baseline) as YAML lines."""
    t = 0.0
    lines = []
    for entry in entries:
        (what, body), = entry.items()
        at = int(math.ceil(t))
        faults = body if isinstance(body, list) else [body]
        kinds = [get_kind(f["kind"]) for f in faults]
        if what == "plain":
            lines.append(f"  - {_flow({'at': f'{at}s', **body})}\n")
            end = at + max(parse_duration(body["duration"]), kinds[0].window)
        elif what == "group":
            lines.append(f"  - group:\n      at: {at}s\n      faults:\n")
            lines += [f"        - {_flow(f)}\n" for f in body]
            end = at + max(max(parse_duration(f["duration"]), k.window)
                           for f, k in zip(body, kinds))
        elif what == "cascade":
            lines.append(f"  - cascade:\n      at: {at}s\n      steps:\n")
            lines += [f"        - {_flow(f)}\n" for f in body]
            start, end = float(at), 0.0
            for j, (f, k) in enumerate(zip(body, kinds)):
                if "after" in f:
                    start += parse_duration(f["after"])
                elif "on" in f:
                    start += kinds[j - 1].window
                end = max(end, start + max(parse_duration(f["duration"]), k.window))
        else:
            lines.append(f"  - flip-flop: {_flow({'at': f'{at}s', **body})}\n")
            on, off = parse_duration(body["on"]), parse_duration(body["off"])
            end = at + (body["times"] - 1) * (on + off) + max(on, kinds[0].window)
        settle = gap * (2 if any(k.destructive for k in kinds) else 1)
        t = end + settle
    return lines


_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NUMBER = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return _flow(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    text = str(value)
    plain = _PLAIN.match(text) and not _NUMBER.match(text) and text.lower() not in _RESERVED
    return text if plain else json.dumps(text)


def _flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in mapping.items()) + "}"


def _command(faults, seed, kinds, guests, groups, cascades, flip_flops, gap, baseline,
             cooldown, max_duration, name, out, workload=None) -> str:
    kinds_arg = kinds.strip() if isinstance(kinds, str) and kinds.strip() == "all" \
        else ",".join(_kinds(kinds))
    parts = ["vmroc campaign generate", f"--faults {faults}", f"--seed {seed}",
             f"--kinds {kinds_arg}", f"--guests {guests}", f"--groups {groups:g}",
             f"--cascades {cascades:g}", f"--flip-flops {flip_flops:g}", f"--gap {gap:g}s",
             f"--baseline {baseline:g}s", f"--cooldown {cooldown:g}s"]
    if max_duration is not None:
        parts.append(f"--max-duration {parse_duration(max_duration):g}s")
    if workload is not None:
        parts.append(f"--workload {workload}")
    parts.append(f"--name {name}")
    if out is not None:
        parts.append(f"-o {out}")
    return " ".join(parts)
