"""Lesson 09, going full scale: budgets, reproduction recipes, the toy presets' deviations, torchrun facts and
diagnostics, each computed from the course's own code and presets.

- :data:`DATASET_SIZES` and :func:`dataset_size_table`: image counts of every split the papers use (official
  lists and papers, cited per row), beside what is on disk under ``COURSE_DATA`` in the full profile.
- :func:`feature_cache_bytes` / :func:`feature_cache_table`: N × C × (H/p) × (W/p) × 2 bytes (fp16) for every
  DINO backbone, resolution and STEGO split, and :func:`cache_plan` (cache it or recompute it, and why).
- :func:`saved_activation_bytes` / :func:`activation_memory_table`: the bytes autograd keeps for the backward
  pass, *measured* on a small input on the CPU and scaled by pixels and batch (an estimate, labelled so).
- :data:`RECIPES`: the commands of the course's CLIs that reproduce STEGO Table 1, PASS on ImageNet-S and
  SegSort on VOC, with the papers' targets and the run-to-run spread users report (sources cited).
- :func:`deviations`: every field where a toy preset differs from the full / official one (STEGO, PASS,
  SegSort, the toy DINO recipe), with why and the flag that reverts it.
- :func:`swav_loss_by_epoch`, :func:`prototype_usage`: SwAV diagnostics (loss against ln K, how many
  prototypes the codes use).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .models.vit import DINO_ARCHITECTURES, VIT_ARCHITECTURES

GB = 1e9

# ----------------------------------------------------------------------------- dataset sizes


@dataclass(frozen=True)
class SplitSize:
    """One split of a real dataset: its official image count and where the number comes from."""

    dataset: str
    split: str
    images: int
    source: str


_IMAGENET_S_SOURCE = "LUSSeg/ImageNet-S README, table 'Image Numbers' (and mmsegmentation configs/imagenets)"
_IMAGENET_S = {50: (64431, 500, 752, 1682), 300: (384862, 3000, 4097, 9088), 919: (1183322, 9190, 12419, 27423)}

DATASET_SIZES: tuple[SplitSize, ...] = (
    SplitSize("CocoStuff-27", "train (curated)", 49629, "IIC/PiCIE curated list Coco164kFull_Stuff_Coarse_7.txt, train2017 "
              "(STEGO trains on Coco164kFull_Stuff_Coarse.txt, whose count get_cocostuff.py prints; not published)"),
    SplitSize("CocoStuff-27", "val (curated)", 2175, "IIC/PiCIE curated list Coco164kFull_Stuff_Coarse_7.txt, val2017"),
    SplitSize("Cityscapes-27", "train", 2975, "Cordts et al., CVPR 2016 (gtFine train)"),
    SplitSize("Cityscapes-27", "val", 500, "Cordts et al., CVPR 2016 (gtFine val)"),
    *(SplitSize(f"ImageNet-S{subset}", split, count, _IMAGENET_S_SOURCE)
      for subset, counts in _IMAGENET_S.items()
      for split, count in zip(("train", "train-semi", "validation", "test"), counts)),
    SplitSize("PASCAL VOC 2012", "train_aug", 10582, "Hariharan et al. (SBD) + VOC 2012 train, the DeepLab list"),
    SplitSize("PASCAL VOC 2012", "train", 1464, "VOC 2012 ImageSets/Segmentation/train.txt"),
    SplitSize("PASCAL VOC 2012", "val", 1449, "VOC 2012 ImageSets/Segmentation/val.txt"),
)


def official_count(dataset: str, split: str) -> int:
    """The official image count of ``dataset`` / ``split`` (names as in :data:`DATASET_SIZES`)."""
    for row in DATASET_SIZES:
        if row.dataset == dataset and row.split.split(" ")[0] == split:
            return row.images
    raise KeyError(f"no official count for {dataset} / {split}")


def _loader(dataset: str, split: str) -> Callable[[], Sequence]:
    from . import data

    split = split.split(" ")[0]
    if dataset == "CocoStuff-27":
        return lambda: data.CocoStuff27(split=split)
    if dataset == "Cityscapes-27":
        return lambda: data.Cityscapes27(split=split)
    if dataset.startswith("ImageNet-S"):
        return lambda: data.ImageNetS(int(dataset.removeprefix("ImageNet-S")), split)
    return lambda: data.VOC2012(split=split)


def dataset_size_table(count_on_disk: bool = False) -> list[dict]:
    """One row per split: official count and source; with ``count_on_disk`` also the images the course's
    loader finds under ``COURSE_DATA`` ("-" when the dataset is not there). The ImageNet-S ``test`` split has
    no public labels and no loader split, so it is never counted."""
    from .data.folders import DatasetLayoutError, DatasetNotFoundError

    rows = []
    for size in DATASET_SIZES:
        row = {"dataset": size.dataset, "split": size.split, "images": size.images}
        if count_on_disk:
            try:
                row["on disk"] = "-" if size.split == "test" else len(_loader(size.dataset, size.split)())
            except (DatasetNotFoundError, DatasetLayoutError, FileNotFoundError):
                row["on disk"] = "-"
        row["source"] = size.source
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- feature caches


def feature_cache_bytes(n_images: int, channels: int, height: int, width: int, patch_size: int,
                        bytes_per_value: int = 2) -> int:
    """Bytes of N frozen feature maps N × C × (H/p) × (W/p) stored at ``bytes_per_value`` (2: fp16)."""
    return n_images * channels * (height // patch_size) * (width // patch_size) * bytes_per_value


STEGO_CACHE_SPLITS = (
    ("CocoStuff-27", "train", 5, "224"), ("CocoStuff-27", "val", 1, "320"),
    ("Cityscapes-27", "train", 5, "224"), ("Cityscapes-27", "val", 1, "320"),
)
"""(dataset, split, crops per image, resolution) of STEGO's feature sets: five-crop training at 224 px,
validation at 320 px (the official ``res`` and evaluation resolution)."""


def feature_cache_table(backbones: Iterable[str] = tuple(DINO_ARCHITECTURES)) -> list[dict]:
    """fp16 feature-cache size (GB) of every STEGO split for every DINO backbone (computed, not measured);
    any name of :data:`~course_lib.models.vit.VIT_ARCHITECTURES` (DINOv2 too) may be passed."""
    rows = []
    for dataset, split, crops, resolution in STEGO_CACHE_SPLITS:
        n_images = official_count(dataset, split) * crops
        for name in backbones:
            spec = VIT_ARCHITECTURES[name]
            size = int(resolution)
            nbytes = feature_cache_bytes(n_images, spec["embed_dim"], size, size, spec["patch_size"])
            rows.append({"dataset": dataset, "split": split, "images": n_images, "px": size, "backbone": name,
                         "C": spec["embed_dim"], "grid": f"{size // spec['patch_size']}²", "GB": round(nbytes / GB, 2)})
    return rows


def cache_plan(disk_budget_gb: float = 50.0) -> list[dict]:
    """What to cache and what to recompute, with the reason: frozen features are cached when their fp16
    size fits ``disk_budget_gb`` (sizes from :func:`feature_cache_table`), everything trained is recomputed."""
    plan = []
    for row in feature_cache_table():
        fits = row["GB"] <= disk_budget_gb
        plan.append({"what": f"{row['backbone']} features, {row['dataset']} {row['split']} @{row['px']}",
                     "GB": row["GB"], "decision": "cache" if fits else "recompute",
                     "why": (f"fits the {disk_budget_gb:g} GB budget: read once, reused every step / evaluation"
                             if fits else f"over the {disk_budget_gb:g} GB budget: the frozen backbone runs on "
                             "every batch (bf16, STEGO's default --no-cached-features)")})
    plan += [
        {"what": "kNN tables (top-30 of every training image)", "GB": None, "decision": "cache",
         "why": "N × 30 int64, tiny; needs all features once (the CLI writes it beside the run)"},
        {"what": "five-crop images", "GB": None, "decision": "cache",
         "why": "5 files per training image, made once (data_scripts/five_crop.py or the CLI)"},
        {"what": "PASS / SegSort backbone features", "GB": None, "decision": "recompute",
         "why": "the backbone is trained: its features change every step"},
        {"what": "CRF outputs, predictions", "GB": None, "decision": "recompute",
         "why": "depend on the head and on τ; cheap next to training (CRF in a process pool)"},
    ]
    return plan


# ----------------------------------------------------------------------------- activation memory


def saved_activation_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass while ``forward()`` runs
    (``torch.autograd.graph.saved_tensors_hooks``; a storage saved twice counts once; parameters excluded)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        if not isinstance(tensor, nn.Parameter):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(seen.values())


@dataclass(frozen=True)
class ActivationCase:
    """A training step whose saved activations are measured at ``probe`` px and scaled to ``pixels`` per image."""

    name: str
    build: Callable[[], nn.Module]
    pixels: int              # input pixels per image at full scale (sum over crops)
    batch: int               # images per GPU (official)
    note: str


def _resnet(name: str) -> nn.Module:
    from .models.resnet import build_resnet
    return build_resnet(name)


def _segsort_net() -> nn.Module:
    from .segsort.network import build_embedding_net
    return build_embedding_net("resnet101", weights=None, seed=0)


def activation_cases() -> list[ActivationCase]:
    """The trained networks of the full presets, at the official crops and per-GPU batches."""
    from .luss.pipeline import settings_for
    from .segsort.train import PROFILE_DEFAULTS

    s50, s300 = settings_for("imagenet_s50").pretrain, settings_for("imagenet_s300").pretrain
    crop_pixels = lambda config: sum(c.size ** 2 * c.number for c in config.crops)  # noqa: E731
    segsort = PROFILE_DEFAULTS["full"]
    return [
        ActivationCase("PASS pre-training, ResNet-18 (S50)", lambda: _resnet("resnet18"), crop_pixels(s50),
                       s50.batch_size, "2×224² + 6×96² crops per image"),
        ActivationCase("PASS pre-training, ResNet-50 (S300/S919)", lambda: _resnet("resnet50"), crop_pixels(s300),
                       s300.batch_size, "2×224² crops per image"),
        ActivationCase("SegSort, dilated ResNet-101 + head (VOC)", _segsort_net, segsort["size"] ** 2,
                       segsort["batch_size"], f"{segsort['size']}² crops"),
    ]


def activation_memory_table(probe: int = 64, cases: Sequence[ActivationCase] | None = None) -> list[dict]:
    """Estimated fp32 activation memory per GPU batch: bytes saved for backward, measured on two
    ``probe``×``probe`` images on the CPU (two: batch norm needs more than one value per channel) (random weights) and scaled by pixels / probe² × batch. Convolutional
    activations grow with the pixel count, so the estimate is proportional; bf16 autocast roughly halves it
    (``make gpu-check`` measures the real peak)."""
    rows = []
    for case in cases if cases is not None else activation_cases():
        torch.manual_seed(0)
        model = case.build().train()
        images = torch.randn(2, 3, probe, probe)
        measured = saved_activation_bytes(lambda: model(images)) / 2
        per_image = measured * case.pixels / probe ** 2
        rows.append({"network": case.name, "input": case.note, "batch/GPU": case.batch,
                     "MB/image at probe": round(measured / 1e6, 2), "estimate GB (fp32)": round(per_image * case.batch / GB, 2)})
    return rows


def frozen_vit_forward_bytes(name: str, resolution: int, batch: int, bytes_per_value: int = 2,
                             fused_attention: bool = True) -> int:
    """Estimated peak of a frozen DINO ViT's forward (no gradient): the residual stream and the MLP's hidden
    tensor (4C) of one block, B × N × 6C values, plus without fused attention the B × heads × N² scores;
    N counts the patches, [CLS] and a DINOv2 model's register tokens."""
    spec = VIT_ARCHITECTURES[name]
    tokens = (resolution // spec["patch_size"]) ** 2 + 1 + spec.get("num_register_tokens", 0)
    total = batch * tokens * 6 * spec["embed_dim"]
    if not fused_attention:
        total += batch * spec["num_heads"] * tokens ** 2
    return total * bytes_per_value


# ----------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """One reproduction: the commands in order, the paper's numbers and what users report."""

    method: str
    goal: str
    commands: tuple[str, ...]
    target: str
    reported: str
    sources: str


_RUN = "$COURSE_CACHE/runs"
"""Where the CLIs write without ``--out`` (:func:`course_lib.config.default_run_dir`) and the lessons look."""
RECIPES: tuple[Recipe, ...] = (
    Recipe("STEGO", "Table 1: CocoStuff-27, ViT-S/8", (
        "python data_scripts/get_weights.py --model dino_vits8",
        "python data_scripts/get_cocostuff.py",
        "python data_scripts/five_crop.py --dataset cocostuff27 --split train",
        "python -m course_lib.stego.train --profile full --dataset cocostuff27 --backbone dino_vits8",
    ), "unsupervised mIoU 24.5 (CRF); 24.0 / 38.4 cluster / linear mIoU without CRF",
        "retrained with the official code: 18.1 / 30.6 without CRF (STEGO #63); 23.7 with CRF (STEGO #3)",
        "mhamilton723/STEGO issues #63 and #3"),
    Recipe("STEGO", "Table 1: CocoStuff-27, ViT-B/8", (
        "python data_scripts/get_weights.py --model dino_vitb8",
        "torchrun --nproc_per_node 4 -m course_lib.stego.train --profile full --dataset cocostuff27 "
        "--backbone dino_vitb8 --batch-size 4",
    ), "cluster acc 56.9 / mIoU 28.2, linear acc 76.1 / mIoU 41.0 (with CRF; the released checkpoint gives these)",
        "retrained: cluster mIoU 19.5, linear 34.9 (STEGO #3, official code and config)",
        "mhamilton723/STEGO issue #3 (released ViT-B model evaluated)"),
    Recipe("STEGO", "Table 1: Cityscapes-27, ViT-B/8", (
        "python data_scripts/get_cityscapes.py --from-dir ~/Downloads",
        "python data_scripts/five_crop.py --dataset cityscapes27 --split train",
        "python -m course_lib.stego.train --profile full --dataset cityscapes27 --backbone dino_vitb8",
    ), "unsupervised acc 73.2 / mIoU 21.0 (paper, Cityscapes table)",
        "no retraining reported in the official issues; expect a spread as for CocoStuff",
        "Hamilton et al., ICLR 2022"),
    Recipe("PASS", "ImageNet-S50, fully unsupervised", (
        "python data_scripts/get_imagenet_s.py --imagenet-dir /data/ILSVRC2012 --subset 50",
        "torchrun --nproc_per_node 8 -m course_lib.luss pipeline --profile full --dataset imagenet_s50",
        f"python -m course_lib.evaluation.imagenet_s evaluate --predict-dir {_RUN}/pass_imagenet_s50_resnet18/predictions/validation "
        "--gt-dir $COURSE_DATA/ImageNetS/ImageNetS50/validation-segmentation --num-classes 50 "
        f"--match {_RUN}/pass_imagenet_s50_resnet18/predictions/validation_match.json",
    ), "mIoU 29.2 val / 29.3 test", "the README gives no spread; fine-tuning moved the toy result by ±2 mIoU",
        "LUSSeg/PASS README, fully unsupervised protocol"),
    Recipe("PASS", "ImageNet-S300 / ImageNet-S919, fully unsupervised", (
        "python data_scripts/get_imagenet_s.py --imagenet-dir /data/ILSVRC2012 --subset all",
        "torchrun --nproc_per_node 8 -m course_lib.luss pipeline --profile full --dataset imagenet_s300",
        "torchrun --nproc_per_node 8 -m course_lib.luss pipeline --profile full --dataset imagenet_s919",
    ), "S300: mIoU 17.8 val / 17.4 test; S919: 11.4 val / 10.3 test (the official S919 run pre-trains on all "
       "of ImageNet-1k)", "no spread published", "LUSSeg/PASS README"),
    Recipe("PASS", "ImageNet-S, distance matching and semi-supervised protocols", (
        "torchrun --nproc_per_node 8 -m course_lib.luss pretrain --profile full --dataset imagenet_s50",
        "then in Python: course_lib.evaluation.protocols.distance_matching_* (distance matching) and "
        "semi_supervised_finetune(backbone, train-semi, K, semi_supervised_config('full', backbone)) (the whole "
        "network, LUSSeg/ImageNetSegModel's recipe: 100 epochs, blr 5e-4, layer decay; no CLI yet, no resume)",
    ), "see the paper's protocol tables (arXiv 2106.03149); the official READMEs give no number for them",
        "not reported", "Gao et al., TPAMI 2022"),
    Recipe("SegSort", "PASCAL VOC 2012, unsupervised (kNN retrieval)", (
        "python data_scripts/get_voc.py",
        "python data_scripts/get_weights.py --model resnet101",
        "python -m course_lib.segsort.train --profile full --dataset voc2012",
    ), "mIoU 55.9 (k-NN, HED-owt-ucm regions; 76 % of the supervised counterpart); 10 000 steps of batch 8 on "
       "336-px crops, multi-scale + flip inference",
        "no retraining reported; our default prior is Felzenszwalb, not HED (--prior hed --hed-dir D for the paper's)",
        "SegSort abstract and Papers with Code (SegSort (Edges), VOC 2012 val); the repository's README gives no "
        "mIoU table, only the 76 % ratio"),
    Recipe("SegSort", "PASCAL VOC 2012, supervised", (
        "python -m course_lib.segsort.train --profile full --dataset voc2012 --supervised",
    ), "about 73.5 mIoU (= 55.9 / 0.76, derived from the abstract's 76 %; see the paper's tables for the exact value); "
       "two stages in one command: 30 000 steps on train_aug at lr 2e-3, then 30 000 on train at lr 2e-4 with a "
       "fresh head", "not reported", "jyhjinghwang/SegSort README, abstract and bashscripts/voc12/train_segsort.sh"),
)


def recipe_commands() -> list[str]:
    """Every shell command of :data:`RECIPES` (prose steps excluded), in order."""
    return [command for recipe in RECIPES for command in recipe.commands
            if command.startswith(("python ", "torchrun "))]


# ----------------------------------------------------------------------------- deviations from the papers

OFFICIAL_DINO_VITS8 = dict(
    patch_size=8, embed_dim=384, depth=12, num_heads=6, img_size=224, conv_stem=False, out_dim=65536,
    n_train_images=1281167, image_size="ImageNet-1k (any size)", global_size=224, local_size=96, n_local=8,
    batch_size=64, epochs=100, lr=5e-4, min_lr=1e-6, warmup_epochs=10, weight_decay=0.04, weight_decay_end=0.4,
    momentum_teacher=0.996, teacher_temp=0.04, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=0,
    student_temp=0.1, clip_grad=3.0, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2, recolour_p=0.0,
    blur=True, native_scale=False, dense_weight=0.0, contrast_weight=0.0, freeze_last_layer_epochs=1, seed=0,
)
"""Official DINO on ViT-S/8: the defaults of ``main_dino.py`` (facebookresearch/dino) with ``--arch vit_small
--patch_size 8``; ``lr`` is for a batch of 256 (linearly scaled), ``batch_size`` per GPU. The course never
retrains it: the full profile loads the released ``dino_deitsmall8_pretrain.pth``."""

_WHY = {
    # STEGO
    ("STEGO", "dataset"): "the toy world instead of CocoStuff-27",
    ("STEGO", "backbone"): "the shipped toy ViT (4 blocks, 128 channels) instead of DINO ViT-S/8",
    ("STEGO", "b_self"): "shifts set from the toy backbone's correspondences (attracted_shares), not tuned on DINO",
    ("STEGO", "b_knn"): "as b_self", ("STEGO", "b_rand"): "as b_self",
    ("STEGO", "lr"): "400 steps instead of 5000: a 4× larger step keeps clusters alive",
    ("STEGO", "steps"): "minutes on a CPU", ("STEGO", "five_crop"): "96-px toy images are already crop-sized",
    ("STEGO", "resolution"): "toy images are 96 px", ("STEGO", "val_resolution"): "toy images are 96 px",
    ("STEGO", "attracted_shares"): "calibrates the shifts on any backbone (configs.TOY_CONFIG)",
    ("STEGO", "cluster_init"): "k-means++ centres: no dead clusters in a few hundred steps",
    # SegSort
    ("SegSort", "profile"): "the preset's name", ("SegSort", "dataset"): "the toy world instead of VOC 2012",
    ("SegSort", "arch"): "a small CNN trained from scratch instead of the dilated ResNet-101",
    ("SegSort", "weights"): "no ImageNet weights offline (the full run starts from torchvision's)",
    ("SegSort", "grayscale"): "toy colours are random per region: grey images make texture decide",
    ("SegSort", "batch_size"): "small toy images fit larger batches", ("SegSort", "optimizer"):
        "Adam converges in 8 toy epochs; the paper's SGD needs its long schedule",
    ("SegSort", "lr"): "Adam's step size, not SGD's", ("SegSort", "head_lr_multiplier"): "one learning rate for "
        "a network trained from scratch", ("SegSort", "weight_decay"): "Adam's value",
    ("SegSort", "n_train"): "1000 toy images (the full run uses all of train_aug)",
    ("SegSort", "n_val"): "200 toy images (the full run uses all of val)",
    ("SegSort", "size"): "toy images are 96 px", ("SegSort", "eval_batch_size"): "equal-sized toy images batch",
    ("SegSort", "eval_resolution"): "toy labels at the embedding's size are enough",
    ("SegSort", "num_workers"): "in-memory toy images need no loader processes",
    ("SegSort", "steps"): "the toy run counts epochs of its small set; the full recipe counts the official steps",
    ("SegSort", "memory"): "the toy supervised run keeps every prototype of a batch, from an empty start",
    ("SegSort", "decay_weights_only"): "Adam's decay on every parameter, as the toy run was tuned",
    ("SegSort", "inference"): "one pass per small toy image; the official windows, scales and flips cost 12 passes",
    ("SegSort", "eval_window"): "toy images are smaller than one window", ("SegSort", "eval_stride"): "as eval_window",
    # DINO
    ("DINO", "embed_dim"): "a tiny ViT that trains in minutes on a CPU", ("DINO", "depth"): "as embed_dim",
    ("DINO", "num_heads"): "as embed_dim", ("DINO", "img_size"): "64-px global crops of 96-px toy images",
    ("DINO", "conv_stem"): "a small ViT from scratch needs a convolutional stem to see texture",
    ("DINO", "out_dim"): "K scaled to 2000 toy images", ("DINO", "n_train_images"): "toy world, not ImageNet",
    ("DINO", "image_size"): "toy world, not ImageNet", ("DINO", "global_size"): "toy images are 96 px",
    ("DINO", "local_size"): "toy images are 96 px", ("DINO", "n_local"): "CPU budget",
    ("DINO", "batch_size"): "CPU budget", ("DINO", "epochs"): "CPU budget (the released ViT-S/8 trained longer)",
    ("DINO", "lr"): "for a batch of 64, tuned on the toy world", ("DINO", "warmup_epochs"): "40 epochs in all",
    ("DINO", "momentum_teacher"): "few steps: the teacher must follow faster",
    ("DINO", "jitter"): "colour is a nuisance in the toy world: much stronger jitter",
    ("DINO", "jitter_p"): "as jitter", ("DINO", "grayscale_p"): "as jitter",
    ("DINO", "recolour_p"): "the toy world's own recolouring (RandomRecolour)",
    ("DINO", "blur"): "blur wipes out the toy textures that define the classes",
    ("DINO", "native_scale"): "toy textures keep their pixel scale",
    ("DINO", "contrast_weight"): "plain DINO stayed collapsed on the toy world: a patch InfoNCE term gives signal",
}

_PASS_WHY = {
    "dataset": "the toy world's objects in the ImageNet-S layout", "num_classes": "10 toy categories",
    "arch": "a small ResNet for 96-px images", "hidden_mlp": "small network", "feat_dim": "small network",
    "nmb_prototypes": "K scaled to 1000 toy images", "crops": "crops at the toy world's texture scale",
    "blur_sigma": "small images", "invert_p": "toy regions come in positive and negative",
    "jitter_p": "SwAV's jitter kept the codes unpredictable on 1000 images (loss at ln K)",
    "recolour_p": "the toy world's own colour nuisance", "queue_length": "scaled to the toy batch",
    "epoch_queue_starts": "40 epochs in all", "epochs": "CPU budget", "base_lr": "AdamW's step size",
    "final_lr": "AdamW's", "weight_decay": "AdamW's", "optimizer": "LARS is built for 4096-image batches",
    "freeze_prototypes_niters": "scaled to a few hundred iterations",
    "p2p_contrast_weight": "a contrastive P2P term gives signal from the first step on the toy world",
    "seed": "the course's seed", "workers": "in-memory toy images", "crop_size": "toy images are 96 px",
    "crop_scale": "crops close to the whole images it then predicts", "infer_short_side": "predict at native size",
    "cluster_short_side": "predict at native size", "cluster_crop": "predict at native size",
    "label_short_side": "predict at native size", "kmeans_restarts": "CPU budget",
    "tau": "swept on the labelled toy validation set (the paper also sweeps it: its τ came from that curve)",
    "tau_grid": "coarser grid",
    "p2p_padding": "the shipped toy run was trained with border padding (kept so its checkpoint stays valid)",
    "conv_init": "the shipped toy runs were trained from PyTorch's default init (kept so they stay valid)",
    "train_backbone_bn": "the shipped toy attention run kept the backbone's BatchNorm statistics frozen", "batch_size": "equal-sized toy images batch", "toy_images": "toy sizes",
}


def _flat(value, prefix: str = "") -> dict:
    """A dataclass / dict as {dotted field: value} (nested dataclasses flattened)."""
    items = asdict(value) if is_dataclass(value) else dict(value)
    flat = {}
    for key, item in items.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and key in ("pretrain", "attention", "finetune"):
            flat.update(_flat(item, name + "."))
        else:
            flat[name] = item
    return flat


def _differences(method: str, toy: dict, full: dict, revert: Callable[[str, object], str],
                 why: Callable[[str], str | None]) -> list[dict]:
    rows = []
    for name, toy_value in toy.items():
        if name in full and full[name] != toy_value:
            rows.append({"method": method, "field": name, "toy": toy_value, "full": full[name],
                         "why": why(name), "revert": revert(name, full[name])})
    return rows


def _json(value) -> str:
    import json
    return json.dumps(value, separators=(",", ":"))


def deviations() -> list[dict]:
    """Every field where a toy preset differs from the full / official one, computed from the presets:
    STEGO (``TOY_CONFIG`` vs ``OFFICIAL_CONFIGS`` CocoStuff-27 ViT-S/8), PASS (``settings_for("toy")`` vs
    ImageNet-S50), SegSort (toy vs full ``PROFILE_DEFAULTS``), DINO (``DINOConfig()`` vs
    :data:`OFFICIAL_DINO_VITS8`). ``why`` is ``None`` where no reason is written (tests require one);
    ``revert`` is the flag (or setting) that restores the full value."""
    from .luss.pipeline import settings_for
    from .segsort.train import PROFILE_DEFAULTS, TrainConfig
    from .ssl.dino import _SWITCHES, _VALUE_FLAGS, DINOConfig
    from .stego.configs import OFFICIAL_CONFIGS, TOY_CONFIG

    stego_flags = {"lr", "steps", "five_crop", "resolution", "val_resolution", "batch_size", "code_dim", "seed"}

    def stego_revert(name: str, value) -> str:
        if name in stego_flags:
            flag = name.replace("_", "-")
            return f"--{'' if value else 'no-'}{flag}" if isinstance(value, bool) else f"--{flag} {value}"
        return "--profile full --dataset cocostuff27 (the official preset)"

    rows = _differences("STEGO", TOY_CONFIG.to_dict(), OFFICIAL_CONFIGS[("cocostuff27", "dino_vits8")].to_dict(),
                        stego_revert, lambda name: _WHY.get(("STEGO", name)))
    pass_toy, pass_full = _flat(settings_for("toy")), _flat(settings_for("imagenet_s50"))
    rows += _differences("PASS", pass_toy, pass_full,
                         lambda name, value: "--profile full --dataset imagenet_s50" if name in ("dataset", "num_classes")
                         else f"--set {name}={_json(value)}",
                         lambda name: _PASS_WHY.get(name.rpartition(".")[2]))
    segsort_full = asdict(TrainConfig(**{**asdict(TrainConfig()), **PROFILE_DEFAULTS["full"], "profile": "full"}))
    rows += _differences("SegSort", asdict(TrainConfig()), segsort_full,
                         lambda name, value: "--profile full" if name == "profile" or value is None
                         else f"--profile full (or --{name.replace('_', '-')} {value})",
                         lambda name: _WHY.get(("SegSort", name)))
    dino_toy = {f.name: getattr(DINOConfig(), f.name) for f in fields(DINOConfig) if f.name != "extra"}
    dino_flags = set(_VALUE_FLAGS) | set(_SWITCHES)
    rows += _differences("DINO", dino_toy, OFFICIAL_DINO_VITS8,
                         lambda name, value: (f"--{name.replace('_', '-')} {value}" if name in _VALUE_FLAGS
                                              else f"--{'' if value else 'no-'}{name.replace('_', '-')}"
                                              if name in dino_flags else "no flag: use the released weights "
                                              "(data_scripts/get_weights.py)"),
                         lambda name: _WHY.get(("DINO", name)))
    return rows


# ----------------------------------------------------------------------------- diagnostics


def swav_loss_by_epoch(history: Sequence[dict], key: str = "swav") -> list[float]:
    """Mean of ``history[i][key]`` per epoch (records carry ``"epoch"``), in epoch order."""
    sums: dict[int, list[float]] = {}
    for record in history:
        sums.setdefault(int(record["epoch"]), []).append(float(record[key]))
    return [sum(values) / len(values) for _, values in sorted(sums.items())]


def prototype_usage(assignments: torch.Tensor, n_prototypes: int) -> dict:
    """How many of K prototypes a set of hard assignments (N,) uses, and the usage's perplexity exp(H)
    (K when every prototype is used equally, 1 when the codes have collapsed onto one)."""
    counts = torch.bincount(assignments.flatten(), minlength=n_prototypes).double()
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum())
    return {"used": int((counts > 0).sum()), "K": n_prototypes, "perplexity": math.exp(entropy),
            "entropy / ln K": entropy / math.log(n_prototypes), "largest share": float(share.max())}


# ----------------------------------------------------------------------------- display


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, width: int = 60) -> str:
    """Rows of dicts as an aligned text table (cells cut to ``width`` characters; ``None`` shown as ``-``)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        elif isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}".replace(",", " ")
        else:
            text = str(value)
        return text if len(text) <= width else text[: width - 1] + "…"

    table = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in table)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(w) for column, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(text.ljust(w) for text, w in zip(line, widths)) for line in table]
    return "\n".join(line.rstrip() for line in lines)
