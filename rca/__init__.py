"""Causal root-cause analysis: rank causes per incident, score them against the fault ledger.

Entry points::

    from vmroc.rca import CausalRanker, Correlator, scorecard
    corr = Correlator(CausalRanker(depends={"g2": ["g1"]}).fit())
    incidents = corr.add(anomaly) + corr.flush()       # vmroc.events.Incident, causes ranked
    card = scorecard(ledger_events, anomalies, incidents, samples)   # per kind: AC@k...

    make_ranker("heuristic", depends=..., series=...)  # rankers by name (RANKERS), baselines

    run_rca(servers, stop=event)                       # vmroc.anomalies -> vmroc.incidents

    rank_table("metrics.csv", anomaly_start=T)         # any metric table: [(metric, score)]

Components (``rca.components``) name what broke: ``<guest>/<cpu|memory|disk|network|guest>``.
Root error: ``RCAError``.
"""

import importlib
import logging

from .errors import RCAError

logging.getLogger(__name__).addHandler(logging.NullHandler())

# The ranker used when none is named (`vmroc eval`, `replay`, `serve`, `demo`); here, not
# in rca.rankers, so command lines name it without importing scikit-learn. `vmroc rca run`
# has no feature series: it ranks with the series-free heuristic.
DEFAULT_RANKER = "ensemble"

# scikit-learn takes ~0.5 s to import: load the rankers on first use.
_LAZY = {"PARTS": "components", "component": "components", "feature_part": "components",
         "Correlator": "incidents", "CausalRanker": "ranker", "BASELINES": "rankers",
         "RANKERS": "rankers", "make_ranker": "rankers",
         "format_faults": "scorecard", "scorecard": "scorecard", "TABLE_RANKERS": "table",
         "rank_table": "table", "run_rca": "worker"}

__all__ = ["CausalRanker", "Correlator", "scorecard", "format_faults", "run_rca", "RCAError",
           "make_ranker", "RANKERS", "BASELINES", "DEFAULT_RANKER", "component", "feature_part",
           "PARTS", "rank_table", "TABLE_RANKERS"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
