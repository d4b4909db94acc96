"""vmroc: recovery-oriented computing lab for virtual machines.

This small package holds what every stage shares and nothing stage-specific:

- ``vmroc.home``   -- where vmroc keeps caches and run state (``VMROC_HOME``)
- ``vmroc.errors`` -- ``VmrocError``, the root of every package's error tree
- ``vmroc.cli``    -- the ``vmroc`` command; it only dispatches to each stage's CLI

Stages, in data-flow order: ``deploy`` (lab guests, broker) -> ``inject`` /
``introspect`` -> ``detect`` -> ``rca`` -> ``service``. A lower stage never
imports a higher one.
"""

import logging

from .errors import VmrocError

__all__ = ["VmrocError"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
