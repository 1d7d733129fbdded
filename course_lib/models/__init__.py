"""Models: the DINO ViT (loads the official checkpoints), the toy backbone, ResNets, feature extraction.

- :mod:`.vit`: ``VisionTransformer`` (DINO's architecture; ``patch_features``, ``last_attention``).
- :mod:`.backbones`: ``load_backbone(name)`` for ``toy_vit``, ``dino_vit{s,b}{8,16}``, ``resnet18/50``.
- :mod:`.features`: batched feature extraction and the on-disk ``FeatureCache``.
- :mod:`.resnet`: ResNets exposing every stage (``build_resnet``: resnet18/50, the narrow ``toy_resnet``).

The names below load their submodule on first use (:func:`course_lib.lazy_exports`): importing one
module of the package (e.g. :mod:`.vit`) does not load torchvision through :mod:`.resnet`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy_exports

if TYPE_CHECKING:
    from .backbones import BACKBONES, CorruptWeightsError, WeightsNotFoundError, load_backbone, toy_vit_path
    from .features import FeatureCache, FeatureSet, extract_features, toy_features
    from .resnet import RESNET_SPECS, ResNet, build_resnet
    from .vit import VisionTransformer

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "backbones": ("BACKBONES", "CorruptWeightsError", "WeightsNotFoundError", "load_backbone", "toy_vit_path"),
    "features": ("FeatureCache", "FeatureSet", "extract_features", "toy_features"),
    "resnet": ("RESNET_SPECS", "ResNet", "build_resnet"),
    "vit": ("VisionTransformer",),
}, submodules=("feature_correspondences",))
