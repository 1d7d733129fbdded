"""Evaluation: the field's metrics and protocols, and label-free pixel baselines."""
from .baselines import pixel_kmeans_miou, texture_features
from .metrics import UnsupervisedMetrics

__all__ = ["UnsupervisedMetrics", "pixel_kmeans_miou", "texture_features"]
