"""The feature catalog (introspect/catalog.py) against what reads and uses it: every
reader, run on a synthetic kernel, produces exactly the features the catalog declares
for it; the detector's vector is pinned, name for name, so a catalog edit cannot move
it silently (the shipped fingerprint model and every recording's replay depend on it)."""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace

import pytest

from vmroc.detect.featurize import FEATURES, Featurizer
from vmroc.introspect import catalog, sampler
from vmroc.introspect.features import GROUPS, read_tasks
from vmroc.introspect.logparts import LOG_PARTS
from vmroc.introspect.printk import LogRecord
from vmroc.rca.components import PARTS, feature_part

from .synthetic_kernel import SyntheticKernel

# The detector's vector as shipped (rca/models/fingerprint.joblib was trained on it).
# Changing it is a decision: retrain the model and say so in the commit.
PINNED = (
    "jiffies/s", "uptime_s/s", "cpu_user_s/s", "cpu_system_s/s", "cpu_idle_s/s",
    "cpu_iowait_s/s", "cpu_softirq_s/s", "cpu_steal_s/s", "rq_nr_switches/s",
    "tasks_utime_s/s", "tasks_stime_s/s", "vm_pgfault/s", "vm_pgmajfault/s",
    "vm_pgscan_kswapd/s", "vm_pgscan_direct/s", "vm_oom_kill/s", "vda_rd/s", "vda_wr/s",
    "vda_rsec/s", "vda_wsec/s", "vda_ioms/s", "eth0_rxp/s", "eth0_txp/s", "eth0_rxb/s",
    "eth0_txb/s", "eth0_rxdrop/s", "eth0_txdrop/s", "eth0_rxerr/s", "eth0_txerr/s",
    "tcp_retrans/s", "tcp_timeouts/s", "tcp_lost_retrans/s", "tcp_outrsts/s",
    "tcp_inerrs/s", "log_errors/s", "log_lines/s", "log_memory/s", "log_disk/s",
    "log_cpu/s", "log_network/s", "tasks", "tasks_running", "tasks_blocked",
    "tasks_zombie", "memfree_kb", "rq_nr_running", "rq_nr_iowait",
)


def test_the_detector_vector_is_pinned():
    assert FEATURES == PINNED
    assert Featurizer.names == PINNED


def test_the_scale_floors_are_pinned():
    units = dict(zip(PINNED, Featurizer(window_s=4.0).units()))
    poisson = {"rq_nr_switches/s", "vm_pgfault/s", "vm_pgmajfault/s", "vm_pgscan_kswapd/s",
               "vm_pgscan_direct/s", "vda_rd/s", "vda_wr/s", "vda_rsec/s", "vda_wsec/s",
               "vda_ioms/s", "eth0_rxp/s", "eth0_txp/s", "eth0_rxb/s", "eth0_txb/s",
               "tcp_retrans/s", "log_lines/s"}
    small = {"tasks_running", "tasks_blocked", "tasks_zombie", "rq_nr_running",
             "rq_nr_iowait"}
    assert {n for n, u in units.items() if u == 0.25} == poisson
    assert {n for n, u in units.items() if u == 1.0} == small
    assert all(u == 0.0 for n, u in units.items() if n not in poisson | small)


@pytest.fixture(scope="module")
def produced() -> dict[str, set[str]]:
    """Reader -> the feature names it produces on the synthetic kernel."""
    k = SyntheticKernel(nr_cpus=2)
    out = {"tasks": set(read_tasks(k)[0])}
    for name, fn in GROUPS.items():
        kwargs = {"hz": 250} if "hz" in inspect.signature(fn).parameters else {}
        out[name] = set(fn(k, **kwargs))
    return out


class KernelLog:
    def read_new(self):
        return [LogRecord(1, 1.0, 6, "virtio_net virtio0 eth0: link up"),
                LogRecord(2, 1.5, 3, "blk_update_request: I/O error, dev vda, sector 8")]


