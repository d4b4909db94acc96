"""The supervised ranker: trained on labeled incidents of one synthetic lab run, it names
the guest and the part of incidents it has not seen; the model survives a file."""

from __future__ import annotations

import pytest

from vmroc.rca.baselines import FeatureSeries
from vmroc.rca.errors import RCAError
from vmroc.rca.fingerprint import Example, Fingerprint, describe, opinions_of
from vmroc.rca.rankers import make_ranker

from .test_scorecard import GUESTS, anomaly, lab_stream

PARTS = {"pause": "guest", "eio": "disk", "memory": "memory"}


def episodes(seed: int, n: int = 9):
    """(guest, start, what) for ``n`` faults 40 s apart, every kind on rotating guests."""
    whats = list(PARTS)
    return [(GUESTS[(i + seed) % 3], 60.0 + 40 * i, whats[(i * 2 + seed) % 3]) for i in range(n)]


def run(seed: int):
    eps = episodes(seed)
    samples = lab_stream(seconds=60 + 40 * len(eps) + 30, effects=[
        (g, t, t + 12, what) for g, t, what in eps], seed=seed)
    series = FeatureSeries.from_samples(samples)
    # the detector sees the culprit first, then (sometimes) a bystander
    incidents = [[anomaly(g, t + 0.4), anomaly(GUESTS[(GUESTS.index(g) + 1) % 3], t + 2.5)]
                 for g, t, _ in eps]
    return eps, series, incidents


def examples(seed: int) -> list[Example]:
    eps, series, incidents = run(seed)
    rankers = opinions_of(series, {})
    return [Example(describe(series, anomalies, GUESTS,
                             {name: r.rank(anomalies) for name, r in rankers.items()}),
                    frozenset([f"{g}/{PARTS[what]}"]), what)
            for (g, _, what), anomalies in zip(eps, incidents)]


def test_trained_on_one_run_it_names_guest_and_part_in_another(tmp_path):
    model = Fingerprint(n_estimators=100).fit(examples(0) + examples(1))
    eps, series, incidents = run(2)
    model.using(series)
    right = 0
    for (g, _, what), anomalies in zip(eps, incidents):
        causes = model.rank(anomalies)
        assert len(causes) == 15 and causes[0].score >= causes[-1].score
        right += causes[0].component == f"{g}/{PARTS[what]}"
    assert right >= 8, f"{right}/9 rank-1 right"
    path = model.save(tmp_path / "m.joblib")
    again = make_ranker("fingerprint", model=str(path), series=series)
    assert [c.component for c in again.rank(incidents[0])] == \
        [c.component for c in model.rank(incidents[0])]
    assert again.meta_["examples"] == 18


def test_a_model_that_is_not_one_is_one_line(tmp_path):
    bad = tmp_path / "m.joblib"
    bad.write_text("hello")
    with pytest.raises(RCAError, match="cannot load the RCA model"):
        Fingerprint.load(bad)
    with pytest.raises(RCAError, match="needs labeled incidents"):
        Fingerprint().fit([])
    with pytest.raises(RCAError, match="before fit"):
        Fingerprint().rank([anomaly("g1", 1.0)])


def test_the_ensemble_fuses_its_members_ranks():
    from vmroc.events import Cause
    from vmroc.rca.ensemble import Ensemble

    class Fixed:
        def __init__(self, *order):
            self.order = order

        def rank(self, anomalies):
            return [Cause(component=c, score=1.0,
                          evidence={"features": {f"{c}-feature": 3.0}} if c == "g2/disk"
                          else None) for c in self.order]

    members = {"a": Fixed("g1/cpu", "g2/disk", "g3/memory"),
               "b": Fixed("g2/disk", "g1/cpu", "g3/memory"),
               "c": Fixed("g2/disk", "g3/memory", "g1/cpu")}
    causes = Ensemble(members).fit().rank([anomaly("g2", 1.0)])
    assert [c.component for c in causes] == ["g2/disk", "g1/cpu", "g3/memory"]
    assert causes[0].evidence["ranks"] == {"a": 2, "b": 1, "c": 1}
    # what moved, for the dashboard, comes from the members that say it
    assert causes[0].evidence["features"] == {"g2/disk-feature": 3.0}
    assert causes[1].evidence["features"] == {}
    heavy = Ensemble(members, weights={"a": 5.0}).fit().rank([anomaly("g2", 1.0)])
    assert heavy[0].component == "g1/cpu"  # a member's say counts
    with pytest.raises(RCAError, match="before fit"):
        Ensemble(members).rank([anomaly("g2", 1.0)])


