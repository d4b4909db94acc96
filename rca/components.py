"""What a feature or a fault is about: a component of one guest.

Components are ``<guest>/<part>`` with part one of ``cpu``, ``memory``, ``disk``,
``network`` and ``guest`` (the whole machine: paused, crashed, rebooted). A detector's
feature names map to the part they measure; a fault kind maps to the part it breaks,
which is what a ranked cause is scored against.
"""

from __future__ import annotations

PARTS = ("cpu", "memory", "disk", "network", "guest")

# feature name (without "/s") -> part; checked by prefix, first match wins
_FEATURE_PARTS = (
    (("log_cpu",), "cpu"), (("log_memory",), "memory"), (("log_disk",), "disk"),
    (("log_network",), "network"),
    (("jiffies", "uptime_s", "samples", "log_errors"), "guest"),
    (("vda_", "cpu_iowait_s", "rq_nr_iowait", "tasks_blocked"), "disk"),
    (("eth0_", "tcp_"), "network"),
    (("memfree_kb", "vm_"), "memory"),
    (("cpu_", "rq_", "tasks", "top"), "cpu"),
)

# fault kind -> part it breaks (cluster kinds that cut the network are network faults)
_FAULT_PARTS = {"guest-suspend": "guest", "guest-crash": "guest", "guest-reboot": "guest",
                "net-partition": "network", "bridge-down": "network"}
_LEVEL_PARTS = {"cpu": "cpu", "memory": "memory", "disk": "disk", "network": "network",
                "cluster": "guest"}


def feature_part(feature: str) -> str:
    """The part a detector feature measures (``other`` if none)."""
    name = feature.removesuffix("/s")
    for prefixes, part in _FEATURE_PARTS:
        if name.startswith(prefixes):
            return part
    return "other"


def fault_part(kind: str, level: str) -> str:
    """The part a fault kind breaks."""
    return _FAULT_PARTS.get(kind) or _LEVEL_PARTS.get(level, "other")


def component(guest: str, part: str) -> str:
    return f"{guest}/{part}"
