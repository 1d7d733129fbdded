"""Palettes, colourised labels, overlays and sample grids."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib.viz.palettes import (  # noqa: E402
    BACKGROUND_COLOUR,
    IGNORE_COLOUR,
    class_palette,
    colorize,
    overlay,
    to_uint8_image,
)
from course_lib.viz.plots import legend_patches, show_samples  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_class_palette_is_distinct_deterministic_and_prefix_stable():
    palette = class_palette(1000)
    assert palette.shape == (1000, 3) and palette.dtype == np.uint8
    assert len(np.unique(palette, axis=0)) == 1000
    assert not (palette == IGNORE_COLOUR).all(1).any(), "no class may look like ignore"
    np.testing.assert_array_equal(class_palette(1000), palette)
    np.testing.assert_array_equal(class_palette(12), palette[:12])
    assert class_palette(0).shape == (0, 3)


def test_background_palette_puts_other_in_grey():
    palette = class_palette(11, background=True)
    np.testing.assert_array_equal(palette[0], BACKGROUND_COLOUR)
    np.testing.assert_array_equal(palette[1:], class_palette(10))
    assert len(np.unique(palette, axis=0)) == 11


def test_colorize_shapes_and_ignore():
    label = np.array([[0, 1, 2], [-1, 2, 255]])
    palette = class_palette(256)
    colours = colorize(label, palette)
    assert colours.shape == (2, 3, 3) and colours.dtype == np.uint8
    np.testing.assert_array_equal(colours[1, 0], IGNORE_COLOUR)
    np.testing.assert_array_equal(colours[0, 1], palette[1])
    np.testing.assert_array_equal(colours[1, 2], palette[255])
    np.testing.assert_array_equal(colorize(torch.from_numpy(label), palette), colours)
    batch = colorize(torch.zeros(4, 5, 6, dtype=torch.long) - 1)
    assert batch.shape == (4, 5, 6, 3) and (batch == 0).all()


def test_colorize_errors():
    with pytest.raises(ValueError, match="no colour"):
        colorize(np.array([[0, 5]]), class_palette(3))
    with pytest.raises(TypeError, match="integer"):
        colorize(np.zeros((2, 2), dtype=np.float32))


def test_to_uint8_image_accepts_tensors_and_arrays():
    rng = np.random.default_rng(0)
    hwc = rng.uniform(0, 1, (5, 7, 3)).astype(np.float32)
    expected = np.round(hwc * 255).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8_image(hwc), expected)
    np.testing.assert_array_equal(to_uint8_image(torch.from_numpy(hwc).permute(2, 0, 1)), expected)
    np.testing.assert_array_equal(to_uint8_image(expected), expected)
    assert to_uint8_image(hwc[..., 0]).shape == (5, 7, 3)
    with pytest.raises(ValueError, match="normalis"):
        to_uint8_image(hwc * 4 - 2)


def test_overlay_blends_labels_and_keeps_ignore_pixels():
    image = torch.full((3, 4, 4), 0.5)
    label = torch.zeros(4, 4, dtype=torch.long)
    label[0, 0] = -1
    palette = class_palette(1)
    grey = to_uint8_image(image)
    np.testing.assert_array_equal(overlay(image, label, alpha=0.0), grey)
    full = overlay(image, label, alpha=1.0, palette=palette)
    assert full.shape == (4, 4, 3) and full.dtype == np.uint8
    np.testing.assert_array_equal(full[0, 0], grey[0, 0])
    np.testing.assert_array_equal(full[1, 1], palette[0])
    np.testing.assert_array_equal(overlay(grey, label, alpha=0.5), overlay(image, label, alpha=0.5))
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, label[:2])


def test_show_samples_grid():
    images = torch.rand(5, 3, 16, 16)
    labels = torch.randint(-1, 4, (5, 16, 16))
    fig = show_samples(images, labels, labels.flip(-1), titles=list("abcde"),
                       class_names=["w", "x", "y", "z"], ncols=3)
    assert len(fig.axes) == 2 * 3 * 3  # 2 blocks × (image, label, prediction) × 3 columns
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"]
    assert sum(len(ax.images) for ax in fig.axes) == 15
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 4


def test_show_samples_images_only_and_numpy_lists():
    images = [np.random.default_rng(i).uniform(0, 1, (8, 8, 3)) for i in range(3)]
    fig = show_samples(images)
    assert len(fig.axes) == 3 and not fig.legends
    with pytest.raises(ValueError, match="labels"):
        show_samples(images, labels=[np.zeros((8, 8), dtype=int)])


def test_legend_patches():
    palette = class_palette(3)
    patches = legend_patches(["a", "b", "c"], palette, ids=[2, 0])
    assert [p.get_label() for p in patches] == ["c", "a"]
    np.testing.assert_allclose(patches[0].get_facecolor()[:3], palette[2] / 255)
    with pytest.raises(ValueError):
        legend_patches(["a"], palette, ids=[1])


def test_plot_class_colours_one_dot_per_region():
    import matplotlib.pyplot as plt

    from course_lib.viz import plot_class_colours

    images = np.zeros((2, 4, 4, 3), np.float32)
    images[0, :2] = [1, 0, 0]
    labels = np.zeros((2, 4, 4), np.int64)
    labels[0, :2] = 1
    labels[1, 0, 0] = -1
    fig = plot_class_colours(images, labels, ["a", "b", "c"])
    offsets = fig.axes[0].collections[0].get_offsets()
    assert len(offsets) == 3  # image 0: classes 0 and 1, image 1: class 0
    colours = fig.axes[0].collections[0].get_facecolors()[:, :3]
    assert any(np.allclose(c, [1, 0, 0]) for c in colours)
    plt.close(fig)