def test_a_sample_carries_only_declared_features(monkeypatch, tmp_path, produced):
    """The whole sampler on the synthetic kernel: every feature of its sample is declared,
    by the reader that made it (a new reader output without a catalog row fails here)."""
    kernel = SyntheticKernel(nr_cpus=2)
    monkeypatch.setattr(sampler, "_table", lambda isf, mtime: kernel.symbols)
    monkeypatch.setattr(sampler, "open_kernel", lambda *args: kernel)
    (tmp_path / "isf.json").write_text("{}")
    files = SimpleNamespace(isf=tmp_path / "isf.json")
    guest = SimpleNamespace(name="g1", ram_path=tmp_path / "ram", config={})
    s = sampler.Sampler(guest, backend="mmap", symbols=files, hz=250)
    s.klog = KernelLog()
    sample = s.sample()
    assert sample.consistent and sample.features["log_errors"] == 1
    undeclared = sorted(n for n in sample.features if catalog.lookup(n) is None)
    assert not undeclared, f"features without a row in introspect/catalog.py: {undeclared}"
    by_reader = {n: group for group, names in produced.items() for n in names}
    assert set(by_reader) | {"log_lines", "log_errors"} == set(sample.features)
    for name in sample.features:
        assert catalog.lookup(name).group == by_reader.get(name, "log"), name


def test_every_declared_feature_is_produced_by_its_reader(produced):
    produced = {**produced, "log": {"log_lines", "log_errors"}}
    assert {f.group for f in catalog.CATALOG} == set(produced) | set(catalog.DERIVED)
    never = [f.name for f in catalog.CATALOG if f.sampled
             and not any(f.pattern().fullmatch(n) for n in produced[f.group])]
    assert not never, f"declared in introspect/catalog.py, produced by no reader: {never}"


def test_derived_features_are_the_kernel_line_parts_and_the_sample_rate():
    derived = [f for f in catalog.CATALOG if not f.sampled]
    assert [(f.name, f.part) for f in derived if f.group == "logparts"] == \
        [(f"log_{p}", p) for p in LOG_PARTS]
    assert catalog.lookup("samples/s").group == "liveness"  # the detector's liveness anomaly


def test_lookup_resolves_instances_and_detector_names():
    assert catalog.lookup("vdb_wsec/s").name == "{disk}_wsec"
    assert catalog.lookup("cpu3_rq_nr_iowait").part == "disk"
    assert catalog.lookup("top2_cpu_s").kind == catalog.GAUGE
    assert catalog.lookup("tasks_frobs") is None and feature_part("tasks_frobs") == "other"
    assert feature_part("log_lines/s") == "other"  # any kernel line: no one part
    assert catalog.PARTS == PARTS


def test_every_detector_feature_is_watched_and_named_by_the_catalog():
    watched = catalog.watched()
    assert {f.detector_name for f in watched} == set(FEATURES)
    for name in FEATURES:
        declared = catalog.lookup(name)
        assert declared.watch and declared.part in PARTS + (None,)
        assert name.endswith("/s") == (declared.kind != catalog.GAUGE)


def test_a_misdeclared_feature_fails_at_once():
    with pytest.raises(ValueError, match="kind"):
        catalog.Feature("x", "rate", "cpu", "s", "time")
    with pytest.raises(ValueError, match="part"):
        catalog.Feature("x", catalog.GAUGE, "gpu", "s", "time")
    with pytest.raises(ValueError, match="no one instance"):
        catalog.Feature("cpu{cpu}_x", catalog.GAUGE, "cpu", "s", "runqueues", watch=True)


def test_the_catalog_travels_as_plain_data():
    data = json.loads(json.dumps(catalog.as_dict()))
    rows = {f["name"]: f for f in data["features"]}
    assert len(rows) == len(catalog.CATALOG)
    assert rows["{disk}_wsec"] == {
        "name": "{disk}_wsec", "kind": "counter", "part": "disk", "unit": "sectors",
        "group": "block", "watch": True, "count": "poisson",
        "detector_name": "{disk}_wsec/s", "sampled": True}
    assert data["placeholders"]["disk"]["watched"] == "vda"
    assert set(data["kinds"]) == {"counter", "gauge", "event"}
