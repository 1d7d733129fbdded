"""The LUSS pipeline of PASS as steps on a run folder, and its command line.

    python -m course_lib.luss pipeline --profile toy                              # the toy world, start to end
    COURSE_PROFILE=full python -m course_lib.luss pipeline --dataset imagenet_s50  # raw ImageNet-S50 → metrics
    python -m course_lib.luss pretrain --dataset imagenet_s50    # one step at full scale (torchrun works too)

The command line follows the course's convention (:mod:`course_lib.cli`): ``--out`` is the run folder
(``--work-dir`` is an alias; default ``$COURSE_CACHE/runs/pass_<dataset>_<arch>``, e.g.
``pass_imagenet_s50_resnet18``, where the lessons look for it), ``--profile``, ``--dataset``,
``--data-root``, ``--device``, ``--threads``, ``--seed`` (the seed of every step), ``--max-steps``,
``--print-config`` (the resolved configuration as JSON, then exit before reading any data). The run folder
holds ``config.json`` (profile, dataset, smoke, seed and the settings) and ``metrics.json`` (updated after
every step: its wall time, a training step's iterations and last losses, the evaluation), finite numbers
only. A missing ImageNet-S stops at once with the command that fetches it (exit 2, no traceback).

Steps, each reading what the previous ones wrote in the run folder:

==========  =================================================================================
pretrain    SwAV + P2P + D2S pre-training on the training images → ``pretrain/checkpoint.pt``
attention   pixel attention on the frozen network → ``attention/checkpoint.pt``
cluster     attention-pooled embeddings of the training images, k-means → ``cluster/centroids.pt``
            (and the no-attention baseline's centroids)
labels      τ: sweep on the labelled validation set (the paper's protocol), Otsu (label-free) or a
            number; pseudo-labels of the training images → ``labels/train/<class>/<name>.png``, of
            the validation images → ``labels/validation``, and the baseline's → ``baseline/validation``
finetune    a segmentation network on the pseudo-labels → ``finetune/checkpoint.pt``
infer       predictions of the validation images at short side 256 (above 1000² px at height 1000, as the
            official inference.py) → ``predictions/validation``;
            presence matching and the ImageNet-S metrics of the predictions, the raw pseudo-labels
            and the baseline → ``metrics.json``
pipeline    all of the above in order
==========  =================================================================================

Nothing needs preparing by hand: the pipeline's derived data are its own steps' outputs, and a re-run
reuses them. A finished training step just reloads its checkpoint, an interrupted one resumes; the
clustering, the labels and the predictions are reused while they are newer than what they were made from
and were made with the same settings (e.g. a new ``--tau`` redoes the labels, not the clustering),
else recomputed. Every value is checked before any work (``--tau`` a number in [0, 1], ``sweep`` or
``otsu``); a run folder whose training steps were made with other settings is refused with the settings
that differ (``--overwrite`` starts afresh).

``COURSE_SMOKE=1`` (both profiles; with ``COURSE_PROFILE=full`` the dry run) runs the same steps and code
paths at tiny size (:func:`smoke_settings`): 4 training and 4 validation images (on ImageNet-S a subset
spread over the categories, its ground truth copied into ``subset/``), one epoch of at most 2 iterations
per training step, crops of 64 / 32 px, 2 clusters. A smoke run refuses a run folder of a full-size run and
vice versa.

On CUDA the three training steps run their forward passes under bf16 autocast; Sinkhorn, the losses and
the metrics stay in float32 (:mod:`.training`).

``--threads N`` sets PyTorch's CPU threads (1 is fastest on a busy machine); ``--shipped`` (toy only) starts
from the shipped pre-training and attention checkpoints (:mod:`.assets`). The summary also scores the
constant prediction 'other' everywhere: with weak features a LUSS method can beat a baseline without
'other' by finding nothing but the background, and that floor shows it.

``--dataset imagenet_s50|300|919`` reads ``$COURSE_DATA/ImageNetS/ImageNetS{50,300,919}`` through
:class:`course_lib.data.ImageNetS` with the paper's settings (ResNet-18, 200 epochs, multi-crop for S50;
ResNet-50, 100 epochs for S300 / S919; τ 0.41 / 0.40 / 0.37; the official S919 run pre-trains on all of
ImageNet-1k, this one on ImageNet-S919's training split). ``--profile toy`` (the ``toy`` dataset)
writes the toy world's ``objects`` in the ImageNet-S layout into the run folder and runs the same code.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from .. import cli
from .. import config as course_config
from ..deviations import Deviation
from ..data.folders import resolve_root
from ..data.imagenet_s import ImageNetS
from ..data.label_png import read_imagenet_s_png, write_imagenet_s_png
from ..data.toyworld import ToyWorld, write_imagenet_s_layout
from ..evaluation.imagenet_s import ImageNetSEvaluator, evaluate_folders, presence_matching, save_match
from .assets import install_toy_checkpoints
from .attention import AttentionConfig, load_attention_model, train_attention
from .data import PseudoLabelDataset, image_batches, sample_name
from .finetune import FinetuneConfig, finetune, load_segmentation_model, predict_dataset
from .labels import (apply_threshold, embed_images, foreground_as_true_category, kmeans, otsu_from_histogram,
                     raw_label_maps, tau_sweep)
from .multicrop import CropSpec
from .pretrain import PretrainConfig, pretrain
from .training import load_checkpoint
from ..distributed import init_distributed

STEPS = ("pretrain", "attention", "cluster", "labels", "finetune", "infer")
TRAINING_STEPS = ("pretrain", "attention", "finetune")
DATASETS = ("toy", "imagenet_s50", "imagenet_s300", "imagenet_s919")


@dataclass
class Settings:
    """Everything a pipeline run needs besides its folders (one preset per dataset)."""

    dataset: str
    num_classes: int
    pretrain: PretrainConfig
    attention: AttentionConfig
    finetune: FinetuneConfig
    cluster_short_side: int | None = 256   # official: Resize(256) + CenterCrop(224) before pooling
    cluster_crop: int | None = 224
    label_short_side: int | None = 256     # pseudo-labels are inferred at short side 256
    kmeans_restarts: int = 30
    kmeans_iterations: int = 20
    tau: float | str = 0.41                # a number, "sweep" (labelled validation) or "otsu" (label-free)
    tau_grid: tuple[float, ...] = tuple(np.round(np.arange(0.0, 0.801, 0.01), 2).tolist())
    batch_size: int = 1                    # inference batches (ImageNet images differ in size)
    toy_images: tuple[int, int] = (1000, 1000)  # toy dataset: (training, validation) images
    n_clusters: int | None = None          # k-means clusters (None: num_classes, the paper's choice)
    max_images: tuple[int, int] | None = None  # ImageNet-S: at most (training, validation) images, None: all

    def to_dict(self) -> dict:
        return asdict(self)


def _full_settings(subset: int) -> Settings:
    small = subset == 50
    pretrain_config = PretrainConfig(
        arch="resnet18" if small else "resnet50", hidden_mlp=512 if small else 2048,
        nmb_prototypes=500 if small else 3000,
        crops=[CropSpec(224, 2, 0.14, 1.0), CropSpec(96, 6, 0.05, 0.14)] if small else [CropSpec(224, 2, 0.08, 1.0)],
        queue_length=2048 if small else 3840, epochs=200 if small else 100,
        freeze_prototypes_niters=1001 if small else 5005, workers=10)
    attention_config = AttentionConfig(base_lr=6.0 if small else 0.6, workers=10)
    return Settings(f"imagenet_s{subset}", subset, pretrain_config, attention_config,
                    FinetuneConfig(num_classes=subset, workers=8), tau={50: 0.41, 300: 0.40, 919: 0.37}[subset])


def toy_settings() -> Settings:
    """The toy world's preset: the whole pipeline in about 13 minutes on two CPU cores (40 pre-training and
    12 attention epochs: the shipped checkpoint, :mod:`.assets`, is this preset's run), evaluated on 1000
    validation images (on 200 the presence matching alone moved fine-tuning's gain by several mIoU).

    What differs from ImageNet-S50's settings, and why (each measured on the toy world; lesson 05 §6):

    - crops keep the toy world's native texture scale (areas of 30-60 % at 64 px, 8-15 % at 32 px, where
      ImageNet zooms 0.14-1);
    - colour: the toy world paints every region between two random colours, in positive or negative, so
      the views are recoloured that way (``recolour_p``, :class:`course_lib.data.transforms.RandomRecolour`)
      instead of SwAV's colour jitter (``jitter_p`` 0), which on a thousand images keeps SwAV's codes
      unpredictable across views (its loss stays at ln K and the features end up worse than random ones);
    - a contrastive pixel-to-pixel term (``p2p_contrast_weight`` 1, :func:`.p2p.pixel_contrast_loss`) next
      to PASS's non-contrastive one: it gives a learning signal from the first step, as the toy DINO
      backbone needed (lesson 01);
    - AdamW (lr 10⁻³, cosine decay) in all three training steps: LARS's layer-wise steps are built for
      thousands of iterations of 4096-image batches, not a few hundred of 32;
    - 100 prototypes of dimension 32, a queue of 384 from epoch 2, prototypes frozen for 100 iterations;
    - fine-tuning (20 epochs) on recoloured crops of 50-100 % of the image, close to the whole images it
      then predicts;
    - the course's first P2P sampling and initialisation, kept so that the shipped run and the lessons'
      numbers stay: border padding with only overlapping crop pairs in L_p2p (``p2p_padding``), PyTorch's
      default initialisation of the heads, the attention and the classifier (``conv_init``), and the
      backbone's BN statistics left as pre-training's during the attention step (``train_backbone_bn``).
    """
    return Settings(
        "toy", 10,
        PretrainConfig(arch="toy_resnet", hidden_mlp=256, feat_dim=32, nmb_prototypes=100,
                       crops=[CropSpec(64, 2, 0.3, 0.6), CropSpec(32, 4, 0.08, 0.15)], blur_sigma=(0.1, 1.0),
                       invert_p=0.5, jitter_p=0.0, recolour_p=1.0, queue_length=384, epoch_queue_starts=2, epochs=40,
                       batch_size=32, optimizer="adamw", base_lr=1e-3, final_lr=1e-5, weight_decay=0.05,
                       freeze_prototypes_niters=100, p2p_padding="border", p2p_contrast_weight=1.0, conv_init="torch",
                       seed=0),
        AttentionConfig(crops=[CropSpec(64, 2, 0.3, 1.0)], blur_sigma=(0.1, 1.0), invert_p=0.5, jitter_p=0.0,
                        recolour_p=1.0, queue_length=384, epochs=12, batch_size=32, optimizer="adamw", base_lr=1e-3,
                        final_lr=1e-5, freeze_prototypes_niters=1000, train_backbone_bn=False, conv_init="torch",
                        seed=0),
        FinetuneConfig(num_classes=10, crop_size=64, crop_scale=(0.5, 1.0), recolour_p=1.0, epochs=20, batch_size=32,
                       optimizer="adamw", base_lr=1e-3, final_lr=1e-5, weight_decay=0.05, conv_init="torch",
                       infer_short_side=None, seed=0),
        cluster_short_side=None, cluster_crop=None, label_short_side=None, kmeans_restarts=10, tau="sweep",
        tau_grid=tuple(np.round(np.arange(0.0, 0.801, 0.02), 2).tolist()), batch_size=100)


def settings_for(dataset: str) -> Settings:
    """The preset of ``dataset`` (one of :data:`DATASETS`)."""
    if dataset == "toy":
        return toy_settings()
    if dataset in DATASETS:
        return _full_settings(int(dataset.removeprefix("imagenet_s")))
    raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")


SMOKE_IMAGES = 4
"""Training and validation images of a ``COURSE_SMOKE`` run."""


def _smoke_crops(crops: Sequence[CropSpec]) -> list[CropSpec]:
    """The crop groups at smoke size: the first (large) at 64 px, the others at 32 px, at most 2 crops each."""
    return [CropSpec(64 if index == 0 else 32, min(spec.number, 2), spec.min_scale, spec.max_scale)
            for index, spec in enumerate(crops)]


def smoke_settings(settings: Settings) -> Settings:
    """A copy of ``settings`` at ``COURSE_SMOKE`` size, with the same steps and code paths: 4 training and
    4 validation images (:data:`SMOKE_IMAGES`; a subset of ImageNet-S), batches of 2, one epoch per
    training step (the training loop also caps it at 2 iterations), crops of 64 / 32 px, clustering and
    inference at 64 px, the SwAV queue from the first iteration, prototypes frozen for one iteration, 2
    clusters of 2 k-means restarts, a τ grid of step 0.1, at most one data-loader worker."""
    s = copy.deepcopy(settings)
    batch = 2
    for stage in (s.pretrain, s.attention):
        stage.crops = _smoke_crops(stage.crops)
        stage.epochs, stage.batch_size, stage.workers = 1, batch, min(stage.workers, 1)
        stage.queue_length, stage.epoch_queue_starts = 2 * batch, 0
        stage.freeze_prototypes_niters = min(stage.freeze_prototypes_niters, 1)
    ft = s.finetune
    ft.epochs, ft.batch_size, ft.workers, ft.crop_size = 1, batch, min(ft.workers, 1), 64
    ft.infer_short_side = None if ft.infer_short_side is None else 64
    s.cluster_short_side = None if s.cluster_short_side is None else 64
    s.cluster_crop = None if s.cluster_crop is None else 56
    s.label_short_side = None if s.label_short_side is None else 64
    s.kmeans_restarts, s.kmeans_iterations, s.n_clusters = 2, 5, 2
    s.tau_grid = tuple(np.round(np.arange(0.0, 0.801, 0.1), 2).tolist())
    s.batch_size = min(s.batch_size, SMOKE_IMAGES)
    s.toy_images = (SMOKE_IMAGES, SMOKE_IMAGES)
    s.max_images = None if s.dataset == "toy" else (SMOKE_IMAGES, SMOKE_IMAGES)
    return s


def spread_indices(length: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(length)`` (first and last included; all when fewer)."""
    if count >= length:
        return list(range(length))
    return np.unique(np.round(np.linspace(0, length - 1, count)).astype(int)).tolist()


