"""Evaluation: the field's metrics and protocols, probes, the dense CRF and label-free baselines.

- :mod:`.metrics`: ``UnsupervisedMetrics`` (STEGO's Hungarian-matched mIoU / accuracy).
- :mod:`.imagenet_s`: the ImageNet-S evaluator, presence matching and CLI
  (``python -m course_lib.evaluation.imagenet_s``; import from the submodule).
- :mod:`.probes`: linear and cluster probes, minibatch spherical k-means.
- :mod:`.protocols`: LUSS distance matching and the semi-supervised protocol.
- :mod:`.crf`: ``dense_crf`` (pydensecrf, or a pure-PyTorch mean field).
- :mod:`.baselines`: k-means on pixels, texture features, the noisy oracle.

The names below load their submodule on first use (:func:`course_lib.lazy_exports`), so that
``import course_lib.evaluation.imagenet_s`` (the evaluator CLI) pulls in neither torch nor torchvision
nor scikit-learn through its siblings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "baselines": ("noisy_oracle", "pixel_kmeans_miou", "texture_features"),
    "crf": ("STEGO_CRF", "CRFParams", "dense_crf", "dense_crf_batch", "pydensecrf_available"),
    "metrics": ("UnsupervisedMetrics",),
    "probes": ("ClusterProbe", "LinearProbe", "MiniBatchSphericalKMeans"),
    "protocols": ("distance_matching_predict", "distance_matching_references", "semi_supervised_fit",
                  "semi_supervised_predict"),
}, submodules=("boundary", "imagenet_s"))
