"""Evaluation: the field's metrics and protocols, probes, the dense CRF and label-free baselines.

- :mod:`.metrics`: ``UnsupervisedMetrics`` (STEGO's Hungarian-matched mIoU / accuracy).
- :mod:`.imagenet_s`: the ImageNet-S evaluator, presence matching and CLI
  (``python -m course_lib.evaluation.imagenet_s``; import from the submodule).
- :mod:`.probes`: linear and cluster probes, minibatch spherical k-means.
- :mod:`.protocols`: LUSS distance matching and the semi-supervised protocol.
- :mod:`.crf`: ``dense_crf`` (pydensecrf, or a pure-PyTorch mean field).
- :mod:`.baselines`: k-means on pixels, texture features, the noisy oracle.
"""
from .baselines import noisy_oracle, pixel_kmeans_miou, texture_features
from .crf import STEGO_CRF, CRFParams, dense_crf, dense_crf_batch, pydensecrf_available
from .metrics import UnsupervisedMetrics
from .probes import ClusterProbe, LinearProbe, MiniBatchSphericalKMeans
from .protocols import (
    distance_matching_predict,
    distance_matching_references,
    semi_supervised_fit,
    semi_supervised_predict,
)

__all__ = [
    "CRFParams", "ClusterProbe", "LinearProbe", "STEGO_CRF", "MiniBatchSphericalKMeans", "UnsupervisedMetrics",
    "dense_crf", "dense_crf_batch", "distance_matching_predict", "distance_matching_references", "noisy_oracle", "pixel_kmeans_miou",
    "pydensecrf_available", "semi_supervised_fit", "semi_supervised_predict", "texture_features",
]