def apply_overrides(settings: Settings, overrides: Sequence[str]) -> Settings:
    """``section.key=value`` (or ``key=value`` for top-level settings) overrides; values parsed as JSON
    when possible (``pretrain.epochs=2``, ``tau=0.3``, ``toy_images=[16,8]``)."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep:
            raise course_config.ConfigError(f"override {override!r} is not key=value")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        section, _, name = key.rpartition(".")
        target = getattr(settings, section) if section else settings
        if section not in ("", "pretrain", "attention", "finetune") or not hasattr(target, name):
            raise course_config.ConfigError(f"unknown setting {key!r}")
        if isinstance(getattr(target, name), tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(target, name, value)
    try:
        settings.pretrain.__post_init__()
        settings.attention.__post_init__()
        settings.finetune.__post_init__()
    except (TypeError, ValueError) as error:
        raise course_config.ConfigError(f"invalid settings: {error}") from error
    return settings


class Pipeline:
    """The steps of :data:`STEPS` on one run folder (see the module docstring)."""

    def __init__(self, settings: Settings, work_dir: str | Path, data_root: str | Path | None = None,
                 device: str | None = None, max_steps: int | None = None):
        self.settings, self.work_dir = settings, Path(work_dir)
        self.data_root, self.device, self.max_steps = data_root, device, max_steps
        self._datasets: dict[str, Dataset] = {}
        self.processes = init_distributed(device)
        if self.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.prepare_toy()
        self._barrier()

    @property
    def is_main(self) -> bool:
        return self.processes.is_main

    def _barrier(self) -> None:
        if self.processes.distributed:
            torch.distributed.barrier()

    # ---------------------------------------------------------------- data
    @property
    def subset_dir(self) -> Path | None:
        return self.work_dir / "data" if self.settings.dataset == "toy" else None

    def gt_dir(self) -> Path:
        """The validation ground truth: the dataset's own folder, or the copy of a subset's
        (``settings.max_images``), written on first use."""
        validation = self.dataset("validation")
        if isinstance(validation, Subset):
            return self._subset_ground_truth(validation)
        if self.subset_dir is not None:
            return self.subset_dir / "validation-segmentation"
        subset = f"ImageNetS{self.settings.num_classes}"
        return resolve_root(self.data_root) / "ImageNetS" / subset / "validation-segmentation"

    def _subset_ground_truth(self, subset: Subset) -> Path:
        """``subset/validation-segmentation``: the label PNGs of the subset's images (reused while the
        subset is the same), so that the evaluator's "every file of the ground-truth folder" is the subset."""
        folder = self.path("subset", "validation-segmentation")
        names = [subset.dataset.names[index] for index in subset.indices]
        listing = self.path("subset", "validation.txt")
        if listing.is_file() and listing.read_text().split() == names:
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        for index, name in zip(subset.indices, names):
            source = subset.dataset.label_paths[index]
            if source is None:
                raise course_config.ConfigError(f"validation image {name} has no label file to evaluate with")
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / f"{name}.png")
        listing.write_text("\n".join(names) + "\n")
        return folder

    def prepare_toy(self) -> None:
        """Write the toy world's ``objects`` in the ImageNet-S layout (once)."""
        root = self.subset_dir
        if root is None or (root / "done").is_file():
            return
        n_train, n_val = self.settings.toy_images
        seed = self.settings.pretrain.seed
        write_imagenet_s_layout(ToyWorld("objects", "train", n_images=n_train, seed=seed), root, "train")
        write_imagenet_s_layout(ToyWorld("objects", "val", n_images=n_val, seed=seed), root, "validation")
        (root / "done").write_text("toy world written\n")

    def dataset(self, split: str) -> Dataset:
        """The images of ``split`` ("train" or "validation"), listed once per run: ImageNet-S (or the toy
        world's copy), limited to ``settings.max_images`` spread evenly over the sorted list (so over the
        categories). A missing dataset raises the error that names its fetch command."""
        if split not in self._datasets:
            if self.subset_dir is not None:
                full = ImageNetS(split=split, subset_dir=self.subset_dir)
            else:
                full = ImageNetS(self.settings.num_classes, split, root=self.data_root)
            limits = self.settings.max_images
            limit = None if limits is None else limits[0 if split == "train" else 1]
            self._datasets[split] = (full if limit is None or limit >= len(full)
                                     else Subset(full, spread_indices(len(full), limit)))
        return self._datasets[split]

    def path(self, *parts: str) -> Path:
        return self.work_dir.joinpath(*parts)

    def _device(self) -> torch.device:
        return course_config.get_device(self.device)

    def _stamp(self, step: str) -> Path:
        return self.path(STEP_OUTPUTS[step][0], "settings.json")

    def _step_settings(self, step: str) -> dict:
        """The settings ``step``'s result depends on (:data:`STEP_SETTINGS`), as JSON values."""
        values = {}
        for name in STEP_SETTINGS[step]:
            section, _, key = name.rpartition(".")
            values[name] = cli.to_json(getattr(getattr(self.settings, section) if section else self.settings, key))
        return values

    def _reusable(self, step: str, *inputs: Path) -> bool:
        """True when ``step``'s result exists, is newer than every one of ``inputs`` (the results it was
        made from) and was made with the current settings (its ``settings.json``)."""
        output, stamp = self.path(*STEP_OUTPUTS[step]), self._stamp(step)
        if not (output.is_file() and stamp.is_file()) or json.loads(stamp.read_text()) != self._step_settings(step):
            return False
        return all(output.stat().st_mtime >= path.stat().st_mtime for path in inputs if path.is_file())

    def _finished(self, step: str) -> None:
        """Record the settings of ``step``'s result, just written."""
        cli.write_json(self._stamp(step), self._step_settings(step))

    def check_ready(self, step: str) -> None:
        """Raise a clear error when ``step`` needs the output of a step that has not run in this folder."""
        needs = {"attention": ("pretrain",), "cluster": ("attention",), "labels": ("cluster",),
                 "finetune": ("pretrain", "labels"), "infer": ("finetune", "labels")}.get(step, ())
        missing = [earlier for earlier in needs if not self.path(*STEP_OUTPUTS[earlier]).is_file()]
        if missing:
            raise course_config.ConfigError(
                f"step {step!r} needs the output of {', '.join(repr(m) for m in missing)} in {self.work_dir}: run "
                f"`python -m course_lib.luss {missing[0]} --out {self.work_dir}` (or the whole 'pipeline') first")

    # ---------------------------------------------------------------- steps
    def run_pretrain(self) -> None:
        pretrain(self.settings.pretrain, self.dataset("train"), self.path("pretrain"), self.device, self.max_steps)

    def run_attention(self) -> None:
        train_attention(self.settings.attention, self.path("pretrain", "checkpoint.pt"), self.dataset("train"),
                        self.path("attention"), self.device, self.max_steps)

    def _attention_model(self):
        return load_attention_model(self.path("attention", "checkpoint.pt"))[0].to(self._device())

    def run_cluster(self) -> str | None:
        s = self.settings
        if self._reusable("cluster", self.path(*STEP_OUTPUTS["attention"])):
            return "reused"
        model, train = self._attention_model(), self.dataset("train")
        batch_size = s.batch_size if s.cluster_crop is None else max(s.batch_size, 64)
        result = {}
        for name, use_attention in (("attention", True), ("baseline", False)):
            embeddings = embed_images(model, train, batch_size, s.cluster_short_side, s.cluster_crop, use_attention,
                                      self._device())
            clusters = kmeans(embeddings.to(self._device()), s.n_clusters or s.num_classes, s.kmeans_restarts,
                              s.kmeans_iterations, seed=s.pretrain.seed)
            result[name] = {"centroids": clusters.centroids.cpu(), "assignments": clusters.assignments.cpu(),
                            "inertia": clusters.inertia}
        cli.save_atomic(result, self.path(*STEP_OUTPUTS["cluster"]))
        self._finished("cluster")
        return None

    def _raw_maps(self, split: str, centroids: torch.Tensor, use_attention: bool = True):
        """(name, cluster ids, ā or None) for every image of ``split`` at its full resolution."""
        model = self._attention_model()
        for images, metas, sizes in image_batches(self.dataset(split), self.settings.batch_size,
                                                  self.settings.label_short_side, desc=f"labelling {split}"):
            ids, attention = raw_label_maps(model, images.to(self._device()), centroids, sizes[0], use_attention)
            for index, meta in enumerate(metas):
                yield (sample_name(meta), ids[index].cpu().numpy(),
                       None if attention is None else attention[index].cpu().numpy())

    def _attention_histogram(self, split: str, centroids: torch.Tensor) -> torch.Tensor:
        """Histogram of ā over every pixel of ``split`` (:data:`OTSU_BINS` bins on [0, 1])."""
        histogram = torch.zeros(OTSU_BINS, dtype=torch.float64)
        for _, _, attention in self._raw_maps(split, centroids):
            histogram += torch.histc(torch.from_numpy(attention).float(), OTSU_BINS, 0, 1).double()
        return histogram

    def choose_tau(self, names: list[str], centroids: torch.Tensor) -> dict:
        """τ of the settings: the sweep's best on the labelled validation maps (the paper's protocol), Otsu's
        on the training pixels (label-free) or a number. The report also holds the sweep's curve when the
        validation set is labelled."""
        s, gt_dir = self.settings, self.gt_dir()
        report: dict = {}
        if gt_dir.is_dir():
            curve = tau_sweep(RawMaps(self.path("labels", "validation-raw"), gt_dir, names, s.num_classes),
                              s.num_classes, s.tau_grid)
            report["curve"] = curve
            report["tau_sweep"] = max(curve, key=lambda row: row["mIoU"])["tau"]
        if s.tau == "sweep":
            if "tau_sweep" not in report:
                raise course_config.ConfigError("tau='sweep' needs the labelled validation set; use --tau otsu "
                                                "or a number")
            report["tau"] = report["tau_sweep"]
        elif s.tau == "otsu":
            report["tau"] = report["tau_otsu"] = otsu_from_histogram(self._attention_histogram("train", centroids), 0, 1)
        else:
            report["tau"] = float(s.tau)
        return report

    def run_labels(self) -> str | None:
        if self._reusable("labels", self.path(*STEP_OUTPUTS["cluster"])):
            return "reused"
        clusters = torch.load(self.path(*STEP_OUTPUTS["cluster"]), weights_only=True)
        centroids = clusters["attention"]["centroids"]
        names = []
        for name, ids, attention in self._raw_maps("validation", centroids):
            save_raw_maps(self.path("labels", "validation-raw"), name, ids, attention)
            names.append(name)
        report = self.choose_tau(names, centroids)
        for name in names:
            ids, attention = load_raw_maps(self.path("labels", "validation-raw"), name)
            write_imagenet_s_png(self.path("labels", "validation", f"{name}.png"),
                                 apply_threshold(ids, attention, report["tau"]))
        histogram = torch.zeros(OTSU_BINS, dtype=torch.float64)
        for name, ids, attention in self._raw_maps("train", centroids):
            write_imagenet_s_png(self.path("labels", "train", f"{name}.png"), apply_threshold(ids, attention, report["tau"]))
            histogram += torch.histc(torch.from_numpy(attention).float(), OTSU_BINS, 0, 1).double()
        report.setdefault("tau_otsu", otsu_from_histogram(histogram, 0.0, 1.0))
        for name, ids, _ in self._raw_maps("validation", clusters["baseline"]["centroids"], use_attention=False):
            write_imagenet_s_png(self.path("baseline", "validation", f"{name}.png"), ids)
        cli.write_json(self.path(*STEP_OUTPUTS["labels"]), report)  # last: marks the step done
        self._finished("labels")
        return None

    def run_finetune(self) -> None:
        checkpoint = self.path(*STEP_OUTPUTS["finetune"])
        labels = self.path(*STEP_OUTPUTS["labels"])
        if self.is_main and checkpoint.is_file() and checkpoint.stat().st_mtime < labels.stat().st_mtime:
            print(f"note: {checkpoint} predates the current pseudo-labels; delete it to fine-tune on them", flush=True)
        dataset = PseudoLabelDataset(self.dataset("train"), label_dir=self.path("labels", "train"))
        finetune(self.settings.finetune, self.path("pretrain", "checkpoint.pt"), dataset, self.path("finetune"),
                 self.device, self.max_steps)

    def run_infer(self) -> dict:
        """Predict the validation images (reused while newer than the fine-tuned model) and evaluate the
        predictions, the pseudo-labels and the no-attention baseline: the ImageNet-S metrics after presence
        matching, the masks diagnostic and the constant 'other' floor. Returns them (metrics.json)."""
        s = self.settings
        done = self.path(*STEP_OUTPUTS["infer"])
        if not self._reusable("infer", self.path(*STEP_OUTPUTS["finetune"])):
            model = load_segmentation_model(self.path(*STEP_OUTPUTS["finetune"]))[0]
            predict_dataset(model, self.dataset("validation"), s.finetune.infer_short_side, s.batch_size,
                            self._device(), out_dir=self.path("predictions", "validation"),
                            max_res=s.finetune.infer_max_res)
            done.write_text("predictions written\n")
            self._finished("infer")
        metrics: dict = {"tau": json.loads(self.path(*STEP_OUTPUTS["labels"]).read_text())["tau"]}
        gt_dir = self.gt_dir()
        if not gt_dir.is_dir():
            return metrics
        workers = 1 if s.dataset == "toy" or s.max_images else None  # a pool only pays off on thousands of images
        for key, folder in (("finetuned", self.path("predictions", "validation")),
                            ("pseudo_labels", self.path("labels", "validation")),
                            ("baseline_no_attention", self.path("baseline", "validation"))):
            match = presence_matching(folder, gt_dir, s.num_classes, workers=workers)
            save_match(match, folder.parent / f"{folder.name}_match.json")
            metrics[key] = evaluate_folders(folder, gt_dir, s.num_classes, match=match, workers=workers)
            masks = evaluate_folders(folder, gt_dir, s.num_classes, workers=workers,
                                     transform=partial(foreground_as_true_category, num_classes=s.num_classes))
            metrics.setdefault("mask_mIoU", {})[key] = masks["mIoU"]  # a diagnostic: uses the true categories
        metrics["constant_other"] = constant_other_scores(gt_dir, s.num_classes)
        return metrics

    def run(self, step: str):
        """Run one step: training steps on every process, the others on rank 0 while the rest wait. Returns
        the step's result: infer's metrics, "reused" for a reused result, else None."""
        self.check_ready(step)
        result = None
        if step in TRAINING_STEPS or self.is_main:
            result = getattr(self, f"run_{step}")()
        self._barrier()
        return result

    def write_config(self, record: dict) -> None:
        """Write ``config.json``: the settings of the latest command (see :func:`check_run_folder`)."""
        cli.write_json(self.path("config.json"), record)

    def record(self, step: str, seconds: float, result: dict | None = None) -> dict:
        """Update ``metrics.json`` (rank 0): the step's wall time, a training step's iterations and last
        losses (from its checkpoint), infer's evaluation ``result``. Returns the metrics."""
        path = self.path("metrics.json")
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        metrics.update(result or {})
        if step in TRAINING_STEPS:
            history = load_checkpoint(self.path(*STEP_OUTPUTS[step]), f"{step} checkpoint")["history"]
            metrics.setdefault("training", {})[step] = {"iterations": len(history), **(history[-1] if history else {})}
        metrics.setdefault("seconds", {})[step] = round(seconds, 2)
        cli.write_json(path, metrics)
        return metrics


