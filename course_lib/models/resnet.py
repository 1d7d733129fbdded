"""ResNets that return the features of every stage, for PASS (Gao et al., TPAMI 2022).

He et al.'s residual networks ("Deep Residual Learning for Image Recognition", CVPR 2016), built from
torchvision's ``BasicBlock`` / ``Bottleneck`` with torchvision's parameter names, so that
``resnet18`` / ``resnet50`` accept a torchvision (or PASS / SwAV) state dict with a strict
``load_state_dict`` (minus the ``fc`` classifier, which a backbone does not have).

- ``resnet18`` / ``resnet50``: the full-scale backbones of PASS (random init, output stride 32).
- ``toy_resnet``: a narrow ResNet for the toy world's 64-128 px images: widths 16-32-64-128, one
  basic block per stage, a 3×3 stem of stride 2 and no max-pool, the last stage at stride 1: output
  stride 8, so a 96 px image gives a 12×12 map (ResNet-18 at 224 px gives 7×7).

:func:`load_imagenet_weights` loads torchvision's ImageNet weights (``IMAGENET1K_V1``) of ResNet-18 / 50 / 101
into a ResNet (this module's or torchvision's) from ``COURSE_CACHE/weights`` under their official file names
(``resnet101-63fe2227.pth``, ...), fetched by ``python data_scripts/get_weights.py --model resnet101``;
it never downloads.

Input: images normalised with the ImageNet mean and std (``course_lib.data.normalize``), B×3×H×W.
``model.stages(x)`` → ``{"layer1": …, "layer2": …, "layer3": …, "layer4": …}`` (B×C_s×h_s×w_s);
``model(x)`` and ``model.patch_features(x)`` → the last stage, B×C×h×w; ``model.patch_size`` is the
output stride and ``model.stage_channels`` the channels of each stage.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..data.hub import WEIGHTS

STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class ResNetSpec:
    """Architecture of a ResNet: block type, blocks and widths per stage, stage strides, stem."""

    block: type
    layers: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    strides: tuple[int, int, int, int] = (1, 2, 2, 2)
    stem_width: int = 64
    imagenet_stem: bool = True  # 7×7 stride-2 convolution then 3×3 stride-2 max-pool; else 3×3 stride 2


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet50": ResNetSpec(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512)),
    "toy_resnet": ResNetSpec(BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128), strides=(1, 2, 2, 1),
                             stem_width=16, imagenet_stem=False),
}
"""The ResNets :func:`build_resnet` knows."""


class ResNet(nn.Module):
    """A ResNet without its classifier that exposes every stage (see the module docstring)."""

    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        if spec.imagenet_stem:
            self.conv1 = nn.Conv2d(3, spec.stem_width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, spec.stem_width, kernel_size=3, stride=2, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        in_channels = spec.stem_width
        self.stage_channels: dict[str, int] = {}
        for name, blocks, width, stride in zip(STAGES, spec.layers, spec.widths, spec.strides):
            stage, in_channels = self._make_stage(spec.block, in_channels, width, blocks, stride)
            self.add_module(name, stage)
            self.stage_channels[name] = in_channels
        self.out_channels = in_channels
        stem_stride = 4 if spec.imagenet_stem else 2
        self.patch_size = stem_stride * int(torch.tensor(spec.strides).prod())
        self._init_weights()

    @staticmethod
    def _make_stage(block: type, in_channels: int, width: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
        out_channels = width * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out_channels))
        layers = [block(in_channels, width, stride, downsample)]
        layers += [block(out_channels, width) for _ in range(1, blocks)]
        return nn.Sequential(*layers), out_channels

    def _init_weights(self) -> None:
        kaiming_fan_out_(self)

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×H×W normalised images → ``{stage name: B×C_s×h_s×w_s}`` for the four stages."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a B×3×H×W image batch, got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            features[name] = x
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's features, B×C×(H/patch_size)×(W/patch_size)."""
        return self.stages(x)["layer4"]

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Same as ``forward``: the dense features of the last stage (the backbone contract of the course)."""
        return self(x)


def kaiming_fan_out_(module: nn.Module) -> nn.Module:
    """torchvision's and PASS's initialisation of every ``Conv2d`` inside ``module``: weights Kaiming-normal
    with fan-out and the ReLU gain (std = √(2 / (C_out·k²))), biases left as PyTorch sets them; every affine
    ``BatchNorm2d`` weight 1, bias 0. No zero-init of the last BN of a residual branch (PASS builds its ResNets
    with ``zero_init_residual=False``). Official: ``LUSSeg/PASS src/resnet.py:354-363`` (applied to the whole
    model: backbone, pixel heads, the attention module, the segmentation classifier); ``:169`` and ``:603-608``
    for ``zero_init_residual``. Returns ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d) and layer.affine:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def build_resnet(name: str) -> ResNet:
    """A randomly initialised ResNet of :data:`RESNET_SPECS` (``"resnet18"``, ``"resnet50"``, ``"toy_resnet"``)."""
    if name not in RESNET_SPECS:
        raise ValueError(f"unknown ResNet {name!r}: use one of {', '.join(map(repr, RESNET_SPECS))}")
    return ResNet(RESNET_SPECS[name])


IMAGENET_WEIGHTS = "IMAGENET1K_V1"
"""The torchvision ImageNet weights the course registers (``course_lib.data.hub.WEIGHTS``: resnet18/50/101)."""


def imagenet_weights_file(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The file of torchvision's ImageNet weights of ``name`` (``"resnet18"``, ``"resnet50"``, ``"resnet101"``)
    in ``weights_dir`` (default ``COURSE_CACHE/weights``).

    Raises:
        ValueError: ``name`` has no registered ImageNet weights.
        WeightsNotFoundError: the file is missing (the message gives the command that fetches it), or
            ``CorruptWeightsError`` (a subclass) when a directory or an empty file is there.
    """
    from .backbones import official_weights_file  # backbones imports this module

    if not name.startswith("resnet") or name not in WEIGHTS:
        raise ValueError(f"no ImageNet weights are registered for {name!r}: use resnet18, resnet50 or resnet101")
    return official_weights_file(name, weights_dir)


def load_imagenet_weights(model: nn.Module, name: str, weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """Load torchvision's ImageNet weights of ``name`` (see :func:`imagenet_weights_file`) into ``model``
    with a strict ``load_state_dict``; the classifier ``fc.*`` is dropped when ``model`` has none (a
    backbone such as :class:`ResNet`). Dilated strides do not change the parameters. Returns ``model``.

    The file is read with ``torch.load(weights_only=True)``; one that cannot be read or holds another
    architecture raises ``CorruptWeightsError`` (a ``WeightsNotFoundError``) with its path and the command
    that fetches a fresh copy."""
    from .backbones import load_state_strict, read_weights  # backbones imports this module

    path = imagenet_weights_file(name, weights_dir)
    state = read_weights(path, name)
    if not hasattr(model, "fc"):
        state = {key: value for key, value in state.items() if not str(key).startswith("fc.")}
    return load_state_strict(model, state, path, name)
