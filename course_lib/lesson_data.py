"""What each lesson runs on, per profile: datasets, sizes, backbones, resolutions and the CLIs' runs.

A lesson asks this module for its data and models instead of spelling the profile out in its cells, so
the notebook's code runs unchanged on the toy world (``toy``), on the real datasets (``full``) and at tiny
size under ``COURSE_SMOKE=1`` (the full profile's dry run proves the plumbing, not the quality).
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from . import config


# ---------------------------------------------------------------------------------------------- lessons 00–04

SMOKE_IMAGES = 4
"""Validation images under ``COURSE_SMOKE`` (toy: twice as many)."""
SMOKE_RESOLUTION = 64
"""Image side under ``COURSE_SMOKE`` (8×8 patches of ViT-S/8 and of the toy ViT), as the CLIs' dry run."""

STEGO_DATASET, STEGO_BACKBONE = "cocostuff27", "dino_vits8"
"""The full profile of lessons 01–04: CocoStuff-27 and DINO ViT-S/8, STEGO's main setting."""

STEGO_PAPER = {
    "paper: ViT-S/8, cluster probe + CRF": {"mIoU": 24.5},
    "paper: ViT-S/8, no CRF": {"mIoU": 24.0, "linear mIoU": 38.4},
    "paper: ViT-B/8, + CRF": {"accuracy": 56.9, "mIoU": 28.2, "linear accuracy": 76.1, "linear mIoU": 41.0},
}
"""STEGO's CocoStuff-27 numbers (Hamilton et al., ICLR 2022, Table 1 and the ablation table; the ViT-S/8
no-CRF values as the authors' repository states them, mhamilton723/STEGO issue #63; the ViT-B/8 row is the
released checkpoint's evaluation, issue #3). Retraining ViT-S/8 with the official code gave 18.1 / 30.6
without CRF in issue #63: expect a few points of run-to-run spread."""

DINO_PAPER = {"dino_vits8": {"k-NN": 78.3, "linear": 79.7}, "dino_vits16": {"k-NN": 74.5, "linear": 77.0},
              "dino_vitb8": {"k-NN": 77.4, "linear": 80.1}, "dino_vitb16": {"k-NN": 76.1, "linear": 78.2}}
"""DINO's ImageNet top-1 (%) of the official backbones, k-NN and linear (Caron et al., ICCV 2021, Table 2;
facebookresearch/dino README)."""

_REAL_NAMES = {"cocostuff27": "CocoStuff-27", "cityscapes27": "Cityscapes-27", "imagenet_s50": "ImageNet-S50",
               "voc2012": "PASCAL VOC 2012"}
_VAL_SPLITS = {"cocostuff27": "val", "cityscapes27": "val", "imagenet_s50": "validation", "voc2012": "val"}


