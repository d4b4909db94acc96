"""What each sampler feature is, declared once: its kind, the part of the machine it
measures, its unit, the reader that produces it, and whether the detector watches it.

    lookup("vda_wsec/s")    # Feature(name="{disk}_wsec", kind="counter", part="disk", ...)
    watched()               # the features the detector's vector is made of, in its order
    as_dict()               # the whole catalog as plain data, for the sample schema

Kinds: a ``counter`` only grows (sectors written since boot); the detector sees its rate
per second. A ``gauge`` is a level (tasks, free memory); its level is the feature. An
``event`` is a per-sample count of new things (kernel log lines since the last sample);
the detector sums it over its window, per second. Counters and events are named
``<name>/s`` in the detector's vector, gauges keep their name.

Names may hold a placeholder for an instance the guest decides: ``{disk}`` (a whole disk,
``vda``), ``{nic}`` (a network interface, ``eth0``), ``{cpu}`` (a CPU number), ``{n}``
(a rank, 1 = first). The detector watches the lab guest's disk and NIC
(``WATCHED_INSTANCES``).

A feature's ``group`` is the sampler's reader that produces it (``features.GROUPS``, plus
``tasks`` and ``log``, which the sampler reads itself), or one of ``DERIVED``: computed
after sampling, not in ``Sample.features`` (kernel lines by the part they name,
``introspect.logparts``; the sample rate, whose stop is the detector's liveness anomaly).
``tests/unit/test_feature_catalog.py`` runs every reader on a synthetic kernel and fails
when a reader produces a name this table lacks, or the table names one no reader makes.

Adding a feature: its reader in ``features.py``, its row here. The detector ignores it
until its row says ``watch=True`` (and a ``count`` if it counts discrete things); the
detector's vector takes watched counters, then events, then kernel lines by part, then
gauges, each in this table's order, so where a row sits is where it lands in the vector
(the unit tests pin the vector: a change there is a decision, and the shipped
fingerprint model is retrained on it).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

from .logparts import LOG_PARTS

__all__ = ["Feature", "CATALOG", "lookup", "watched", "as_dict", "PARTS", "KINDS", "COUNTS",
           "COUNTER", "GAUGE", "EVENT", "POISSON", "ERROR", "SMALL", "DERIVED",
           "WATCHED_INSTANCES"]

COUNTER, GAUGE, EVENT = "counter", "gauge", "event"
KINDS = {
    COUNTER: "only grows; the detector sees its rate per second",
    GAUGE: "a level; the level is the feature",
    EVENT: "a per-sample count of new events; the detector sums it over its window, per second",
}
# The parts of a guest a feature measures (rca: a component is <guest>/<part>); a feature
# whose part is None measures none of them alone (every kernel line, of any part).
PARTS = ("cpu", "memory", "disk", "network", "guest")
# For features that count discrete things: what a move of one is to the detector (the
# floor of its scale, ``Featurizer.units``). None: clocks, times and sizes.
POISSON, ERROR, SMALL = "poisson", "error", "small"
COUNTS = {
    POISSON: "ordinary events (packets, I/Os, page faults, kernel lines): Poisson-like, one "
             "is the smallest move and comes now and then in a healthy guest",
    ERROR: "errors (timeouts, resets, drops, OOM kills, error lines): a healthy guest has "
           "none, so one is evidence",
    SMALL: "a small gauge count (running, blocked, zombie tasks): one is the smallest move",
}
DERIVED = {"logparts": "new kernel log lines naming the part (introspect.logparts), "
                       "counted from Sample.log",
           "liveness": "the sample rate; the detector's liveness anomaly when it stops"}
PLACEHOLDERS = {"disk": r"[^_/\s]+", "nic": r"[^_/\s]+", "cpu": r"\d+", "n": r"\d+"}
WATCHED_INSTANCES = {"disk": "vda", "nic": "eth0"}  # the lab guest's one disk and one NIC


@dataclass(frozen=True)
class Feature:
    """One feature as declared (``name`` may hold a placeholder, see the module doc)."""

    name: str
    kind: str           # COUNTER, GAUGE or EVENT
    part: str | None    # one of PARTS, or None
    unit: str           # of the value in Sample.features (a counter's rate: unit per second)
    group: str          # the reader that produces it, or one of DERIVED
    watch: bool = False  # in the detector's vector
    count: str | None = None  # POISSON, ERROR, SMALL, or None

    def __post_init__(self) -> None:
        where = f"feature {self.name}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} not one of {', '.join(KINDS)}")
        if self.part is not None and self.part not in PARTS:
            raise ValueError(f"{where}: part {self.part!r} not one of {', '.join(PARTS)}")
        if self.count is not None and self.count not in COUNTS:
            raise ValueError(f"{where}: count {self.count!r} not one of {', '.join(COUNTS)}")
        unknown = set(self.placeholders) - set(PLACEHOLDERS)
        if unknown:
            raise ValueError(f"{where}: unknown placeholder {sorted(unknown)}")
        if self.watch and set(self.placeholders) - set(WATCHED_INSTANCES):
            raise ValueError(f"{where}: watched, but the detector watches no one instance "
                             f"of {sorted(set(self.placeholders) - set(WATCHED_INSTANCES))}")

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{(\w+)\}", self.name))

    @property
    def sampled(self) -> bool:
        """In ``Sample.features`` (not computed after sampling)."""
        return self.group not in DERIVED

    @property
    def detector_name(self) -> str:
        """Its name in the detector's vector: rates and event counts per second."""
        return self.name if self.kind == GAUGE else f"{self.name}/s"

    def pattern(self) -> re.Pattern:
        """Matches the names this declaration covers."""
        out, last = "", 0
        for m in re.finditer(r"\{(\w+)\}", self.name):
            out += re.escape(self.name[last:m.start()]) + f"(?:{PLACEHOLDERS[m[1]]})"
            last = m.end()
        return re.compile(out + re.escape(self.name[last:]))

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "detector_name": self.detector_name,
                "sampled": self.sampled}