STEP_OUTPUTS = {"pretrain": ("pretrain", "checkpoint.pt"), "attention": ("attention", "checkpoint.pt"),
                "cluster": ("cluster", "centroids.pt"), "labels": ("labels", "tau.json"),
                "finetune": ("finetune", "checkpoint.pt"), "infer": ("predictions", "done")}
"""The file that marks each step done, relative to the run folder."""
STEP_SETTINGS = {
    "cluster": ("num_classes", "n_clusters", "cluster_short_side", "cluster_crop", "kmeans_restarts",
                "kmeans_iterations", "batch_size", "toy_images", "max_images", "pretrain.seed"),
    "labels": ("tau", "tau_grid", "label_short_side", "max_images"),
    "infer": ("finetune.infer_short_side", "finetune.infer_max_res", "max_images"),
}
"""The settings each reusable (non-training) step's result depends on, recorded beside it."""
STEP_SPLITS = {"pretrain": ("train",), "attention": ("train",), "cluster": ("train",),
               "labels": ("train", "validation"), "finetune": ("train",), "infer": ("validation",)}
"""The images each step reads (checked at the start of a command, so a missing dataset stops it at once)."""


OTSU_BINS = 1000


def constant_other_scores(gt_dir: Path, num_classes: int) -> dict:
    """The ImageNet-S metrics of predicting 'other' everywhere: the floor a LUSS method must clear
    (its mIoU is IoU('other') / (K + 1))."""
    evaluator = ImageNetSEvaluator(num_classes)
    for path in sorted(Path(gt_dir).glob("*/*.png")):
        gt = read_imagenet_s_png(path, num_classes=num_classes)
        evaluator.update(np.zeros_like(gt), gt, name=str(path))
    return evaluator.compute()


