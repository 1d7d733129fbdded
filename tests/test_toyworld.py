"""The toy world: contract, determinism, the colour-is-not-the-class design, the ImageNet-S writer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.data.label_png import read_imagenet_s_png
from course_lib.data.textures import TEXTURE_NAMES, texture_bank
from course_lib.data.toyworld import (
    DEFAULT_N_IMAGES,
    OBJECT_CLASSES,
    SCENE_CLASSES,
    ToyWorld,
    write_imagenet_s_layout,
)
from course_lib.evaluation.baselines import pixel_kmeans_miou, texture_features


@pytest.fixture(scope="module")
def scenes_val() -> tuple[np.ndarray, np.ndarray]:
    """The whole default ``scenes`` validation set as arrays: B×H×W×3 images, B×H×W labels."""
    dataset = ToyWorld("scenes", "val")
    images, labels = zip(*(dataset.render(i) for i in range(len(dataset))))
    return np.stack(images), np.stack(labels)


@pytest.mark.parametrize("kind", ["scenes", "objects"])
def test_sample_contract(kind):
    dataset = ToyWorld(kind, "val", n_images=6)
    assert len(dataset) == 6
    assert dataset.classes == list(SCENE_CLASSES if kind == "scenes" else OBJECT_CLASSES)
    assert len(dataset.classes) >= 10 + (kind == "objects") and len(set(dataset.classes)) == len(dataset.classes)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert set(sample) == {"image", "label", "meta"}
        image, label, meta = sample["image"], sample["label"], sample["meta"]
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert label.shape == (96, 96) and label.dtype == torch.int64
        assert label.min() >= -1 and label.max() < dataset.num_classes
        assert meta["index"] == index and isinstance(meta["name"], str)
        assert dataset.image_categories(index) == sorted(dataset.image_categories(index))
        if kind == "scenes":
            assert (label >= 0).all(), "scenes are fully labelled"
            assert dataset.image_categories(index) == torch.unique(label).tolist()
        else:
            category = meta["category"]
            assert isinstance(category, int) and 1 <= category < dataset.num_classes
            assert set(torch.unique(label).tolist()) == {-1, 0, category}, "other, one category, ignore band"
            assert dataset.image_categories(index) == [category]
            assert (label == -1).sum() < (label == category).sum(), "the ignore band is thin"
    assert len({dataset[i]["meta"]["name"] for i in range(len(dataset))}) == len(dataset)


def test_samples_collate_in_a_dataloader():
    batch = next(iter(torch.utils.data.DataLoader(ToyWorld("objects", "train", n_images=4), batch_size=4)))
    assert batch["image"].shape == (4, 3, 96, 96) and batch["label"].shape == (4, 96, 96)
    assert batch["meta"]["category"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("size", [64, 128, 256])
def test_supported_sizes(size):
    sample = ToyWorld("scenes", "train", n_images=2, size=size)[1]
    assert sample["image"].shape == (3, size, size) and sample["label"].shape == (size, size)


@pytest.mark.parametrize("arguments", [
    {"kind": "cityscapes"}, {"split": "test"}, {"size": 63}, {"size": 257}, {"n_images": 0}, {"seed": -1}, {"version": 3},
])
def test_invalid_arguments_are_refused(arguments):
    with pytest.raises(ValueError):
        ToyWorld(**arguments)


def test_index_out_of_range():
    dataset = ToyWorld("scenes", "val", n_images=3)
    with pytest.raises(IndexError):
        dataset[3]
    assert torch.equal(dataset[-1]["image"], dataset[2]["image"])


def test_default_sizes():
    for (kind, split), n_images in DEFAULT_N_IMAGES.items():
        assert len(ToyWorld(kind, split)) == n_images


def test_texture_bank_is_cached_and_valid():
    bank = texture_bank()
    assert texture_bank() is bank and set(bank) == set(TEXTURE_NAMES)
    for texture in bank.values():
        assert texture.dtype == np.float32 and min(texture.shape) >= 128
        assert 0.0 <= texture.min() and texture.max() <= 1.0 and texture.std() > 0.1


@pytest.mark.parametrize("kind", ["scenes", "objects"])
def test_deterministic(kind):
    first, again = ToyWorld(kind, "train", n_images=5), ToyWorld(kind, "train", n_images=5)
    other_seed = ToyWorld(kind, "train", n_images=5, seed=1)
    for index in range(5):
        a, b, c = first[index], again[index], other_seed[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert not torch.equal(a["image"], c["image"])
    # the same image whatever the dataset length or the order of access
    assert torch.equal(ToyWorld(kind, "train", n_images=50)[4]["image"], first[4]["image"])


@pytest.mark.parametrize("kind", ["scenes", "objects"])
def test_train_and_val_differ(kind):
    train, val = ToyWorld(kind, "train", n_images=20), ToyWorld(kind, "val", n_images=20)
    train_images = [train[i]["image"] for i in range(20)]
    for j in range(20):
        assert not any(torch.equal(val[j]["image"], image) for image in train_images)


def test_every_class_appears_in_the_validation_sets(scenes_val):
    assert set(np.unique(scenes_val[1]).tolist()) == set(range(len(SCENE_CLASSES)))
    objects = ToyWorld("objects", "val")
    categories = {objects[i]["meta"]["category"] for i in range(len(OBJECT_CLASSES) - 1)}
    assert categories == set(range(1, len(OBJECT_CLASSES)))


def test_colour_does_not_decide_the_class(scenes_val):
    images, labels = scenes_val
    means, classes = [], []  # the mean colour of every (image, class) region of at least 100 px
    for image, label in zip(images[:100], labels[:100]):
        for class_id in np.unique(label):
            region = label == class_id
            if region.sum() >= 100:
                means.append(image[region].mean(0))
                classes.append(class_id)
    means, classes = np.array(means), np.array(classes)
    centroids = np.stack([means[classes == c].mean(0) for c in range(len(SCENE_CLASSES))])
    for class_id in range(len(SCENE_CLASSES)):
        spread = means[classes == class_id]
        assert np.linalg.norm(spread.max(0) - spread.min(0)) > 0.6, f"{SCENE_CLASSES[class_id]} has a fixed colour"
    # classes overlap in colour: the class centroids are close, and nearest-centroid is near chance
    assert np.linalg.norm(centroids - centroids.mean(0), axis=1).max() < 0.15
    nearest = np.linalg.norm(means[:, None] - centroids[None], axis=2).argmin(1)
    assert (nearest == classes).mean() < 0.3


def test_rgb_kmeans_is_poor_and_texture_carries_the_class(scenes_val):
    images, labels = scenes_val
    rgb_miou = pixel_kmeans_miou(images, labels, len(SCENE_CLASSES))["mIoU"]
    assert rgb_miou < 35.0
    subset = slice(0, 100)
    texture_miou = pixel_kmeans_miou(texture_features(images[subset]), labels[subset], len(SCENE_CLASSES))["mIoU"]
    assert texture_miou > rgb_miou + 8.0, (rgb_miou, texture_miou)


def test_write_imagenet_s_layout_round_trip(tmp_path):
    dataset = ToyWorld("objects", "val", n_images=6, size=64)
    label_paths = write_imagenet_s_layout(dataset, tmp_path)
    assert len(label_paths) == 6
    categories = (tmp_path / "categories.txt").read_text().splitlines()
    assert categories == list(OBJECT_CLASSES[1:])
    for index, label_path in enumerate(label_paths):
        sample = dataset[index]
        folder, stem = OBJECT_CLASSES[sample["meta"]["category"]], sample["meta"]["name"]
        assert label_path == tmp_path / "validation-segmentation" / folder / f"{stem}.png"
        expected = sample["label"].numpy()
        decoded = read_imagenet_s_png(label_path, num_classes=len(categories))
        np.testing.assert_array_equal(decoded, np.where(expected < 0, 1000, expected))
        with Image.open(tmp_path / "validation" / folder / f"{stem}.JPEG") as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (64, 64)
            pixels = np.asarray(jpeg.convert("RGB")).astype(np.float32) / 255
        assert np.abs(pixels - sample["image"].permute(1, 2, 0).numpy()).mean() < 0.05


def test_writer_refuses_scenes(tmp_path):
    with pytest.raises(ValueError, match="objects"):
        write_imagenet_s_layout(ToyWorld("scenes", "val", n_images=2), tmp_path)