W = True  # watched, for the table's column
_ = None
# In the detector's order within each kind (see the module doc). Units: "s" are seconds
# (of CPU, of wall clock), "sectors" 512 bytes; global slab counts are kept in pages.
# name                          kind     part       unit        group       watch count
_TABLE = (
    ("jiffies",                  COUNTER, "guest",   "jiffies",  "time",      W, _),
    ("uptime_s",                 COUNTER, "guest",   "s",        "time",      W, _),
    ("cpu_user_s",               COUNTER, "cpu",     "s",        "cpustat",   W, _),
    ("cpu_system_s",             COUNTER, "cpu",     "s",        "cpustat",   W, _),
    ("cpu_idle_s",               COUNTER, "cpu",     "s",        "cpustat",   W, _),
    ("cpu_iowait_s",             COUNTER, "disk",    "s",        "cpustat",   W, _),
    ("cpu_softirq_s",            COUNTER, "cpu",     "s",        "cpustat",   W, _),
    ("cpu_steal_s",              COUNTER, "cpu",     "s",        "cpustat",   W, _),
    ("cpu_nice_s",               COUNTER, "cpu",     "s",        "cpustat",   _, _),
    ("cpu_irq_s",                COUNTER, "cpu",     "s",        "cpustat",   _, _),
    # the run queues' other counts are below memory: this is the vector's order
    ("rq_nr_switches",           COUNTER, "cpu",     "switches", "runqueues", W, POISSON),
    ("tasks_utime_s",            COUNTER, "cpu",     "s",        "tasks",     W, _),
    ("tasks_stime_s",            COUNTER, "cpu",     "s",        "tasks",     W, _),
    ("tasks",                    GAUGE,   "cpu",     "tasks",    "tasks",     W, _),
    ("tasks_running",            GAUGE,   "cpu",     "tasks",    "tasks",     W, SMALL),
    ("tasks_blocked",            GAUGE,   "disk",    "tasks",    "tasks",     W, SMALL),
    ("tasks_zombie",             GAUGE,   "cpu",     "tasks",    "tasks",     W, SMALL),
    ("tasks_sleeping",           GAUGE,   "cpu",     "tasks",    "tasks",     _, _),
    ("tasks_idle",               GAUGE,   "cpu",     "tasks",    "tasks",     _, _),
    ("tasks_stopped",            GAUGE,   "cpu",     "tasks",    "tasks",     _, SMALL),
    ("tasks_kthreads",           GAUGE,   "cpu",     "tasks",    "tasks",     _, _),
    ("tasks_minflt",             COUNTER, "memory",  "faults",   "tasks",     _, POISSON),
    ("tasks_majflt",             COUNTER, "memory",  "faults",   "tasks",     _, POISSON),
    ("tasks_rss_pages",          GAUGE,   "memory",  "pages",    "tasks",     _, _),
    ("top{n}_cpu_s",             GAUGE,   "cpu",     "s",        "tasks",     _, _),
    ("vm_pgfault",               COUNTER, "memory",  "faults",   "vmstat",    W, POISSON),
    ("vm_pgmajfault",            COUNTER, "memory",  "faults",   "vmstat",    W, POISSON),
    ("vm_pgscan_kswapd",         COUNTER, "memory",  "pages",    "vmstat",    W, POISSON),
    ("vm_pgscan_direct",         COUNTER, "memory",  "pages",    "vmstat",    W, POISSON),
    ("vm_oom_kill",              COUNTER, "memory",  "kills",    "vmstat",    W, ERROR),
    ("memfree_kb",               GAUGE,   "memory",  "kB",       "vmstat",    W, _),
    ("vm_nr_free_pages",         GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_zone_active_anon",   GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_zone_inactive_anon", GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_zone_active_file",   GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_zone_inactive_file", GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_zone_write_pending", GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_mlock",              GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_file_pages",         GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_anon_mapped",        GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_shmem",              GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_file_dirty",         GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_writeback",          GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_slab_reclaimable_b", GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_slab_unreclaimable_b", GAUGE, "memory",  "pages",    "vmstat",    _, _),
    ("vm_nr_kernel_stack_kb",    GAUGE,   "memory",  "kB",       "vmstat",    _, _),
    ("vm_nr_pagetable",          GAUGE,   "memory",  "pages",    "vmstat",    _, _),
    ("vm_workingset_refault_file", COUNTER, "memory", "pages",   "vmstat",    _, POISSON),
    ("vm_pgpgin",                COUNTER, "memory",  "sectors",  "vmstat",    _, POISSON),
    ("vm_pgpgout",               COUNTER, "memory",  "sectors",  "vmstat",    _, POISSON),
    ("vm_pswpin",                COUNTER, "memory",  "pages",    "vmstat",    _, POISSON),
    ("vm_pswpout",               COUNTER, "memory",  "pages",    "vmstat",    _, POISSON),
    ("vm_pgfree",                COUNTER, "memory",  "pages",    "vmstat",    _, POISSON),
    ("vm_pgsteal_kswapd",        COUNTER, "memory",  "pages",    "vmstat",    _, POISSON),
    ("vm_pgsteal_direct",        COUNTER, "memory",  "pages",    "vmstat",    _, POISSON),
    ("vm_allocstall_normal",     COUNTER, "memory",  "stalls",   "vmstat",    _, ERROR),
    ("vm_allocstall_dma32",      COUNTER, "memory",  "stalls",   "vmstat",    _, ERROR),
    ("vm_compactstall",          COUNTER, "memory",  "stalls",   "vmstat",    _, ERROR),
    ("vm_balloon_inflate",       COUNTER, "memory",  "pages",    "vmstat",    _, POISSON),
    ("vm_balloon_deflate",       COUNTER, "memory",  "pages",    "vmstat",    _, POISSON),
    ("rq_nr_running",            GAUGE,   "cpu",     "tasks",    "runqueues", W, SMALL),
    ("rq_nr_iowait",             GAUGE,   "disk",    "tasks",    "runqueues", W, SMALL),
    ("rq_nr_uninterruptible",    GAUGE,   "cpu",     "tasks",    "runqueues", _, _),
    ("cpu{cpu}_rq_nr_running",   GAUGE,   "cpu",     "tasks",    "runqueues", _, SMALL),
    ("cpu{cpu}_rq_nr_switches",  COUNTER, "cpu",     "switches", "runqueues", _, POISSON),
    ("cpu{cpu}_rq_nr_iowait",    GAUGE,   "disk",    "tasks",    "runqueues", _, SMALL),
    ("cpu{cpu}_rq_nr_uninterruptible", GAUGE, "cpu", "tasks",    "runqueues", _, _),
    ("load1",                    GAUGE,   "cpu",     "tasks",    "load",      _, _),
    ("load5",                    GAUGE,   "cpu",     "tasks",    "load",      _, _),
    ("load15",                   GAUGE,   "cpu",     "tasks",    "load",      _, _),
    ("{disk}_rd",                COUNTER, "disk",    "I/Os",     "block",     W, POISSON),
    ("{disk}_wr",                COUNTER, "disk",    "I/Os",     "block",     W, POISSON),
    ("{disk}_rsec",              COUNTER, "disk",    "sectors",  "block",     W, POISSON),
    ("{disk}_wsec",              COUNTER, "disk",    "sectors",  "block",     W, POISSON),
    ("{disk}_ioms",              COUNTER, "disk",    "ms",       "block",     W, POISSON),
    ("{nic}_rxp",                COUNTER, "network", "packets",  "net",       W, POISSON),
    ("{nic}_txp",                COUNTER, "network", "packets",  "net",       W, POISSON),
    ("{nic}_rxb",                COUNTER, "network", "bytes",    "net",       W, POISSON),
    ("{nic}_txb",                COUNTER, "network", "bytes",    "net",       W, POISSON),
    ("{nic}_rxdrop",             COUNTER, "network", "packets",  "net",       W, ERROR),
    ("{nic}_txdrop",             COUNTER, "network", "packets",  "net",       W, ERROR),
    ("{nic}_rxerr",              COUNTER, "network", "packets",  "net",       W, ERROR),
    ("{nic}_txerr",              COUNTER, "network", "packets",  "net",       W, ERROR),
    ("net_devices",              GAUGE,   "network", "devices",  "net",       _, _),
    ("tcp_retrans",              COUNTER, "network", "segments", "snmp",      W, POISSON),
    ("tcp_timeouts",             COUNTER, "network", "timeouts", "snmp",      W, ERROR),
    ("tcp_lost_retrans",         COUNTER, "network", "segments", "snmp",      W, ERROR),
    ("tcp_outrsts",              COUNTER, "network", "segments", "snmp",      W, ERROR),
    ("tcp_inerrs",               COUNTER, "network", "segments", "snmp",      W, ERROR),
    # log_errors: level err or worse; a line names no part by its level, the whole guest
    ("log_errors",               EVENT,   "guest",   "lines",    "log",       W, ERROR),
    ("log_lines",                EVENT,   _,         "lines",    "log",       W, POISSON),
    *((f"log_{part}",            EVENT,   part,      "lines",    "logparts",  W, ERROR)
      for part in LOG_PARTS),
    ("samples",                  EVENT,   "guest",   "samples",  "liveness",  _, _),
)
del W, _
CATALOG: tuple[Feature, ...] = tuple(Feature(*row) for row in _TABLE)
_EXACT = {f.name: f for f in CATALOG if not f.placeholders}
_TEMPLATES = tuple((f.pattern(), f) for f in CATALOG if f.placeholders)
if len(_EXACT) + len(_TEMPLATES) != len(CATALOG):
    raise ValueError("introspect.catalog: a feature is declared twice")


@functools.lru_cache(maxsize=4096)
def lookup(name: str) -> Feature | None:
    """The declaration of a sample's feature or a detector's (``/s`` suffix allowed),
    None for a name nothing declares."""
    name = name.removesuffix("/s")
    found = _EXACT.get(name)
    if found is None:
        found = next((f for pattern, f in _TEMPLATES if pattern.fullmatch(name)), None)
    return found


def watched() -> tuple[Feature, ...]:
    """The features the detector watches, in table order, placeholders filled with the
    watched instances (``{disk}_rd`` -> ``vda_rd``)."""
    return tuple(dataclasses.replace(f, name=f.name.format(**WATCHED_INSTANCES))
                 for f in CATALOG if f.watch)


def as_dict() -> dict:
    """The catalog as plain data (JSON-ready): it travels with the sample schema."""
    return {"kinds": dict(KINDS), "parts": list(PARTS), "counts": dict(COUNTS),
            "derived": dict(DERIVED),
            "placeholders": {k: {"pattern": v, "watched": WATCHED_INSTANCES.get(k)}
                             for k, v in PLACEHOLDERS.items()},
            "features": [f.as_dict() for f in CATALOG]}