def save_raw_maps(folder: Path, name: str, ids: np.ndarray, attention: np.ndarray | None) -> None:
    """Cluster ids as an ImageNet-S PNG and ā as a 16-bit grey PNG (ā·65535), ``folder/<name>.{ids,att}.png``."""
    write_imagenet_s_png(folder / f"{name}.ids.png", ids)
    if attention is not None:
        quantised = np.round(np.clip(attention, 0, 1) * 65535).astype(np.uint16)
        Image.fromarray(quantised).save(folder / f"{name}.att.png")


def load_raw_maps(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    ids = read_imagenet_s_png(folder / f"{name}.ids.png").astype(np.int64)
    attention = np.asarray(Image.open(folder / f"{name}.att.png"), dtype=np.float64) / 65535
    return ids, attention


class RawMaps(Sequence):
    """The (cluster ids, ā, ground truth) triples of saved validation maps, read lazily (for the τ sweep)."""

    def __init__(self, folder: Path, gt_dir: Path, names: list[str], num_classes: int):
        self.folder, self.gt_dir, self.names, self.num_classes = folder, gt_dir, names, num_classes

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        ids, attention = load_raw_maps(self.folder, self.names[index])
        gt = read_imagenet_s_png(self.gt_dir / f"{self.names[index]}.png", num_classes=self.num_classes)
        return ids, attention, gt


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m course_lib.luss",
        description="PASS (Gao et al., TPAMI 2022) on the toy world or ImageNet-S: pre-training, pixel attention, "
                    "clustering, pseudo-labels, fine-tuning, inference and evaluation. Run a step, or 'pipeline'.")
    parser.add_argument("step", choices=(*STEPS, "pipeline"))
    cli.add_common_arguments(parser, out_aliases=("--work-dir",), out_required=False, skip=("dataset",))
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="toy (the toy profile's default) or imagenet_s50 / imagenet_s300 / imagenet_s919 (full)")
    parser.add_argument("--tau", default=None, help="'other' threshold: a number in [0, 1], 'sweep' or 'otsu'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. pretrain.epochs=50 or toy_images=[200,50] (repeatable)")
    parser.add_argument("--shipped", action="store_true",
                        help="toy only: start from the shipped pre-training and attention checkpoints")
    return parser


