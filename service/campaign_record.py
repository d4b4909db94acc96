"""Run a campaign and record it in one step.

    result, info = run_recorded(Campaign.load("deploy/campaigns/smoke.yaml"),
                                "smoke.jsonl.xz", lab_name="default", progress=print)
    result.effective, info["recording"]["written"]

What the run needs is started when it is not running already: the embedded broker
(``vmroc.bus.bootstrap``), the lab, and a sampler of every guest at ``rate`` Hz
publishing to ``vmroc.samples``. A recorder reads ``vmroc.samples`` and ``vmroc.faults``
from the moment before the first sample and writes them to ``out`` (compressed when the
name ends in ``.xz`` or ``.gz``), so ``vmroc replay`` and ``vmroc eval`` read the
samples and the fault ledger of this run alone. Ctrl-C (or SIGTERM) reverts every
active fault first (``run_campaign``), then stops the sampler and closes the recording,
which stays readable.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from vmroc.bus import FAULTS, SAMPLES, Producer, bootstrap, ensure_topics
from vmroc.deploy import Lab
from vmroc.deploy.broker import embedded
from vmroc.errors import VmrocError
from vmroc.inject.campaign import Campaign, CampaignResult, run_campaign
from vmroc.inject.ledger import Ledger
from vmroc.introspect.stream import stream

from .recording import record

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class _Worker(threading.Thread):
    """A thread whose exception is kept for the caller (not lost in a log)."""

    def __init__(self, name: str, target: Callable[[], Any]):
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error, self.result = target, None, None

    def run(self) -> None:
        try:
            self.result = self._target_fn()
        except Exception as exc:  # noqa: BLE001 - re-raised or reported by the caller
            self.error = exc
            log.error("%s stopped: %s", self.name, exc)


def run_recorded(campaign: Campaign, out: str | Path, *, lab_name: str | None = None,
                 guests: int = 3, rate: float = 10.0, ledger: Ledger | None = None,
                 progress: Progress | None = None, stop: threading.Event | None = None,
                 settle_s: float = 3.0) -> tuple[CampaignResult, dict[str, Any]]:
    """Run ``campaign`` on a lab while sampling and recording; returns the campaign
    result and the recording's counts (and the sampler's)."""
    say = progress or (lambda msg: log.info("%s", msg))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    servers = bootstrap(start_broker=embedded)
    ensure_topics(servers)
    name = lab_name or campaign.lab or "default"
    lab = Lab(name)
    if not lab.is_up or not all(g.alive() for g in lab.guests):
        say(f"starting lab {name} ({guests} guests)")
        lab = Lab.up(guests=guests, name=name, progress=say,
                     workload=campaign.workload or "web")
    meta = {"campaign": campaign.name, "campaign_source": campaign.source,
            "seed": campaign.seed, "lab": name, "workload": lab.workload,
            "guests": [g.name for g in lab.guests],
            "rate_hz": rate, "commit": _commit(), "started": time.time()}
    ready, rec_stop, sample_stop = threading.Event(), threading.Event(), threading.Event()
    recorder = _Worker("recorder", lambda: record(
        out, [SAMPLES, FAULTS], servers, from_beginning=False, stop=rec_stop,
        depends=lab.dependencies(), meta=meta, ready=ready, drain_s=2.0))
    recorder.start()
    while not ready.wait(0.2):
        if not recorder.is_alive():
            raise VmrocError(f"cannot record to {out}: {recorder.error}")
    producer = Producer(servers)
    sampler = _Worker("sampler", lambda: stream(lab.guests, producer.send, rate=rate,
                                                stop=sample_stop))
    sampler.start()
    say(f"sampling {', '.join(g.name for g in lab.guests)} at {rate:g} Hz; recording to {out}")
    own_ledger = ledger is None
    ledger = ledger if ledger is not None else Ledger(servers=servers)
    try:
        result = run_campaign(campaign, lab, ledger, progress=say, stop=stop)
        if not result.interrupted:
            stop.wait(settle_s)  # the last recovery in the samples too
    finally:
        with _patient_signals(say):
            sample_stop.set()
            sampler.join()
            producer.close()
            if own_ledger:
                ledger.close()
            rec_stop.set()
            recorder.join()
    if recorder.error is not None:
        raise VmrocError(f"recording to {out} failed: {recorder.error}")
    counts = recorder.result or {}
    stats = sampler.result.to_json() if sampler.result is not None else {}
    say(f"recorded {counts.get('written', 0)} events to {out} "
        f"({out.stat().st_size / 1e6:.1f} MB)")
    return result, {"recording": {"path": str(out), "bytes": out.stat().st_size, **counts},
                    "sampler": stats}


class _patient_signals:
    """While shutting down, Ctrl-C only says what is happening: the recording closes."""

    def __init__(self, say: Progress):
        self.say, self.saved = say, {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(
                sig, lambda *_: self.say("closing the recording; it will stay readable"))

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _commit() -> str | None:
    """The git commit of this checkout, for the recording's header."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, cwd=Path(__file__).parent,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
