"""``Sampler(guest)``: one look at a guest's kernel state, as a ``Sample`` event.

Feature groups (``features.GROUPS``) are read one by one; a group that catches a
list mid-update is retried, and after ``RETRIES`` it is left out and the sample is
flagged ``consistent: false`` (never filled with garbage). ``pause=True`` stops the
guest over QMP around the read for an exact snapshot.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import select
import time
import weakref
from pathlib import Path
from typing import Any

from vmroc.events import Sample, unchecked_sample

from .backends import BACKENDS, default_backend, open_kernel
from .errors import IntrospectError
from .features import GROUPS, Inconsistent, read_tasks
from .layers import AddressError
from .printk import KernelLog
from .symbols import SymbolFiles, SymbolTable, build_isf

log = logging.getLogger(__name__)

RETRIES = 3
STALE_SAMPLES = 20  # task walks failing in a row before the kernel counts as changed
GUEST_MODULES = ("virtio_net", "virtio_blk")  # driver state the features read
DEFAULT_HZ = 250


class GuestDownError(IntrospectError):
    """The guest's QEMU is gone; its RAM file is a frozen picture, not live state."""


class KernelChangedError(IntrospectError):
    """The task list has been unreadable for a while: the guest runs another kernel
    than the one this sampler found (it rebooted, or was relaunched on the same RAM
    file). Open a new sampler."""


def symbols_for(guest: Any, progress=None) -> SymbolFiles:
    """The symbol files of a lab guest's kernel (built once, then cached)."""
    kernel = Path(guest.config["kernel"])
    modules = [kernel.parent / "modules" / f"{m}.ko" for m in GUEST_MODULES]
    return build_isf(kernel, [m for m in modules if m.exists()], progress=progress)


@functools.lru_cache(maxsize=8)
def _table(isf: str, mtime_ns: int) -> SymbolTable:
    """One loaded symbol table per ISF file (0.2 s to load): samplers of guests running
    the same kernel, and a stream re-opening a guest that came back, share it."""
    return SymbolTable.load(Path(isf))


def kernel_hz(guest: Any) -> int:
    """CONFIG_HZ of a lab guest's kernel, from the config kept next to it."""
    try:
        config = (Path(guest.config["kernel"]).parent / "config").read_text()
    except (OSError, AttributeError, KeyError):
        return DEFAULT_HZ
    m = re.search(r"^CONFIG_HZ=(\d+)$", config, re.M)
    return int(m[1]) if m else DEFAULT_HZ