def _resolve_dataset(profile: str | None, dataset: str | None) -> str:
    profile = course_config.profile(profile) if profile is not None or dataset is None else None
    if dataset is None:
        if profile == "full":
            raise course_config.ConfigError("the full profile needs --dataset imagenet_s50, imagenet_s300 or imagenet_s919")
        return "toy"
    if profile == "toy" and dataset != "toy" or profile == "full" and dataset == "toy":
        raise course_config.ConfigError(f"--profile {profile} does not go with --dataset {dataset}")
    return dataset


def resolve(args: argparse.Namespace) -> tuple[Settings, Path, dict]:
    """The settings of a command line (preset of the dataset, at smoke size under ``COURSE_SMOKE``, then
    ``--set``, ``--tau`` and ``--seed``), its run folder and the record of ``config.json``."""
    dataset = _resolve_dataset(args.profile, args.dataset)
    settings = settings_for(dataset)
    if course_config.smoke():
        settings = smoke_settings(settings)
    overrides = list(args.overrides) + ([f"tau={args.tau}"] if args.tau is not None else [])
    if args.seed is not None:
        overrides += [f"{section}.seed={args.seed}" for section in ("pretrain", "attention", "finetune")]
    settings = apply_overrides(settings, overrides)
    check_tau(settings.tau, "--tau" if args.tau is not None else "--set tau")
    out = args.out or course_config.default_run_dir("pass", dataset, settings.pretrain.arch)
    record = {"method": "pass", "profile": "toy" if dataset == "toy" else "full", "dataset": dataset,
              "smoke": course_config.smoke(), "seed": settings.pretrain.seed, "settings": settings.to_dict()}
    return settings, Path(out), cli.to_json(record)


