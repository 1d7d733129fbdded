"""One STEGO experiment end to end: data → training → evaluation → the k-means baseline.

:func:`prepare_data` builds what a configuration needs (the training pairs, cached or on the fly; the
validation features of the images and of their flipped copies, cached), :func:`run_experiment` trains
(resuming from ``out_dir``) and evaluates, :func:`kmeans_baseline` measures k-means on the same
backbone's validation features (same data, same Hungarian matching). Used by the CLI
(:mod:`.train`), the ablations (:mod:`.ablations`) and lesson 04.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..cli import replace_when_written, write_json
from ..config import cache_dir
from ..models.feature_correspondences import kmeans_segmentation
from ..models.backbones import backbone_cache_key
from ..models.features import FeatureCache, FeatureSet
from .configs import NO_SELECTION, CheckpointSelection, StegoConfig
from .data import (
    FULL_DATASETS,
    HorizontalFlip,
    dataset_features,
    full_dataset,
    official_knn_descriptors,
    toy_dataset_name,
    toy_split_features,
    toy_world,
)
from .diagnostics import calibrate_shifts
from ..evaluation import UnsupervisedMetrics
from ..evaluation.crf import dense_crf_batch
from ..evaluation.probes import upsampled_cosines
from .evaluate import CLUSTER_ALPHA, EvalBatch, evaluate_stego
from .model import StegoModel
from .pairs import cached_knn_table, global_descriptors
from ..distributed import DistContext
from .trainer import BestCheckpoints, CachedPairs, OnlinePairs, train_stego


@dataclass
class StegoData:
    """Training pairs and validation data of one configuration."""

    source: CachedPairs | OnlinePairs
    val: FeatureSet
    val_flipped: FeatureSet
    val_dataset: Dataset
    classes: list[str]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _main_first(context: DistContext, compute):
    """Run ``compute`` on process 0 first (it fills the caches), then on the others (cache hits)."""
    if context.is_main:
        result = compute()
        context.barrier()
    else:
        context.barrier()
        result = compute()
    return result


def _knn_path(key: str, name: str) -> Path:
    return cache_dir() / "stego" / "knn" / key / f"{name}.npy"


def prepare_data(config: StegoConfig, backbone: nn.Module, context: DistContext | None = None, *,
                 n_train: int | None = None, n_val: int | None = None, size: int = 96,
                 online: bool = False, num_workers: int = 0, batch_size: int = 50,
                 cache: FeatureCache | None = None) -> StegoData:
    """The data of ``config``: the toy world's scenes (``config.dataset == "toy"``; ``n_train`` / ``n_val``
    images of ``size`` px) or a full-scale dataset at ``config.resolution`` (validation at
    ``config.val_resolution``; ``n_train`` / ``n_val``: its first source images only, all by default).

    Full scale prepares what is missing and reuses it next time: the five-crop set (when the config
    asks for it), the kNN table (``COURSE_CACHE/stego/knn``) and the feature caches (validation always,
    training unless ``online``: then the backbone runs at every step). The kNN descriptors are STEGO's
    (:func:`~.data.official_knn_descriptors`: the featurizer's channel dropout is active when they are
    computed); the toy world keeps the plain spatial means. A dataset that is not downloaded
    raises ``DatasetNotFoundError`` (naming its fetch command) before any of it. Process 0 fills every
    cache first.
    """
    context = context or DistContext(device=next(backbone.parameters()).device)
    cache = cache or FeatureCache()
    key = backbone_cache_key(config.backbone, backbone)
    if config.dataset == "toy":
        if online:
            raise ValueError("the toy world trains on cached features; online feature extraction is for full scale")
        options = dict(n_images=None, size=size, seed=0, cache=cache, batch_size=batch_size)
        train = _main_first(context, lambda: toy_split_features(backbone, config.backbone, "train", five_crop=config.five_crop,
                                                                **{**options, "n_images": n_train}))
        val = _main_first(context, lambda: toy_split_features(backbone, config.backbone, "val", **{**options, "n_images": n_val}))
        val_flipped = _main_first(context, lambda: toy_split_features(backbone, config.backbone, "val", flipped=True,
                                                                      **{**options, "n_images": n_val}))
        train_name = toy_dataset_name(len(toy_world("train", n_train, size)), five_crop=config.five_crop)
        table = _main_first(context, lambda: cached_knn_table(_knn_path(key, train_name), len(train),
                                                              lambda: global_descriptors(train.features)))
        val_dataset = toy_world("val", n_val, size)
        return StegoData(CachedPairs(train.features, train.labels, table), val, val_flipped, val_dataset,
                         list(val_dataset.classes))

    val_dataset = full_dataset(config.dataset, "val", config.val_resolution, n_images=n_val)
    train_dataset = _main_first(context, lambda: full_dataset(config.dataset, "train", config.resolution,
                                                              config.five_crop, n_images=n_train,
                                                              num_workers=num_workers))
    # cache names count the source images: a first-n subset and the whole set never share an entry
    n_train_images = len(train_dataset) // (5 if config.five_crop else 1)
    train_name = f"{config.dataset}{'_fivecrop' if config.five_crop else ''}_n{n_train_images}_res{config.resolution}"
    knn_path = _knn_path(key, f"{train_name}_dropout{config.dropout}_seed{config.seed}")
    val_name = f"{config.dataset}_n{len(val_dataset)}_res{config.val_resolution}"

    def extract(dataset: Dataset, name: str, split: str, resolution: int) -> FeatureSet:
        return cache.get_or_compute(key, dataset, name, split, resolution, backbone=backbone,
                                    batch_size=batch_size, device=context.device)

    val = _main_first(context, lambda: extract(val_dataset, val_name, "val", config.val_resolution))
    val_flipped = _main_first(context, lambda: extract(HorizontalFlip(val_dataset), val_name + "_hflip", "val",
                                                       config.val_resolution))
    if online:
        table = _main_first(context, lambda: cached_knn_table(
            knn_path, len(train_dataset),
            lambda: official_knn_descriptors(dataset_features(backbone, train_dataset, context.device, batch_size,
                                                              num_workers, desc="kNN descriptors"),
                                             config.dropout, config.seed)))
        source: CachedPairs | OnlinePairs = OnlinePairs(train_dataset, backbone, table, num_workers)
    else:
        train = _main_first(context, lambda: extract(train_dataset, train_name, "train", config.resolution))
        table = _main_first(context, lambda: cached_knn_table(
            knn_path, len(train),
            lambda: official_knn_descriptors(global_descriptors(train.features), config.dropout, config.seed)))
        source = CachedPairs(train.features, train.labels, table)
    return StegoData(source, val, val_flipped, val_dataset, list(FULL_DATASETS[config.dataset].classes))


def eval_batches(data: StegoData, batch_size: int = 50, images: bool = True) -> Iterator[EvalBatch]:
    """Validation :class:`~.evaluate.EvalBatch` es: cached features, images as uint8 (for the CRF; ``None``
    without ``images``: nothing is read from disk), labels."""
    for start in range(0, len(data.val), batch_size):
        index = range(start, min(start + batch_size, len(data.val)))
        pixels = None
        if images:
            pixels = torch.stack([data.val_dataset[i]["image"] for i in index])
            pixels = pixels.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        yield EvalBatch(data.val.features[start:index.stop], data.val_flipped.features[start:index.stop], pixels,
                        data.val.labels[start:index.stop].long())


def kmeans_baseline(data: StegoData, seed: int = 0, crf: bool = False, crf_workers: int | None = None) -> dict:
    """k-means (K = classes) on the backbone's validation features, Hungarian-matched: mIoU, accuracy.

    With ``crf``, also ``mIoU_crf`` / ``accuracy_crf``: the same clusters refined by the dense CRF exactly as
    STEGO's cluster probe is (log-softmax of CLUSTER_ALPHA × cosine to the centres, upsampled), the
    like-for-like comparison for STEGO's headline numbers."""
    features, labels = data.val.features.float(), data.val.labels.long()
    result = kmeans_segmentation(features, labels, data.n_classes, seed=seed)
    scores = {"mIoU": result["mIoU"], "accuracy": result["accuracy"]}
    if crf:
        metrics = UnsupervisedMetrics(data.n_classes)
        for batch in eval_batches(data):
            cosines = upsampled_cosines(batch.features, result["centres"], tuple(batch.labels.shape[-2:]))
            log_probs = F.log_softmax(CLUSTER_ALPHA * cosines, dim=1)
            metrics.update(dense_crf_batch(batch.images, log_probs, workers=crf_workers).argmax(1), batch.labels)
        scores.update({f"{key}_crf": value for key, value in metrics.compute().items() if key in ("mIoU", "accuracy")})
    return scores


