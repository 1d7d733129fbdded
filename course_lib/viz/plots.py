"""Figures of samples: image, ground-truth label and prediction side by side, with a legend.

Colours follow :mod:`course_lib.viz.palettes` (class ``i`` → ``class_palette(n)[i]``, ignore
black). Figures are made with ``matplotlib.pyplot`` so that notebooks show them inline; close
them with ``plt.close(fig)`` when drawing many in a loop.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .palettes import class_palette, colorize, to_uint8_image


def legend_patches(
    class_names: Sequence[str], palette: np.ndarray, ids: Sequence[int] | None = None
) -> list[Patch]:
    """Legend handles (coloured squares) for ``class_names[i]`` in ``palette[i]``, for every id
    or only ``ids``; pass them to ``fig.legend(handles=...)`` or ``ax.legend(handles=...)``."""
    palette = np.asarray(palette)
    ids = range(len(class_names)) if ids is None else ids
    patches = []
    for class_id in ids:
        if not 0 <= class_id < min(len(class_names), len(palette)):
            raise ValueError(f"class id {class_id} has no name or colour "
                             f"({len(class_names)} names, {len(palette)} colours)")
        patches.append(Patch(facecolor=palette[class_id] / 255.0, edgecolor="black", linewidth=0.5,
                             label=class_names[class_id]))
    return patches


def _as_list(items, what: str) -> list:
    """A batch (B×… tensor or array) or a sequence → a list of single items."""
    if items is None:
        return []
    if isinstance(items, (torch.Tensor, np.ndarray)):
        return list(items)
    if isinstance(items, Sequence):
        return list(items)
    raise TypeError(f"{what} must be a batched tensor/array or a list, got {type(items).__name__}")


def show_samples(
    images,
    labels=None,
    predictions=None,
    titles: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int | None = None,
    palette: np.ndarray | None = None,
    panel_size: float = 2.2,
) -> Figure:
    """A grid of samples → matplotlib ``Figure``.

    Each sample is a column with up to three rows: the image, its label, the prediction (the
    rows that are given). More samples than ``ncols`` (default ``min(B, 6)``) wrap into further
    blocks of rows, so the figure has ``blocks × rows × ncols`` axes (unused ones are blank).

    Args:
        images: ``B×3×H×W`` tensor, ``B×H×W×3`` array, or a list of single images.
        labels, predictions: ``B×H×W`` integer maps or lists of ``H×W`` maps (negative = ignore);
            predictions should already be matched to classes (e.g. Hungarian).
        titles: one title per sample, over its image.
        class_names: names of the class ids; adds a legend of the classes shown.
        palette: ``n×3`` uint8 colours; default :func:`class_palette` for every id shown.
    """
    image_list = _as_list(images, "images")
    label_list, prediction_list = _as_list(labels, "labels"), _as_list(predictions, "predictions")
    count = len(image_list)
    if count == 0:
        raise ValueError("show_samples needs at least one image")
    for name, maps in (("labels", label_list), ("predictions", prediction_list), ("titles", titles or [])):
        if maps and len(maps) != count:
            raise ValueError(f"got {count} images but {len(maps)} {name}")
    rows = [("image", image_list)] + [(name, maps) for name, maps in
                                      (("label", label_list), ("prediction", prediction_list)) if maps]
    label_maps = [torch.as_tensor(m).cpu().numpy() for m in label_list + prediction_list]
    largest = max([int(m.max(initial=-1)) for m in label_maps] + [len(class_names or []) - 1])
    if palette is None:
        palette = class_palette(largest + 1)

    ncols = min(count, 6) if ncols is None else ncols
    if ncols < 1:
        raise ValueError(f"ncols must be positive, got {ncols}")
    blocks = math.ceil(count / ncols)
    fig, axes = plt.subplots(blocks * len(rows), ncols, squeeze=False,
                             figsize=(panel_size * ncols, panel_size * blocks * len(rows)))
    for ax in axes.flat:
        ax.set_axis_off()
    for index in range(count):
        block, column = divmod(index, ncols)
        for row, (row_name, items) in enumerate(rows):
            ax = axes[block * len(rows) + row, column]
            picture = to_uint8_image(items[index]) if row_name == "image" else colorize(items[index], palette)
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(row_name)
            if row_name == "image" and titles:
                ax.set_title(titles[index], fontsize=9)
    if class_names:
        shown = sorted({int(i) for m in label_maps for i in np.unique(m) if 0 <= i < len(class_names)}) \
            if label_maps else list(range(len(class_names)))
        handles = legend_patches(class_names, palette, shown)
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
        legend_height = 0.3 * math.ceil(len(handles) / 6)  # inches
        fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    return fig


def plot_class_colours(images, labels, class_names: Sequence[str], ax=None) -> Figure:
    """Each region's mean colour, one row of dots per class, drawn in that colour.

    Shows at a glance whether colour alone could tell the classes apart: if the rows share their
    colours, a colour-only method cannot. ``images`` B×H×W×3 in [0, 1] (or B×3×H×W), ``labels`` B×H×W.
    """
    images = np.asarray(torch.as_tensor(images).cpu(), dtype=np.float32)
    if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    labels = np.asarray(torch.as_tensor(labels).cpu())
    n_classes = len(class_names)
    # one (image, class) region per row of `sums`, averaged with a single bincount per channel
    region = (np.arange(len(labels))[:, None, None] * n_classes + labels).reshape(-1)
    keep = labels.reshape(-1) >= 0
    counts = np.bincount(region[keep], minlength=len(labels) * n_classes)
    sums = np.stack([np.bincount(region[keep], images[..., c].reshape(-1)[keep], len(labels) * n_classes)
                     for c in range(3)], 1)
    present = counts > 0
    colours = sums[present] / counts[present, None]
    class_of_region = np.flatnonzero(present) % n_classes
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.32 * n_classes + 1))
    else:
        fig = ax.figure
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(colours))
    ax.scatter(colours @ np.array([0.299, 0.587, 0.114]), class_of_region + jitter,
               c=np.clip(colours, 0, 1), s=14, edgecolors="none")
    ax.set_yticks(range(n_classes), class_names)
    ax.set_xlabel("mean luminance of the region (dot colour = its mean RGB)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig
