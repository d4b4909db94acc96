"""Train the supervised ranker on recordings: ``vmroc rca train RECORDING... -o MODEL``.

    model = train(["data/recordings/mixed-s1.jsonl.xz"], "fingerprint.joblib")

Each recording is replayed (``rca.replay``: the live detector and correlation), its
incidents are labeled from its own ledger (``fingerprint.incident_examples``) and the
``Fingerprint`` classifiers are fitted on all of them. The model file carries the vmroc
version, the feature names and the recordings it learned from. Training is
reproducible: the same recordings and seed give the same model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from .fingerprint import Example, Fingerprint, incident_examples

__all__ = ["train", "default_model_path"]

log = logging.getLogger(__name__)


def default_model_path() -> Path:
    """The model shipped with vmroc (trained on the recordings its metadata names)."""
    return Path(str(resources.files("vmroc.rca") / "models" / "fingerprint.joblib"))


def train(paths: list[str | Path], out: str | Path | None = None, *, seed: int = 0,
          progress: Callable[[str], None] | None = None, **detector_options) -> Fingerprint:
    """Fit a ``Fingerprint`` on the labeled incidents of ``paths``; save it to ``out``."""
    from importlib.metadata import PackageNotFoundError, version

    from vmroc.detect.featurize import FEATURES

    from .replay import run_recording
    say = progress or (lambda msg: log.info("%s", msg))
    examples: list[Example] = []
    workloads = set()
    for path in paths:
        run = run_recording(path, "heuristic", **detector_options)
        workloads.add(run.header.get("workload", "web"))  # recorded before v0.3: web
        found = incident_examples(run)
        say(f"{path}: {len(found)} labeled incidents ({len(run.faults)} ledger events, "
            f"{len(run.incidents)} incidents)")
        examples += found
    try:
        vmroc_version = version("vmroc")
    except PackageNotFoundError:
        vmroc_version = None
    model = Fingerprint(seed=seed).fit(examples, meta={
        "vmroc": vmroc_version, "features": list(FEATURES),
        "recordings": [Path(p).name for p in paths], "workloads": sorted(workloads),
        "seed": seed})
    if out is not None:
        model.save(out)
        say(f"model written to {out} ({len(examples)} incidents, parts {model.meta_['parts']})")
    return model
