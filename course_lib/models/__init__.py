"""Models: the DINO ViT (loads the official checkpoints), the toy backbone, ResNets, feature extraction.

- :mod:`.vit`: ``VisionTransformer`` (DINO's architecture; ``patch_features``, ``last_attention``).
- :mod:`.backbones`: ``load_backbone(name)`` for ``toy_vit``, ``dino_vit{s,b}{8,16}``, ``resnet18/50``.
- :mod:`.features`: batched feature extraction and the on-disk ``FeatureCache``.
- :mod:`.resnet`: ResNets exposing every stage (``build_resnet``: resnet18/50, the narrow ``toy_resnet``).
"""
from .backbones import BACKBONES, WeightsNotFoundError, load_backbone, toy_vit_path
from .features import FeatureCache, FeatureSet, extract_features, toy_features
from .resnet import RESNET_SPECS, ResNet, build_resnet
from .vit import VisionTransformer

__all__ = [
    "BACKBONES", "RESNET_SPECS", "FeatureCache", "ResNet", "build_resnet", "FeatureSet", "VisionTransformer", "WeightsNotFoundError", "extract_features",
    "load_backbone", "toy_features", "toy_vit_path",
]