def _changed_settings(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ between two ``config.json`` settings dicts."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict) and key in ("pretrain", "attention", "finetune"):
            changed += _changed_settings(old, new, f"{key}.")
        elif old != new:
            changed.append(prefix + key)
    return changed


def check_tau(tau: float | str, flag: str = "--tau") -> None:
    """``ConfigError`` naming ``flag`` unless τ is ``sweep``, ``otsu`` or a number in [0, 1] (ā lies in [0, 1]:
    a τ above 1 marks every pixel 'other')."""
    if tau in ("sweep", "otsu"):
        return
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 <= tau <= 1:
        raise course_config.ConfigError(f"{flag} must be a number in [0, 1], 'sweep' or 'otsu', got {tau!r}")


RUN_OUTPUTS = ("data", "subset", "pretrain", "attention", "cluster", "labels", "baseline", "finetune", "predictions")
"""A run folder's step outputs besides ``config.json`` and ``metrics.json`` (``--overwrite`` deletes them)."""


def _changes_training(key: str) -> bool:
    """Whether the dotted setting ``key`` changes what a training step (pre-training, attention, fine-tuning)
    learns, so that resuming its checkpoint would mislabel it (inference settings do not)."""
    return (key.split(".")[0] in ("pretrain", "attention", "finetune")
            and key not in ("finetune.infer_short_side", "finetune.infer_max_res")
            or key in ("num_classes", "toy_images", "max_images"))


def check_run_folder(out: Path, record: dict, overwrite: bool = False) -> None:
    """Refuse a run folder that holds a run of another dataset, or a smoke run for a full-size one (and the
    other way round), or (once a training step has a checkpoint there) a run whose training settings differ:
    its checkpoints would be resumed as this run's; the message lists the settings that differ and
    ``--overwrite`` starts afresh (deleting the folder's step outputs). The settings of the steps that are
    recomputed when they change (clustering, τ, inference) get a note."""
    path = Path(out) / "config.json"
    if overwrite:
        cli.guard_run(out, record, overwrite=True, outputs=RUN_OUTPUTS)
        return
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    kind = {True: "smoke (COURSE_SMOKE=1)", False: "full-size"}
    if (saved.get("dataset"), saved.get("smoke")) != (record["dataset"], record["smoke"]):
        raise course_config.ConfigError(
            f"{out} holds a {kind[bool(saved.get('smoke'))]} run on {saved.get('dataset')}, not a "
            f"{kind[record['smoke']]} run on {record['dataset']}: choose another --out (or delete that folder)")
    changed = _changed_settings(saved.get("settings", {}), record["settings"])
    trained = [step for step in TRAINING_STEPS if (Path(out) / STEP_OUTPUTS[step][0] / STEP_OUTPUTS[step][1]).is_file()]
    refused = [key for key in changed if _changes_training(key)]
    if trained and refused:
        raise course_config.ConfigError(
            f"{out} holds {', '.join(trained)} checkpoints trained with other settings ({', '.join(refused)}); "
            "resuming them would mislabel this run: choose another --out, or add --overwrite to start afresh")
    if changed:
        print(f"note: settings changed since {path}: {', '.join(changed)}; training steps resume from their "
              "checkpoints, later steps are recomputed where they depend on them", flush=True)


def format_summary(summary: dict) -> str:
    """The pipeline's comparison table (ImageNet-S metrics, fully unsupervised matching) and point-9 checks."""
    rows = [("PASS, fine-tuned", "finetuned"), ("PASS pseudo-labels (attention, τ)", "pseudo_labels"),
            ("k-means of average-pooled embeddings (no attention)", "baseline_no_attention"),
            ("every pixel 'other' (a constant, for reference)", "constant_other")]
    keys = ("mIoU", "b_mIoU", "img_acc", "f_measure")
    masks = summary.get("mask_mIoU", {})
    lines = [f"{'':52}" + "".join(f"{k:>10}" for k in keys) + ("     masks*" if masks else "")]
    lines += [f"{label:52}" + "".join(f"{summary[key][k]:10.2f}" for k in keys)
              + (f"{masks[key]:11.2f}" if key in masks else "") for label, key in rows if key in summary]
    if masks:
        lines.append("* mIoU of the masks alone: each image's predicted foreground given its true category (uses the "
                     "labels; a diagnostic)")
    if {"finetuned", "pseudo_labels", "baseline_no_attention"} <= summary.keys():
        gain = summary["finetuned"]["mIoU"] - summary["baseline_no_attention"]["mIoU"]
        refine = summary["finetuned"]["mIoU"] - summary["pseudo_labels"]["mIoU"]
        lines.append(f"τ = {summary['tau']:.3f}; PASS - baseline: {gain:+.2f} mIoU; fine-tuning - pseudo-labels: "
                     f"{refine:+.2f} mIoU")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring); ``python -m course_lib.luss`` runs it through
    :func:`course_lib.cli.run_cli`. Returns 0; expected failures (a dataset not downloaded, a bad value,
    a step run before the one it needs) raise the course's errors, which name the fix."""
    args = _parser().parse_args(argv)
    cli.apply_common(args)
    settings, out, record = resolve(args)
    if args.print_config:
        cli.print_config({**record, "step": args.step, "out": out, "data_root": course_config.data_dir(),
                          "device": str(course_config.get_device(args.device)), "threads": torch.get_num_threads(),
                          "max_steps": args.max_steps, "shipped": args.shipped})
        return 0
    cli.prepare_out(out)  # a file or an unwritable folder stops here
    check_run_folder(out, record, args.overwrite)
    if args.shipped:
        if settings.dataset != "toy":
            raise course_config.ConfigError("--shipped holds toy-world checkpoints: use it with --profile toy")
        install_toy_checkpoints(out)
    pipeline = Pipeline(settings, out, args.data_root, args.device, args.max_steps)
    steps = STEPS if args.step == "pipeline" else (args.step,)
    for split in sorted({split for step in steps for split in STEP_SPLITS[step]}):
        pipeline.dataset(split)  # a missing dataset stops here, before any work
    if pipeline.is_main:
        pipeline.write_config(record)
    start = time.perf_counter()
    metrics: dict = {}
    for step in steps:
        step_start = time.perf_counter()
        result = pipeline.run(step)
        if pipeline.is_main:
            seconds = time.perf_counter() - step_start
            metrics = pipeline.record(step, seconds, result if isinstance(result, dict) else None)
            print(f"[{step}] {'reused' if result == 'reused' else 'done'} in {seconds:.0f} s", flush=True)
    if pipeline.is_main:
        if "finetuned" in metrics and "infer" in steps:
            print(format_summary(metrics))
        print(f"total {time.perf_counter() - start:.0f} s; metrics in {out / 'metrics.json'}")
    return 0


