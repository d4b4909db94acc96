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


def network_explains(anomalies: Iterable, guests: Iterable[str],
                     depends: Mapping[str, Iterable[str]] | None) -> dict[str, list[float]]:
    """Per guest, how well a broken link of its own explains which guests' networks were
    anomalous: a guest's link carries its traffic with the guests it calls or is called
    by, so its fault shows on them and on it, and nowhere else. The Jaccard similarity
    of the guests with a network anomaly and the guest with its peers, whether those
    cover every such guest, and whether no other guest explains them better."""
    anomalies, guests = list(anomalies), list(guests)
    hit = {a.guest for a in anomalies if any(map(is_network_counter, a.features))}
    peers = neighbours(depends)
    near = {g: {g} | peers[g] for g in guests}
    jac = {g: len(hit & near[g]) / len(hit | near[g]) if hit else 0.0 for g in guests}
    best = max(jac.values(), default=0.0)
    return {g: [jac[g], float(bool(hit) and hit <= near[g]), float(bool(hit) and jac[g] == best)]
            for g in guests}


def explaining_link(anomalies: Iterable, guests: Iterable[str],
                    depends: Mapping[str, Iterable[str]] | None) -> str | None:
    """The guest whose broken link would explain the incident's network anomalies better
    than any other guest's (``network_explains``: the highest Jaccard similarity, alone,
    and covering every guest with a network anomaly); None if no guest stands out (no
    network anomaly, a tie, as in a lab where every guest calls every other)."""
    said = network_explains(anomalies, guests, depends)
    jaccard = {g: v[0] for g, v in said.items()}
    best = max(jaccard, key=jaccard.get, default=None)
    if best is None or not said[best][1] or list(jaccard.values()).count(jaccard[best]) > 1:
        return None
    return best


def component(guest: str, part: str) -> str:
    return f"{guest}/{part}"
