"""Figures of lessons 03 and 04: loss curves (static and live), correspondence maps, histograms."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

CURVES = (("correlation", "λ-weighted sum"), ("self", "self"), ("knn", "kNN"), ("rand", "random"),
          ("total", "total (sum + probes)"), ("linear", "linear probe"), ("cluster", "cluster probe"))


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (shorter at the start), same length as ``values``."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0 or window <= 1:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def plot_loss_curves(history: Sequence[dict], axes=None, window: int = 25, keys: Sequence[str] | None = None):
    """Two panels: the correlation terms and their λ-weighted sum (left); the probes' losses and the total
    (right); smoothed over ``window`` steps."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    keys = set(keys or [key for key, _ in CURVES])
    steps = np.arange(1, len(history) + 1)
    for ax, group in zip(axes, (("correlation", "self", "knn", "rand"), ("total", "linear", "cluster"))):
        ax.clear()
        for key, label in CURVES:
            if key in group and key in keys and history:
                ax.plot(steps, moving_average([h[key] for h in history], window), label=label, lw=1.2)
        ax.set_xlabel("step")
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
    axes[0].set_title("correlation loss terms")
    axes[1].set_title("probes (on detached codes) and total")
    return axes


class LiveLossPlot:
    """A training callback that redraws :func:`plot_loss_curves` in a notebook every ``every`` steps.

    Usage: ``train_stego(..., callback=LiveLossPlot(every=50))``; the last drawing stays as the cell's figure.
    """

    def __init__(self, every: int = 50, window: int = 25):
        from IPython.display import display

        self.every, self.window, self.history = every, window, []
        self.figure, self.axes = plt.subplots(1, 2, figsize=(11, 3.4))
        plt.close(self.figure)
        self.handle = display(self.figure, display_id=True)

    def __call__(self, step: int, losses: dict) -> None:
        self.history.append(losses)
        if step % self.every == 0:
            self.redraw()

    def redraw(self) -> None:
        plot_loss_curves(self.history, self.axes, self.window)
        self.figure.tight_layout()
        if self.handle is not None:
            self.handle.update(self.figure)


def show_correspondence(correlation: torch.Tensor, anchor: tuple[int, int], image_a: np.ndarray,
                        image_b: np.ndarray, axes=None, title: str = "F", vmin: float = -1, vmax: float = 1):
    """Image a with the anchor cell marked, then the h×w map ``correlation[anchor]`` (H×W×I×J tensor) of
    its similarity to every cell of image b, drawn over image b."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(6, 3))
    h, w = correlation.shape[:2]
    i, j = anchor
    axes[0].imshow(image_a, interpolation="nearest")
    cell_h, cell_w = image_a.shape[0] / h, image_a.shape[1] / w
    axes[0].add_patch(plt.Rectangle((j * cell_w, i * cell_h), cell_w, cell_h, fill=False, ec="red", lw=2))
    axes[0].set_title("anchor")
    axes[1].imshow(image_b, interpolation="nearest")
    shown = axes[1].imshow(correlation[i, j].cpu().numpy(), cmap="RdBu_r", vmin=vmin, vmax=vmax, alpha=0.65,
                           interpolation="nearest",
                           extent=(-0.5, image_b.shape[1] - 0.5, image_b.shape[0] - 0.5, -0.5))
    axes[1].set_title(title)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return shown


def correspondence_histograms(values: dict[str, torch.Tensor], shifts: dict[str, float] | None = None, ax=None,
                              bins: int = 80):
    """Histograms (densities) of correspondence values per pair kind, with each kind's shift b as a line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (name, tensor) in zip(colours, values.items()):
        ax.hist(tensor.flatten().cpu().numpy(), bins=bins, density=True, histtype="step", lw=1.5, color=colour,
                label=name)
        if shifts and name in shifts:
            ax.axvline(shifts[name], color=colour, ls="--", lw=1)
    ax.set_xlabel("correspondence")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ax


def qualitative_grid(images: Sequence[np.ndarray], columns: dict[str, Sequence], class_names: Sequence[str] | None = None,
                     panel_size: float = 1.9):
    """One row per image: the image, then one panel per named column of class-id maps (already matched to
    classes; negative ids are ignore). Returns the figure."""
    from ..viz import class_palette, colorize, legend_patches

    palette = class_palette(len(class_names) if class_names else 1 + max(int(np.max(m)) for maps in columns.values() for m in maps))
    rows, names = len(images), ["image", *columns]
    figure, axes = plt.subplots(rows, len(names), figsize=(panel_size * len(names), panel_size * rows), squeeze=False)
    for row in range(rows):
        axes[row, 0].imshow(images[row], interpolation="nearest")
        for column, maps in enumerate(columns.values(), start=1):
            axes[row, column].imshow(colorize(np.asarray(maps[row]), palette), interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for column, name in enumerate(names):
        axes[0, column].set_title(name, fontsize=10)
    if class_names:
        figure.legend(handles=legend_patches(class_names, palette), loc="lower center", ncol=min(len(class_names), 6),
                      fontsize=8, frameon=False)
        figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure
