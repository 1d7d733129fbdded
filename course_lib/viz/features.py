"""Pictures of dense features: PCA as RGB, attention maps, correlation maps, and an interactive explorer."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .palettes import to_uint8_image


def pca_rgb(features: torch.Tensor, n_fit: int = 20_000, seed: int = 0) -> np.ndarray:
    """First three principal components of N×C×h×w features, shared across the set, as N×h×w×3 in [0, 1].

    The components are fitted on (at most ``n_fit``) feature vectors of all images together, so the
    same colour means the same direction in feature space in every image; each channel is min-max scaled
    on the 1st-99th percentiles.
    """
    n, channels, height, width = features.shape
    flat = features.float().permute(0, 2, 3, 1).reshape(-1, channels)
    generator = torch.Generator().manual_seed(seed)
    sample = flat[torch.randperm(len(flat), generator=generator)[:n_fit]]
    mean = sample.mean(0)
    _, _, components = torch.linalg.svd(sample - mean, full_matrices=False)
    projected = (flat - mean) @ components[:3].T
    low, high = torch.quantile(projected[:n_fit], 0.01, dim=0), torch.quantile(projected[:n_fit], 0.99, dim=0)
    rgb = ((projected - low) / (high - low).clamp(min=1e-8)).clamp(0, 1)
    return rgb.reshape(n, height, width, 3).numpy()


def show_feature_rows(images: Sequence, rows: Mapping[str, Sequence], cmap: str | None = None,
                      image_title: str = "image", size: float = 1.8) -> Figure:
    """A grid: the images on the first row, then one row per entry of ``rows`` (name → per-image maps or
    RGB arrays, displayed at the image size). Maps use ``cmap``; RGB arrays are shown as they are."""
    images = [to_uint8_image(image) for image in images]
    n_rows, n_cols = 1 + len(rows), len(images)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    for j, image in enumerate(images):
        axes[0, j].imshow(image)
    axes[0, 0].set_ylabel(image_title)
    for i, (name, maps) in enumerate(rows.items(), start=1):
        for j, value in enumerate(maps):
            value = np.asarray(value)
            extent = (-0.5, images[j].shape[1] - 0.5, images[j].shape[0] - 0.5, -0.5)
            axes[i, j].imshow(value, cmap=None if value.ndim == 3 else cmap, extent=extent,
                              interpolation="nearest")
        axes[i, 0].set_ylabel(name)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def show_correlation(images: Sequence, features: Mapping[str, torch.Tensor], query_image: int,
                     query_yx: tuple[int, int], patch_size: int, size: float = 1.8) -> Figure:
    """Cosine similarity of the patch at ``query_yx`` (pixels) of ``images[query_image]`` to every patch of
    every image, one row per feature kind (name → N×C×h×w, all on the same patch grid), one square per patch."""
    from ..models.feature_correspondences import correlation_maps

    y, x = query_yx[0] // patch_size, query_yx[1] // patch_size
    rows = {name: correlation_maps(f[query_image, :, y, x], f) for name, f in features.items()}  # one value per patch
    fig = show_feature_rows(images, rows, cmap="magma", size=size)
    for ax in fig.axes[::len(images)][:1] + [fig.axes[query_image]]:
        ax.plot(query_yx[1], query_yx[0], marker="x", color="cyan", markersize=9, mew=2.5)
    for row in range(1, 1 + len(features)):
        fig.axes[row * len(images) + query_image].plot(query_yx[1], query_yx[0], marker="x", color="cyan",
                                                      markersize=9, mew=2.5)
    return fig


def correlation_explorer(images: Sequence, features: Mapping[str, torch.Tensor], patch_size: int):
    """ipywidgets explorer: choose the query image and point; shows :func:`show_correlation` live."""
    import ipywidgets as widgets

    height, width = np.asarray(to_uint8_image(images[0])).shape[:2]
    output = widgets.Output()
    image_slider = widgets.IntSlider(0, 0, len(images) - 1, description="query image")
    y_slider = widgets.IntSlider(height // 2, 0, height - 1, description="y (px)")
    x_slider = widgets.IntSlider(width // 2, 0, width - 1, description="x (px)")

    def redraw(_=None) -> None:
        with output:
            output.clear_output(wait=True)
            fig = show_correlation(images, features, image_slider.value, (y_slider.value, x_slider.value),
                                   patch_size)
            plt.show(fig)

    for slider in (image_slider, y_slider, x_slider):
        slider.observe(redraw, names="value")
    # The first figure is drawn on the first slider move, not here: headless runs (nbclient without widget
    # state) fail on output sent to an Output widget while the cell executes. The lesson shows the same view
    # as a static figure beside the explorer.
    hint = widgets.Label("Move a slider to draw the correlation maps for that query.")
    return widgets.VBox([widgets.HBox([image_slider, y_slider, x_slider]), hint, output])
