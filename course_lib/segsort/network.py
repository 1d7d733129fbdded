"""SegSort's embedding networks: an image → a D-dimensional unit vector per pixel (D = 32).

SegSort (Hwang et al., ICCV 2019) puts a light head on a segmentation backbone (DeepLab / PSPNet on
a dilated ResNet-101, output stride 8) and L2-normalises its output per pixel, so that every pixel
embedding lies on the unit hypersphere S^{D-1}.

- :class:`ToyEmbeddingNet` (toy profile): a small fully convolutional network for the toy world's
  64-128 px images, trained from scratch in minutes on a CPU: 3×3 convolutions with BatchNorm, two of
  stride 2 (output stride 4: a 96 px image gives a 24×24 map), then two dilated convolutions (dilation
  2 and 4) so that each embedding sees about 60×60 px of texture; about 0.27 M parameters.
- :class:`ResNetEmbeddingNet` (full scale): torchvision's ResNet-50 / 101 with the last two stages
  dilated (output stride 8, as in the paper) and the official PSPNet head (:class:`PSPHead`: pyramid
  branches of 512 for bins 1, 2, 3, 6 on the 2048-channel map, concatenated, 3×3 conv to 512, 1×1 to D),
  initialised from torchvision's ImageNet weights read from ``COURSE_CACHE/weights`` (fetched by
  ``python data_scripts/get_weights.py --model resnet101``; nothing downloads here).

Input: B×3×H×W images normalised with the ImageNet mean and std (:func:`course_lib.data.normalize`);
:func:`embed` does that for images in [0, 1]. Output: B×D×h×w, unit length along D.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..cli import save_atomic
from ..config import ConfigError, progress
from ..data.transforms import normalize
from ..models.resnet import IMAGENET_WEIGHTS, load_imagenet_weights
from .vmf import EPS

EMBEDDING_DIM = 32
ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOY_CHECKPOINT = ASSETS / "segsort_toy.pt"


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ToyEmbeddingNet(nn.Module):
    """Small CNN for the toy world: B×3×H×W (normalised) → B×D×(H/4)×(W/4) unit embeddings."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM, width: int = 96):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.output_stride = 4
        self.features = nn.Sequential(
            _conv_bn_relu(3, width // 3),
            _conv_bn_relu(width // 3, width // 2, stride=2),
            _conv_bn_relu(width // 2, 2 * width // 3),
            _conv_bn_relu(2 * width // 3, width, stride=2),
            _conv_bn_relu(width, width, dilation=2),
            _conv_bn_relu(width, width, dilation=4),
        )
        self.head = nn.Conv2d(width, embedding_dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(images)), dim=1, eps=EPS)


HEAD_BN = dict(eps=1e-3, momentum=0.01)
"""The head's batch norms: ``network/common/layers.py:7-12`` (epsilon 0.001) with ``decay=0.99``
(``seg_models/models/pspnet.py:62``); PyTorch's momentum is 1 − decay."""
BACKBONE_BN_MOMENTUM = 1 - 0.9997
"""The ResNet's batch norms update their running statistics with the official ``decay=0.9997``
(``network/common/layers.py:115``, the default its ``resnet_v1`` convolutions use)."""
PSP_BINS = (1, 2, 3, 6)
PSP_CHANNELS = 512


def _tf_default_init(module: nn.Module) -> None:
    """TensorFlow's default initialiser of ``tf.get_variable`` (Glorot uniform) for a convolution's weights
    and (with fan-in = fan-out = C for a 1-D variable) its biases, as the official ``block5`` starts;
    batch norms at γ = 1, β = 0 and fresh running statistics."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                limit = (3.0 / layer.bias.numel()) ** 0.5
                nn.init.uniform_(layer.bias, -limit, limit)
        elif isinstance(layer, nn.BatchNorm2d):
            layer.reset_parameters()


class PSPHead(nn.Module):
    """The official PSPNet head (``seg_models/models/pspnet.py:42-154``, TensorFlow scope ``block5``).

    On the backbone's B×2048×h×w map: for each bin b in (1, 2, 3, 6), average pooling to b×b, a 1×1
    convolution to 512 (no bias) with batch norm and ReLU, bilinear upsampling back to h×w; the four
    branches and the map are concatenated ([pool1, pool2, pool3, pool6, x]: 4·512 + 2048 = 4096 channels),
    a 3×3 convolution to 512 (no bias) with batch norm and ReLU, and a 1×1 convolution with bias to the
    embedding dimension D (``block5/fc1_voc12``). Output B×D×h×w (not normalised).

    The official pooling windows are h/8/b for an input side divisible by 48; adaptive average pooling
    gives the same bins for those inputs (336 → 42×42, 480 → 60×60) and any size otherwise."""

    def __init__(self, in_channels: int, embedding_dim: int, bins: tuple[int, ...] = PSP_BINS,
                 channels: int = PSP_CHANNELS):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, channels, 1, bias=False),
                          nn.BatchNorm2d(channels, **HEAD_BN), nn.ReLU(inplace=True))
            for b in bins
        )
        self.fuse = nn.Sequential(nn.Conv2d(len(bins) * channels + in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels, **HEAD_BN), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(channels, embedding_dim, 1)
        _tf_default_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False) for branch in self.branches]
        return self.classifier(self.fuse(torch.cat([*pooled, x], 1)))


class ResNetEmbeddingNet(nn.Module):
    """Dilated torchvision ResNet-50/101 (output stride 8) + the official PSPNet head → B×D×(H/8)×(W/8).

    ``weights="IMAGENET1K_V1"`` starts from torchvision's ImageNet weights, as the paper starts from
    ImageNet, loaded from ``COURSE_CACHE/weights`` (``WeightsNotFoundError`` with the fetch command when
    the file is missing); ``None`` is a random initialisation. The parameters whose names start with
    ``head`` are the official ``block5`` variables (×10 learning rate, re-initialised at the start of the
    supervised recipe's second stage, see :meth:`reset_head`).
    """

    def __init__(self, depth: int = 101, embedding_dim: int = EMBEDDING_DIM, weights: str | None = None):
        super().__init__()
        from torchvision.models import resnet50, resnet101

        builders = {50: resnet50, 101: resnet101}
        if depth not in builders:
            raise ValueError(f"ResNetEmbeddingNet supports depth 50 or 101, got {depth}")
        if weights not in (None, IMAGENET_WEIGHTS):
            raise ConfigError(f"unknown ResNet weights {weights!r}: use {IMAGENET_WEIGHTS} or none (random)")
        resnet = builders[depth](weights=None, replace_stride_with_dilation=[False, True, True])
        if weights is not None:
            load_imagenet_weights(resnet, f"resnet{depth}")
        self.embedding_dim = embedding_dim
        self.output_stride = 8
        self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                      resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        for layer in self.backbone.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.momentum = BACKBONE_BN_MOMENTUM
        self.head = PSPHead(resnet.fc.in_features, embedding_dim)

    def reset_head(self) -> None:
        """Re-initialise the head (``block5``) as at construction (the official second stage restores every
        variable but ``block5``: ``bashscripts/voc12/train_segsort.sh:171``, ``train_segsort.py:179-182``)."""
        _tf_default_init(self.head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(images)), dim=1, eps=EPS)


ARCHITECTURES = ("toy", "resnet50", "resnet101")


def build_embedding_net(arch: str = "toy", embedding_dim: int = EMBEDDING_DIM, weights: str | None = None,
                        seed: int | None = None) -> nn.Module:
    """An embedding network by name (``"toy"``, ``"resnet50"``, ``"resnet101"``); ``seed`` fixes its
    random initialisation (the "untrained network" baseline is this network at ``seed``)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown SegSort architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}")
    if seed is not None:
        torch.manual_seed(seed)
    if arch == "toy":
        if weights is not None:
            raise ConfigError("the toy network has no pretrained weights; "
                             "train it with python -m course_lib.segsort.train")
        return ToyEmbeddingNet(embedding_dim)
    return ResNetEmbeddingNet(int(arch.removeprefix("resnet")), embedding_dim, weights)


def save_embedding_net(net: nn.Module, path: str | os.PathLike, config: dict) -> None:
    """Save weights and the ``config`` that rebuilds the network (``arch``, ``embedding_dim``, ...)."""
    net = getattr(net, "module", net)   # unwrap DistributedDataParallel
    save_atomic({"config": config, "state_dict": net.state_dict()}, path)


def load_embedding_net(path: str | os.PathLike = TOY_CHECKPOINT,
                       device: torch.device | str | None = None) -> tuple[nn.Module, dict]:
    """Load a network saved by :func:`save_embedding_net` (default: the shipped toy checkpoint).
    Returns the eval-mode network and its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SegSort checkpoint at {path}; train one with "
                                "`python -m course_lib.segsort.train --profile toy --out DIR` (DIR/segsort.pt)")
    saved = torch.load(path, map_location="cpu", weights_only=True)   # tensors and plain config values only
    config = saved["config"]
    net = build_embedding_net(config["arch"], config["embedding_dim"])
    net.load_state_dict(saved["state_dict"])
    return net.to(device or "cpu").eval(), config


@torch.no_grad()
def embed(net: nn.Module, images: torch.Tensor, batch_size: int = 32,
          device: torch.device | str | None = None) -> torch.Tensor:
    """Embeddings of N×3×H×W images in [0, 1] (normalised here), in eval mode, batch by batch.

    On CUDA the network runs under bf16 autocast; the embeddings are returned in float32.
    Returns N×D×h×w float32 on the CPU.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N×3×H×W images in [0, 1], got shape {tuple(images.shape)}")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        chunks = [net(normalize(images[start:start + batch_size].to(device))).float().cpu()
                  for start in progress(range(0, len(images), batch_size), desc="embedding", unit="batch",
                                        leave=False)]
    net.train(was_training)
    return torch.cat(chunks)
