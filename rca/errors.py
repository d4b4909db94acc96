"""Errors of root-cause analysis.

    RCAError                    root: the message says what to do
"""

from __future__ import annotations

from vmroc.errors import VmrocError


class RCAError(VmrocError):
    """Root error of ``rca``."""
