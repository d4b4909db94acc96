"""Errors of the ``introspect`` stage.

Tree::

    VmrocError
     +-- IntrospectError            root of this stage; the CLI catches it
          +-- KernelImageError      not a bzImage/ELF, unknown compression, missing section
          +-- KallsymsError         kallsyms tables not found or inconsistent
          +-- BTFError              malformed .BTF data (names the type id / offset)
          +-- SymbolLookupError     unknown symbol, type or member in a built table
          +-- layers.AddressError   unmapped or outside guest RAM (names layer and address)
          +-- kernel.KernelMismatchError  the symbols are for another kernel
          +-- kernel.NotAGuestError       no Linux kernel found in the RAM file
          +-- sampler.GuestDownError      the guest's QEMU is gone
          +-- sampler.KernelChangedError  the guest runs another kernel now
"""

from vmroc.errors import VmrocError


class IntrospectError(VmrocError):
    """Root of every error raised by ``introspect``."""


class KernelImageError(IntrospectError):
    """The kernel image cannot be unpacked or parsed (the message names the file)."""


class KallsymsError(IntrospectError):
    """The kallsyms tables could not be located or decoded."""


class BTFError(IntrospectError):
    """The BTF data is malformed; the message names the offset or type id."""


class SymbolLookupError(IntrospectError, KeyError):
    """A symbol, type or member is not in the symbol table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