def validation_scores(model: StegoModel, data: StegoData) -> dict:
    """The official trainer's validation (``validation_step``): probes on the codes of the validation images,
    no flip, no CRF → ``cluster_mIoU``, ``cluster_accuracy`` (Hungarian), ``linear_mIoU``, ``linear_accuracy``."""
    metrics, _ = evaluate_stego(model, eval_batches(data, images=False), data.n_classes, crf=False, flip=False)
    return {key: metrics[key] for key in ("cluster_mIoU", "cluster_accuracy", "linear_mIoU", "linear_accuracy")}


def run_experiment(config: StegoConfig, data: StegoData, out_dir: str | Path, context: DistContext | None = None,
                   crf_workers: int | None = None, checkpoint_every: int | None = None,
                   desc: str = "STEGO", selection: CheckpointSelection = NO_SELECTION) -> dict | None:
    """Train (or resume, or reload a finished run from ``out_dir``) and evaluate ``config``.

    A config with ``attracted_shares`` first gets its shifts from the training features
    (:func:`~.diagnostics.calibrate_shifts`); the result's ``config`` holds the values used.

    ``selection`` (full profile: :data:`~.configs.OFFICIAL_SELECTION`): validate during training
    (:func:`validation_scores`) and evaluate the best kept checkpoint by validation cluster mIoU instead of
    the last step; this selects on the labelled validation set that the result is measured on. The result
    then holds ``validation_curve`` (``{"step", cluster/linear mIoU and accuracy}`` per validation) and
    ``selected_step``; ``selection`` says which rule chose the evaluated weights. Without a candidate step
    (a run shorter than ``select_every``) the last step is evaluated and ``selection`` says so.

    Writes ``out_dir/checkpoint.pt`` (every ``checkpoint_every`` steps, by default a tenth of the run),
    ``out_dir/best_step<N>.pt`` (the kept checkpoints), ``out_dir/stego.pt`` (the evaluated weights) and
    ``out_dir/result.json``, each under a temporary name renamed when complete. Returns the evaluation
    (:func:`~.evaluate.evaluate_stego` keys plus ``history``, ``train_seconds`` and the selection keys) on
    process 0, ``None`` on the others.
    """
    context = context or DistContext()
    if config.attracted_shares is not None:
        if not isinstance(data.source, CachedPairs):
            raise ValueError("attracted_shares calibrates the shifts on cached features; give b values instead")
        config = calibrate_shifts(config, data.source.features, data.source.table)
    out_dir = Path(out_dir)
    result_path = out_dir / "result.json"
    if result_path.is_file():
        saved = json.loads(result_path.read_text())
        if saved.get("config") == config.to_dict():
            return saved if context.is_main else None
    torch.manual_seed(config.seed)
    model = StegoModel(data.source.in_channels, data.n_classes, config)
    best = BestCheckpoints(selection, lambda trained: validation_scores(trained, data), out_dir) \
        if selection.enabled else None
    start = time.perf_counter()
    history = train_stego(model, data.source, out_dir, context, checkpoint_every=checkpoint_every, desc=desc,
                          best=best)
    train_seconds = time.perf_counter() - start
    if not context.is_main:
        context.barrier()
        return None
    chosen: dict = {"selection": "last step (no validation during training)", "selected_step": config.steps}
    if best is not None:
        chosen = {"selection": "last step (no candidate step: the run is shorter than select_every="
                               f"{selection.select_every})", "selected_step": config.steps,
                  "validation_curve": best.curve, "checkpoint_selection": asdict(selection)}
        if best.best is not None:
            score, step = best.best
            model = StegoModel.load(best.path(step), map_location=context.device)
            chosen.update(selection=f"best validation cluster mIoU ({score:.2f}) of the steps divisible by "
                                    f"{selection.select_every}, on the labelled validation set",
                          selected_step=step)
    with replace_when_written(out_dir / "stego.pt") as partial:
        model.save(partial)
    metrics, _ = evaluate_stego(model, eval_batches(data, images=config.crf), data.n_classes, crf=config.crf,
                                crf_workers=crf_workers)
    result = {**metrics, **chosen, "train_seconds": train_seconds, "history": history, "config": config.to_dict()}
    write_json(result_path, result)
    context.barrier()
    return result
