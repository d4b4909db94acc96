"""Agentless introspection: read guest kernel state from the guest's RAM file.

Kernel symbols and types come from the guest kernel itself (kallsyms + BTF ->
volatility3 ISF); LibVMI and volatility3 are the reference readers.

Entry point for symbols: ``build_isf(kernel_image, modules) -> SymbolFiles`` (cached
per kernel build); ``SymbolFiles.table()`` gives a ``SymbolTable`` for direct
lookups (``address``, ``offset``, ``size``, ``is_percpu``). Root error:
``IntrospectError`` (tree in ``introspect.errors``).
"""

import logging

from .errors import IntrospectError, SymbolLookupError
from .symbols import SymbolFiles, SymbolTable, build_isf

__all__ = ["build_isf", "SymbolFiles", "SymbolTable", "IntrospectError", "SymbolLookupError"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
