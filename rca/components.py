"""What a feature or a fault is about: a component of one guest.

Components are ``<guest>/<part>`` with part one of ``cpu``, ``memory``, ``disk``,
``network`` and ``guest`` (the whole machine: paused, crashed, rebooted). A detector's
feature names map to the part they measure (``introspect.catalog``); a fault's part, what a
ranked cause is scored against, is declared by its kind and carried on its ledger events
(``FaultEvent.broken_part()``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from vmroc.introspect import catalog

PARTS = catalog.PARTS  # declared with the features (introspect/catalog.py)


def feature_part(feature: str) -> str:
    """The part a detector or sample feature measures, as ``introspect.catalog``
    declares it (``other`` if it declares none, or does not know the name)."""
    declared = catalog.lookup(feature)
    return declared.part if declared is not None and declared.part else "other"


def is_network_counter(feature: str) -> bool:
    """Whether ``feature`` counts a guest's network traffic or errors (its kernel lines
    about the network, ``log_network/s``, are the kernel naming a failure, not traffic)."""
    return feature_part(feature) == "network" and not feature.startswith("log_")


def neighbours(depends: Mapping[str, Iterable[str]] | None) -> defaultdict[str, set[str]]:
    """Who calls whom (guest -> the guests it calls), both ways: each guest's peers."""
    peers: defaultdict[str, set[str]] = defaultdict(set)
    for caller, servers in (depends or {}).items():
        for server in servers:
            peers[caller].add(server)
            peers[server].add(caller)
    return peers


def component(guest: str, part: str) -> str:
    return f"{guest}/{part}"
