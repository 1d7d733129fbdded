"""Figures of lessons 05 and 06 (PASS): crops and their overlap grid, Sinkhorn, losses, attention, labels."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from ..data.transforms import denormalize
from ..viz import class_palette, colorize


def _image(tensor: torch.Tensor, normalised: bool = False) -> np.ndarray:
    """3×H×W tensor → H×W×3 array in [0, 1] for ``imshow``."""
    tensor = denormalize(tensor) if normalised else tensor
    return tensor.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def show_crops_and_grid(image: torch.Tensor, crops: Sequence[torch.Tensor], boxes: torch.Tensor,
                        grid_a: torch.Tensor, grid_b: torch.Tensor) -> plt.Figure:
    """The source image with the boxes of its multi-crop views, and the two large crops with the
    7×7 grid of their overlap (same colour = same source point; a mirrored crop shows it mirrored)."""
    fig, axes = plt.subplots(1, 3 + len(crops) - 2, figsize=(2.4 * (1 + len(crops)), 2.6))
    axes[0].imshow(_image(image))
    colours = plt.cm.tab10(np.arange(len(boxes)) % 10)
    for index, ((x, y, w, h, flip), colour) in enumerate(zip(boxes.tolist(), colours)):
        axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=2 if index < 2 else 1, color=colour,
                                    ls="-" if index < 2 else "--"))
    axes[0].set_title("source and crop boxes", fontsize=9)
    point_colours = plt.cm.viridis(np.linspace(0, 1, grid_a.shape[0] * grid_a.shape[1]))
    for ax, crop, grid, name in ((axes[1], crops[0], grid_a, "crop a"), (axes[2], crops[1], grid_b, "crop b")):
        size = crop.shape[-1]
        ax.imshow(_image(crop, normalised=True))
        xy = ((grid.reshape(-1, 2) + 1) / 2 * size - 0.5).numpy()
        ax.scatter(xy[:, 0], xy[:, 1], c=point_colours, s=12, edgecolors="white", linewidths=0.4)
        ax.set_title(f"{name}{' (flipped)' if boxes[0 if name == 'crop a' else 1, 4] else ''}", fontsize=9)
    for ax, crop, index in zip(axes[3:], crops[2:], range(2, len(crops))):
        ax.imshow(_image(crop, normalised=True))
        ax.set_title(f"small crop {index}", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def show_sinkhorn(scores: torch.Tensor, codes_by_iteration: Sequence[torch.Tensor], iterations: Sequence[int]) -> plt.Figure:
    """Soft assignments (samples × prototypes) of softmax(scores/ε) and after Sinkhorn iterations, with
    each prototype's total mass below (equipartition: every bar at B/K)."""
    columns = 1 + len(codes_by_iteration)
    fig, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 4.4), gridspec_kw={"height_ratios": [3, 1]},
                             sharex=True)
    matrices = [torch.softmax(scores / 0.05, dim=1)] + list(codes_by_iteration)
    titles = ["softmax(s/ε)"] + [f"Sinkhorn, {n} it." for n in iterations]
    batch, prototypes = scores.shape
    for column, (matrix, title) in enumerate(zip(matrices, titles)):
        axes[0, column].imshow(matrix.numpy(), aspect="auto", cmap="magma", vmin=0, vmax=1)
        axes[0, column].set_title(title, fontsize=9)
        axes[1, column].bar(np.arange(prototypes), matrix.sum(dim=0).numpy(), color="tab:blue")
        axes[1, column].axhline(batch / prototypes, color="k", ls="--", lw=1)
        axes[1, column].set_xlabel("prototype")
    axes[0, 0].set_ylabel("sample")
    axes[1, 0].set_ylabel("mass")
    fig.tight_layout()
    return fig


def plot_losses(history: Sequence[dict], keys: Sequence[str] = ("swav", "d2s", "p2p", "loss"), smooth: int = 1,
                ax: plt.Axes | None = None, title: str = "", uniform_level: float | None = None) -> plt.Axes:
    """Per-step loss curves of a training history (a moving average over ``smooth`` steps), with a dotted
    line at ``uniform_level`` (e.g. ln K, the cross-entropy of uniform predictions)."""
    if ax is None:
        ax = plt.subplots(figsize=(6, 3))[1]
    kernel = np.ones(smooth) / smooth
    for key in keys:
        values = np.array([row[key] for row in history if key in row])
        if len(values) >= smooth:
            ax.plot(np.arange(smooth - 1, len(values)), np.convolve(values, kernel, mode="valid"), label=key)
    if uniform_level is not None:
        ax.axhline(uniform_level, color="k", ls=":", lw=1, label="ln K")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return ax


def show_attention(images: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor | None = None,
                   channels: Sequence[int] = (0, 1, 2, 3)) -> plt.Figure:
    """Per image (rows): the image, a few attention channels a_c and the channel mean ā (same scale 0-1),
    and the ground truth when given."""
    columns = 2 + len(channels) + (labels is not None)
    fig, axes = plt.subplots(len(images), columns, figsize=(1.7 * columns, 1.8 * len(images)), squeeze=False)
    for row, image in enumerate(images):
        panels = [(_image(image), "image", None)]
        panels += [(attention[row, c].numpy(), f"channel {c}", "viridis") for c in channels]
        panels.append((attention[row].mean(dim=0).numpy(), "mean ā", "viridis"))
        if labels is not None:
            panels.append((colorize(labels[row].numpy()), "ground truth", None))
        for ax, (data, title, cmap) in zip(axes[row], panels):
            ax.imshow(data, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_tau_curve(curve: Sequence[dict], marks: dict[str, float] | None = None, ax: plt.Axes | None = None) -> plt.Axes:
    """mIoU, F-measure and Img-Acc of the pseudo-labels against τ, with vertical lines at ``marks``."""
    if ax is None:
        ax = plt.subplots(figsize=(6, 3))[1]
    taus = [row["tau"] for row in curve]
    for key, label in (("mIoU", "mIoU"), ("f_measure", "F-measure"), ("img_acc", "Img-Acc")):
        ax.plot(taus, [row[key] for row in curve], label=label)
    for (name, tau), style in zip((marks or {}).items(), ("--", ":", "-.")):
        ax.axvline(tau, color="k", ls=style, lw=1, label=f"{name} τ = {tau:.2f}")
    ax.set_xlabel("τ (threshold on the mean attention ā)")
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    return ax


def show_label_rows(images: torch.Tensor, rows: dict[str, Sequence[np.ndarray]], n_ids: int) -> plt.Figure:
    """Images in the first row, then one row of label maps (ids 0..n_ids-1) per entry of ``rows``;
    'other' (0) and ignore (-1) dark grey."""
    palette = class_palette(n_ids, background=True)
    fig, axes = plt.subplots(1 + len(rows), len(images), figsize=(1.6 * len(images), 1.7 * (1 + len(rows))),
                             squeeze=False)
    for column, image in enumerate(images):
        axes[0, column].imshow(_image(image))
    for row, (name, maps) in enumerate(rows.items(), start=1):
        for column, label in enumerate(maps[: len(images)]):
            axes[row, column].imshow(colorize(np.maximum(np.asarray(label), 0), palette))
        axes[row, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
