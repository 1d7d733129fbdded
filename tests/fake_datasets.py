"""Tiny fake copies of the real datasets, written in their real on-disk layouts and label encodings.

Each ``make_*`` function writes a few small images and labels under a data root (the folder a loader
takes as ``root=``) and returns a :class:`FakeSplit` with what it wrote, so that tests can compare the
loader's output with the files' contents. Images are smooth colour gradients (they survive JPEG
compression nearly unchanged and every region of an image looks different); labels are random ids of
the dataset's encoding, with its ignore value included.

Encodings written (as the official files):

- CocoStuff: single-channel (mode ``L``) PNG, fine ids 0..181, 255 unlabelled; JPEG images.
- Cityscapes: single-channel ``*_gtFine_labelIds.png`` (0..33); PNG images ``*_leftImg8bit.png``.
- ImageNet-S: RGB PNG with ``id = R + 256·G`` (0 other, 1..K, 1000 ignore); ``.JPEG`` images.
- VOC: palette (mode ``P``) PNGs in ``SegmentationClass`` (0..20, 255 void), mode ``L`` in
  ``SegmentationClassAug``; JPEG images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from course_lib.data.cocostuff import STEGO_TRAIN_LIST
from course_lib.data.label_png import write_imagenet_s_png

CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"


@dataclass
class FakeSplit:
    """What a ``make_*`` call wrote: the data ``root``, and per sample (in the loader's order) its
    ``names``, the ``images`` (H×W×3 uint8, before any JPEG compression) and ``raw_labels`` (H×W int64
    in the on-disk encoding's values, e.g. fine CocoStuff ids with 255)."""

    root: Path
    names: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    raw_labels: list[np.ndarray] = field(default_factory=list)
    label_paths: list[Path] = field(default_factory=list)


def gradient_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H×W×3 uint8 smooth image: red grows down, green grows right, blue depends on ``seed``."""
    rows = np.linspace(20, 235, height)[:, None] * np.ones((1, width))
    cols = np.ones((height, 1)) * np.linspace(20, 235, width)[None, :]
    blue = np.full((height, width), 40 + (37 * seed) % 180)
    return np.stack([rows, cols, blue], axis=-1).round().astype(np.uint8)


def random_label(height: int, width: int, values: Sequence[int], seed: int = 0) -> np.ndarray:
    """H×W int64 label drawn from ``values``; every value appears at least once (if the image is big enough)."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=np.int64)
    label = rng.choice(values, size=(height, width))
    label.flat[: len(values)] = values
    return rng.permuted(label.ravel()).reshape(height, width)


def _write_image(path: Path, image: np.ndarray, jpeg: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jpeg:
        Image.fromarray(image).save(path, format="JPEG", quality=95)
    else:
        Image.fromarray(image).save(path, format="PNG")


def _write_single_channel(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8)).save(path)  # 2-D uint8: mode L


def voc_palette() -> list[int]:
    """The 256-colour PASCAL VOC palette as a flat [r, g, b, ...] list (bits of the index spread over RGB)."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        for bit in range(8):
            red |= ((index >> (3 * bit)) & 1) << (7 - bit)
            green |= ((index >> (3 * bit + 1)) & 1) << (7 - bit)
            blue |= ((index >> (3 * bit + 2)) & 1) << (7 - bit)
        palette += [red, green, blue]
    return palette


def make_cocostuff(
    root: Path,
    split: str = "val",
    n_images: int = 2,
    size: tuple[int, int] = (24, 32),
    seed: int = 0,
    fine_ids: Sequence[int] = (0, 2, 17, 61, 91, 105, 123, 147, 156, 181, 255),
) -> FakeSplit:
    """CocoStuff under ``root/cocostuff``: images, stuffthingmaps labels and the curated list of ``split``."""
    folder = {"train": "train2017", "val": "val2017"}[split]
    base = Path(root) / "cocostuff"
    fake = FakeSplit(Path(root))
    for i in range(n_images):
        image_id = f"{100000 * (seed + 1) + 97 * (n_images - i):012d}"  # list order is not sorted order
        image = gradient_image(*size, seed=seed + i)
        label = random_label(*size, fine_ids, seed=seed + i)
        _write_image(base / "images" / folder / f"{image_id}.jpg", image)
        label_path = base / "annotations" / folder / f"{image_id}.png"
        _write_single_channel(label_path, label)
        fake.names.append(image_id)
        fake.images.append(image)
        fake.raw_labels.append(label)
        fake.label_paths.append(label_path)
    list_path = base / "curated" / folder / CURATED_LIST
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("".join(f"{name}\n" for name in fake.names))
    # STEGO trains on the full curated list (course_lib.data.cocostuff.STEGO_TRAIN_LIST); same images here
    (list_path.parent / STEGO_TRAIN_LIST).write_text(list_path.read_text())
    return fake


def make_cityscapes(
    root: Path,
    split: str = "val",
    cities: Sequence[str] = ("aachen", "bochum"),
    per_city: int = 1,
    size: tuple[int, int] = (16, 32),
    seed: int = 0,
    label_ids: Sequence[int] = (0, 1, 4, 6, 7, 8, 20, 26, 33),
) -> FakeSplit:
    """Cityscapes under ``root/cityscapes``: ``leftImg8bit`` PNGs and ``gtFine`` labelIds of ``split``."""
    base = Path(root) / "cityscapes"
    fake = FakeSplit(Path(root))
    for c, city in enumerate(sorted(cities)):
        for j in range(per_city):
            stem = f"{city}_{j:06d}_{19 + j:06d}"
            image = gradient_image(*size, seed=seed + c * per_city + j)
            label = random_label(*size, label_ids, seed=seed + c * per_city + j)
            _write_image(base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image, jpeg=False)
            label_path = base / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            _write_single_channel(label_path, label)
            fake.names.append(stem)
            fake.images.append(image)
            fake.raw_labels.append(label)
            fake.label_paths.append(label_path)
    return fake


def fake_wnids(count: int) -> list[str]:
    """``count`` distinct, sorted, wnid-like names (``n00000001`` ...)."""
    return [f"n{index:08d}" for index in range(1, count + 1)]


def write_imagenet_s_folder(
    subset_dir: Path,
    categories: Sequence[str],
    split: str = "validation",
    used_classes: Sequence[int] = (1, 2),
    per_class: int = 1,
    size: tuple[int, int] = (20, 24),
    seed: int = 0,
    extra_ids: Sequence[int] = (),
) -> FakeSplit:
    """Images (and, for ``train-semi`` / ``validation``, RGB R + 256·G labels) of an ImageNet-S folder.

    ``used_classes`` are the 1-based class ids that get images; a label holds 0 ('other'), the image's
    own class id, the ids in ``extra_ids`` and the ignore id 1000. ``root`` of the result is ``subset_dir``.
    """
    subset_dir = Path(subset_dir)
    labelled = split in ("train-semi", "validation")
    fake = FakeSplit(subset_dir)
    for class_id in sorted(used_classes, key=lambda cid: categories[cid - 1]):
        wnid = categories[class_id - 1]
        for j in range(per_class):
            stem = f"ILSVRC2012_val_{class_id * 100 + j:08d}" if split == "validation" else f"{wnid}_{j + 1}"
            image = gradient_image(*size, seed=seed + class_id + j)
            _write_image(subset_dir / split / wnid / f"{stem}.JPEG", image)
            fake.names.append(f"{wnid}/{stem}")
            fake.images.append(image)
            if labelled:
                label = random_label(*size, [0, class_id, *extra_ids, 1000], seed=seed + class_id + j)
                label_path = subset_dir / f"{split}-segmentation" / wnid / f"{stem}.png"
                write_imagenet_s_png(label_path, label)
                fake.raw_labels.append(label)
                fake.label_paths.append(label_path)
    return fake


def make_imagenet_s(
    root: Path,
    subset: int = 50,
    split: str = "validation",
    categories: Sequence[str] | None = None,
    used_classes: Sequence[int] = (1, 2),
    per_class: int = 1,
    size: tuple[int, int] = (20, 24),
    seed: int = 0,
    extra_ids: Sequence[int] = (),
) -> FakeSplit:
    """ImageNet-S in the standard layout under ``root/ImageNetS``: the subset's category list (fake wnids
    unless ``categories`` is given) in ``lists/categories`` and a split folder (see
    :func:`write_imagenet_s_folder`). ``root`` of the result is ``root``."""
    categories = list(categories) if categories is not None else fake_wnids(subset)
    base = Path(root) / "ImageNetS"
    category_file = base / "lists" / "categories" / f"ImageNetS_categories_im{subset}.txt"
    category_file.parent.mkdir(parents=True, exist_ok=True)
    category_file.write_text("\n".join(categories))  # the official files have no final newline
    fake = write_imagenet_s_folder(
        base / f"ImageNetS{subset}", categories, split, used_classes, per_class, size, seed, extra_ids
    )
    fake.root = Path(root)
    return fake


def make_imagenet_s_toy_layout(
    directory: Path,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    per_class: int = 1,
    size: tuple[int, int] = (20, 24),
    seed: int = 0,
) -> FakeSplit:
    """The toy world's ImageNet-S-like folder: ``validation``, ``validation-segmentation``, ``categories.txt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "categories.txt").write_text("".join(f"{name}\n" for name in classes))
    return write_imagenet_s_folder(
        directory, classes, "validation", range(1, len(classes) + 1), per_class, size, seed
    )


def make_voc(
    root: Path,
    split: str = "val",
    n_images: int = 2,
    size: tuple[int, int] = (18, 22),
    seed: int = 0,
    class_ids: Sequence[int] = (0, 1, 15, 20, 255),
    list_with_paths: bool = False,
) -> FakeSplit:
    """PASCAL VOC 2012 under ``root/VOCdevkit/VOC2012``: JPEG images, the ``split`` list and its labels.

    ``train`` / ``val`` labels are palette PNGs in ``SegmentationClass``; ``train_aug`` labels are mode
    ``L`` PNGs in ``SegmentationClassAug``. ``list_with_paths`` writes list lines as
    ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` (a format found in some copies).
    """
    base = Path(root) / "VOCdevkit" / "VOC2012"
    augmented = split == "train_aug"
    fake = FakeSplit(Path(root))
    for i in range(n_images):
        voc_id = f"{2007 + i % 5}_{seed * 1000 + i:06d}"
        image = gradient_image(*size, seed=seed + i)
        label = random_label(*size, class_ids, seed=seed + i)
        _write_image(base / "JPEGImages" / f"{voc_id}.jpg", image)
        if augmented:
            label_path = base / "SegmentationClassAug" / f"{voc_id}.png"
            _write_single_channel(label_path, label)
        else:
            label_path = base / "SegmentationClass" / f"{voc_id}.png"
            label_path.parent.mkdir(parents=True, exist_ok=True)
            palette_image = Image.fromarray(label.astype(np.uint8))
            palette_image.putpalette(voc_palette())  # mode L + palette → mode P, pixel values unchanged
            palette_image.save(label_path)
        fake.names.append(voc_id)
        fake.images.append(image)
        fake.raw_labels.append(label)
        fake.label_paths.append(label_path)
    list_path = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    list_path.parent.mkdir(parents=True, exist_ok=True)
    lines = (
        [f"/JPEGImages/{name}.jpg /SegmentationClassAug/{name}.png" for name in fake.names]
        if list_with_paths
        else fake.names
    )
    list_path.write_text("".join(f"{line}\n" for line in lines))
    return fake
