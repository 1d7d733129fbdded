"""The LUSS pipeline of PASS as steps on a work folder, and its command line.

    python -m course_lib.luss pipeline --profile toy            # the whole pipeline on the toy world
    python -m course_lib.luss pretrain --dataset imagenet_s50    # one step at full scale (torchrun works too)

Steps, each reading what the previous ones wrote in the work folder (default
``$COURSE_CACHE/luss/<dataset>``):

==========  =================================================================================
pretrain    SwAV + P2P + D2S pre-training on the training images → ``pretrain/checkpoint.pt``
attention   pixel attention on the frozen network → ``attention/checkpoint.pt``
cluster     attention-pooled embeddings of the training images, k-means → ``cluster/centroids.pt``
            (and the no-attention baseline's centroids)
labels      τ: sweep on the labelled validation set (the paper's protocol), Otsu (label-free) or a
            number; pseudo-labels of the training images → ``labels/train/<class>/<name>.png``, of
            the validation images → ``labels/validation``, and the baseline's → ``baseline/validation``
finetune    a segmentation network on the pseudo-labels → ``finetune/checkpoint.pt``
infer       predictions of the validation images at short side 256 → ``predictions/validation``;
            presence matching and the ImageNet-S metrics of the predictions, the raw pseudo-labels
            and the baseline → ``summary.json``
pipeline    all of the above in order (a finished training step just reloads its checkpoint, an
            interrupted one resumes)
==========  =================================================================================

``--threads N`` sets PyTorch's CPU threads (1 is fastest on a busy machine); ``--shipped`` (toy only) starts
from the shipped pre-training and attention checkpoints (:mod:`.assets`). The summary also scores the
constant prediction 'other' everywhere: with weak features a LUSS method can beat a baseline without
'other' by finding nothing but the background, and that floor shows it.

``--dataset imagenet_s50|300|919`` reads ``$COURSE_DATA/ImageNetS/ImageNetS{50,300,919}`` through
:class:`course_lib.data.ImageNetS` with the paper's settings (ResNet-18, 200 epochs, multi-crop for S50;
ResNet-50, 100 epochs for S300 / S919; τ 0.41 / 0.40 / 0.37; the official S919 run pre-trains on all of
ImageNet-1k, this one on ImageNet-S919's training split). ``--profile toy`` (the ``toy`` dataset)
writes the toy world's ``objects`` in the ImageNet-S layout into the work folder and runs the same code.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .. import config as course_config
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
      then predicts.
    """
    return Settings(
        "toy", 10,
        PretrainConfig(arch="toy_resnet", hidden_mlp=256, feat_dim=32, nmb_prototypes=100,
                       crops=[CropSpec(64, 2, 0.3, 0.6), CropSpec(32, 4, 0.08, 0.15)], blur_sigma=(0.1, 1.0),
                       invert_p=0.5, jitter_p=0.0, recolour_p=1.0, queue_length=384, epoch_queue_starts=2, epochs=40,
                       batch_size=32, optimizer="adamw", base_lr=1e-3, final_lr=1e-5, weight_decay=0.05,
                       freeze_prototypes_niters=100, p2p_contrast_weight=1.0, seed=0),
        AttentionConfig(crops=[CropSpec(64, 2, 0.3, 1.0)], blur_sigma=(0.1, 1.0), invert_p=0.5, jitter_p=0.0,
                        recolour_p=1.0, queue_length=384, epochs=12, batch_size=32, optimizer="adamw", base_lr=1e-3,
                        final_lr=1e-5, freeze_prototypes_niters=1000, seed=0),
        FinetuneConfig(num_classes=10, crop_size=64, crop_scale=(0.5, 1.0), recolour_p=1.0, epochs=20, batch_size=32,
                       optimizer="adamw", base_lr=1e-3, final_lr=1e-5, weight_decay=0.05, infer_short_side=None,
                       seed=0),
        cluster_short_side=None, cluster_crop=None, label_short_side=None, kmeans_restarts=10, tau="sweep",
        tau_grid=tuple(np.round(np.arange(0.0, 0.801, 0.02), 2).tolist()), batch_size=100)


