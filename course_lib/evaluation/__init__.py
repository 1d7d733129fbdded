"""Evaluation: the field's metrics and protocols, and label-free pixel baselines."""
from .baselines import noisy_oracle, pixel_kmeans_miou, texture_features
from .metrics import UnsupervisedMetrics

__all__ = ["UnsupervisedMetrics", "noisy_oracle", "pixel_kmeans_miou", "texture_features"]
