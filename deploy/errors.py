"""Errors of the deploy stage (lab guests, images, broker).

Tree::

    VmrocError
     +-- LabError          the lab as a whole: namespace, memory, state
     |    +-- ImageError   building or finding a guest image
     |    +-- GuestError   one guest: unknown name, dead, QMP failure
     +-- BrokerError       the embedded Kafka broker (in ``deploy.broker``)
"""

from vmroc.errors import VmrocError


class LabError(VmrocError):
    """Something about the lab failed; the message says what to do."""


class ImageError(LabError):
    """A guest image could not be built or found."""


class GuestError(LabError):
    """One guest is unknown, dead, or did not answer."""

    def __init__(self, message: str, guest: str | None = None):
        super().__init__(message)
        self.guest = guest
