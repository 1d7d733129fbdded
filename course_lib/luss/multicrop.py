"""Multi-crop augmentation that remembers where each crop came from (PASS's pre-training input).

SwAV's multi-crop (Caron et al., 2020, §3.2): a few large crops and several small ones of every image,
each a random resized crop (area ``scale`` of the image, aspect ratio 3/4-4/3), flipped with p 0.5,
colour-jittered (0.8, 0.8, 0.8, 0.2 with p 0.8), greyed (p 0.2) and blurred (p 0.5); optionally recoloured
the toy world's way (:class:`course_lib.data.transforms.RandomRecolour`) or inverted. PASS also needs
the *geometry* of the first two crops, to align their pixels (:mod:`course_lib.luss.p2p`): each crop
comes with its box ``(x, y, w, h, flip)`` in source-image pixels (x, y the top-left corner; flip 1
when the crop was mirrored).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..data.transforms import RandomRecolour, normalize
from .p2p import overlap_grids


@dataclass(frozen=True)
class CropSpec:
    """``number`` crops of ``size`` px covering an area share in [``min_scale``, ``max_scale``]."""

    size: int
    number: int
    min_scale: float
    max_scale: float


def random_crop_box(height: int, width: int, scale: tuple[float, float],
                    ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box in an ``height×width`` image: (x, y, w, h) integer pixels."""
    top, left, box_height, box_width = v2.RandomResizedCrop.get_params(
        torch.empty(1, height, width), list(scale), list(ratio))
    return left, top, box_width, box_height


def crop_resize_flip(image: torch.Tensor, box: Sequence[float], size: int) -> torch.Tensor:
    """The ``box`` = (x, y, w, h, flip) of a C×H×W image, resized (antialiased bilinear) to size×size,
    mirrored when flip is set."""
    x, y, w, h, flip = (int(v) for v in box)
    crop = TF.resized_crop(image, y, x, h, w, [size, size], antialias=True)
    return crop.flip(-1) if flip else crop


def colour_distortion(size: int, blur_sigma: tuple[float, float] = (0.1, 2.0), grayscale_p: float = 0.2,
                      invert_p: float = 0.0, jitter_p: float = 0.8, recolour_p: float = 0.0) -> v2.Compose:
    """SwAV's colour distortion of a 3×size×size crop in [0, 1] (``LUSSeg/PASS src/multicropdataset.py:131-161``,
    also ``LUSSeg/ImageNetSegModel util/datasets.py:93-120``): colour jitter (0.8, 0.8, 0.8, 0.2) with
    probability ``jitter_p``, grey with ``grayscale_p``, the toy world's recolouring with ``recolour_p``,
    negative with ``invert_p``, then a Gaussian blur of σ in ``blur_sigma`` (px) with probability 0.5 (kernel
    about 10 % of the crop)."""
    kernel = 2 * max(1, round(0.05 * size)) + 1
    return v2.Compose([
        v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=jitter_p),
        v2.RandomGrayscale(p=grayscale_p),
        RandomRecolour(recolour_p),
        v2.RandomInvert(p=invert_p),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=blur_sigma)], p=0.5),
    ])


class MultiCropWithBoxes:
    """One 3×H×W float image in [0, 1] → (normalised crops, V×5 float boxes (x, y, w, h, flip)).

    ``crops`` lists the :class:`CropSpec` groups in order (large crops first); crops of one group share
    a size. ``blur_sigma`` is the Gaussian blur's σ range in px of the crop (SwAV: 0.1-2 at 224 px);
    ``grayscale_p`` the probability of a grey crop (SwAV: 0.2) and ``invert_p`` of a negative one (SwAV:
    0; the toy world shows every texture in positive or negative, so its preset teaches that invariance);
    ``jitter_p`` the probability of SwAV's colour jitter and ``recolour_p`` of
    :class:`~course_lib.data.transforms.RandomRecolour`.
    """

    def __init__(self, crops: Sequence[CropSpec], blur_sigma: tuple[float, float] = (0.1, 2.0),
                 grayscale_p: float = 0.2, invert_p: float = 0.0, jitter_p: float = 0.8, recolour_p: float = 0.0):
        if not crops:
            raise ValueError("MultiCropWithBoxes needs at least one CropSpec")
        self.crops = list(crops)
        self.colour = {spec.size: colour_distortion(spec.size, blur_sigma, grayscale_p, invert_p, jitter_p, recolour_p)
                       for spec in self.crops}

    @classmethod
    def from_config(cls, config) -> "MultiCropWithBoxes":
        """The multi-crop of a pre-training or attention config (its ``crops``, ``blur_sigma``,
        ``grayscale_p``, ``invert_p``, ``jitter_p`` and ``recolour_p``)."""
        return cls(config.crops, config.blur_sigma, config.grayscale_p, config.invert_p, config.jitter_p,
                   config.recolour_p)

    @property
    def n_crops(self) -> int:
        return sum(spec.number for spec in self.crops)

    def __call__(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        height, width = image.shape[-2:]
        crops, boxes = [], []
        for spec in self.crops:
            for _ in range(spec.number):
                flip = int(torch.rand(()) < 0.5)
                box = (*random_crop_box(height, width, (spec.min_scale, spec.max_scale)), flip)
                crop = self.colour[spec.size](crop_resize_flip(image, box, spec.size).clamp(0, 1))
                crops.append(normalize(crop))
                boxes.append(box)
        return crops, torch.tensor(boxes, dtype=torch.float32)


class MultiCropDataset(Dataset):
    """Wraps a dataset of sample dicts (``"image"`` 3×H×W in [0, 1]): item ``i`` is a dict with
    ``"crops"`` (list of 3×s×s), ``"boxes"`` (V×5), and the 7×7 sampling grids of the overlap of the
    first two crops, ``"grid_a"``, ``"grid_b"`` (G×G×2) and ``"overlap"`` (bool), see
    :func:`course_lib.luss.p2p.overlap_grids` (``outside``: the grid value of crops that do not overlap)."""

    def __init__(self, dataset: Dataset, transform: MultiCropWithBoxes, grid_size: int = 7,
                 outside: float | None = None):
        if transform.n_crops < 2:
            raise ValueError("pixel-to-pixel alignment needs at least two crops")
        self.dataset, self.transform, self.grid_size, self.outside = dataset, transform, grid_size, outside

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        crops, boxes = self.transform(self.dataset[index]["image"])
        grid_a, grid_b, overlap = overlap_grids(boxes[None, 0], boxes[None, 1], self.grid_size, self.outside)
        return {"crops": crops, "boxes": boxes, "grid_a": grid_a[0], "grid_b": grid_b[0], "overlap": overlap[0]}
