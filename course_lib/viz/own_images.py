"""Figures of lesson 10 (your own images): the folder, the label-free cluster sizes, overlays with their
legend, per-cluster exemplars and the final reveal against hidden labels.

Every function draws from what :func:`course_lib.segment.segment_folder` wrote (its
:class:`~course_lib.segment.SegmentReport`, label PNGs and overlays) or from a STEGO folder run's
``metrics.json``; none computes a result of its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ..data.image_folder import UNREADABLE, read_photo
from .palettes import class_palette, colorize
from .plots import legend_patches


def _hide_axes(axes) -> None:
    for ax in np.ravel(axes):
        ax.set_axis_off()


def show_photos(folder: str | Path, files: Sequence[str], columns: int = 6) -> Figure:
    """A grid of the image ``files`` of ``folder`` as :func:`~course_lib.data.image_folder.read_photo` reads
    them (greyscale → RGB, alpha over white), titled with name, W×H and the file's PIL mode; a file that is not
    a readable image shows the error's type instead."""
    rows = -(-len(files) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.65 * rows), squeeze=False)
    _hide_axes(axes)
    for ax, name in zip(axes.ravel(), files):
        path = Path(folder) / name
        try:
            with Image.open(path) as image:
                mode, (width, height) = image.mode, image.size
            ax.imshow(read_photo(path))
            ax.set_title(f"{name}\n{width}×{height} {mode}", fontsize=7)
        except UNREADABLE as error:
            ax.text(0.5, 0.5, f"{name}\nunreadable\n({type(error).__name__})", ha="center", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def plot_cluster_shares(shares: Mapping[str, Sequence[float]], ax=None) -> Figure:
    """Bars of the cluster shares (K values summing to 1 per entry of ``shares``, e.g. ``{"seed 0": ...}``), each
    entry sorted largest first, with the share 1/K of clusters of equal size dashed. One entry: the ticks name
    the cluster ids; several (e.g. two seeds, whose ids mean nothing to each other): the ticks are ranks."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.6))
    width = 0.8 / len(shares)
    for i, (name, values) in enumerate(shares.items()):
        values = np.sort(np.asarray(values, dtype=float))[::-1]
        ax.bar(np.arange(len(values)) + (i - (len(shares) - 1) / 2) * width, values, width, label=name)
    first = np.asarray(next(iter(shares.values())), dtype=float)
    ax.axhline(1 / len(first), color="black", linestyle="--", linewidth=0.8, label="1/K (equal sizes)")
    if len(shares) == 1:
        ax.set_xticks(np.arange(len(first)), [str(k) for k in np.argsort(-first, kind="stable")], fontsize=7)
        ax.set_xlabel("cluster id (largest first)")
    else:
        ax.set_xticks(np.arange(len(first)), [str(k + 1) for k in range(len(first))], fontsize=7)
        ax.set_xlabel("cluster rank by size (each run's clusters sorted on their own)")
    ax.set_ylabel("share")
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure


def show_overlays(report, files: Sequence[str], columns: int = 4) -> Figure:
    """The ``<name>_overlay.jpg`` that :func:`~course_lib.segment.segment_folder` wrote for ``files``, with the
    run's legend (cluster k → colour) below."""
    entries = {entry["file"]: entry for entry in report.images}
    rows = -(-len(files) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.7), squeeze=False)
    _hide_axes(axes)
    for ax, name in zip(axes.ravel(), files):
        with Image.open(Path(report.out) / entries[name]["overlay"]) as shown:
            ax.imshow(np.array(shown))
        ax.set_title(name, fontsize=7)
    fig.legend(handles=legend_patches(report.legend, class_palette(report.n_clusters)), loc="lower center",
               ncols=min(6, report.n_clusters), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (report.n_clusters // 6), 1, 1))
    return fig


def _highlight(photo: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The image where ``mask`` holds, outlined in ``colour``; elsewhere faded to a light grey."""
    grey = photo.mean(axis=2, keepdims=True)
    shown = np.where(mask[..., None], photo, 0.25 * grey + 0.75 * 235).astype(np.uint8)
    edge = mask ^ np.pad(mask, 1, mode="edge")[2:, 1:-1] | mask ^ np.pad(mask, 1, mode="edge")[1:-1, 2:]
    shown[edge] = colour
    return shown


def show_exemplars(report, labels: Mapping[str, np.ndarray], exemplars: Sequence[Sequence[str]],
                   clusters: Sequence[int], shares: Sequence[float]) -> Figure:
    """For each cluster id in ``clusters`` a row of its exemplar images (``exemplars[k]``,
    :func:`~course_lib.segment.cluster_exemplars`), the cluster's pixels kept and the rest faded; ``labels``
    are the label maps (:func:`~course_lib.segment.read_labels`), ``shares`` the folder-level cluster shares."""
    columns = max(1, max(len(exemplars[k]) for k in clusters))
    palette = class_palette(report.n_clusters)
    fig, axes = plt.subplots(len(clusters), columns, figsize=(1.4 * columns + 1.2, 1.4 * len(clusters)), squeeze=False)
    _hide_axes(axes)
    for row, k in zip(axes, clusters):
        for ax, name in zip(row, exemplars[k]):
            ax.imshow(_highlight(read_photo(Path(report.images_dir) / name), labels[name] == k, palette[k]))
        row[0].text(-0.08, 0.5, f"{report.legend[k]}\n{100 * shares[k]:.1f} %", transform=row[0].transAxes,
                    ha="right", va="center", fontsize=7, color=palette[k] / 255 * 0.7)
    fig.tight_layout(rect=(0.12, 0, 1, 1))
    return fig


def show_reveal(report, labels: Mapping[str, np.ndarray], hidden: Mapping[str, np.ndarray],
                assignment: Sequence[int], classes: Sequence[str], files: Sequence[str]) -> Figure:
    """Per file in ``files``: the image, its clusters renamed to classes by ``assignment`` (cluster id → class
    id, -1 unmatched, shown black), and the hidden ground truth (-1 ignore, black), with the class legend."""
    palette = class_palette(len(classes))
    mapping = np.asarray(assignment, dtype=np.int64)
    fig, axes = plt.subplots(3, len(files), figsize=(1.6 * len(files), 5.2), squeeze=False)
    _hide_axes(axes)
    for column, name in enumerate(files):
        panels = (read_photo(Path(report.images_dir) / name), colorize(mapping[labels[name]], palette),
                  colorize(hidden[name], palette))
        for row, (panel, title) in enumerate(zip(panels, (name, "clusters → classes", "hidden labels"))):
            axes[row, column].imshow(panel)
            axes[row, column].set_title(title, fontsize=7)
    fig.legend(handles=legend_patches(classes, palette), loc="lower center", ncols=min(6, len(classes)),
               fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05 + 0.025 * (len(classes) // 6), 1, 1))
    return fig
