"""Toy world v2 (issue 16): scene themes, large renders at native texture scale, v1 left untouched."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from scipy import ndimage

from course_lib.data.textures import LARGE_BANK_SIZE, TEXTURE_NAMES, random_crop, texture_bank
from course_lib.data.toyworld import SCENE_CLASSES, SCENE_THEMES, ToyWorld
from course_lib.data.toyworld_report import class_presence, format_table, jaccard_matrix, neighbour_jaccard
from course_lib.evaluation.baselines import pixel_kmeans_miou

N_THEMED = 400  # training images for the label statistics (rendering 400 takes about a second)


def _digest(world: ToyWorld, index: int) -> str:
    image, label = world.render(index)
    data = np.round(image * 65535).astype("<u2").tobytes() + label.astype("<i8").tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize("kind, split, size, seed, index, digest", [
    # recorded from the default world before v2 existed (commit 51e6adc): the shipped runs depend on them
    ("scenes", "train", 96, 0, 0, "64368f4db2731cd2"),
    ("scenes", "val", 96, 0, 7, "ef0b07fa3d256e32"),
    ("scenes", "val", 128, 0, 3, "e378b2e1bc707075"),
    ("scenes", "val", 64, 1, 5, "0fff8ffc4b35852e"),
    ("objects", "train", 96, 0, 2, "9f19022bbc39eb5b"),
    ("objects", "val", 96, 0, 11, "aeafc5c50bdb9054"),
])
def test_default_world_is_unchanged(kind, split, size, seed, index, digest):
    assert _digest(ToyWorld(kind, split, n_images=20, size=size, seed=seed), index) == digest
    if kind == "objects":  # objects are the same in both versions
        assert _digest(ToyWorld(kind, split, n_images=20, size=size, seed=seed, version=2), index) == digest


@pytest.fixture(scope="module")
def themed() -> tuple[np.ndarray, np.ndarray]:
    """Class sets (N×K bool) and theme names (N) of v2 training scenes."""
    world = ToyWorld("scenes", "train", n_images=N_THEMED, size=64, version=2)
    labels = np.stack([world.render(i)[1] for i in range(len(world))])
    return class_presence(labels, world.num_classes), np.array([world.theme(i) for i in range(len(world))])


def test_v2_is_deterministic_and_exposes_its_theme():
    first, again = ToyWorld("scenes", "val", n_images=6, version=2), ToyWorld("scenes", "val", n_images=6, version=2)
    v1 = ToyWorld("scenes", "val", n_images=6)
    for index in range(6):
        a, b = first[index], again[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert not torch.equal(a["image"], v1[index]["image"])
        assert a["meta"]["theme"] == first.theme(index) in {theme.name for theme in SCENE_THEMES}
        assert set(a) == {"image", "label", "meta"} and (a["label"] >= 0).all()
    assert first.classes == list(SCENE_CLASSES), "v2 keeps the classes: checkpoints stay compatible"
    assert torch.equal(ToyWorld("scenes", "val", n_images=50, version=2)[4]["image"], first[4]["image"])
    assert "version=2" in repr(first) and "version" not in repr(v1)
    with pytest.raises(ValueError, match="version=2"):
        v1.theme(0)
    with pytest.raises(ValueError, match="version-2 'scenes'"):
        ToyWorld("objects", "val", n_images=2, version=2).theme(0)
    assert "theme" not in v1[0]["meta"]


def test_themes_structure_class_co_occurrence(themed):
    presence, themes = themed
    assert set(themes) == {theme.name for theme in SCENE_THEMES}
    jaccard = jaccard_matrix(presence)
    same, other = themes[:, None] == themes[None, :], ~np.eye(len(themes), dtype=bool)
    same_theme, across_themes = jaccard[same & other].mean(), jaccard[~same].mean()
    assert same_theme > 3 * across_themes, (same_theme, across_themes)
    # the same statistic on v1 images split into arbitrary groups of the same sizes shows no structure
    v1 = ToyWorld("scenes", "train", n_images=N_THEMED, size=64)
    v1_jaccard = jaccard_matrix(class_presence(np.stack([v1.render(i)[1] for i in range(len(v1))]), v1.num_classes))
    assert v1_jaccard[same & other].mean() < 1.2 * v1_jaccard[~same].mean()


def test_a_theme_does_not_decide_the_classes(themed):
    presence, themes = themed
    for theme in SCENE_THEMES:
        sets = presence[themes == theme.name]
        assert len({tuple(row) for row in sets}) >= 20, f"{theme.name}: too few distinct class sets"
        assert sets.any(0).sum() >= 8, f"{theme.name}: its images show too few classes"
    assert presence.any(0).all(), "every class appears"


def test_v2_colour_still_does_not_decide_the_class():
    world = ToyWorld("scenes", "val", n_images=100, version=2)
    images, labels = (np.stack(arrays) for arrays in zip(*(world.render(i) for i in range(len(world)))))
    assert pixel_kmeans_miou(images, labels, world.num_classes)["mIoU"] < 35.0


@pytest.mark.parametrize("kind", ["scenes", "objects"])
@pytest.mark.parametrize("size", [192, 256])
def test_large_renders(kind, size):
    sample = ToyWorld(kind, "val", n_images=2, size=size, version=2)[1]
    assert sample["image"].shape == (3, size, size) and sample["label"].shape == (size, size)
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0


def _texture_scale(world, n_images: int = 24) -> dict[int, float]:
    """Per class, the median over images of mean |grey gradient| / grey std inside the class's regions
    (2 px from their edges): about halved when a texture is shown twice as large."""
    values: dict[int, list[float]] = {}
    for index in range(n_images):
        image, label = world.render(index)
        grey = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        for class_id in np.unique(label):
            inside = ndimage.binary_erosion(label == class_id, iterations=2)
            if inside.sum() < 200:
                continue
            steps = [np.abs(np.diff(grey, axis=axis))[np.take(inside, range(1, inside.shape[axis]), axis)
                                                       & np.take(inside, range(inside.shape[axis] - 1), axis)]
                     for axis in (0, 1)]
            values.setdefault(int(class_id), []).append(np.concatenate(steps).mean() / grey[inside].std())
    return {class_id: float(np.median(v)) for class_id, v in values.items()}


def test_large_renders_keep_the_texture_scale():
    native = _texture_scale(ToyWorld("scenes", "val", size=96, version=2))
    large = _texture_scale(ToyWorld("scenes", "val", size=192, version=2))

    class Upsampled:  # what a five-crop of a 96-px image upsampled ×2 shows: textures twice as large
        def render(self, index):
            image, label = ToyWorld("scenes", "val", size=96, version=2).render(index)
            return image.repeat(2, 0).repeat(2, 1), label.repeat(2, 0).repeat(2, 1)

    zoomed = _texture_scale(Upsampled())
    assert set(native) == set(large) == set(range(len(SCENE_CLASSES)))
    ratios = np.array([large[c] / native[c] for c in native])
    assert 0.9 < np.median(ratios) < 1.1 and ratios.min() > 0.7 and ratios.max() < 1.4, ratios.round(2)
    assert np.median([zoomed[c] / native[c] for c in native]) < 0.6


def test_large_texture_bank():
    bank, large = texture_bank(), texture_bank(LARGE_BANK_SIZE)
    assert texture_bank(LARGE_BANK_SIZE) is large and set(large) == set(TEXTURE_NAMES)
    for name, texture in large.items():
        assert texture.shape == (LARGE_BANK_SIZE, LARGE_BANK_SIZE) and not texture.flags.writeable
        assert 0.0 <= texture.min() and texture.max() <= 1.0
        # the same pattern on a larger grid (procedural) or mirrored (photographs): same contrast
        assert abs(texture.std() - bank[name].std()) < 0.05, name
    # windows that fit the default bank come from it (v1 images unchanged), larger ones from the large bank
    window = random_crop("brick", 200, 200, np.random.default_rng(0))
    assert window.shape == (200, 200)
    with pytest.raises(ValueError, match="at most 512"):
        random_crop("brick", 600, 600, np.random.default_rng(0))
    with pytest.raises(ValueError, match="256 or 512"):
        texture_bank(300)


def test_neighbour_jaccard_on_hand_made_sets():
    presence = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0]], dtype=bool)
    jaccard = jaccard_matrix(presence)
    assert jaccard[0, 1] == 1.0 and jaccard[0, 2] == 0.0 and jaccard[2, 3] == 0.5
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]])
    result = neighbour_jaccard(presence, embeddings)
    assert result["nn_jaccard"] == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)
    off_diagonal = (jaccard.sum() - 4) / 12  # the diagonal is all ones
    assert result["random_jaccard"] == pytest.approx(off_diagonal)
    assert result["ratio"] == pytest.approx(result["nn_jaccard"] / off_diagonal)
    assert class_presence(torch.tensor([[[0, -1], [2, 2]]]), 4).tolist() == [[True, False, True, False]]
    with pytest.raises(ValueError, match="two images"):
        neighbour_jaccard(presence[:1], embeddings[:1])
    table = format_table({1: {**result, "rgb_kmeans_mIoU": 6.0, "backbone_kmeans_mIoU": 23.0, "render_seconds": 0.5}})
    assert "| ratio NN / random | " in table and "6.0" in table
