"""What a feature or a fault is about: a component of one guest.

Components are ``<guest>/<part>`` with part one of ``cpu``, ``memory``, ``disk``,
``network`` and ``guest`` (the whole machine: paused, crashed, rebooted). A detector's
feature names map to the part they measure (``introspect.catalog``); a fault's part, what a
ranked cause is scored against, is declared by its kind and carried on its ledger events
(``FaultEvent.broken_part()``).
"""

from __future__ import annotations

from vmroc.introspect import catalog

PARTS = catalog.PARTS  # declared with the features (introspect/catalog.py)


def feature_part(feature: str) -> str:
    """The part a detector or sample feature measures, as ``introspect.catalog``
    declares it (``other`` if it declares none, or does not know the name)."""
    declared = catalog.lookup(feature)
    return declared.part if declared is not None and declared.part else "other"


def component(guest: str, part: str) -> str:
    return f"{guest}/{part}"
