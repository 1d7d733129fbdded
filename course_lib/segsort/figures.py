"""Figures of lesson 07 (SegSort): the vMF density, pixel sorting frames, priors, the segment softmax, retrieval.

Every function draws into a new Matplotlib figure and returns it; :func:`sorting_explorer` is the
ipywidgets slider over the pixel-sorting iterations (lesson 07 shows the static frames beside it).
"""
from __future__ import annotations

import io
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.special import i0e
from skimage.segmentation import mark_boundaries

from ..viz import colorize


def _numpy_image(image) -> np.ndarray:
    """3×H×W tensor or H×W×3 array in [0, 1] → H×W×3 float array."""
    image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return image.transpose(1, 2, 0) if image.shape[0] == 3 else image


def outlined(image, segments) -> np.ndarray:
    """The image with the boundaries of ``segments`` (H×W ids, any resolution ≤ the image's) in yellow."""
    image = _numpy_image(image)
    segments = np.asarray(segments)
    if segments.shape != image.shape[:2]:
        scale = image.shape[0] // segments.shape[0], image.shape[1] // segments.shape[1]
        segments = segments.repeat(scale[0], 0).repeat(scale[1], 1)
    return mark_boundaries(image, segments, color=(1, 1, 0))


def plot_vmf_on_circle(kappas: Sequence[float] = (1, 10, 50)) -> Figure:
    """The von Mises-Fisher density on the circle (D = 2), f(θ) = exp(κ cos θ) / (2π I₀(κ)), for several κ."""
    theta = np.linspace(-np.pi, np.pi, 721)
    fig = plt.figure(figsize=(10, 3.4))
    line = fig.add_subplot(1, 2, 1)
    polar = fig.add_subplot(1, 2, 2, projection="polar")
    for kappa in kappas:
        density = np.exp(kappa * (np.cos(theta) - 1)) / (2 * np.pi * i0e(kappa))   # i0e(κ) = I₀(κ)·e^-κ
        line.plot(np.degrees(theta), density, label=f"κ = {kappa:g}")
        polar.plot(theta, density / density.max(), label=f"κ = {kappa:g}")
    line.set_xlabel("angle between e and μ (degrees)")
    line.set_ylabel("density f(e | μ, κ)")
    line.legend()
    line.set_title("vMF on the unit circle")
    polar.set_yticklabels([])
    polar.set_title("same, around the circle (scaled)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_sorting_frames(image, history: Sequence[torch.Tensor], steps: Sequence[int]) -> Figure:
    """Segment boundaries of one image after the given iterations of pixel sorting (0 = the grid)."""
    fig, axes = plt.subplots(1, len(steps), figsize=(1.7 * len(steps), 2.0))
    for ax, step in zip(np.atleast_1d(axes), steps):
        ax.imshow(outlined(image, history[step]))
        ax.set_title("grid (iteration 0)" if step == 0 else f"iteration {step}", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def sorting_explorer(image, history: Sequence[torch.Tensor], width: int = 288):
    """An ipywidgets slider over the pixel-sorting iterations of one image (live in a running kernel).

    The frames are pre-rendered PNGs shown in an ``ipywidgets.Image`` (no Output widget, so the notebook also
    executes headless without widget state)."""
    import ipywidgets

    frames = []
    for segments in history:
        buffer = io.BytesIO()
        plt.imsave(buffer, outlined(image, segments), format="png")
        frames.append(buffer.getvalue())
    picture = ipywidgets.Image(value=frames[-1], format="png", width=width)
    slider = ipywidgets.IntSlider(len(frames) - 1, 0, len(frames) - 1, description="iteration")
    slider.observe(lambda change: setattr(picture, "value", frames[change["new"]]), names="value")
    return ipywidgets.VBox([slider, picture])


def plot_priors(images, labels, priors: dict[str, torch.Tensor]) -> Figure:
    """Rows: image, ground truth and each prior's regions (name → N×H×W ids); one column per image."""
    rows = 2 + len(priors)
    fig, axes = plt.subplots(rows, len(images), figsize=(1.7 * len(images), 1.75 * rows), squeeze=False)
    for column, (image, label) in enumerate(zip(images, labels)):
        axes[0, column].imshow(_numpy_image(image))
        axes[1, column].imshow(colorize(np.asarray(label)))
        for row, (name, segments) in enumerate(priors.items(), start=2):
            regions = np.asarray(segments[column])
            axes[row, column].imshow(outlined(image, regions))
            axes[row, column].set_title(f"{name}: {len(np.unique(regions))} regions", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].set_title("image", fontsize=8)
    axes[1, 0].set_title("ground truth", fontsize=8)
    fig.tight_layout()
    return fig


def plot_segment_softmax(probabilities: dict[str, np.ndarray], own: int) -> Figure:
    """Bar plots of p(s | e_i) over the segments of a batch for several networks; ``own`` is highlighted."""
    fig, axes = plt.subplots(1, len(probabilities), figsize=(4.5 * len(probabilities), 2.3), squeeze=False)
    for ax, (name, p) in zip(axes[0], probabilities.items()):
        colours = np.where(np.arange(len(p)) == own, "tab:red", "tab:gray")
        ax.bar(np.arange(len(p)), p, color=colours, width=1.0)
        ax.set_title(f"{name}: p(own segment) = {p[own]:.2f}", fontsize=9)
        ax.set_xlabel("segment of the batch")
        ax.set_ylabel("p(s | e_i)")
    fig.tight_layout()
    return fig


def plot_retrieval(query_image, query_mask, neighbours: Sequence[tuple], class_names: Sequence[str],
                   predicted: int) -> Figure:
    """A query segment and its nearest training segments: ``neighbours`` holds (image, mask, class id,
    cosine similarity) tuples; the masks are H×W booleans at the image resolution."""
    fig, axes = plt.subplots(1, 1 + len(neighbours), figsize=(1.6 * (1 + len(neighbours)), 2.0))
    dim = lambda image, mask: np.where(np.asarray(mask)[..., None], _numpy_image(image), 0.25 * _numpy_image(image))
    axes[0].imshow(dim(query_image, query_mask))
    axes[0].set_title(f"query → {class_names[predicted]}", fontsize=9, color="tab:red")
    for ax, (image, mask, class_id, similarity) in zip(axes[1:], neighbours):
        ax.imshow(dim(image, mask))
        ax.set_title(f"{class_names[class_id]} ({similarity:.2f})", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig
