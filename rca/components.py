"""What a feature or a fault is about: a component of one guest.

Components are ``<guest>/<part>`` with part one of ``cpu``, ``memory``, ``disk``,
``network`` and ``guest`` (the whole machine: paused, crashed, rebooted). A detector's
feature names map to the part they measure; a fault kind maps to the part it breaks,
which is what a ranked cause is scored against.
"""

from __future__ import annotations

from vmroc.introspect import catalog

PARTS = catalog.PARTS  # declared with the features (introspect/catalog.py)

# fault kind -> part it breaks (cluster kinds that cut the network are network faults)
_FAULT_PARTS = {"guest-suspend": "guest", "guest-crash": "guest", "guest-reboot": "guest",
                "net-partition": "network", "bridge-down": "network"}
_LEVEL_PARTS = {"cpu": "cpu", "memory": "memory", "disk": "disk", "network": "network",
                "cluster": "guest"}


def feature_part(feature: str) -> str:
    """The part a detector or sample feature measures, as ``introspect.catalog``
    declares it (``other`` if it declares none, or does not know the name)."""
    declared = catalog.lookup(feature)
    return declared.part if declared is not None and declared.part else "other"


def fault_part(kind: str, level: str) -> str:
    """The part a fault kind breaks."""
    return _FAULT_PARTS.get(kind) or _LEVEL_PARTS.get(level, "other")


def component(guest: str, part: str) -> str:
    return f"{guest}/{part}"