class FirstImages(Dataset):
    """The first ``n`` samples of ``dataset`` (all of them when it has fewer), keeping its ``classes``."""

    def __init__(self, dataset: Dataset, n: int):
        self.dataset, self.n = dataset, min(n, len(dataset))
        self.classes = list(dataset.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        return self.dataset[index]


def real_dataset(name: str, split: str, resolution: int | None = None) -> Dataset:
    """A real dataset's ``split`` (``name`` in cocostuff27, cityscapes27, imagenet_s50, voc2012), resized on
    the short side and centre-cropped to ``resolution`` when given (else at its own size).

    Raises DatasetNotFoundError (a CourseError whose message names the fetch command) when it is missing."""
    from .data import VOC2012, Cityscapes27, CocoStuff27, ImageNetS

    transform = _square(resolution) if resolution else None
    loaders: dict[str, Callable[[], Dataset]] = {
        "cocostuff27": lambda: CocoStuff27(split=split, transform=transform),
        "cityscapes27": lambda: Cityscapes27(split=split, transform=transform),
        "imagenet_s50": lambda: ImageNetS(subset=50, split=split, transform=transform),
        "voc2012": lambda: VOC2012(split=split, transform=transform),
    }
    if name not in loaders:
        raise ValueError(f"no lesson loader for {name!r}; choose one of {', '.join(loaders)}")
    return loaders[name]()


@dataclass(frozen=True)
class LessonSpec:
    """One lesson's images and backbone in the active profile, decided without reading any data.

    ``dataset`` is ``"toy"`` (the toy world's scenes, seed 0) or a real dataset key (``"cocostuff27"``);
    images are ``resolution``×``resolution`` (real ones resized on the short side, centre-cropped)."""

    dataset: str
    split: str
    n_images: int
    resolution: int
    backbone: str

    @property
    def full(self) -> bool:
        return self.dataset != "toy"

    @property
    def toy_checks(self) -> bool:
        """Whether the lesson's asserts on the toy world's numbers apply: toy profile at its real size (not
        under ``COURSE_SMOKE``; in the full profile the numbers are the real data's, or meaningless in the dry run)."""
        return checks_apply()

    @property
    def patch_purity(self) -> float:
        """The share of a patch its majority class must cover for the patch to count as labelled
        (:func:`course_lib.models.feature_correspondences.patch_labels`): 0.75, except 0 under ``COURSE_SMOKE``
        in the full profile, whose dry-run data root has random per-pixel labels (no patch is pure)."""
        return 0.0 if self.full and config.smoke() else 0.75

    @property
    def data_name(self) -> str:
        """The banner's data, e.g. ``toy world (scenes, val)`` or ``CocoStuff-27 (val)``."""
        if not self.full:
            return f"toy world (scenes, {self.split})"
        return f"{_REAL_NAMES.get(self.dataset, self.dataset)} ({self.split})"

    @property
    def cache_name(self) -> str:
        """The dataset name of these images in a feature cache (the toy one as the lessons always used)."""
        return f"toy_scenes_n{self.n_images}" if not self.full else f"{self.dataset}_first{self.n_images}"

    def banner(self) -> str:
        """Print (and return) the lesson banner: profile, data, backbone, device."""
        return config.banner(self.data_name, self.backbone, self.device())

    def device(self):
        """Where the backbone runs: the CPU for the toy world (as the toy lessons always ran), else the
        course device (:func:`course_lib.config.get_device`)."""
        import torch

        return torch.device("cpu") if not self.full else config.get_device()

    def load(self) -> Dataset:
        """The images: ``ds[i]`` = ``{"image": 3×R×R float in [0, 1], "label": R×R int64 (-1 ignore), ...}``
        and ``ds.classes``. Real data: the first ``n_images`` of the split (all when it has fewer)."""
        from .data import ToyWorld

        if not self.full:
            return ToyWorld("scenes", self.split, n_images=self.n_images, size=self.resolution)
        return FirstImages(real_dataset(self.dataset, self.split, self.resolution), self.n_images)

    def load_backbone(self, random_init: bool = False) -> nn.Module:
        """The frozen backbone (eval mode) on :meth:`device`; ``random_init``: same architecture, random weights."""
        from .models import load_backbone

        return load_backbone(self.backbone, device=self.device(), random_init=random_init)


def smoke_cap(n_images: int, limit: int = 4 * SMOKE_IMAGES) -> int:
    """``n_images``, capped at ``limit`` under ``COURSE_SMOKE`` (a toy-world set that a lesson only looks at)."""
    return min(n_images, limit) if config.smoke() else n_images


def _spec(toy_images: int, full_images: int, full_resolution: int, split: str = "val",
          smoke_images: int = SMOKE_IMAGES) -> LessonSpec:
    """Toy: ``toy_images`` scenes at 96 px, toy ViT; full: ``full_images`` CocoStuff-27 images at
    ``full_resolution``, ViT-S/8; smoke: at most ``smoke_images`` (toy: twice as many) at 64 px (as the CLIs)."""
    smoke = config.smoke()
    if config.profile() == "toy":
        return LessonSpec("toy", split, min(toy_images, 2 * smoke_images) if smoke else toy_images,
                          SMOKE_RESOLUTION if smoke else 96, "toy_vit")
    return LessonSpec(STEGO_DATASET, split, min(full_images, smoke_images) if smoke else full_images,
                      SMOKE_RESOLUTION if smoke else full_resolution, STEGO_BACKBONE)


def dino_lesson(n_images: int = 4) -> LessonSpec:
    """Lesson 01: ``n_images`` validation images; full: CocoStuff-27 at DINO's 224 px through ViT-S/8."""
    return _spec(n_images, n_images, 224)


def correspondence_lesson(n_images: int = 200) -> LessonSpec:
    """Lesson 02: toy scenes at 96 px (toy ViT, 12×12 patches); full: the first ``n_images`` CocoStuff-27
    validation images at STEGO's evaluation size, 320 px (ViT-S/8, 40×40 patches)."""
    return _spec(n_images, n_images, 320)


OFFICIAL_VAL_IMAGES = {"CocoStuff-27": 2175, "Cityscapes-27": 500, "ImageNet-S50": 752, "PASCAL VOC 2012": 1449}
"""Validation images of the official splits: STEGO's curated CocoStuff-27 list, Cityscapes val, ImageNet-S50
validation (Gao et al., TPAMI 2022, Table 2), VOC 2012 val."""


def _on_disk() -> list[str]:
    from .data.catalog import dataset_table

    table = {row["dataset"]: row for row in dataset_table()}
    return [key for key in _VAL_SPLITS if table[_REAL_NAMES[key]]["on disk"] == "yes"]


def welcome_data_name() -> str:
    """Lesson 00's banner data: the toy world, and in the full profile the lessons' real datasets on disk."""
    if config.profile() == "toy":
        return "toy world (scenes, objects)"
    present = _on_disk()
    return "toy world + " + (", ".join(_REAL_NAMES[key] for key in present) + " (validation)" if present
                             else "no real dataset on disk")


def welcome_datasets() -> dict[str, Dataset]:
    """Lesson 00: the real validation sets to show, by name (none in the toy profile).

    Full profile: every dataset of the lessons that is on disk (CocoStuff-27, Cityscapes-27, ImageNet-S50,
    PASCAL VOC 2012), loaded (an incomplete one stops with its fetch command); DatasetNotFoundError naming
    every fetch command when none is there."""
    from .data import DatasetNotFoundError
    from .data.catalog import dataset_table

    if config.profile() == "toy":
        return {}
    present = _on_disk()
    if not present:
        commands = "\n".join(f"    {row['fetch with']}" for row in dataset_table()
                             if row["dataset"] in {_REAL_NAMES[key] for key in _VAL_SPLITS})
        raise DatasetNotFoundError(f"none of the real datasets is under {config.data_dir()}. Fetch them with:\n"
                                   f"{commands}")
    return {_REAL_NAMES[key]: real_dataset(key, _VAL_SPLITS[key]) for key in present}


@dataclass(frozen=True)
class StegoLesson:
    """Lessons 03–04: STEGO's training and validation images, backbone and configuration in this profile.

    Toy: the toy world through :func:`course_lib.stego.prepare_data` (1000 / 200 scenes, the toy
    configuration). Full: the first ``train.n_images`` CocoStuff-27 training images at 224 px, five-cropped on
    the fly (each crop resized back to 224 px), the first ``val.n_images`` validation images at 320 px,
    ViT-S/8 and the official configuration; the CLI instead crops the full-size images and uses all of them."""

    train: LessonSpec
    val: LessonSpec

    @property
    def full(self) -> bool:
        return self.train.full

    @property
    def toy_checks(self) -> bool:
        """Whether the asserts on the toy world's numbers apply (:attr:`LessonSpec.toy_checks`)."""
        return self.train.toy_checks

    @property
    def data_name(self) -> str:
        """The banner's data, e.g. ``CocoStuff-27 (train 1000, five-cropped · val 200)``."""
        name = "toy world (scenes" if not self.full else _REAL_NAMES[self.train.dataset] + " ("
        crops = ", five-cropped" if self.full else ""
        return f"{name}{', ' if not self.full else ''}train {self.train.n_images}{crops} · val {self.val.n_images})"

    def start(self) -> nn.Module:
        """Print the banner, then check the data and load the frozen backbone: a missing download stops the
        lesson here, with the command that fetches it. Returns the backbone (eval mode, on the course device)."""
        config.banner(self.data_name, self.train.backbone, self.train.device())
        if self.full:
            self.train.load(), self.val.load()
        return self.train.load_backbone()

    def config(self, **overrides):
        """The STEGO configuration: toy, or the official CocoStuff-27 + ViT-S/8 one (``overrides`` applied)."""
        from .stego import stego_config

        base = stego_config(self.train.dataset, self.train.backbone)
        if self.full:
            base = replace(base, resolution=self.train.resolution, val_resolution=self.val.resolution)
        return replace(base, **overrides)

    def prepare(self, backbone: nn.Module):
        """The :class:`~course_lib.stego.StegoData`: cached features of the training crops, of the validation
        images and of their mirror images; the kNN table of the training crops."""
        from .models import FeatureCache
        from .stego import StegoData, global_descriptors, knn_table, prepare_data
        from .stego.data import FiveCrops, HorizontalFlip
        from .stego.pairs import TOP_K
        from .stego.trainer import CachedPairs

        if not self.full:
            return prepare_data(self.config(), backbone, n_train=self.train.n_images, n_val=self.val.n_images,
                                size=self.train.resolution)
        val, train = self.val.load(), self.train.load()  # a missing download stops here, before any work
        cache = FeatureCache()

        def features(dataset: Dataset, name: str, split: str, resolution: int):
            return cache.get_or_compute(self.train.backbone, dataset, name, split, resolution, backbone=backbone)

        crops = features(FiveCrops(train), self.train.cache_name + "_fivecrop", "train", self.train.resolution)
        val_features = features(val, self.val.cache_name, "val", self.val.resolution)
        flipped = features(HorizontalFlip(val), self.val.cache_name + "_hflip", "val", self.val.resolution)
        descriptors = global_descriptors(crops.features)
        table = knn_table(descriptors, k=min(TOP_K, len(descriptors)))
        return StegoData(CachedPairs(crops.features, crops.labels, table), val_features, flipped, val,
                         list(val.classes))

    def run_dir(self) -> Path:
        """The CLI run's folder: the toy run's, or ``COURSE_CACHE/runs/stego_cocostuff27_dino_vits8``."""
        from .stego.train import toy_run_dir

        if not self.full:
            return toy_run_dir()
        return config.default_run_dir("stego", self.train.dataset, self.train.backbone)

    def cli_run(self) -> dict | None:
        """The CLI run's ``metrics.json`` (toy: loaded, copied from the package or trained), or ``None`` in the
        full profile when :meth:`cli_command` has not been run yet."""
        from .stego.train import toy_run

        if not self.full:
            return toy_run()
        folder = self.run_dir()
        if (folder / "metrics.json").is_file() and (folder / "stego.pt").is_file():
            return json.loads((folder / "metrics.json").read_text())
        return None

    def cli_command(self) -> str:
        """The command that trains and evaluates STEGO at full scale into :meth:`run_dir`."""
        if not self.full:
            return "python -m course_lib.stego.train --profile toy"
        return (f"python -m course_lib.stego.train --profile full --dataset {self.train.dataset} "
                f"--backbone {self.train.backbone}")

    def short_run(self, data, steps: int = 500) -> tuple[dict, Path]:
        """Lesson 04 without the CLI's run: train the lesson-sized run (``steps`` steps of the official
        configuration on ``data``; resumed or reloaded from ``COURSE_CACHE/lessons/stego_short``), evaluate it
        with the CRF, and the k-means baseline. Returns the keys of the CLI's ``metrics.json`` (no ablations)
        and the run folder."""
        from .distributed import DistContext
        from .stego import kmeans_baseline, run_experiment

        folder = config.cache_dir() / "lessons" / "stego_short"
        cfg = self.config(steps=config.smoke_steps(steps))
        result = run_experiment(cfg, data, folder, DistContext(device=self.train.device()), desc="STEGO (lesson-sized)")
        baseline = kmeans_baseline(data, cfg.seed)
        return {**result, "baseline_kmeans_mIoU": baseline["mIoU"], "baseline_kmeans_accuracy": baseline["accuracy"],
                "ablations": [], "n_train": len(data.source.table), "n_val": len(data.val),
                "seconds": result["train_seconds"]}, folder


def stego_lesson(n_train: int = 1000, n_val: int = 200) -> StegoLesson:
    """Lessons 03–04 in the active profile: ``n_train`` training and ``n_val`` validation images (toy scenes
    at 96 px; full: CocoStuff-27, training five-cropped at 224 px, validation at 320 px); under
    ``COURSE_SMOKE`` 16 toy / 8 real training images (a batch of 16 must fit) and 8 / 4 validation images."""
    return StegoLesson(_spec(n_train, n_train, 224, "train", smoke_images=8), _spec(n_val, n_val, 320, "val"))


def paper_table(measured: dict[str, dict[str, float]]):
    """A DataFrame: STEGO's CocoStuff-27 rows (:data:`STEGO_PAPER`) then the ``measured`` rows (name → metrics:
    ``accuracy``, ``mIoU``, ``linear accuracy``, ``linear mIoU``), rounded to 0.1."""
    import pandas as pd

    return pd.DataFrame({**STEGO_PAPER, **measured}).T.round(1)


# ---------------------------------------------------------------------------------------------- lessons 05–08
PASS_PAPER = {"dataset": "ImageNet-S50", "mIoU val": 29.2, "mIoU test": 29.3,
              "source": "PASS, Gao et al., TPAMI 2022; LUSSeg/PASS README, fully unsupervised protocol"}
SEGSORT_PAPER = {"dataset": "PASCAL VOC 2012 val", "unsupervised mIoU": 55.9,
                 "source": "SegSort, Hwang et al., ICCV 2019: unsupervised SegSort with HED-owt-ucm regions and kNN "
                           "retrieval, 55.86 mIoU as Papers with Code lists the paper's result, '76 % of its "
                           "supervised counterpart' (abstract; jyhjinghwang/SegSort README)"}


def paper_references():
    """The papers' headline numbers at full scale (a pandas DataFrame: method, dataset, backbone, protocol, mIoU,
    accuracy) for lesson 08's synthesis, beside the toy comparison; each under its own protocol."""
    import pandas as pd

    stego = STEGO_PAPER["paper: ViT-B/8, + CRF"]
    rows = {
        "STEGO": {"dataset": "CocoStuff-27 val (curated)", "backbone": "DINO ViT-B/8", "protocol":
                  "Hungarian over the set, cluster probe + CRF", "mIoU": stego["mIoU"], "accuracy": stego["accuracy"]},
        "PASS": {"dataset": "ImageNet-S50 val", "backbone": "ResNet-18", "protocol":
                 "ImageNet-S fully unsupervised ('other' by attention, presence matching)",
                 "mIoU": PASS_PAPER["mIoU val"], "accuracy": None},
        "SegSort": {"dataset": SEGSORT_PAPER["dataset"], "backbone": "ResNet-101 (PSPNet)", "protocol":
                    "kNN segment retrieval (uses training labels), HED regions",
                    "mIoU": SEGSORT_PAPER["unsupervised mIoU"], "accuracy": None},
    }
    return pd.DataFrame(rows).T


def checks_apply() -> bool:
    """True when a lesson's asserts on measured numbers apply: the toy profile at its full size. The full
    profile's numbers depend on the run, and the dry run's (random weights, a few images) mean nothing."""
    return config.profile() == "toy" and not config.smoke()


def lesson_size(toy: int, full: int, smoke: int = 4) -> int:
    """How many images (or steps) a lesson uses: ``toy`` or ``full`` by profile, ``smoke`` under COURSE_SMOKE."""
    if config.smoke():
        return smoke
    return toy if config.profile() == "toy" else full


def work_dir(lesson: str) -> Path:
    """A lesson's cache folder: ``COURSE_CACHE/<lesson>`` in the toy profile, ``<lesson>_full`` in the full one,
    with ``_smoke`` appended under COURSE_SMOKE, so that checkpoints of different sizes never mix."""
    suffix = ("" if config.profile() == "toy" else "_full") + ("_smoke" if config.smoke() else "")
    return config.cache_dir() / f"{lesson}{suffix}"


def _subset(dataset, n: int | None):
    """The first ``n`` items of ``dataset`` spread evenly over it (every category of a class-sorted folder)."""
    if n is None or n >= len(dataset):
        return dataset
    return torch.utils.data.Subset(dataset, np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist())


def _square(size: int):
    """Resize on the short side to ``size``, then centre-crop ``size``×``size`` (image and label)."""
    from .data import CenterCrop, Compose, Resize

    return Compose([Resize(size), CenterCrop(size)])


@dataclass
class PassLesson:
    """Lessons 05–06: PASS on the toy world's ``objects`` (toy) or ImageNet-S50 (full).

    ``dataset`` is the PASS preset's name (:func:`course_lib.luss.settings_for`), ``arch`` its backbone,
    ``image_size`` the side of the square lesson images (None: the toy world's native 96 px) and
    ``run_dir`` the folder where ``python -m course_lib.luss pipeline`` writes its full run."""

    profile: str
    dataset: str
    arch: str
    data: str
    image_size: int | None
    run_dir: Path

    def banner(self) -> str:
        """Print the lesson banner (profile, data, backbone, device)."""
        return config.banner(self.data, self.arch)

    def images(self, split: str, n_images: int | None, seed: int = 0):
        """``split`` ("train" / "val") as a dataset of sample dicts: the toy world itself (toy), or ``n_images``
        ImageNet-S50 images (spread over the categories) resized and centre-cropped to ``image_size``,
        held in memory (:class:`course_lib.luss.InMemoryImages`, full)."""
        from .data import ImageNetS, ToyWorld
        from .luss import InMemoryImages

        if self.profile == "toy":
            return ToyWorld("objects", split, n_images=n_images, seed=seed)
        folder = ImageNetS(50, "train" if split == "train" else "validation", transform=_square(self.image_size))
        return InMemoryImages(_subset(folder, n_images), desc=f"ImageNet-S50 {split}")

    def settings(self, n_images: int):
        """The PASS preset of the profile, its batch sizes capped at ``n_images`` (a few images under smoke)."""
        from .luss import settings_for

        settings = settings_for(self.dataset)
        if config.smoke():
            for step in (settings.pretrain, settings.attention, settings.finetune):
                step.batch_size = max(2, min(step.batch_size, n_images))
                step.workers = 0
            small = self.image_size or 64
            for crops in (settings.pretrain.crops, settings.attention.crops):
                crops[:] = [type(c)(min(c.size, small // (1 if i == 0 else 2)), c.number, c.min_scale, c.max_scale)
                            for i, c in enumerate(crops)]
            settings.finetune.crop_size = min(settings.finetune.crop_size, small)
            settings.kmeans_restarts = 1
        return settings

    def command(self) -> str:
        """The CLI command of the full run that this lesson loads when it exists."""
        return f"python -m course_lib.luss pipeline --profile full --dataset {self.dataset}"

    def checkpoints(self, work: Path, train, steps: int) -> dict[str, Path]:
        """The ``pretrain`` and ``attention`` checkpoints the lesson starts from: toy: the shipped toy run;
        full: the CLI's run in ``run_dir`` when it exists, else a short run of ``steps`` iterations per
        step on the lesson's ``train`` images in ``work`` (and the command of the full run is printed)."""
        from .luss import pretrain, train_attention
        from .luss.assets import install_toy_checkpoints

        if self.profile == "toy":
            return install_toy_checkpoints(work)
        found = {step: self.run_dir / step / "checkpoint.pt" for step in ("pretrain", "attention")}
        if all(path.is_file() for path in found.values()):
            print(f"loading the full run in {config.display_path(self.run_dir)}")
            return found
        print(f"no full run in {config.display_path(self.run_dir)}: a short run of {steps} iterations per step on "
              f"{len(train)} images instead (minutes on a GPU). The full run:\n    {self.command()}")
        settings = self.settings(len(train))
        paths = {"pretrain": pretrain(settings.pretrain, train, work / "pretrain", max_steps=steps)}
        paths["attention"] = train_attention(settings.attention, paths["pretrain"], train, work / "attention",
                                             max_steps=steps)
        return paths

    def finetuned(self, work: Path, settings, pretrained: Path, dataset, steps: int | None = None) -> Path:
        """The fine-tuned checkpoint: toy: fine-tune on ``dataset`` in ``work`` (a finished run is reloaded);
        full: the CLI run's when it exists, else a short fine-tuning of ``steps`` iterations."""
        from .luss import finetune

        run = self.run_dir / "finetune" / "checkpoint.pt"
        if self.profile == "full" and run.is_file():
            return run
        return finetune(settings.finetune, pretrained, dataset, work / "finetune",
                        max_steps=None if self.profile == "toy" else steps)

    def paper_report(self) -> str:
        """The paper's number next to the full run's (its ``metrics.json``), or what to run to get it."""
        paper = (f"paper ({PASS_PAPER['source']}): {PASS_PAPER['dataset']} mIoU {PASS_PAPER['mIoU val']} (val), "
                 f"{PASS_PAPER['mIoU test']} (test)")
        summary = self.run_dir / "metrics.json"
        if self.profile == "toy":
            return paper + "; the toy world is not ImageNet-S: run this lesson with PROFILE = 'full' to compare"
        if summary.is_file():
            run = json.loads(summary.read_text())
            if "finetuned" in run:
                return paper + f"\nthe full run ({config.display_path(summary)}): mIoU {run['finetuned']['mIoU']:.1f}"
        return paper + f"\nno full run yet: `{self.command()}` writes {config.display_path(summary)}"


def pass_lesson(profile: str | None = None) -> PassLesson:
    """Lessons 05–06's data and models in ``profile`` (default: ``COURSE_PROFILE``)."""
    profile = config.profile(profile)
    if profile == "toy":
        return PassLesson("toy", "toy", "toy_resnet", "toy world (objects)", None, config.default_run_dir("pass", "toy"))
    size = 64 if config.smoke() else 224
    return PassLesson("full", "imagenet_s50", "resnet18", "ImageNet-S50 (train, validation)", size,
                      config.default_run_dir("pass", "imagenet_s50", "resnet18"))


@dataclass
class SegSortLesson:
    """Lesson 07: SegSort on the toy world's ``scenes`` (toy) or PASCAL VOC 2012 (full, ``train_aug`` / ``val``
    resized and centre-cropped to ``image_size``); ``run_dir`` holds the CLI's full run."""

    profile: str
    arch: str
    data: str
    image_size: int
    run_dir: Path

    def banner(self) -> str:
        """Print the lesson banner (profile, data, backbone, device)."""
        return config.banner(self.data, self.arch)

    @property
    def classes(self) -> list[str]:
        from .data import VOC_CLASSES, ToyWorld

        return list(ToyWorld("scenes").classes) if self.profile == "toy" else list(VOC_CLASSES)

    def split(self, split: str, n_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Images N×3×S×S (float in [0, 1]) and labels N×S×S (int64, -1 ignore) of ``split`` ("train" / "val")."""
        from .data import VOC2012
        from .segsort.train import toy_split

        if self.profile == "toy":
            return toy_split(split, n_images, self.image_size, seed)
        voc = _subset(VOC2012(split="train_aug" if split == "train" else "val", transform=_square(self.image_size)),
                      n_images)
        samples = [voc[i] for i in config.progress(range(len(voc)), desc=f"VOC {split}")]
        return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])

    def command(self) -> str:
        return "python -m course_lib.segsort.train --profile full --dataset voc2012"

    def network(self, work: Path, n_train: int):
        """(network, its saved config, the run's record: ``metrics.json`` or the toy one): toy: the shipped
        network; full: the CLI run's when it exists, else a short training on ``n_train`` images in ``work``."""
        from .segsort import TOY_CHECKPOINT, load_embedding_net

        if self.profile == "toy":
            net, saved = load_embedding_net()
            return net, saved, json.loads(TOY_CHECKPOINT.with_suffix(".json").read_text())
        run = self.run_dir
        if not (run / "segsort.pt").is_file():
            print(f"no full run in {config.display_path(run)}: a short one-epoch run on {n_train} images instead. "
                  f"The full run:\n    {self.command()}")
            run = work / "short"
            if not (run / "segsort.pt").is_file():
                subprocess.run([sys.executable, "-m", "course_lib.segsort.train", "--profile", "full", "--out",
                                str(run), "--n-train", str(n_train), "--epochs", "1", "--no-eval"], check=True)
        else:
            print(f"loading the full run in {config.display_path(run)}")
        net, saved = load_embedding_net(run / "segsort.pt")
        return net, saved, json.loads((run / "metrics.json").read_text())

    def paper_report(self, record: dict) -> str:
        """The paper's number next to the full run's kNN mIoU (``record``), or what to run to get it."""
        paper = (f"paper ({SEGSORT_PAPER['source']}): {SEGSORT_PAPER['dataset']} mIoU "
                 f"{SEGSORT_PAPER['unsupervised mIoU']}")
        if self.profile == "toy":
            return paper + "; the toy world is not VOC: run this lesson with PROFILE = 'full' to compare"
        if "knn_mIoU" in record:
            return paper + f"\nthe full run: kNN mIoU {record['knn_mIoU']:.1f} (Felzenszwalb regions unless --prior hed)"
        return paper + f"\nno full run yet: `{self.command()}` measures it"


def segsort_lesson(profile: str | None = None) -> SegSortLesson:
    """Lesson 07's data and models in ``profile`` (default: ``COURSE_PROFILE``)."""
    profile = config.profile(profile)
    if profile == "toy":
        return SegSortLesson("toy", "toy", "toy world (scenes)", 96, config.default_run_dir("segsort", "toy"))
    return SegSortLesson("full", "resnet101", "PASCAL VOC 2012 (train_aug, val)", 64 if config.smoke() else 320,
                         config.default_run_dir("segsort", "voc2012", "resnet101"))


@dataclass
class ImageSet:
    """Images N×H×W×3 (float32 in [0, 1]) and labels N×H×W (int64, -1 ignore) in memory, with the class names;
    for an ImageNet-S-like set also each image's main category (1..K) and file name ``<class>/<stem>``."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    categories: list[int] | None = None
    names: list[str] | None = None


def _image_set(dataset, classes, with_categories: bool) -> ImageSet:
    samples = [dataset[i] for i in config.progress(range(len(dataset)), desc="images")]
    categories = [int(s["meta"]["category"]) for s in samples] if with_categories else None
    names = [f"{classes[c]}/{str(s['meta']['name']).split('/')[-1]}" for s, c in zip(samples, categories)] \
        if with_categories else None
    return ImageSet(np.stack([s["image"].permute(1, 2, 0).numpy() for s in samples]),
                    np.stack([s["label"].numpy() for s in samples]), list(classes), categories, names)


def evaluation_scenes(n_images: int, seed: int = 0) -> ImageSet:
    """Lesson 08's scene images scored with STEGO's protocol: toy ``scenes`` validation images, or CocoStuff-27
    validation images (curated list) resized and centre-cropped to 320 px (64 under COURSE_SMOKE) in full."""
    from .data import CocoStuff27, ToyWorld

    if config.profile() == "toy":
        world = ToyWorld("scenes", "val", n_images=n_images, seed=seed)
        images, labels = map(np.stack, zip(*(world.render(i) for i in range(len(world)))))
        return ImageSet(images, labels, list(world.classes))
    coco = CocoStuff27(split="val", transform=_square(64 if config.smoke() else 320))
    return _image_set(_subset(coco, n_images), coco.classes, with_categories=False)


def evaluation_objects(split: str, n_images: int, seed: int = 0) -> ImageSet:
    """Lesson 08's object images scored with ImageNet-S's protocols: toy ``objects`` (``split`` "train" / "val"), or
    ImageNet-S50 (``train-semi`` / ``validation``, the labelled splits) at 224 px (64 under COURSE_SMOKE) in full."""
    from .data import ImageNetS, ToyWorld

    if config.profile() == "toy":
        world = ToyWorld("objects", split, n_images=n_images, seed=seed)
        images, labels = map(np.stack, zip(*(world.render(i) for i in range(len(world)))))
        categories = [world.category(i) for i in range(len(world))]
        return ImageSet(images, labels, list(world.classes), categories,
                        [f"{world.classes[c]}/{world.name(i)}" for i, c in enumerate(categories)])
    folder = ImageNetS(50, "train-semi" if split == "train" else "validation",
                       transform=_square(64 if config.smoke() else 224))
    return _image_set(_subset(folder, n_images), folder.classes, with_categories=True)


def evaluation_banner() -> str:
    """Print lesson 08's banner."""
    if config.profile() == "toy":
        return config.banner("toy world (scenes, objects)", "toy_vit, toy_resnet, toy SegSort net")
    return config.banner("CocoStuff-27 val, ImageNet-S50 (train-semi, validation)", "none (baselines); runs: "
                         "dino_vits8 (STEGO), resnet18 (PASS), resnet101 (SegSort)")


FULL_RUNS = {
    "STEGO (CocoStuff-27, ViT-S/8)": ("stego", "cocostuff27", "dino_vits8", "metrics.json",
                                      "python -m course_lib.stego.train --dataset cocostuff27 --backbone dino_vits8"),
    "PASS (ImageNet-S50, ResNet-18)": ("pass", "imagenet_s50", "resnet18", "metrics.json",
                                       "python -m course_lib.luss pipeline --profile full --dataset imagenet_s50"),
    "SegSort (VOC 2012, ResNet-101)": ("segsort", "voc2012", "resnet101", "metrics.json",
                                       "python -m course_lib.segsort.train --profile full --dataset voc2012"),
}
PAPER_MIOU = {"STEGO (CocoStuff-27, ViT-S/8)": 24.5, "PASS (ImageNet-S50, ResNet-18)": PASS_PAPER["mIoU val"],
              "SegSort (VOC 2012, ResNet-101)": SEGSORT_PAPER["unsupervised mIoU"]}
"""The papers' headline mIoU: STEGO Table 1 (CocoStuff-27 ViT-S/8 with CRF, unsupervised), PASS and SegSort above."""


def _run_miou(method: str, metrics: dict) -> float | None:
    if method == "pass":
        return metrics.get("finetuned", {}).get("mIoU")
    if method == "segsort":
        return metrics.get("knn_mIoU")
    return next((metrics[key] for key in ("cluster_mIoU", "cluster_mIoU_no_crf") if key in metrics), None)


def full_runs_table():
    """The full CLI runs found under ``COURSE_CACHE/runs`` next to the papers' mIoU (a pandas DataFrame); a missing
    run shows the command that makes it."""
    import pandas as pd

    rows = {}
    for name, (method, dataset, backbone, file, command) in FULL_RUNS.items():
        path = config.default_run_dir(method, dataset, backbone) / file
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        value = _run_miou(method, metrics)
        rows[name] = {"paper mIoU": PAPER_MIOU[name], "run mIoU": value,
                      "run": "found" if path.is_file() else f"missing: {command}"}
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------------- lesson 10
from typing import TYPE_CHECKING  # noqa: E402 (lesson 10's section keeps its imports to itself)

if TYPE_CHECKING:  # the lesson's result types, imported by the methods that make them
    from .evaluation import UnsupervisedMetrics
    from .segment import SegmentReport

OWN_IMAGES = {"toy": 60, "full": 200}
"""Lesson 10's photos: toy-world scenes written to a folder (toy), the first CocoStuff-27 val2017 images of the
curated list (full); under ``COURSE_SMOKE`` at most 16 (toy: the toy CLI's smoke ``--n-train``) and 4 (full)."""
OWN_STEPS = {"toy": 200, "full": 300}
"""Lesson 10's training steps: half the toy preset's 400 (the 60 photos give fewer pairs to learn from than the
1000 training scenes, and the lesson must fit in 3 minutes), a few hundred for the full profile's short run (the
CLI's preset trains 5000); 2 under ``COURSE_SMOKE``."""
OWN_TOY_SIZES = ((96, (96, 96)), (128, (128, 128)), (80, (112, 80)), (112, (112, 140)))
"""Toy photos: (the toy world's render size, the file's W×H), in turn: square 96 and 128 px, and two renders
stretched to landscape and portrait shapes (things scale with the render size, as in photos at other zooms)."""
BROKEN_PHOTO = "broken_download.jpg"
"""The lesson folder's file that is not an image (a download that failed: text where JPEG bytes should be)."""


@dataclass
class Photos:
    """The lesson's folder of "your" photos and the labels hidden from every step but the reveal.

    ``hidden`` maps a file name to its H×W int8 labels at the file's own size (-1 ignore: in the full profile
    CocoStuff-27's unlabelled pixels; in the toy one the transparent frame of the RGBA photo), ``classes`` their
    names; the folder itself holds only the images (and the broken file)."""

    folder: Path
    hidden: dict[str, np.ndarray]
    classes: list[str]

    @property
    def files(self) -> list[str]:
        """The image files' names, sorted as :func:`course_lib.segment.segment_folder` reads them."""
        return sorted(self.hidden)


def _toy_photo(index: int):
    """Toy photo ``index``: its file name, the PIL image to write and its H×W int64 labels (module constants say
    its size). JPEG for even indices, PNG for odd ones; photo 5 is greyscale (``L``), photo 7 RGBA with a
    transparent 8-px frame (labelled -1 there: the colour under it is gone)."""
    from PIL import Image

    from .data import ToyWorld

    render, size = OWN_TOY_SIZES[index % len(OWN_TOY_SIZES)]
    image, label = ToyWorld("scenes", "train", n_images=OWN_IMAGES["toy"], size=render, seed=10).render(index)
    photo = Image.fromarray((image * 255).round().astype(np.uint8)).resize(size, Image.BILINEAR)
    label = np.array(Image.fromarray(label.astype(np.int32)).resize(size, Image.NEAREST), dtype=np.int64)
    if index == 5:
        photo = photo.convert("L")
    if index == 7:
        alpha = np.zeros(label.shape, np.uint8)
        alpha[8:-8, 8:-8] = 255
        photo.putalpha(Image.fromarray(alpha))
        label[alpha == 0] = -1
    return f"photo_{index:02d}.{'png' if index % 2 else 'jpg'}", photo, label


@dataclass(frozen=True)
class OwnImagesLesson:
    """Lesson 10: train STEGO on a folder of unlabelled photos, segment it, judge it without labels.

    ``backbone``: ``toy_vit`` (toy) or ``dino_vits8`` / ``dinov2_vits14`` ... (full); ``n_images`` photos,
    ``steps`` training steps of the lesson's runs, ``work`` the lesson's cache folder
    (:func:`work_dir`: ``COURSE_CACHE/lesson10`` toy, ``lesson10_full`` full)."""

    profile: str
    backbone: str
    n_images: int
    steps: int
    work: Path

    @property
    def full(self) -> bool:
        return self.profile == "full"

    @property
    def data_name(self) -> str:
        """The banner's data: the toy world's scenes, or CocoStuff-27's val2017 images, as a folder."""
        if not self.full:
            return f"toy world (scenes, train) as a folder of {self.n_images} unlabelled photos"
        return f"CocoStuff-27 (val2017 images) as a folder of {self.n_images} unlabelled photos"

    def banner(self) -> str:
        """Print (and return) the lesson banner."""
        return config.banner(self.data_name, self.backbone, "cpu" if not self.full else config.get_device())

    def photos(self) -> Photos:
        """The folder ``work/photos`` (written once: a second call reuses it, so the runs trained on it stay
        valid) and the hidden labels. Toy: :data:`OWN_IMAGES` toy-world scenes (:func:`_toy_photo`); full:
        the first val2017 images of CocoStuff-27's curated list, copied. Both get :data:`BROKEN_PHOTO`.

        Full profile: DatasetNotFoundError (the ``get_cocostuff.py`` command) when CocoStuff is missing,
        WeightsNotFoundError (the ``get_weights.py`` command) when the backbone's weights are."""
        import shutil

        from .data import CocoStuff27, ToyWorld
        from .models.backbones import load_backbone

        folder, partial = self.work / "photos", self.work / "photos.partial"
        if self.full:
            coco = CocoStuff27(split="val")  # a missing download stops here
            load_backbone(self.backbone)  # and missing weights here, before any work
            sources = [Path(coco.image_paths[i]) for i in range(min(self.n_images, len(coco)))]
            hidden = {path.name: coco.read_label(label).astype(np.int8)
                      for path, label in zip(sources, coco.label_paths)}
            classes = list(coco.classes)
        else:
            toy = [_toy_photo(i) for i in range(self.n_images)]
            hidden = {name: label.astype(np.int8) for name, _, label in toy}
            classes = list(ToyWorld("scenes").classes)
        if not folder.is_dir():  # written once, then reused: the runs' caches are keyed by the files
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            if self.full:
                for path in sources:
                    shutil.copyfile(path, partial / path.name)
            else:
                for name, photo, _ in toy:
                    photo.save(partial / name)
            (partial / BROKEN_PHOTO).write_text("<html>404 Not Found</html>\n")
            partial.rename(folder)
        return Photos(folder, hidden, classes)

    def run_dir(self) -> Path:
        """Where :meth:`command`'s run goes: ``COURSE_CACHE/runs/stego_folder_photos_<backbone>`` (full, the CLI's
        default ``--out`` for a folder named ``photos``), or the lesson's own seed-0 run (toy)."""
        if not self.full:
            return self.work / f"run_{self.backbone}_seed0"
        return config.default_run_dir("stego", "folder_photos", self.backbone)

    def command(self, photos: Photos) -> str:
        """The CLI command of the full run on the folder (toy: the command of the lesson's own run)."""
        steps = "" if self.full else f" --steps {self.steps} --out {config.display_path(self.run_dir())}"
        return (f"python -m course_lib.stego.train --profile {self.profile} --dataset "
                f"folder:{config.display_path(photos.folder)} --backbone {self.backbone}{steps}")

    def train(self, photos: Photos, seed: int = 0, n_clusters: int | None = None) -> tuple[dict, Path]:
        """A STEGO run on the folder, through the CLI (``course_lib.stego.train.main``): its ``metrics.json``
        and folder. Run exists → load: a finished run of the same command is reloaded, never retrained.

        Full profile, ``seed`` 0 and the default K: the CLI's full run (:meth:`run_dir`) when it exists; else
        (and for any other seed or K, in both profiles) a run of :attr:`steps` steps in
        ``work/run_<backbone>_seed<seed>`` (``_k<K>`` appended for another K). What the CLI prints is shown with
        the paths inside the project relative to it."""
        import contextlib
        import io

        from .stego.train import main

        if self.full and seed == 0 and n_clusters is None:
            if (self.run_dir() / "stego.pt").is_file() and (self.run_dir() / "metrics.json").is_file():
                print(f"loading the full run in {config.display_path(self.run_dir())}")
                return json.loads((self.run_dir() / "metrics.json").read_text()), self.run_dir()
            print(f"no full run in {config.display_path(self.run_dir())}: a short run of {self.steps} steps instead "
                  f"(minutes on a GPU). The full run:\n    {self.command(photos)}")
        out = self.work / (f"run_{self.backbone}_seed{seed}" + (f"_k{n_clusters}" if n_clusters else ""))
        flags = ["--n-clusters", str(n_clusters)] if n_clusters else []
        with contextlib.redirect_stdout(io.StringIO()) as said:  # absolute paths: the run's record is cwd-free
            metrics = main(["--profile", self.profile, "--dataset", f"folder:{photos.folder.resolve()}",
                            "--backbone", self.backbone, "--out", str(out.resolve()), "--steps", str(self.steps),
                            "--seed", str(seed), *flags])
        print(said.getvalue().replace(f"{config.project_root()}/", "./"), end="")  # shown without them
        return metrics, out

    def segment(self, run: Path, name: str, crf: bool = True) -> SegmentReport:
        """:func:`course_lib.segment.segment_folder` of the photos with ``run`` into
        ``work/segmented_<backbone>_<name>`` (paths relative to the working directory, so that messages name no
        absolute path); returns its :class:`~course_lib.segment.SegmentReport`."""
        import os

        from .segment import segment_folder

        return segment_folder(os.path.relpath(self.work / "photos"),
                              os.path.relpath(self.work / f"segmented_{self.backbone}_{name}"), run, crf=crf,
                              device="cpu" if not self.full else None)

    def reveal(self, report: SegmentReport, photos: Photos) -> UnsupervisedMetrics:
        """The Hungarian-matched score of the segmentation ``report`` against the hidden labels:
        :class:`~course_lib.evaluation.UnsupervisedMetrics` over all its images' pixels (K − C extra clusters
        when the run has K > C clusters), returned after ``compute()`` (``.stats``: the K×C confusion matrix).
        An image whose label map differs in size from the segmentation (a COCO photo that EXIF rotates) is
        left out and named."""
        from .evaluation import UnsupervisedMetrics
        from .segment import read_labels

        predictions = read_labels(report)
        n_classes = len(photos.classes)
        metrics = UnsupervisedMetrics(n_classes, extra_clusters=max(0, report.n_clusters - n_classes))
        rotated = [name for name, ids in predictions.items() if ids.shape != photos.hidden[name].shape]
        for name, ids in predictions.items():
            if name not in rotated:
                metrics.update(torch.from_numpy(ids.astype(np.int64)),
                               torch.from_numpy(photos.hidden[name].astype(np.int64)))
        if rotated:
            print(f"left out of the reveal (label map not the image's size, EXIF rotation): {', '.join(rotated)}")
        metrics.compute()
        return metrics


def own_images_lesson(backbone: str | None = None, profile: str | None = None) -> OwnImagesLesson:
    """Lesson 10 in ``profile`` (default ``COURSE_PROFILE``): toy: 60 toy photos, the toy ViT, 200 steps;
    full: 200 CocoStuff-27 val2017 photos, ``backbone`` (default ``dino_vits8``; e.g. ``dinov2_vits14``), 300
    steps; under ``COURSE_SMOKE`` a handful of photos and 2 steps."""
    profile = config.profile(profile)
    if profile == "toy" and backbone not in (None, "toy_vit"):
        raise config.ConfigError(f"BACKBONE {backbone!r} needs PROFILE = 'full' (real weights); the toy profile "
                                 "uses toy_vit")
    smoke_images = {"toy": 16, "full": SMOKE_IMAGES}[profile]
    return OwnImagesLesson(profile, backbone or {"toy": "toy_vit", "full": STEGO_BACKBONE}[profile],
                           min(OWN_IMAGES[profile], smoke_images) if config.smoke() else OWN_IMAGES[profile],
                           config.smoke_steps(OWN_STEPS[profile]), work_dir("lesson10"))
