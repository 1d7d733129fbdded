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


def scale_flip_pad_crop(image: torch.Tensor, maps: torch.Tensor, crop: int, scale: float, flip: bool, top: int,
                        left: int, image_fill: Sequence[float], map_fill: Sequence[float]) -> tuple[torch.Tensor,
                                                                                                      torch.Tensor]:
    """SegSort's training augmentation with its random draws given (``seg_models/image_reader.py:10-124,
    230-243`` of jyhjinghwang/SegSort), in the official order: scale, mirror, pad, crop.

    Args:
        image: 3×H×W float image in [0, 1].
        maps: K×H×W float maps that travel with the image (label, initial cluster grid, y / x coordinates,
            over-segmentation, ...); resampled by nearest neighbour, so integer values stay exact.
        crop: side of the square output.
        scale: the factor of both sides: the new size is ``int(H·scale) × int(W·scale)`` (truncated, as
            ``tf.to_int32``); the image bilinearly (no antialiasing, as ``tf.image.resize_images``), the maps by
            ``floor(dst · in / out)`` nearest sampling (TF1's ``resize_nearest_neighbor``).
        flip: mirror left-right (after scaling, before cropping).
        top, left: the crop's corner in the padded image (0 ≤ top ≤ max(crop, h) − crop).
        image_fill: the 3 values the image is padded with (the official pads the mean-subtracted image with 0,
            i.e. with the mean colour).
        map_fill: one value per map for the padding (the official pads labels with the ignore label).

    Returns:
        the crop×crop image (3×crop×crop) and maps (K×crop×crop); the padding goes below and right of the
        scaled image, as ``tf.image.pad_to_bounding_box(..., 0, 0, ...)``.
    """
    if maps.ndim != 3 or maps.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"maps must be K×H×W of the image's {tuple(image.shape[-2:])}, got {tuple(maps.shape)}")
    if len(map_fill) != len(maps):
        raise ValueError(f"map_fill needs one value per map ({len(maps)}), got {len(map_fill)}")
    height, width = image.shape[-2:]
    size = (max(1, int(height * scale)), max(1, int(width * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    maps = F.interpolate(maps[None], size=size, mode="nearest")[0]
    if flip:
        image, maps = image.flip(-1), maps.flip(-1)
    padded = (max(crop, size[0]), max(crop, size[1]))
    if not (0 <= top <= padded[0] - crop and 0 <= left <= padded[1] - crop):
        raise ValueError(f"crop {crop} at ({top}, {left}) does not fit in the padded {padded[0]}×{padded[1]} image")
    canvas = torch.tensor(image_fill, dtype=image.dtype).view(3, 1, 1).repeat(1, *padded)
    canvas[:, :size[0], :size[1]] = image
    map_canvas = torch.tensor(map_fill, dtype=maps.dtype).view(-1, 1, 1).repeat(1, *padded)
    map_canvas[:, :size[0], :size[1]] = maps
    window = (slice(None), slice(top, top + crop), slice(left, left + crop))
    return canvas[window], map_canvas[window]


def random_scale_flip_pad_crop(image: torch.Tensor, maps: torch.Tensor, crop: int,
                               scale_range: tuple[float, float], image_fill: Sequence[float],
                               map_fill: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`scale_flip_pad_crop` with the official random draws (torch's global generator): scale uniform in
    ``scale_range`` (``image_reader.py:25-26``: 0.5 to 2.0), mirror with probability 0.5
    (``image_reader.py:54-58``), the crop's corner uniform over the padded image (``tf.random_crop``)."""
    height, width = image.shape[-2:]
    low, high = scale_range
    scale = low + (high - low) * float(torch.rand(()))
    flip = float(torch.rand(())) < 0.5
    padded = (max(crop, int(height * scale)), max(crop, int(width * scale)))
    top = int(torch.randint(padded[0] - crop + 1, ()))
    left = int(torch.randint(padded[1] - crop + 1, ()))
    return scale_flip_pad_crop(image, maps, crop, scale, flip, top, left, image_fill, map_fill)