def settings_for(dataset: str) -> Settings:
    """The preset of ``dataset`` (one of :data:`DATASETS`)."""
    if dataset == "toy":
        return toy_settings()
    if dataset in DATASETS:
        return _full_settings(int(dataset.removeprefix("imagenet_s")))
    raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")


def apply_overrides(settings: Settings, overrides: Sequence[str]) -> Settings:
    """``section.key=value`` (or ``key=value`` for top-level settings) overrides; values parsed as JSON
    when possible (``pretrain.epochs=2``, ``tau=0.3``, ``toy_images=[16,8]``)."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep:
            raise ValueError(f"override {override!r} is not key=value")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        section, _, name = key.rpartition(".")
        target = getattr(settings, section) if section else settings
        if section not in ("", "pretrain", "attention", "finetune") or not hasattr(target, name):
            raise ValueError(f"unknown setting {key!r}")
        if isinstance(getattr(target, name), tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(target, name, value)
    settings.pretrain.__post_init__()
    settings.attention.__post_init__()
    settings.finetune.__post_init__()
    return settings


class Pipeline:
    """The steps of :data:`STEPS` on one work folder (see the module docstring)."""

    def __init__(self, settings: Settings, work_dir: str | Path, data_root: str | Path | None = None,
                 device: str | None = None, max_steps: int | None = None):
        self.settings, self.work_dir = settings, Path(work_dir)
        self.data_root, self.device, self.max_steps = data_root, device, max_steps
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
        if self.subset_dir is not None:
            return self.subset_dir / "validation-segmentation"
        subset = f"ImageNetS{self.settings.num_classes}"
        return resolve_root(self.data_root) / "ImageNetS" / subset / "validation-segmentation"

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

    def dataset(self, split: str) -> ImageNetS:
        if self.subset_dir is not None:
            return ImageNetS(split=split, subset_dir=self.subset_dir)
        return ImageNetS(self.settings.num_classes, split, root=self.data_root)

    def path(self, *parts: str) -> Path:
        return self.work_dir.joinpath(*parts)

    def _device(self) -> torch.device:
        return course_config.get_device(self.device)

    # ---------------------------------------------------------------- steps
    def run_pretrain(self) -> None:
        pretrain(self.settings.pretrain, self.dataset("train"), self.path("pretrain"), self.device, self.max_steps)

    def run_attention(self) -> None:
        train_attention(self.settings.attention, self.path("pretrain", "checkpoint.pt"), self.dataset("train"),
                        self.path("attention"), self.device, self.max_steps)

    def _attention_model(self):
        return load_attention_model(self.path("attention", "checkpoint.pt"))[0].to(self._device())

    def run_cluster(self) -> None:
        s = self.settings
        model, train = self._attention_model(), self.dataset("train")
        batch_size = s.batch_size if s.cluster_crop is None else max(s.batch_size, 64)
        result = {}
        for name, use_attention in (("attention", True), ("baseline", False)):
            embeddings = embed_images(model, train, batch_size, s.cluster_short_side, s.cluster_crop, use_attention,
                                      self._device())
            clusters = kmeans(embeddings.to(self._device()), s.num_classes, s.kmeans_restarts, s.kmeans_iterations,
                              seed=s.pretrain.seed)
            result[name] = {"centroids": clusters.centroids.cpu(), "assignments": clusters.assignments.cpu(),
                            "inertia": clusters.inertia}
        self.path("cluster").mkdir(exist_ok=True)
        torch.save(result, self.path("cluster", "centroids.pt"))

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
                raise ValueError("tau='sweep' needs the labelled validation set; use tau=otsu or a number")
            report["tau"] = report["tau_sweep"]
        elif s.tau == "otsu":
            report["tau"] = report["tau_otsu"] = otsu_from_histogram(self._attention_histogram("train", centroids), 0, 1)
        else:
            report["tau"] = float(s.tau)
        return report

    def run_labels(self) -> None:
        clusters = torch.load(self.path("cluster", "centroids.pt"))
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
        self.path("labels", "tau.json").write_text(json.dumps(report, indent=1) + "\n")

    def run_finetune(self) -> None:
        dataset = PseudoLabelDataset(self.dataset("train"), label_dir=self.path("labels", "train"))
        finetune(self.settings.finetune, self.path("pretrain", "checkpoint.pt"), dataset, self.path("finetune"),
                 self.device, self.max_steps)

    def run_infer(self) -> dict:
        s = self.settings
        model = load_segmentation_model(self.path("finetune", "checkpoint.pt"))[0]
        predict_dataset(model, self.dataset("validation"), s.finetune.infer_short_side, s.batch_size, self._device(),
                        out_dir=self.path("predictions", "validation"))
        summary: dict = {"settings": s.to_dict(), "tau": json.loads(self.path("labels", "tau.json").read_text())["tau"]}
        gt_dir = self.gt_dir()
        if not gt_dir.is_dir():
            return summary
        for key, folder in (("finetuned", self.path("predictions", "validation")),
                            ("pseudo_labels", self.path("labels", "validation")),
                            ("baseline_no_attention", self.path("baseline", "validation"))):
            workers = 1 if s.dataset == "toy" else None  # a process pool only pays off on thousands of images
            match = presence_matching(folder, gt_dir, s.num_classes, workers=workers)
            save_match(match, folder.parent / f"{folder.name}_match.json")
            summary[key] = evaluate_folders(folder, gt_dir, s.num_classes, match=match, workers=workers)
            masks = evaluate_folders(folder, gt_dir, s.num_classes, workers=workers,
                                     transform=partial(foreground_as_true_category, num_classes=s.num_classes))
            summary.setdefault("mask_mIoU", {})[key] = masks["mIoU"]  # a diagnostic: uses the true categories
        summary["constant_other"] = constant_other_scores(gt_dir, s.num_classes)
        self.path("summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def run(self, step: str):
        """Run one step: training steps on every process, the others on rank 0 while the rest wait."""
        result = None
        if step in TRAINING_STEPS or self.is_main:
            result = getattr(self, f"run_{step}")()
        self._barrier()
        return result


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
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.luss",
        description="PASS (Gao et al., TPAMI 2022) on the toy world or ImageNet-S: pre-training, pixel attention, "
                    "clustering, pseudo-labels, fine-tuning, inference and evaluation. Run a step, or 'pipeline'.")
    parser.add_argument("step", choices=(*STEPS, "pipeline"))
    parser.add_argument("--profile", choices=course_config.PROFILES, default=None,
                        help="toy: the toy world (default dataset); full: needs --dataset (default: $COURSE_PROFILE)")
    parser.add_argument("--dataset", choices=DATASETS, default=None, help="toy or ImageNet-S50/300/919")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="checkpoints, labels, predictions (default: $COURSE_CACHE/luss/<dataset>)")
    parser.add_argument("--data-root", type=Path, default=None, help="datasets root (default: $COURSE_DATA)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: $COURSE_DEVICE or the best)")
    parser.add_argument("--tau", default=None, help="'other' threshold: a number, 'sweep' or 'otsu'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. pretrain.epochs=50 or toy_images=[200,50] (repeatable)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each training step after N iterations")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of each process (default: PyTorch's; 1 is fastest on a busy machine)")
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
    """Command-line entry point (see the module docstring); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        dataset = _resolve_dataset(args.profile, args.dataset)
        settings = settings_for(dataset)
        overrides = list(args.overrides) + ([f"tau={args.tau}"] if args.tau is not None else [])
        settings = apply_overrides(settings, overrides)
        work_dir = args.work_dir or course_config.cache_dir() / "luss" / dataset
        if args.shipped:
            if dataset != "toy":
                raise course_config.ConfigError("--shipped holds toy-world checkpoints: use it with --profile toy")
            install_toy_checkpoints(work_dir)
        pipeline = Pipeline(settings, work_dir, args.data_root, args.device, args.max_steps)
        steps = STEPS if args.step == "pipeline" else (args.step,)
        start = time.perf_counter()
        summary = None
        for step in steps:
            step_start = time.perf_counter()
            summary = pipeline.run(step)
            if pipeline.is_main:
                print(f"[{step}] done in {time.perf_counter() - step_start:.0f} s", flush=True)
    except (course_config.ConfigError, OSError, ValueError) as error:
        print(f"{parser.prog} {args.step}: error: {error}", file=sys.stderr)
        return 2
    if isinstance(summary, dict) and pipeline.is_main:
        print(format_summary(summary))
        print(f"total {time.perf_counter() - start:.0f} s; summary in {work_dir / 'summary.json'}")
    return 0
