"""Image normalisation and joint (image, label) transforms.

Samples hold the image un-normalised (3×H×W float in [0, 1]) and the label as H×W int64 (-1 ignore).
Geometric transforms act on both at once, so that they stay aligned: bilinear (antialiased) resampling
for the image, nearest for the label (a label id is never blended with its neighbour). ImageNet
mean/std normalisation is separate (:func:`normalize`), applied right before a backbone, as DINO and
STEGO do (``T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])``).

Sizes follow torchvision: ``Resize(s)`` scales the short side to ``s`` (long side ``int(s·long/short)``),
``CenterCrop`` puts the extra pixel of an odd margin by ``round`` like ``torchvision.transforms.functional
.center_crop``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, Optional[torch.Tensor]]
"""An (image, label) pair; label may be None for image-only use."""


def _channel_stats(image: torch.Tensor, values: Sequence[float]) -> torch.Tensor:
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected a 3×H×W or B×3×H×W image tensor, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"expected a float image in [0, 1], got dtype {image.dtype}; divide a uint8 image by 255 first")
    return torch.tensor(values, dtype=image.dtype, device=image.device).view(3, 1, 1)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(image − ImageNet mean) / ImageNet std for a 3×H×W or B×3×H×W float image in [0, 1]."""
    return (image - _channel_stats(image, IMAGENET_MEAN)) / _channel_stats(image, IMAGENET_STD)


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: back to [0, 1] colours (3×H×W or B×3×H×W), e.g. for plotting."""
    return image * _channel_stats(image, IMAGENET_STD) + _channel_stats(image, IMAGENET_MEAN)


def _check_pair(image: torch.Tensor, label: torch.Tensor | None) -> tuple[int, int]:
    if image.ndim != 3:
        raise ValueError(f"joint transforms take a 3×H×W image, got shape {tuple(image.shape)}")
    if label is not None and tuple(label.shape) != tuple(image.shape[1:]):
        raise ValueError(f"label shape {tuple(label.shape)} does not match image size {tuple(image.shape[1:])}")
    return image.shape[1], image.shape[2]


def _pair_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]) -> Pair:
    """Resize to ``size`` = (H, W): bilinear antialiased image, nearest label (half-pixel centres, like PIL)."""
    _check_pair(image, label)
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if label is not None:
        label = F.interpolate(label[None, None].double(), size=size, mode="nearest-exact")[0, 0].to(label.dtype)
    return image, label


def crop_pair(image: torch.Tensor, label: torch.Tensor | None, top: int, left: int, height: int, width: int) -> Pair:
    """The ``height×width`` window at (``top``, ``left``) of both image and label (views, no copy)."""
    full_height, full_width = _check_pair(image, label)
    if top < 0 or left < 0 or top + height > full_height or left + width > full_width:
        raise ValueError(
            f"crop {height}×{width} at ({top}, {left}) does not fit in a {full_height}×{full_width} image; "
            "resize the image first (e.g. Resize(short_side) before the crop)"
        )
    window = (slice(top, top + height), slice(left, left + width))
    return image[(slice(None), *window)], None if label is None else label[window]


class Resize:
    """Joint resize: an int scales the short side to it (aspect kept), (H, W) sets both sides."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) an image of ``height×width`` is resized to (torchvision's rule)."""
        if not isinstance(self.size, int):
            return _pair_size(self.size)
        short, long = min(height, width), max(height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        height, width = _check_pair(image, label)
        return resize_pair(image, label, self.output_size(height, width))

    def __repr__(self) -> str:
        return f"Resize({self.size!r})"


class CenterCrop:
    """Joint centre crop of ``size`` (int or (H, W)); raises if the image is smaller than the crop."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair_size(size)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        height, width = _check_pair(image, label)
        crop_height, crop_width = self.size
        top = int(round((height - crop_height) / 2.0))
        left = int(round((width - crop_width) / 2.0))
        return crop_pair(image, label, top, left, crop_height, crop_width)

    def __repr__(self) -> str:
        return f"CenterCrop({self.size!r})"


class RandomCrop:
    """Joint crop of ``size`` at a uniformly random position (``generator`` for reproducible draws)."""

    def __init__(self, size: int | Sequence[int], generator: torch.Generator | None = None) -> None:
        self.size = _pair_size(size)
        self.generator = generator

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        height, width = _check_pair(image, label)
        crop_height, crop_width = self.size
        if crop_height > height or crop_width > width:
            raise ValueError(
                f"RandomCrop{self.size} is larger than the {height}×{width} image; resize the image first"
            )
        top = int(torch.randint(height - crop_height + 1, (1,), generator=self.generator))
        left = int(torch.randint(width - crop_width + 1, (1,), generator=self.generator))
        return crop_pair(image, label, top, left, crop_height, crop_width)

    def __repr__(self) -> str:
        return f"RandomCrop({self.size!r})"


class RandomHorizontalFlip:
    """Flip image and label left–right together with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p = p
        self.generator = generator

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        _check_pair(image, label)
        if float(torch.rand((1,), generator=self.generator)) < self.p:
            image = image.flip(-1)
            label = None if label is None else label.flip(-1)
        return image, label

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply joint transforms in order: ``Compose([Resize(320), CenterCrop(320)])(image, label)``."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        for transform in self.transforms:
            image, label = transform(image, label)
        return image, label

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomRecolour:
    """Recolour a 3×H×W crop (uint8, or float in [0, 1]; the dtype is kept) with probability ``p``: its grey
    levels, through a random gamma (0.5-2) and a random polarity, are mapped between two random colours.

    The toy world colourises every region this way (:mod:`course_lib.data.toyworld`), so colour and polarity
    are nuisances by construction; after this augmentation two views of one image agree only in texture and
    shape, which is what self-supervised features of the toy world should encode.
    """

    def __init__(self, p: float = 1.0):
        self.p = p

    def __call__(self, crop: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or float(torch.rand(())) >= self.p:  # off: no random draw, other augmentations unchanged
            return crop
        scale = 1.0 if crop.is_floating_point() else 255.0
        weights = torch.tensor([0.299, 0.587, 0.114], device=crop.device)[:, None, None]
        grey = ((crop.float() * weights).sum(0) / scale).clamp(0, 1)
        grey = grey ** math.exp(float(torch.empty(()).uniform_(math.log(0.5), math.log(2.0))))
        if float(torch.rand(())) < 0.5:
            grey = 1 - grey
        dark, light = torch.rand(3, device=crop.device) * 0.5, 0.5 + torch.rand(3, device=crop.device) * 0.5
        out = dark[:, None, None] + grey * (light - dark)[:, None, None]
        return out.to(crop.dtype) if crop.is_floating_point() else (out * 255).round().to(crop.dtype)
