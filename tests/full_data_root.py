"""A small data root in every official layout, with random weights under the official file names.

The full profile's dry run (``COURSE_PROFILE=full COURSE_SMOKE=1``) needs the real datasets' folders and
the official weight files, which never reach this machine. :func:`make_full_data_root` writes a few
images per split in the real layouts and encodings (through :mod:`tests.fake_datasets`) and weight
files of the right architectures with random values, so every full-profile code path can run:

- ``DATA/cocostuff``: train2017 / val2017 images, stuffthingmaps labels and the curated lists;
- ``DATA/cityscapes``: leftImg8bit / gtFine of train and val;
- ``DATA/ImageNetS``: ImageNet-S50 category list, ``train``, ``train-semi`` (+ segmentation) and
  ``validation`` (+ segmentation);
- ``DATA/VOCdevkit/VOC2012``: ``train_aug`` (SegmentationClassAug), ``train`` and ``val``;
- ``CACHE/weights``: ``dino_deitsmall8_pretrain.pth`` (and the other DINO files) as backbone-only state
  dicts, and the torchvision ImageNet ResNet files (``resnet101-63fe2227.pth`` ...) as state dicts.

Command line (for trying a lesson or CLI by hand)::

    python tests/full_data_root.py DATA_DIR CACHE_DIR
    COURSE_PROFILE=full COURSE_SMOKE=1 COURSE_DATA=DATA_DIR COURSE_CACHE=CACHE_DIR python -m ...
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fake_datasets as fake  # noqa: E402

IMAGE_SIZE = (72, 96)  # H×W: larger than the smoke resolutions, so crops and resizes are real

# torchvision's ImageNet weights (IMAGENET1K_V1), by their official file names.
RESNET_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth",
                "resnet101": "resnet101-63fe2227.pth"}


def write_random_weights(weights_dir: Path, dino_models=("dino_vits8",), resnets=("resnet101",)) -> list[Path]:
    """Random-valued weight files in the official formats under the official names in ``weights_dir``."""
    import torchvision

    from course_lib.data.hub import WEIGHTS
    from course_lib.models.backbones import load_backbone

    weights_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in dino_models:
        model = load_backbone(name, random_init=True)  # the backbone-only state dict DINO released
        path = weights_dir / WEIGHTS[name].filename
        torch.save(model.state_dict(), path)
        written.append(path)
    for name in resnets:
        model = getattr(torchvision.models, name)(weights=None)
        path = weights_dir / RESNET_FILES[name]
        torch.save(model.state_dict(), path)
        written.append(path)
    return written


def make_full_data_root(data_dir: Path, cache_dir: Path, per_split: int = 4, weights: bool = True) -> dict:
    """Write every dataset of the full profile under ``data_dir`` and random weights under
    ``cache_dir/weights``; returns what was written per dataset (``FakeSplit`` objects)."""
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    written: dict = {}
    for split, seed in (("train", 10), ("val", 0)):
        written[f"cocostuff/{split}"] = fake.make_cocostuff(data_dir, split, n_images=per_split,
                                                           size=IMAGE_SIZE, seed=seed)
        written[f"cityscapes/{split}"] = fake.make_cityscapes(data_dir, split, per_city=per_split // 2,
                                                             size=IMAGE_SIZE, seed=seed)
    categories = fake.fake_wnids(50)
    classes = (1, 2, 3)
    for split, seed in (("train", 20), ("train-semi", 30), ("validation", 0)):
        written[f"imagenet_s50/{split}"] = fake.make_imagenet_s(
            data_dir, 50, split, categories, used_classes=classes, per_class=max(1, per_split // len(classes)),
            size=IMAGE_SIZE, seed=seed)
    for split, seed in (("train_aug", 40), ("train", 50), ("val", 60)):
        written[f"voc/{split}"] = fake.make_voc(data_dir, split, n_images=per_split, size=IMAGE_SIZE, seed=seed)
    if weights:
        written["weights"] = write_random_weights(cache_dir / "weights")
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/full_data_root.py DATA_DIR CACHE_DIR")
    make_full_data_root(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"fake full-profile data root in {sys.argv[1]}, random weights in {sys.argv[2]}/weights")
