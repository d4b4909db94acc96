"""Anomaly detectors (scikit-learn estimator contract) that turn samples into anomalies.

Entry points::

    from vmroc.detect import Detector
    det = Detector(model="robust", baseline_s=20)     # per-guest baselines
    anomalies = det.update(sample)                    # list of vmroc.events.Anomaly
    anomalies = det.update_batch(samples)             # the same, many samples at once

    run_detector(servers, stop=event)                 # vmroc.samples -> vmroc.anomalies

Models (``detect.models``, by name in ``MODEL_NAMES``): ``RobustZScore`` (default; names
the features that moved), ``forest()`` (IsolationForest) and ``lof()``
(LocalOutlierFactor); each guest's threshold is calibrated from its baseline
(``detect.calibrate``). Features (``detect.featurize``): counter rates over a short
window and gauge levels. Root error: ``DetectError``.
"""

import importlib
import logging

from .errors import BaselineError, DetectError

logging.getLogger(__name__).addHandler(logging.NullHandler())

# The names of detect.models.MODELS, for command lines that must not import scikit-learn.
MODEL_NAMES = ("robust", "forest", "lof")
DEFAULT_MODEL = "robust"  # what every command and worker uses unless told

# scikit-learn takes ~0.5 s to import: load the models on first use, so `vmroc --help`
# and the other commands stay quick.
_LAZY = {"Detector": "detector", "GuestDetector": "detector", "run_detector": "worker",
         "RobustZScore": "models", "forest": "models", "lof": "models", "MODELS": "models",
         "Featurizer": "featurize", "FEATURES": "featurize"}

__all__ = ["Detector", "run_detector", "GuestDetector", "RobustZScore", "forest", "lof",
           "MODELS", "MODEL_NAMES", "DEFAULT_MODEL", "Featurizer", "FEATURES", "DetectError",
           "BaselineError"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
