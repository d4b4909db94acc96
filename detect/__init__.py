"""Anomaly detectors (scikit-learn estimator contract) that turn samples into anomalies.
"""
