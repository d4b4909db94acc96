"""The root of every vmroc error.

Tree::

    VmrocError
     +-- bus.BusError           Kafka not reachable, a topic missing, a send not acknowledged
     +-- events.SchemaError     bytes or fields that are not a valid event
     +-- recordings.RecordingError  a recording that cannot be read
     +-- deploy.LabError        guests, images, network namespace
     |    +-- deploy.ImageError
     |    +-- deploy.GuestError  unknown / dead guest, QMP failures
     +-- deploy.broker.BrokerError  embedded Kafka broker
     +-- ...                    one root per stage (InjectError, IntrospectError, ...)

The CLI catches ``VmrocError`` only and prints ``Type: message`` on one line.
"""


class VmrocError(Exception):
    """Base of all errors vmroc raises on purpose; the message says what to do."""
