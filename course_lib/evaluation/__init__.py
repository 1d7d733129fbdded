"""Evaluation: the field's metrics and protocols."""
from .metrics import UnsupervisedMetrics

__all__ = ["UnsupervisedMetrics"]
