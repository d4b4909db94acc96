"""The feature catalog (introspect/catalog.py) against what reads and uses it: the
detector's vector is pinned, name for name, so a catalog edit cannot move it silently
(the shipped fingerprint model and every recording's replay depend on it)."""

from __future__ import annotations

from vmroc.detect.featurize import FEATURES, Featurizer

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