class Sampler:
    """Samples one guest. ``guest`` is a lab ``Guest`` (or anything with ``name``,
    ``ram_path``, ``config``, and optionally ``alive()`` and ``qmp()``)."""

    def __init__(self, guest: Any, backend: str | None = None, symbols: SymbolFiles | None = None,
                 pause: bool = False, tasks: bool = True, kernel_log: bool = True,
                 hz: int | None = None):
        backend = backend or default_backend()
        if backend not in BACKENDS:
            raise IntrospectError(f"unknown sampler backend {backend!r}; use one of "
                                  f"{', '.join(BACKENDS)}")
        self.guest = guest
        self.name = guest.name
        self.backend = backend
        self.pause = pause
        self.with_tasks = tasks
        self.log = log.getChild(self.name)
        self._exited = None  # poll of a pidfd on the guest's QEMU: readable once it exits
        self._check_alive()
        self._watch_process()
        self.files = symbols or symbols_for(guest)
        self.table = _table(str(self.files.isf), self.files.isf.stat().st_mtime_ns)
        self.hz = hz or kernel_hz(guest)
        self.seq = 0
        self.unreadable = 0  # samples in a row whose task walk failed
        if backend == "volatility":
            from .volatility import VolatilityReader
            self.vol = VolatilityReader(Path(guest.ram_path), self.files, self.name)
            self.kernel = None
            self.klog = None
            self.groups: dict = {}
            return
        self.kernel = open_kernel(backend, Path(guest.ram_path), self.files, self.table, self.name)
        make_log = getattr(self.kernel, "kernel_log", KernelLog)  # accel: read in C
        self.klog = make_log(self.kernel) if kernel_log and self.table.has_symbol("prb") else None
        self.groups = {}
        for name, fn in GROUPS.items():
            missing = [s for s in fn.REQUIRES if not self.table.has_symbol(s)]
            if missing:
                self.log.warning("%s: feature group %s skipped: kernel has no %s",
                                 self.name, name, ", ".join(missing))
                continue
            # readers taking ``hz`` get the guest's tick rate (decided once, not per sample)
            kwargs = {"hz": self.hz} if "hz" in inspect.signature(fn).parameters else {}
            self.groups[name] = (fn, kwargs)
        self.schedule = self._schedule()

    def _schedule(self) -> list[tuple]:
        """The groups in order, as steps: ("py", name, fn, kwargs) runs a reader; with the
        C accelerator, ("c", ((name, plan), ...)) reads a run of groups that have a plan
        (``AccelKernel.plan``: the same features as their readers; all of them) in one
        call."""
        steps: list[tuple] = []
        plan_of = getattr(self.kernel, "plan", None)
        for name, (fn, kwargs) in self.groups.items():
            plan = None
            if plan_of is not None:
                try:
                    plan = plan_of(name, self.hz)
                except (KeyError, AddressError, IntrospectError) as exc:
                    self.log.debug("%s: group %s read in Python (%s)", self.name, name, exc)
            if plan is None:
                steps.append(("py", name, fn, kwargs))
            elif steps and steps[-1][0] == "c":
                steps[-1][1].append((name, plan))
            else:
                steps.append(("c", [(name, plan)]))
        return [(kind, tuple(rest[0])) if kind == "c" else (kind, *rest)
                for kind, *rest in steps]  # C keeps a plans tuple parsed while it is reused

    @property
    def _tasks_reader(self):
        """``features.read_tasks``, or the C accelerator's same walk in one call."""
        return getattr(type(self.kernel), "read_tasks", None) or read_tasks

    def _watch_process(self) -> None:
        """Open a pidfd on the guest's QEMU (Linux 5.3+), so that ``_check_alive`` costs a
        poll while that process runs instead of reading its pid file and /proc."""
        pid = getattr(self.guest, "pid", None) if hasattr(self.guest, "alive") else None
        if not isinstance(pid, int) or isinstance(pid, bool) or not hasattr(os, "pidfd_open"):
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        weakref.finalize(self, os.close, fd)
        self._exited = select.poll()
        self._exited.register(fd, select.POLLIN)

    def _check_alive(self) -> None:
        if self._exited is not None and not self._exited.poll(0):
            return  # the QEMU process seen at open still runs: the guest is alive
        alive = getattr(self.guest, "alive", None)
        if alive is not None and not alive():
            raise GuestDownError(f"guest {self.name} is dead (its QEMU is gone); "
                                 "see `vmroc lab status`")

    def _read_group(self, name: str, fn, flags: list[str], kwargs: dict | None = None,
                    retries: int = RETRIES) -> Any:
        kwargs = kwargs or {}
        for attempt in range(retries):
            try:
                return fn(self.kernel, **kwargs)
            except (Inconsistent, AddressError, OverflowError) as exc:
                # OverflowError: an address past 2**64 (a stale per-CPU offset) in the C reader
                self.kernel.flush()
                if attempt == retries - 1:
                    flags.append(f"{name}: {exc}")
                    self.log.info("%s: %s left out of sample %d: %s", self.name, name,
                                  self.seq, exc)
        return None

    def sample(self) -> Sample:
        """Read every feature group once and return the sample (not published)."""
        if self.backend == "volatility":
            return self._sample_volatility()
        ts = time.time()
        features: dict[str, float] = {}
        flags: list[str] = []
        tasks = lines = None
        self.kernel.flush()
        paused = self._pause()
        try:
            result = self._read_group("tasks", self._tasks_reader, flags)
            if result is not None:
                features.update(result[0])
                tasks = result[1] if self.with_tasks else None
                self.unreadable = 0
            else:
                self.unreadable += 1
                if self.unreadable >= STALE_SAMPLES:
                    raise KernelChangedError(
                        f"guest {self.name}: {self.unreadable} task walks in a row failed "
                        f"({flags[-1]}); its kernel changed (reboot or relaunch)")
            for step in self.schedule:
                if step[0] == "py":
                    _, name, fn, kwargs = step
                    features.update(self._read_group(name, fn, flags, kwargs) or {})
                    continue
                failed = self.kernel.space.read_plans(step[1], features)
                if failed:  # a torn read: flush, then retry as _read_group does
                    self.kernel.flush()
                    for name, plan in step[1]:
                        if name in failed:
                            features.update(self._read_group(
                                name, lambda k, p=plan: k.space.read_plan(p), flags,
                                retries=RETRIES - 1) or {})
            if self.klog is not None and hasattr(self.klog, "read_lines"):
                lines, errors = self._read_group(
                    "log", lambda k: self.klog.read_lines(), flags) or ([], 0)
                features["log_lines"] = len(lines)
                features["log_errors"] = errors
            elif self.klog is not None:
                records = self._read_group("log", lambda k: self.klog.read_new(), flags)
                lines = [str(r) for r in records or []]
                features["log_lines"] = len(lines)
                features["log_errors"] = sum(r.level <= 3 for r in records or [])
        finally:
            if paused:
                self._resume()
        self._check_alive()  # died while we read: what we read may be stale
        self.seq += 1
        # the C accelerator typed every value (ints, finite floats, str task fields) and the
        # Python readers left give ints: Sample's checks would cost more than the read
        make = unchecked_sample if self.backend == "accel" else Sample
        return make(guest=self.name, ts=ts, features=features, backend=self.backend,
                    consistent=not flags, seq=self.seq, flags=flags, tasks=tasks, log=lines)

    def _sample_volatility(self) -> Sample:
        ts = time.time()
        paused = self._pause()
        try:
            tasks = self.vol.tasks()
            lines = self.vol.new_log_lines()
        finally:
            if paused:
                self._resume()
        self._check_alive()
        self.seq += 1
        return Sample(guest=self.name, ts=ts, features={"tasks": len(tasks),
                      "log_lines": len(lines)}, backend=self.backend, consistent=True,
                      seq=self.seq, tasks=tasks, log=lines)

    def _pause(self) -> bool:
        if not self.pause:
            return False
        self._check_alive()  # a dead guest's QMP socket is gone: say so plainly
        with self.guest.qmp() as qmp:
            qmp.cmd("stop")
        return True

    def _resume(self) -> None:
        with self.guest.qmp() as qmp:
            qmp.cmd("cont")

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
