"""Causal root-cause analysis: rank causes per anomaly, score them against the fault ledger.
"""