def test_the_ensemble_abstains_when_its_members_disagree_and_the_scorecard_counts_it():
    from vmroc.events import Cause, FaultEvent
    from vmroc.rca.ensemble import Ensemble
    from vmroc.rca.incidents import Correlator
    from vmroc.rca.scorecard import score, summarize

    class Fixed:
        def __init__(self, *order):
            self.order = order

        def rank(self, anomalies):
            return [Cause(component=c, score=1.0) for c in self.order]

    agree = {"a": Fixed("g2/disk", "g1/cpu"), "b": Fixed("g2/disk", "g1/cpu")}
    split = {"a": Fixed("g1/cpu", "g2/disk"), "b": Fixed("g2/disk", "g1/cpu")}
    assert Ensemble(agree, abstain_below=0.9).fit().rank([anomaly("g2", 1.0)])[0].score == 1.0
    ledger = [FaultEvent(fault_id=f, kind="disk-eio", level="disk", phase=p, ts=t + dt,
                         target={"guests": ["g2"]})
              for f, t in (("f1", 100.0), ("f2", 200.0))
              for p, dt in (("injected", 0.0), ("effect-observed", 0.5), ("recovered", 9.0))]
    incidents = []
    for members, t in ((agree, 101.0), (split, 201.0)):
        corr = Correlator(Ensemble(members, abstain_below=0.9).fit())
        incidents += corr.add(anomaly("g2", t, vda_ioms__s=5)) + corr.flush()
    assert [i.abstained for i in incidents] == [False, True]
    assert incidents[1].causes, "an abstaining incident still shows its ranking"
    card = summarize(score(ledger, [], incidents, guests=["g1", "g2"], span=(90.0, 220.0)))
    assert (card["detected"], card["abstained"], card["ac1_answered"]) == (2, 1, 1.0)
    assert card["ac1"] == 0.5  # the split incident ranked g1/cpu first: a miss, as always


def test_the_forest_ranks_with_the_same_probabilities_as_scikit_learns():
    """Its trees run in a plain loop (no joblib task per tree): the same numbers."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    from vmroc.rca.fingerprint import SequentialForest
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12))
    y = (X[:, 0] + X[:, 3] * rng.normal(size=300) > 0.5).astype(int)
    params = dict(n_estimators=40, min_samples_leaf=2, class_weight="balanced",
                  random_state=7, n_jobs=1)
    mine, theirs = SequentialForest(**params).fit(X, y), RandomForestClassifier(**params).fit(X, y)
    Z = rng.normal(size=(50, 12))
    assert np.array_equal(mine.predict_proba(Z), theirs.predict_proba(Z))


def test_a_failed_save_leaves_the_model_file_as_it_was(tmp_path, monkeypatch):
    import joblib
    model = Fingerprint(n_estimators=10).fit(examples(0))
    path = model.save(tmp_path / "m.joblib")
    before = path.read_bytes()

    def broken(obj, target, **kw):
        open(target, "wb").write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(joblib, "dump", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_a_broken_link_is_the_guest_whose_peers_are_the_ones_in_trouble():
    from vmroc.rca.components import network_explains
    depends = {"g1": ["g2"], "g2": ["g1"], "g3": ["g1"]}   # the web lab: g1 in the middle
    timeouts = {"tcp_timeouts/s": 4.0}

    def best(*guests):
        anomalies = [anomaly(g, 10.0 + i, **timeouts) for i, g in enumerate(guests)]
        said = network_explains(anomalies + [anomaly("g3", 11.0)], GUESTS, depends)
        return sorted(g for g, (_, _, top) in said.items() if top)

    assert best("g2", "g3") == ["g1"]          # both clients: their server's link
    assert best("g1", "g3") == ["g3"]          # the server and one client: that client's
    assert best("g1", "g2", "g3") == ["g1"]
    said = network_explains([anomaly("g2", 10.0)], GUESTS, depends)   # no network anomaly
    assert all(v == [0.0, 0.0, 0.0] for v in said.values())


def test_a_network_cause_goes_to_the_guest_whose_link_explains_the_trouble():
    from vmroc.events import Cause
    from vmroc.rca.ensemble import Ensemble

    class Fixed:
        def __init__(self, *order):
            self.order = order

        def rank(self, anomalies):
            return [Cause(component=c, score=0.9 - 0.1 * n, evidence={"scores": {}})
                    for n, c in enumerate(self.order)]

    web = {"g1": ["g2"], "g2": ["g1"], "g3": ["g1"]}     # g1 in the middle
    mesh = {g: [o for o in GUESTS if o != g] for g in GUESTS}
    members = {"a": Fixed("g2/network", "g3/network", "g2/cpu", "g1/network")}
    timeouts = {"tcp_timeouts/s": 4.0}
    clients = [anomaly("g2", 10.0, **timeouts), anomaly("g3", 10.5, **timeouts)]

    def order(depends, anomalies=clients, who=members):
        return [c.component for c in Ensemble(who, depends=depends).fit().rank(anomalies)]

    # both clients time out: their server's link, the only one that explains both
    causes = Ensemble(members, depends=web).fit().rank(clients)
    assert [c.component for c in causes] == ["g1/network", "g2/network", "g3/network",
                                             "g2/cpu"]
    assert "link" in causes[0].evidence and causes[0].score == 1.0
    assert order(None) == order(mesh) == ["g2/network", "g3/network", "g2/cpu", "g1/network"]
    # one client in trouble: its own link explains it best; nothing moves
    assert order(web, clients[:1])[0] == "g2/network"
    # a rank-1 cause of another part is left alone
    cpu_first = {"a": Fixed("g2/cpu", "g2/network", "g1/network")}
    assert order(web, who=cpu_first)[0] == "g2/cpu"
