"""The C accelerator of the sampler (``vmread.c``) and the binding that loads it.

``_vmread.Space`` is an address space on a guest's RAM file: the q35 layout, page walks
and a per-sample TLB as in ``layers.py``, reads, and the list and task walks of
``features``, raising the same ``AddressError`` and ``Inconsistent``. The kernel view
built on it is ``backends.AccelKernel``. Built by ``pip install`` (``setup.py``);
without a compiler the module is missing and ``available()`` says so.
"""

from __future__ import annotations

from ..features import Inconsistent
from ..layers import AddressError

try:
    from . import _vmread
except ImportError:  # not compiled (no C compiler at install time)
    _vmread = None
else:
    _vmread.errors(AddressError, Inconsistent)


def available() -> bool:
    """Whether the C module was built."""
    return _vmread is not None