OFFICIAL_DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        setting="mixed precision (pre-training, attention, fine-tuning)",
        ours="bf16 autocast on CUDA; Sinkhorn, the losses and the metrics in float32",
        official="apex AMP opt_level O1 (fp16 with loss scaling), --use_fp16 true",
        why="apex is unmaintained and needs a CUDA build; bf16 has fp32's range, so no loss scaling is needed",
        source="LUSSeg/PASS main_pretrain.py:117-120, main_pixel_attention.py:117-120, scripts/luss50_pass.sh:50"),
    Deviation(
        setting="image normalisation of the training crops",
        ours="ImageNet std (0.229, 0.224, 0.225) everywhere",
        official="std (0.228, 0.224, 0.225) for the pre-training and attention crops (0.229 in cluster.py and "
                 "inference.py)",
        why="0.228 is a typo in the official dataset code (a 0.4 % change of the red channel's scale); one "
            "normalisation keeps training and inference consistent",
        source="LUSSeg/PASS src/multicropdataset.py:40, :91; cluster.py:53-55"),
    Deviation(
        setting="ImageNet-S919 pre-training and fine-tuning images",
        ours="the ImageNet-S919 training split (919 of the 1000 ImageNet categories)",
        official="all of ImageNet-1k's training set (DATA=/data/imagenet)",
        why="the course's data root holds ImageNet-S only; the split has about 93 % of ImageNet-1k's images",
        source="LUSSeg/PASS scripts/luss919_pass.sh:4, :28, :127"),
    Deviation(
        setting="semi-supervised fine-tuning: mixed precision",
        ours="bf16 autocast on CUDA, the loss in float32, no gradient scaler",
        official="torch.cuda.amp.autocast (fp16) with NativeScaler",
        why="bf16 has fp32's range, so no loss scaling is needed",
        source="LUSSeg/ImageNetSegModel engine_segfinetune.py:58, main_segfinetune.py:331"),
    Deviation(
        setting="semi-supervised fine-tuning: drop path (ViT)",
        ours="none (no stochastic depth)",
        official="--drop_path 0.1 (timm's linearly increasing drop-path rate)",
        why="the course's ViT (course_lib.models.vit) has no stochastic depth; PASS's own ResNet-50 recipe "
            "(MODEL_ZOO.md) uses none",
        source="LUSSeg/ImageNetSegModel README.md:22, models/models_vit.py:141"),
    Deviation(
        setting="semi-supervised fine-tuning: processes and BatchNorm batch",
        ours="one process with the whole batch of 256 (a ResNet's BatchNorm normalises over 256 images)",
        official="8 GPUs × 32 under DistributedDataParallel without SyncBatchNorm (BatchNorm over 32 images)",
        why="the protocol is a library function, not a torchrun CLI; the effective batch, lr and schedule are "
            "the official ones",
        source="LUSSeg/ImageNetSegModel README.md:14-17, main_segfinetune.py:318-321",
        test="tests/test_protocols_semi.py::test_full_recipe_pins_the_readme_values"),
)
"""Where this method's full preset (and the semi-supervised protocol's recipe, :mod:`course_lib.evaluation.
protocols`) still differs from the official code (:mod:`course_lib.deviations`). Matched since issue 15 and
pinned by ``tests/test_luss_official.py`` / ``tests/test_protocols_semi.py``: the attention step's BatchNorm,
the P2P sampling, the Kaiming fan-out initialisation, the 1000 px inference cap, the fine-tuning recipe."""
