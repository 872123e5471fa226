"""Anomaly detection metrics and scorers (1 = defective, higher score = more anomalous)."""
