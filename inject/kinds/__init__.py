"""Built-in fault kinds, one module per level; importing this package registers them."""

from . import cluster, cpu, disk, memory, network  # noqa: F401
