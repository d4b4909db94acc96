"""Rank the causes of a group of anomalies: which component of which guest broke first.

    ranker = CausalRanker(depends={"g2": ["g1"], "g3": ["g1"]})   # g2, g3 call g1
    causes = ranker.fit(history).rank(anomalies)                   # best first

The evidence is the anomalies' deviations (how far each feature is from normal, on a
log scale so one extreme feature does not outvote several), summed per component
(``rca.components``: a guest's cpu, memory, disk, network, or the guest as a whole).
Three causal rules order them:

- *precedence*: a cause precedes its effects, so evidence that appears later than the
  incident's first anomaly counts less (half for every ``half_life_s`` of delay);
- *propagation*: a guest that depends on another (a client on its server), or that
  another depends on, and whose anomaly started after that guest's, is more likely
  showing an effect: its evidence is damped towards ``propagation``, fully once the
  lag reaches ``lag_s`` (onsets a fraction of a second apart say little);
- *common cause*: a broken network disturbs every conversation of its guest, so
  network evidence counts in proportion to the share of the guest's neighbours that
  are anomalous too (at least a quarter): a server whose other clients are fine is
  less likely where the packets were lost than a client whose one peer suffers.

``fit(history)`` learns how often each component is anomalous in ordinary times, so
a component that is noisy anyway needs more evidence (its score is divided by
``1 + its share of the history``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from vmroc.events import Anomaly, Cause

from .components import component, feature_part, neighbours
from .errors import RCAError

__all__ = ["CausalRanker"]

CLOCK = "jiffies/s"  # the guest's own clock rate
# Kernel lines naming a part (introspect.logparts) are the kernel saying what failed,
# not a side effect measured statistically: their evidence counts this many times.
EXPLICIT = {f"log_{part}/s": 5.0 for part in ("cpu", "memory", "disk", "network")}


class CausalRanker:
    """Temporal precedence on the guests' dependency graph, over anomaly evidence."""

    def __init__(self, depends: Mapping[str, Iterable[str]] | None = None,
                 half_life_s: float = 5.0, propagation: float = 0.3, lag_s: float = 1.0):
        self.depends = depends
        self.half_life_s = half_life_s
        self.propagation = propagation
        self.lag_s = lag_s

    def fit(self, history: Iterable[Anomaly] = ()) -> "CausalRanker":
        """Learn the dependency edges (both ways) and each component's usual noise."""
        if not 0 < self.propagation <= 1 or self.half_life_s <= 0 or self.lag_s <= 0:
            raise RCAError("propagation must be in (0, 1], half_life_s and lag_s > 0")
        self.neighbours_ = neighbours(self.depends)
        counts = Counter(c for a in history for c in self._evidence(a))
        total = sum(counts.values())
        self.noise_ = {c: n / total for c, n in counts.items()} if total else {}
        return self

    def rank(self, anomalies: list[Anomaly]) -> list[Cause]:
        """Causes of the incident made of ``anomalies``, most likely first."""
        if not hasattr(self, "neighbours_"):
            raise RCAError("CausalRanker.rank before fit(); call fit(history) first")
        if not anomalies:
            return []
        onset = {}
        for a in anomalies:
            t = a.onset if a.onset is not None else a.ts
            onset[a.guest] = min(onset.get(a.guest, t), t)
        first = min(onset.values())
        scores: dict[str, float] = defaultdict(float)
        features: dict[str, dict[str, float]] = defaultdict(dict)
        for a in anomalies:
            t = a.onset if a.onset is not None else a.ts
            weight = 0.5 ** ((t - first) / self.half_life_s)
            earlier = [onset[n] for n in self.neighbours_[a.guest] if n in onset]
            lag = onset[a.guest] - min(earlier, default=onset[a.guest])
            if lag > 0:  # a neighbour broke earlier: likely an effect
                weight *= 1 - (1 - self.propagation) * min(1.0, lag / self.lag_s)
            for comp, (value, names) in self._evidence(a).items():
                scores[comp] += weight * value
                for name, dev in names.items():
                    features[comp][name] = max(features[comp].get(name, 0.0), dev)
        for comp in scores:
            scores[comp] /= 1.0 + self.noise_.get(comp, 0.0)
            guest, part = comp.split("/", 1)
            peers = self.neighbours_[guest]
            if part == "network" and peers:
                scores[comp] *= max(len(peers & onset.keys()) / len(peers), 0.25)
        total = sum(scores.values()) or 1.0
        ranked = sorted(scores, key=lambda c: -scores[c])
        return [Cause(component=c, score=round(scores[c] / total, 4),
                      evidence={"onset": onset[c.split("/")[0]],
                                "features": dict(sorted(features[c].items(),
                                                        key=lambda kv: -kv[1])[:5])})
                for c in ranked]

    @staticmethod
    def _evidence(a: Anomaly) -> dict[str, tuple[float, dict[str, float]]]:
        """Component -> (summed deviation, {feature: deviation}) of one anomaly.

        When the guest's clock is off (``jiffies/s``), every other rate is too: they
        are counted in guest time, so the evidence is the whole guest's, not its CPU's."""
        devs = a.deviations or {name: 1.0 for name in a.features}
        clock_off = CLOCK in devs
        out: dict[str, tuple[float, dict[str, float]]] = {}
        for name, dev in devs.items():
            part = "guest" if clock_off and name.endswith("/s") else feature_part(name)
            comp = component(a.guest, part)
            total, names = out.get(comp, (0.0, {}))
            out[comp] = (total + EXPLICIT.get(name, 1.0) * math.log1p(dev), {**names, name: dev})
        return out
