"""A recording replayed offline: its samples in time order through the detector, the
anomalies through correlation and a ranker, with the recorded ledger beside them.

    run = run_recording("run.jsonl.xz", ranker="heuristic")
    run.faults, run.anomalies, run.incidents, run.series

This runs the code of the live workers (``detect.Detector``, ``rca.Correlator``), so a
replay gives what the lab would have given; ``vmroc replay``, ``vmroc eval`` and
``vmroc rca train`` all start here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmroc.events import Anomaly, FaultEvent, Incident, Sample, unchecked_sample
from vmroc.recordings import read_recording

__all__ = ["Run", "run_recording"]

log = logging.getLogger(__name__)
BATCH = 2000  # samples the detector takes at once (in time order; any size, same result)


@dataclass
class Run:
    """One recording replayed offline."""

    path: str
    header: dict[str, Any]
    depends: dict[str, list[str]]
    faults: list[FaultEvent]
    anomalies: list[Anomaly]
    incidents: list[Incident]
    series: Any = None                       # rca.baselines.FeatureSeries, if kept
    guests: list[str] = field(default_factory=list)
    span: tuple[float, float] | None = None  # first and last sample time
    samples: int = 0
    skipped: int = 0                         # lines that did not parse
    truncated: int | None = None             # a compressed stream cut after this line
    ranking_ms: list[float] = field(default_factory=list)  # the ranker's time per incident

    @property
    def hours(self) -> float:
        return (self.span[1] - self.span[0]) / 3600 if self.span else 0.0


def run_recording(path: str | Path, ranker: str = "heuristic", depends: dict | None = None,
                  *, series: bool = True, rca_model: str | None = None,
                  **detector_options: Any) -> Run:
    """Detection and RCA on a recording's samples, with its ledger; ``series`` keeps
    every guest's feature vectors for rankers that read them (the baselines)."""
    from vmroc.detect import Detector
    from vmroc.detect.featurize import EVENTS, LEVELS, RATES

    from .baselines import FeatureSeries
    from .incidents import Correlator
    from .rankers import make_ranker

    stats: dict[str, int] = {}
    header, events = read_recording(path, stats, tasks=False)  # task lists: not read
    keep = RATES + EVENTS + LEVELS  # what the featurizer reads; the rest is not kept
    samples, faults = [], []
    for _, ev in events:
        if isinstance(ev, Sample):
            samples.append(_slim(ev, keep))
        elif isinstance(ev, FaultEvent):
            faults.append(ev)
    samples.sort(key=lambda s: s.ts)
    detector = Detector(**detector_options)
    fs = FeatureSeries() if series else None
    anomalies = []
    for i in range(0, len(samples), BATCH):  # as update() per sample, in numpy's time
        anomalies += detector.update_batch(samples[i:i + BATCH])
        if fs is not None:
            fs.add_batch(samples[i:i + BATCH])
    depends = depends or header.get("depends") or {}
    corr = Correlator(make_ranker(ranker, depends=depends, series=fs, model=rca_model))
    incidents = [i for a in anomalies for i in corr.add(a)] + corr.flush()
    log.info("%s: %d samples, %d faults, %d anomalies, %d incidents", path, len(samples),
             len(faults), len(anomalies), len(incidents))
    return Run(path=str(path), header=header, depends=depends, faults=faults,
               anomalies=anomalies, incidents=incidents, series=fs,
               guests=sorted({s.guest for s in samples}),
               span=(samples[0].ts, samples[-1].ts) if samples else None,
               samples=len(samples), skipped=stats["skipped"],
               truncated=stats.get("truncated"), ranking_ms=list(corr.ranking_ms))


def _slim(sample: Sample, keep: tuple[str, ...]) -> Sample:
    """The sample with only the features detection reads (an hour of samples with all
    their features, task lists and log lines would not fit a small machine)."""
    from vmroc.introspect.logparts import part_of
    f = sample.features
    return unchecked_sample(guest=sample.guest, ts=sample.ts,
                            features={k: f[k] for k in keep if k in f},
                            backend=sample.backend, consistent=sample.consistent,
                            seq=sample.seq, flags=[], tasks=None,
                            log=[line for line in sample.log or () if part_of(line)])
