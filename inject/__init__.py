"""Fault injection: faults as data, the code that applies and reverts them, the fault ledger.

Entry point and root error arrive with the injector issue (``InjectError``).
"""
