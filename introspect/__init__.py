"""Agentless introspection: read guest kernel state from the guest's RAM file.

Kernel symbols and types come from the guest kernel itself (kallsyms + BTF ->
volatility3 ISF); LibVMI and volatility3 are the reference readers.
"""
