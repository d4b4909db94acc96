"""The root of every vmroc error.

Tree::

    VmrocError
     +-- deploy.LabError        guests, images, network namespace
     |    +-- deploy.ImageError
     |    +-- deploy.GuestError  unknown / dead guest, QMP failures
     +-- deploy.BrokerError     embedded Kafka broker
     +-- ...                    one root per stage (InjectError, IntrospectError, ...)

The CLI catches ``VmrocError`` only and prints ``Type: message`` on one line.
"""


class VmrocError(Exception):
    """Base of all errors vmroc raises on purpose; the message says what to do."""
