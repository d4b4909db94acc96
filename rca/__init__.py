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

import logging

from .components import PARTS, component, fault_part, feature_part
from .errors import RCAError
from .incidents import Correlator
from .ranker import CausalRanker
from .rankers import BASELINES, RANKERS, make_ranker
from .scorecard import format_faults, scorecard
from .table import TABLE_RANKERS, rank_table
from .worker import run_rca

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["CausalRanker", "Correlator", "scorecard", "format_faults", "run_rca",
           "RCAError", "make_ranker", "RANKERS", "BASELINES", "component", "fault_part",
           "feature_part", "PARTS", "rank_table", "TABLE_RANKERS"]
