"""Evaluation: the paper's metrics and protocols."""
