"""Several rankers, one answer: reciprocal-rank fusion weighted by each member's say.

    ranker = Ensemble({"fingerprint": fp, "heuristic": h, "baro": b},
                      weights={"fingerprint": 2.0}).fit()
    causes = ranker.rank(anomalies)     # best first; evidence names each member's rank

Each member ranks the incident; a cause scores ``sum(weight / (k + rank))`` over the
members (reciprocal-rank fusion, k = 1), so a cause two members put near the top beats
one a single member loves. The evidence says where each member ranked the cause, and
which features moved (from the first member that names them).

A cause's score is its fused score over the most it could get (every member ranking it
first): 1.0 is unanimity. Its evidence also keeps each member's own score. The
ensemble's confidence in its rank-1 cause is the score ``confidence_from`` gave it (the
fingerprint's calibrated probability), or the fused score without such a member;
``credible(causes)`` is False when that is below ``abstain_below``, and the incident
says "no credible cause" (``Incident.abstained``) instead of claiming one.

Given who calls whom (``depends``), a network cause fused to rank 1 gives way to the
network of the guest whose broken link explains the incident's network anomalies better
than any other guest's (``rca.components.explaining_link``): a broken link shows at its
ends, often most loudly at the guests that call through it, not at the guest it
belongs to. The moved cause keeps the place, score and confidence of the one it
displaced, and its evidence says why (``"link"``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from vmroc.events import Anomaly, Cause

from .components import component, explaining_link
from .errors import RCAError

__all__ = ["Ensemble"]


class Ensemble:
    """Reciprocal-rank fusion of fitted rankers (``rank(anomalies) -> [Cause]``)."""

    def __init__(self, members: Mapping[str, Any], weights: Mapping[str, float] | None = None,
                 k: float = 1.0, abstain_below: float = 0.0,
                 confidence_from: str | None = "fingerprint",
                 depends: Mapping[str, list[str]] | None = None):
        self.members = members
        self.depends = depends
        self.weights = weights
        self.k = k
        self.abstain_below = abstain_below
        self.confidence_from = confidence_from

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"members": self.members, "weights": self.weights, "k": self.k,
                "abstain_below": self.abstain_below, "confidence_from": self.confidence_from,
                "depends": self.depends}

    def confidence(self, causes: list[Cause]) -> float:
        """How sure the ensemble is of its rank-1 cause (see the module docstring)."""
        if not causes:
            return 0.0
        top = causes[0]
        scores = top.evidence.get("scores", {}) if isinstance(top.evidence, dict) else {}
        if self.confidence_from in self.members:
            return float(scores.get(self.confidence_from, 0.0))
        return float(top.score)

    def credible(self, causes: list[Cause]) -> bool:
        """Whether the ensemble stands by its rank-1 cause (confidence >= abstain_below)."""
        return bool(causes) and self.confidence(causes) >= self.abstain_below

    def fit(self, *_: Any) -> "Ensemble":
        if not self.members:
            raise RCAError("Ensemble needs at least one member ranker")
        self.weights_ = {name: float((self.weights or {}).get(name, 1.0))
                         for name in self.members}
        return self

    def rank(self, anomalies: list[Anomaly]) -> list[Cause]:
        if not hasattr(self, "weights_"):
            raise RCAError("Ensemble.rank before fit()")
        if not anomalies:
            return []
        scores: dict[str, float] = defaultdict(float)
        ranks: dict[str, dict[str, int]] = defaultdict(dict)
        own: dict[str, dict[str, float]] = defaultdict(dict)
        features: dict[str, dict[str, float]] = {}
        for name, member in self.members.items():
            for rank, cause in enumerate(member.rank(anomalies), 1):
                scores[cause.component] += self.weights_[name] / (self.k + rank)
                ranks[cause.component][name] = rank
                own[cause.component][name] = cause.score
                said = cause.evidence.get("features") if isinstance(cause.evidence, dict) \
                    else None
                if said and cause.component not in features:
                    features[cause.component] = said  # what moved, per the first who says
        if not scores:
            return []
        total = sum(self.weights_.values()) / (self.k + 1)
        ranked = sorted(scores, key=lambda c: (-scores[c], c))
        causes = [Cause(component=c, score=round(scores[c] / total, 4),
                        evidence={"ranks": ranks[c], "scores": own[c],
                                  "features": features.get(c, {})}) for c in ranked]
        return self._on_the_explaining_link(causes, anomalies)

    def _on_the_explaining_link(self, causes: list[Cause],
                                anomalies: list[Anomaly]) -> list[Cause]:
        """A network cause at rank 1 moved to the guest whose link explains the
        incident's network anomalies (see the module docstring)."""
        top = causes[0]
        guest, _, part = top.component.partition("/")
        if not self.depends or part != "network":
            return causes
        guests = {c.component.partition("/")[0] for c in causes} | {a.guest for a in anomalies}
        link = explaining_link(anomalies, sorted(guests), self.depends)
        there = component(link, "network") if link not in (None, guest) else None
        n = next((n for n, c in enumerate(causes) if c.component == there), None)
        if n is None:
            return causes
        moved = causes[n]
        evidence = dict(moved.evidence, scores=top.evidence["scores"],
                        link=f"its link explains the network anomalies better than "
                             f"{guest}'s", fused=moved.score)
        return [Cause(component=moved.component, score=top.score, evidence=evidence),
                *causes[:n], *causes[n + 1:]]
