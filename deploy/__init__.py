"""Bring up what vmroc runs on: guest images, the QEMU lab, the Kafka broker.

Entry point: ``Lab.up(n)`` boots ``n`` guests and returns the ``Lab``; ``lab.guests``
are ``Guest`` objects with ``qmp()``, ``ram_path`` and ``status_lines()``.
Root error: ``LabError`` (``ImageError`` and ``GuestError`` below it).
"""

from .errors import GuestError, ImageError, LabError
from .image import GuestImage, build_image
from .lab import Guest, Lab
from .status import StatusLine

__all__ = ["Lab", "Guest", "LabError", "GuestError", "ImageError", "build_image",
           "GuestImage", "StatusLine"]
