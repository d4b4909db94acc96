"""Errors of the detectors.

    DetectError                 root: the message says what to do
    └── BaselineError           not enough normal samples to learn from
"""

from __future__ import annotations

from vmroc.errors import VmrocError


class DetectError(VmrocError):
    """Root error of ``detect``."""


class BaselineError(DetectError):
    """A detector was asked to learn "normal" from too few samples."""
