"""One comparison, one command: every method and baseline on both toy datasets, over seeds (issue 16, item 4).

::

    python -m course_lib.compare --profile toy --seeds 0 1 2 --out DIR [--world-version 2|1]
        [--methods stego kmeans texture segsort pass] [--datasets scenes objects] [--crf-scale stego|scaled]
        [--ablations]

Every (method, dataset, seed) *cell* yields per-pixel cluster ids (and, where the method has them, class
scores), is scored with the CRF off and on, and is saved as ``DIR/cells/<method>_<dataset>_seed<S>.json``
the moment it finishes; a rerun skips the cells already there (so more seeds can be added later). Then
``DIR/comparison.json`` (a list of rows ``{"method", "dataset", "protocol", "seeds", "metrics": {name: [one
value per seed]}, "notes"}``) and ``DIR/comparison.md`` (mean ± std; the methods, then the baselines, then the
reference points of :func:`reference_rows`: a constant, RGB k-means, a noisy oracle) are written.

Protocols (one per dataset, the same for every method):

- ``scenes`` (STEGO's, CocoStuff-like): K = 12 clusters, one Hungarian assignment of clusters to classes
  over the whole validation set (:class:`~course_lib.evaluation.metrics.UnsupervisedMetrics`): ``mIoU``,
  ``accuracy``.
- ``objects`` (ImageNet-S's fully unsupervised protocol): K + 1 clusters (the K categories and 'other');
  the **border rule** (:func:`border_other`, label-free) names 'other' (id 0) every cluster that lies in
  the image borders at least as much as an evenly spread one, the remaining clusters take ids 1, 2, ...;
  the image-level presence matching
  (:func:`~course_lib.evaluation.imagenet_s.match_from_presence`) maps them to categories; the ImageNet-S
  evaluator gives ``mIoU``, ``b_mIoU``, ``img_acc``, ``f_measure``. Every method that has no 'other' of its
  own uses this rule.

CRF: each metric ``m`` is reported without the CRF and as ``m_crf`` after it
(:func:`~course_lib.evaluation.crf.dense_crf_batch`, 10 mean-field iterations), with STEGO's constants
(``--crf-scale stego``, θα = 67 px) or their bilateral width scaled to the image side
(``--crf-scale scaled``, :meth:`~course_lib.evaluation.crf.CRFParams.scaled_to`: 20.1 px at 96 px). A method
with class scores (STEGO's cluster probe, k-means on features: ``log_softmax(α·cos)``) gives them to the CRF
as STEGO does; a method with hard ids only (the texture reference) gives one-hot unaries of confidence
:data:`HARD_LABEL_CONFIDENCE`.

Ablations (``--ablations``, issue 16 item 5): STEGO's Table 3 ingredients on ``scenes``, one retrained variant
per ingredient and seed (:data:`STEGO_ABLATIONS`: no 0-clamp, no spatial centering, no kNN term, five-crop at
the textures' native scale), each keeping the full method's shifts b; the CRF's effect is every row's ``m`` vs
``m_crf``. PASS's rows (fine-tuned, pseudo-labels, no attention) are read from its cells. Written as
``DIR/ablations.json`` (rows ``{"method", "variant", "dataset", "seeds", "metrics", "notes"}``) and
``DIR/ablations.md``.

Seeds: the seed of a cell is the training seed of the method's toy recipe and the seed of its clustering;
the data (the toy world's train and validation images, seed 0) and the backbone (the shipped ``toy_vit``)
are the same for every seed.
SegSort and PASS train their own networks with their toy recipes (:func:`predict_segsort`, :func:`run_pass`).
SegSort trains on its own draw of the same toy world (images drawn with the seed, as its CLI does) and is
scored like the others on the comparison's splits (its segment ids as hard unaries for the CRF, like the
texture reference), plus its kNN retrieval, which uses the training labels (``knn_*``, no CRF). PASS runs
only on ``objects`` (:func:`unavailable`) and is scored by its own ImageNet-S evaluation of its preset's
validation images, without the CRF (PNG predictions).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import config as course_config
from .cli import (ArgumentParser, add_common_arguments, apply_common, cap_steps, guard_run, non_negative_int,
                  positive_int, prepare_out, print_config, run_cli, write_json)
from .data.label_png import IMAGENET_S_IGNORE
from .data.toyworld import DEFAULT_N_IMAGES, ToyWorld
from .evaluation.baselines import pixel_kmeans_miou, texture_features
from .evaluation.crf import STEGO_CRF, CRFParams, dense_crf_batch
from .evaluation.imagenet_s import ImageNetSEvaluator, image_presence, match_from_presence
from .evaluation.metrics import UnsupervisedMetrics
from .evaluation.probes import upsampled_cosines
from .models.feature_correspondences import kmeans_segmentation
from .models.features import FeatureCache, FeatureSet, toy_features
from .stego.ablations import RETRAINED

METHODS = ("stego", "segsort", "pass")
"""The three methods of the course (rows of the first block)."""
BASELINES = ("kmeans", "texture")
"""Label-free references (second block): cosine k-means on the backbone's patch features, and k-means on
the colour-blind texture descriptor (:func:`~course_lib.evaluation.baselines.texture_features`)."""
DATASETS = ("scenes", "objects")


def block_of(method: str) -> str:
    """The block a row of the comparison belongs to: ``"method"``, ``"baseline"`` or ``"reference"`` (any other
    name: a reference point of :func:`reference_rows`)."""
    return "method" if method in METHODS else "baseline" if method in BASELINES else "reference"

PROTOCOLS = {"scenes": "Hungarian over the set (STEGO), K = 12",
             "objects": "ImageNet-S: border rule for 'other' + presence matching, K + 1 clusters"}
BACKBONE = "toy_vit"
HARD_LABEL_CONFIDENCE = 0.8
"""Probability a hard-id method's unary gives its own id before the CRF (the rest shared evenly)."""
BORDER_FRACTION = 1 / 12
"""Width of the image border band of the 'other' rule, as a fraction of the image side (8 px at 96 px)."""
EVAL_BATCH = 25
SCENES_PASS = ("PASS is a large-scale *object* segmentation method: one category per image plus 'other' "
               "(its pixel-attention separates a foreground object from background); toy scenes have no "
               "single foreground object (several stuff regions and 1-4 things of different classes per "
               "image), so the row is left empty")


def unavailable(method: str, dataset: str) -> str | None:
    """Why the cell (``method``, ``dataset``) is not run, or ``None``."""
    if method == "pass" and dataset == "scenes":
        return SCENES_PASS
    return None


@dataclass
class Split:
    """One toy split as the comparison uses it: N×C×h×w features (and those of the mirrored images),
    N×H×W×3 uint8 images, N×H×W labels."""

    world: ToyWorld
    features: FeatureSet
    flipped: FeatureSet | None
    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class Prediction:
    """A cell's output on the validation split: N×H×W cluster ids in 0..C-1 and, when the method scores
    classes, N×C×H×W log-probabilities (the CRF's unaries)."""

    ids: torch.Tensor
    log_probs: torch.Tensor | None = None


def load_split(kind: str, split: str, n_images: int | None, size: int, version: int,
               flipped: bool = False) -> Split:
    """Features of the shipped toy ViT (cached in ``COURSE_CACHE/features``), images and labels of a split."""
    from .stego.data import HorizontalFlip, toy_dataset_name, toy_images_uint8, toy_world

    world = toy_world(split, n_images, size, kind=kind, version=version)
    features = toy_features(BACKBONE, kind, split, n_images=len(world), size=size, version=version)
    mirrored = None
    if flipped:
        name = toy_dataset_name(len(world), flipped=True, kind=kind, version=version)
        mirrored = FeatureCache().get_or_compute(BACKBONE, HorizontalFlip(world), name, split, size)
    images = toy_images_uint8(split, len(world), size, kind=kind, version=version)
    return Split(world, features, mirrored, images, features.labels.long())


# ----------------------------------------------------------------------------- methods


def _knn(features: FeatureSet) -> torch.Tensor:
    from .stego.pairs import TOP_K, global_descriptors, knn_table

    return knn_table(global_descriptors(features.features), k=min(TOP_K, len(features)))


def stego_setup(train_features: FeatureSet, seed: int, max_steps: int | None = None, changes: dict | None = None,
                shift_features: FeatureSet | None = None, recalibrate: bool = False):
    """The :class:`~course_lib.stego.configs.StegoConfig` and kNN table (N×k) of :func:`predict_stego`. With
    ``changes=None`` the config keeps its ``attracted_shares`` (``run_experiment`` calibrates b on the training
    features); with a dict (an ablation; ``{}``: the full method), b is calibrated first on ``shift_features``
    (default ``train_features``) with the full recipe and then the ``changes`` are applied (``recalibrate``: the
    changes first, then b calibrated for them)."""
    from .stego.configs import stego_config
    from .stego.diagnostics import calibrate_shifts

    base = stego_config("toy")
    config = replace(base, seed=seed, crf=False, steps=cap_steps(base.steps, max_steps))
    table = _knn(train_features)
    if changes is not None:
        calibration = shift_features or train_features
        calibration_table = table if calibration is train_features else _knn(calibration)
        if recalibrate:
            config = replace(calibrate_shifts(replace(config, **changes), calibration.features, calibration_table),
                             attracted_shares=None)
        else:
            config = replace(calibrate_shifts(config, calibration.features, calibration_table), attracted_shares=None,
                             **changes)
    return config, table


def predict_stego(train_features: FeatureSet, val: Split, seed: int, run_dir: Path, max_steps: int | None,
                  changes: dict | None = None, shift_features: FeatureSet | None = None,
                  recalibrate: bool = False) -> Prediction:
    """STEGO's toy recipe (:data:`~course_lib.stego.configs.TOY_CONFIG`, seed ``seed``) trained on
    ``train_features``; the cluster probe's log-probabilities on ``val`` (codes averaged with the mirrored
    images', as the official evaluation). The run is resumable in ``run_dir``
    (:func:`~course_lib.stego.experiment.run_experiment`).

    ``changes`` (an ablation): :class:`~course_lib.stego.configs.StegoConfig` fields changed after the shifts b
    were calibrated on ``shift_features`` (default ``train_features``) with the full recipe, so that each
    ablation changes one ingredient and keeps the full method's b, as :func:`course_lib.stego.ablations.run_ablations`."""
    from .stego.evaluate import cluster_log_probs, flip_averaged_codes
    from .stego.experiment import StegoData, run_experiment
    from .stego.model import StegoModel
    from .stego.trainer import CachedPairs

    config, table = stego_setup(train_features, seed, max_steps, changes, shift_features, recalibrate)
    data = StegoData(CachedPairs(train_features.features, train_features.labels, table), val.features,
                     val.flipped, val.world, list(val.world.classes))
    run_experiment(config, data, run_dir, desc=f"STEGO seed {seed}")
    model = StegoModel.load(run_dir / "stego.pt")
    size = tuple(val.labels.shape[-2:])
    log_probs = []
    for start in range(0, len(val.labels), EVAL_BATCH):
        stop = start + EVAL_BATCH
        codes = flip_averaged_codes(model, val.features.features[start:stop].float(),
                                    val.flipped.features[start:stop].float())
        log_probs.append(cluster_log_probs(model, codes, size).cpu())
    scores = torch.cat(log_probs)
    return Prediction(scores.argmax(1), scores)


def predict_kmeans(val: Split, k: int, seed: int) -> Prediction:
    """Cosine k-means (K = ``k``, seed ``seed``) on the validation patch features; unaries
    ``log_softmax(α·cos)`` with STEGO's cluster-probe α, as :func:`~course_lib.stego.experiment.kmeans_baseline`."""
    from .stego.evaluate import CLUSTER_ALPHA

    centres = kmeans_segmentation(val.features.features.float(), val.labels, k, seed=seed)["centres"]
    size = tuple(val.labels.shape[-2:])
    scores = torch.cat([F.log_softmax(CLUSTER_ALPHA * upsampled_cosines(val.features.features[s:s + EVAL_BATCH].float(),
                                                                        centres, size), dim=1)
                        for s in range(0, len(val.labels), EVAL_BATCH)])
    return Prediction(scores.argmax(1), scores)


def predict_texture(val: Split, k: int, seed: int) -> Prediction:
    """k-means (K = ``k``, seed ``seed``) on the colour-blind texture descriptor of every pixel; hard ids."""
    descriptors = texture_features(val.images.numpy().astype(np.float32) / 255)
    ids = pixel_kmeans_miou(descriptors, val.labels.numpy(), k, seed=seed)["predictions"]
    return Prediction(torch.from_numpy(ids).long())


def predict_segsort(train_split: Split, val: Split, seed: int, run_dir: Path, record: dict,
                    max_steps: int | None) -> tuple[Prediction, torch.Tensor]:
    """SegSort's toy recipe (:func:`course_lib.segsort.train.resolve_config`, seed ``seed``) trained in
    ``run_dir`` (resumed) on the validation split's toy world (kind and version) drawn with the seed, as its CLI
    draws it; then, single-scale as its CLI scores, on the comparison's own splits: the label-free cluster ids
    of the validation images (spherical k-means of the training split's segment prototypes, K = the dataset's
    classes) and the kNN-retrieval class ids, which use the training split's labels."""
    from .segsort.network import embed
    from .segsort.train import resolve_config, segment_predictions, toy_split, train

    world = val.world
    sizes = {name: record[name] for name in ("n_train", "n_val", "size") if record.get(name) is not None}
    cfg = resolve_config("toy", seed=seed, max_steps=max_steps, world_kind=world.kind, world_version=world.version,
                         **sizes)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = course_config.get_device()
    net = train(cfg, run_dir, device)[0].eval()

    def embedded(split: Split) -> list[tuple[torch.Tensor, torch.Tensor]]:
        w = split.world
        images, labels = toy_split(w.split, len(w), w.size, w.seed, w.kind, w.version)
        return [(embed(net, images[s:s + 200], cfg.eval_batch_size, device), labels[s:s + 200])
                for s in range(0, len(images), 200)]

    knn, clusters = [], []
    for knn_ids, cluster_ids, _ in segment_predictions(embedded(train_split), embedded(val), world.num_classes, cfg):
        knn.append(knn_ids)
        clusters.append(cluster_ids)
    return Prediction(torch.cat(clusters)), torch.cat(knn)


PASS_OUTPUTS = {"": "finetuned", "pseudo_": "pseudo_labels", "no_attention_": "baseline_no_attention"}
"""Metric-name prefix → the key of PASS's evaluation (``course_lib.luss.pipeline.Pipeline.run_infer``)."""
NO_ATTENTION_BORDER = "no_attention_border_"
"""Metric-name prefix of PASS's no-attention clustering with the comparison's label-free border rule for 'other'
(:func:`border_rule_scores`): PASS's own baseline has no 'other' at all, so "attention vs none" would mix the
attention with having an 'other' rule."""


def border_rule_scores(prediction_dir: Path, gt_dir: Path, num_classes: int) -> dict[str, float]:
    """:func:`score_objects` (border rule, presence matching, the evaluator) of the cluster-id PNGs
    ``prediction_dir/<class>/<name>.png`` (ids 1..K, no 'other') against ``gt_dir``'s; every image the same size."""
    from .data.label_png import read_imagenet_s_png

    names = sorted(path.relative_to(gt_dir) for path in gt_dir.rglob("*.png"))
    predictions = [read_imagenet_s_png(prediction_dir / name) for name in names]
    truths = [read_imagenet_s_png(gt_dir / name) for name in names]
    if len({p.shape for p in predictions + truths}) != 1:
        raise ValueError(f"the border rule scores images of one size; {prediction_dir} holds several")
    ids = torch.from_numpy(np.stack(predictions)).long()
    return score_objects(ids, torch.from_numpy(np.stack(truths)).long(), num_classes + 1)


def run_pass(seed: int, run_dir: Path, max_steps: int | None) -> dict[str, float]:
    """PASS's toy preset (:func:`course_lib.luss.pipeline.toy_settings`; ``smoke_settings`` under
    ``COURSE_SMOKE``) with the seed of its three training steps = ``seed`` (what ``python -m course_lib.luss
    --seed`` sets), every step run (resumed) in ``run_dir``; its own ImageNet-S evaluation of the fine-tuned
    predictions, of the pseudo-labels (``pseudo_*``) and of the no-attention baseline (``no_attention_*``), and
    that baseline with the border rule for 'other' (:data:`NO_ATTENTION_BORDER`)."""
    from .luss.pipeline import STEPS, Pipeline, smoke_settings, toy_settings

    settings = smoke_settings(toy_settings()) if course_config.smoke() else toy_settings()
    for step in (settings.pretrain, settings.attention, settings.finetune):
        step.seed = seed
    pipeline = Pipeline(settings, run_dir, max_steps=max_steps)
    scores: dict = {}
    for step in STEPS:
        result = pipeline.run(step)
        scores = result if isinstance(result, dict) else scores
    border = border_rule_scores(pipeline.path("baseline", "validation"), pipeline.gt_dir(), settings.num_classes)
    return {**{f"{prefix}{name}": float(scores[key][name])
               for prefix, key in PASS_OUTPUTS.items() for name in OBJECT_METRICS},
            **{f"{NO_ATTENTION_BORDER}{name}": value for name, value in border.items()}}


def hard_unaries(ids: torch.Tensor, k: int, confidence: float = HARD_LABEL_CONFIDENCE) -> torch.Tensor:
    """N×H×W ids → N×K×H×W log-probabilities: ``confidence`` on the id, the rest shared by the other K-1."""
    rest = (1 - confidence) / (k - 1)
    probs = torch.full((ids.shape[0], k, *ids.shape[1:]), rest)
    probs.scatter_(1, ids[:, None], confidence)
    return probs.log()


def crf_ids(prediction: Prediction, images: torch.Tensor, k: int, params: CRFParams, workers: int) -> torch.Tensor:
    """The ids after the dense CRF (``params``), batch by batch."""
    out = []
    for start in range(0, len(images), EVAL_BATCH):
        stop = start + EVAL_BATCH
        unary = prediction.log_probs[start:stop] if prediction.log_probs is not None \
            else hard_unaries(prediction.ids[start:stop], k)
        out.append(dense_crf_batch(images[start:stop], unary, workers=workers, params=params).argmax(1))
    return torch.cat(out)


# ----------------------------------------------------------------------------- protocols


def border_other(ids: torch.Tensor, k: int, fraction: float = BORDER_FRACTION) -> torch.Tensor:
    """The label-free 'other' rule: every cluster that lies in the image borders at least as much as a cluster
    spread evenly over the image would is 'other' (id 0); the remaining clusters take ids 1, 2, ... in
    their order. ``ids``: N×H×W cluster ids in 0..k-1 → N×H×W ids in 0..k-1 (0 = 'other').

    With a border band of ``fraction`` × side on each edge covering a share ``a`` of the image, a cluster
    c is 'other' when (its pixels in the band) / (its pixels) ≥ ``a``, counted over the whole set. The
    pixel-weighted mean of these shares is ``a``, so at least one cluster is always 'other'. Why: a toy
    ``objects`` image holds one object away from the edges on a background of several textures that fills
    the borders, as ImageNet photos mostly do; the background may take several of the K + 1 clusters (a
    rule that names only the one cluster most on the borders left most background as foreground: on
    200 v2 validation images, k-means on toy_vit features, F-measure 32.2 against 48.3 with this rule).
    No label is looked at."""
    height, width = ids.shape[-2:]
    band = max(1, round(fraction * min(height, width)))
    border = torch.zeros(height, width, dtype=torch.bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    total = torch.bincount(ids.flatten(), minlength=k).double()
    on_border = torch.bincount(ids[:, border].flatten(), minlength=k).double()
    other = on_border / total.clamp(min=1) >= border.double().mean()
    relabel = torch.zeros(k, dtype=torch.long)
    relabel[~other] = torch.arange(1, int((~other).sum()) + 1)
    return relabel[ids]


def score_scenes(ids: torch.Tensor, labels: torch.Tensor, k: int, hungarian: bool = True) -> dict[str, float]:
    """STEGO's protocol: one Hungarian assignment over the set → ``mIoU``, ``accuracy`` (percent);
    ``hungarian=False``: ``ids`` are class ids already (identity)."""
    metrics = UnsupervisedMetrics(k, hungarian=hungarian)
    metrics.update(ids, labels)
    values = metrics.compute()
    return {"mIoU": float(values["mIoU"]), "accuracy": float(values["accuracy"])}


OBJECT_METRICS = ("mIoU", "b_mIoU", "img_acc", "f_measure")


def imagenet_s_truth(labels: torch.Tensor) -> np.ndarray:
    """N×H×W toy labels → ImageNet-S ground-truth ids (the toy world's ignore, -1, becomes 1000)."""
    return np.where(labels.numpy() < 0, IMAGENET_S_IGNORE, labels.numpy())


def imagenet_s_scores(ids: np.ndarray, truth: np.ndarray, k: int, match: dict | None) -> dict[str, float]:
    """The ImageNet-S evaluator's :data:`OBJECT_METRICS` of N×H×W ids (0 = 'other') through ``match``
    (``None``: the ids are category ids already) against :func:`imagenet_s_truth` ids; ``k`` = K + 1."""
    evaluator = ImageNetSEvaluator(k - 1, match)
    for index, (p, g) in enumerate(zip(ids, truth)):
        evaluator.update(p, g, name=f"val image {index}")
    values = evaluator.compute()
    return {key: float(values[key]) for key in OBJECT_METRICS}


def score_objects(ids: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, float]:
    """ImageNet-S's protocol on ``k`` = K + 1 clusters: :func:`border_other`, presence matching, the evaluator."""
    named = border_other(ids, k).numpy()
    truth = imagenet_s_truth(labels)
    presence = [image_presence(p, g, k - 1) for p, g in zip(named, truth)]
    match = match_from_presence(np.stack([p for p, _ in presence]), np.stack([g for _, g in presence]))
    return imagenet_s_scores(named, truth, k, match)


def score_classes(ids: torch.Tensor, labels: torch.Tensor, dataset: str, k: int) -> dict[str, float]:
    """A prediction of class ids (SegSort's kNN retrieval, which uses labels) scored with no matching."""
    if dataset == "scenes":
        return score_scenes(ids, labels, k, hungarian=False)
    return imagenet_s_scores(ids.numpy(), imagenet_s_truth(labels), k, None)


SCORERS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], dict[str, float]]] = {
    "scenes": score_scenes, "objects": score_objects}


def score_cell(prediction: Prediction, val: Split, dataset: str, k: int, params: CRFParams,
               workers: int) -> dict[str, float]:
    """The dataset's protocol without the CRF (``m``) and after it (``m_crf``)."""
    scorer = SCORERS[dataset]
    metrics = scorer(prediction.ids, val.labels, k)
    after = scorer(crf_ids(prediction, val.images, k, params, workers), val.labels, k)
    return {**metrics, **{f"{key}_crf": value for key, value in after.items()}}


# ----------------------------------------------------------------------------- the table


def cell_path(out: Path, method: str, dataset: str, seed: int) -> Path:
    return out / "cells" / f"{method}_{dataset}_seed{seed}.json"


def run_cell(method: str, dataset: str, seed: int, splits: Callable[[str], tuple[Split, Split]], out: Path,
             params: CRFParams, workers: int, max_steps: int | None, record: dict | None = None) -> dict:
    """Compute (or reload) one cell: ``{"metrics", "seconds"}``, saved at :func:`cell_path`. SegSort and PASS
    train their own networks (``record``: the sizes SegSort uses); PASS is scored by its own evaluation,
    without the CRF."""
    path = cell_path(out, method, dataset, seed)
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    run_dir = out / "runs" / f"{method}_{dataset}_seed{seed}"
    if method == "pass":
        cell = {"metrics": run_pass(seed, run_dir, max_steps), "seconds": round(time.perf_counter() - start, 1)}
        write_json(path, cell)
        return cell
    train, val = splits(dataset)
    k = val.world.num_classes  # objects: the K categories and 'other'
    course_config.seed_everything(seed)
    extra = {}
    if method == "stego":
        prediction = predict_stego(train.features, val, seed, run_dir, max_steps)
    elif method == "segsort":
        prediction, knn_ids = predict_segsort(train, val, seed, run_dir, record or {}, max_steps)
        extra = {f"knn_{name}": value for name, value in score_classes(knn_ids, val.labels, dataset, k).items()}
    elif method == "kmeans":
        prediction = predict_kmeans(val, k, seed)
    else:
        prediction = predict_texture(val, k, seed)
    cell = {"metrics": {**score_cell(prediction, val, dataset, k, params, workers), **extra},
            "seconds": round(time.perf_counter() - start, 1)}
    write_json(path, cell)
    return cell


NOTES = {
    "stego": "cluster probe on flip-averaged codes; toy recipe (400 steps) trained on this dataset's train split",
    "kmeans": "cosine k-means on the toy ViT's validation patch features (same backbone as STEGO)",
    "segsort": "label-free: spherical k-means of SegSort's segment prototypes (hard ids: one-hot unaries of "
               f"confidence {HARD_LABEL_CONFIDENCE} for the CRF); knn_*: kNN segment retrieval, which uses the "
               "training labels (no CRF); SegSort's own toy network trained on this world drawn with the seed",
    "pass": "fine-tuned predictions ('other' from PASS's attention and τ); pseudo_*: the pseudo-labels; "
            "no_attention_*: PASS's no-attention baseline (k-means of pooled embeddings, no 'other'); "
            "no_attention_border_*: that baseline with the border rule for 'other'; PASS's toy preset "
            "(its toy ResNet, its 1000 validation images); no CRF",
    "texture": "k-means on a colour-blind per-pixel texture descriptor (hand-made, no learning); hard ids: "
               f"one-hot unaries of confidence {HARD_LABEL_CONFIDENCE} for the CRF",
}


def build_rows(cells: dict[tuple[str, str, int], dict], methods: Sequence[str], datasets: Sequence[str],
               seeds: Sequence[int], record: dict) -> list[dict]:
    """The rows of ``comparison.json`` (one per method and dataset; empty metrics where a cell does not run)."""
    rows = []
    for method in methods:
        for dataset in datasets:
            notes = unavailable(method, dataset) or NOTES.get(method, "")
            ran = [seed for seed in seeds if (method, dataset, seed) in cells]
            names = list(cells[method, dataset, ran[0]]["metrics"]) if ran else []
            if ran and dataset == "objects" and method != "pass":
                notes += "; 'other' = the clusters as much on the image borders as an even spread or more (border rule)"
            if ran and method != "pass":
                notes += f"; CRF: {record['crf_scale']} (bilateral θα = {record['crf_bilateral_sxy']:.1f} px)"
            rows.append({"method": method, "dataset": dataset, "protocol": PROTOCOLS[dataset], "seeds": ran,
                         "metrics": {name: [cells[method, dataset, s]["metrics"][name] for s in ran]
                                     for name in names},
                         "notes": notes})
    return rows


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std; a single value alone)."""
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {float(np.std(values, ddof=1)):.1f}"


def markdown(rows: list[dict], record: dict) -> str:
    """``comparison.md``: per dataset a table, methods first, then the baselines in a separate block."""
    n_val = record["n_val"] or DEFAULT_N_IMAGES["scenes", "val"]  # the same default for both kinds
    lines = [f"# Toy comparison (world v{record['world_version']}, {n_val} validation images, "
             f"CRF {record['crf_scale']})", "", "Mean ± std over the seeds (percent)."]
    for dataset in record["datasets"]:
        names = [name for name in (("mIoU", "accuracy") if dataset == "scenes" else OBJECT_METRICS)]
        columns = [n for name in names for n in (name, f"{name}_crf")]
        lines += ["", f"## {dataset}: {PROTOCOLS[dataset]}", "",
                  "| method | seeds | " + " | ".join(columns) + " | notes |",
                  "|---" * (len(columns) + 3) + "|"]
        for title, block in (("", "method"), ("baselines", "baseline"), ("reference points", "reference")):
            chosen = [row for row in rows if row["dataset"] == dataset and block_of(row["method"]) == block]
            if title and chosen:
                lines.append(f"| **{title}** |" + " |" * (len(columns) + 2))
            for row in chosen:
                cells = [mean_std(row["metrics"].get(name, [])) for name in columns]
                extra = "; ".join(f"{name} {mean_std(values)}" for name, values in row["metrics"].items()
                                  if name not in columns)
                lines.append(f"| {row['method']} | {len(row['seeds'])} | " + " | ".join(cells) +
                             f" | {extra + ' — ' if extra else ''}{row['notes']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the shipped tables (lessons 04, 06, 08)

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = {"comparison": ASSETS / "comparison_toy.json", "ablations": ASSETS / "ablations_toy.json"}
"""The tables the lessons show: ``python -m course_lib.compare --profile toy --seeds 0 1 2 --world-version 2
--ablations --out DIR`` writes them as ``DIR/comparison.json`` and ``DIR/ablations.json``."""
REFERENCE_NOISE = 0.2


def shipped(table: str = "comparison") -> list[dict]:
    """The rows of a shipped table (:data:`SHIPPED`: ``"comparison"`` or ``"ablations"``)."""
    return json.loads(SHIPPED[table].read_text())


def mean_of(rows: list[dict], metric: str, **match: str) -> float:
    """Mean over the seeds of ``metric`` in the one row whose fields equal ``match`` (e.g. ``method="stego",
    dataset="scenes"``)."""
    [row] = [row for row in rows if all(row.get(key) == value for key, value in match.items())]
    return float(np.mean(row["metrics"][metric]))


def summary_frame(rows: list[dict], metrics: Sequence[str], index: str = "method"):
    """A pandas DataFrame of ``mean ± std`` strings: one line per row (named by its ``index`` field), one column
    per metric, plus the number of seeds."""
    import pandas as pd

    return pd.DataFrame({row[index]: {"seeds": len(row["seeds"]), **{name: mean_std(row["metrics"].get(name, []))
                                                                      for name in metrics}}
                         for row in rows}).T


LABEL_USING = {"segsort": ("knn_", "SegSort kNN retrieval (uses training labels)"),
               "pass": ("pseudo_", "PASS pseudo-labels (before fine-tuning)")}
"""Extra lines of :func:`lesson_table`: a method's metrics under another prefix, with their name."""
MAIN_METRICS = {"scenes": ("mIoU", "mIoU_crf", "accuracy", "accuracy_crf"),
                "objects": ("mIoU", "mIoU_crf", "b_mIoU", "img_acc", "f_measure")}


def lesson_table(rows: list[dict], dataset: str):
    """The comparison of one dataset as the lessons show it: a pandas DataFrame of ``mean ± std`` strings with a
    ``block`` column (method, baseline, reference point), the methods first; SegSort's kNN retrieval and PASS's
    pseudo-labels as lines of their own (:data:`LABEL_USING`). Cells a method does not report read ``–``."""
    import pandas as pd

    names = MAIN_METRICS[dataset]
    lines = {}
    for row in (r for r in rows if r["dataset"] == dataset and r["metrics"]):
        block = block_of(row["method"])
        lines[row["method"]] = {"block": block, "seeds": len(row["seeds"]),
                                **{name: mean_std(row["metrics"].get(name, [])) for name in names}}
        if row["method"] in LABEL_USING:
            prefix, title = LABEL_USING[row["method"]]
            lines[title] = {"block": block, "seeds": len(row["seeds"]),
                            **{name: mean_std(row["metrics"].get(prefix + name, [])) for name in names}}
    order = {"method": 0, "baseline": 1, "reference": 2}
    frame = pd.DataFrame(lines).T
    return frame.iloc[sorted(range(len(frame)), key=lambda i: order[frame["block"].iloc[i]])]


def reference_rows(version: int = 2, n_val: int | None = None, size: int = 96, seed: int = 0) -> list[dict]:
    """Reference points on both datasets' validation split, scored by the same protocols (one seed): a constant
    prediction (on ``objects``: all 'other'), k-means on raw RGB (colour alone), and a noisy oracle (the truth
    with :data:`REFERENCE_NOISE` of its 8×8 tiles random, ids shuffled) — the floor, the colour bar and a ceiling."""
    from .evaluation.baselines import noisy_oracle
    from .stego.data import toy_images_uint8, toy_world

    rows = []
    for dataset in DATASETS:
        world = toy_world("val", n_val, size, kind=dataset, version=version)
        labels = torch.stack([torch.from_numpy(world.render(i)[1]) for i in range(len(world))]).long()
        images = toy_images_uint8("val", len(world), size, kind=dataset, version=version).numpy()
        k = world.num_classes
        predictions = {
            "constant": np.zeros(labels.shape, np.int64),
            "k-means RGB": pixel_kmeans_miou(images.astype(np.float32) / 255, labels.numpy(), k, seed=seed)["predictions"],
            f"noisy oracle {REFERENCE_NOISE}": noisy_oracle(labels.numpy(), k, noise=REFERENCE_NOISE, seed=seed)}
        for name, ids in predictions.items():
            metrics = SCORERS[dataset](torch.from_numpy(np.asarray(ids)).long(), labels, k)
            rows.append({"method": name, "dataset": dataset, "protocol": PROTOCOLS[dataset], "seeds": [seed],
                         "metrics": {key: [value] for key, value in metrics.items()}, "notes": "reference point"})
    return rows


# ----------------------------------------------------------------------------- ablations (issue 16, item 5)

FIVE_CROP = "five-crop (native scale)"
RECENTRED = "no spatial centering, b recalibrated"
STEGO_ABLATIONS: dict[str, dict] = {**RETRAINED, RECENTRED: {"pointwise": False}, FIVE_CROP: {"five_crop": True}}
"""STEGO's ablations (its Table 3 ingredients): the :data:`course_lib.stego.ablations.RETRAINED` changes, and
five-crop: training on the five crops (half the side) of the training images rendered at twice the size, each
crop a view at the textures' native scale (:func:`native_five_crop_features`). Every variant keeps the full
method's shifts b except :data:`RECENTRED`, which recalibrates them for the uncentred correspondences (the same
shares of self / kNN / random pairs attracted): b is defined relative to F, so without centering the same b
attract other pairs (:func:`variant_attracted_shares`). The CRF's effect is in every row (``m`` and ``m_crf``)."""
ABLATION_DATASETS = ("scenes",)
"""STEGO's ablation table is on CocoStuff; the toy analogue is ``scenes``."""
PASS_VARIANTS = {"PASS": "", "no fine-tuning (pseudo-labels)": "pseudo_",
                 "no attention, no 'other' (PASS's baseline)": "no_attention_",
                 "no attention, border rule for 'other'": NO_ATTENTION_BORDER}
"""PASS's ablations read from its cells: the fine-tuned predictions, the pseudo-labels they are trained on, and
the clustering without pixel attention (:data:`PASS_OUTPUTS`), bare and with the border rule for 'other'."""


def native_five_crop_features(kind: str, n_images: int | None, size: int, version: int) -> FeatureSet:
    """Features of STEGO's five-crop of the training split rendered at ``2·size`` px: 5·N crops of ``size`` px,
    each at the textures' native scale (the toy world keeps a texture's pixel scale at every image size), so that
    five-crop shows more detail at the training resolution as STEGO intends, rather than magnified textures."""
    from .stego.data import FiveCrops, toy_dataset_name, toy_world

    world = toy_world("train", n_images, 2 * size, kind=kind, version=version)
    name = toy_dataset_name(len(world), five_crop=True, kind=kind, version=version) + f"_from{2 * size}"
    return FeatureCache().get_or_compute(BACKBONE, FiveCrops(world, size=size), name, "train", size)


def ablation_slug(variant: str) -> str:
    """The file-name form of a variant (``no 0-clamp`` → ``no_0clamp``)."""
    return variant.split(" (")[0].replace(",", "").replace(" ", "_").replace("-", "")


def ablation_cell(variant: str, dataset: str, seed: int, splits: Callable[[str], tuple[Split, Split]], out: Path,
                  params: CRFParams, workers: int, max_steps: int | None, record: dict) -> dict:
    """Compute (or reload) one STEGO ablation cell (``DIR/cells/stego~<variant>_<dataset>_seed<S>.json``):
    :func:`predict_stego` with the :data:`STEGO_ABLATIONS` change, scored as the ``stego`` cells."""
    slug = ablation_slug(variant)
    path = cell_path(out, f"stego~{slug}", dataset, seed)
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    train, val = splits(dataset)
    features = train.features
    if variant == FIVE_CROP:
        features = native_five_crop_features(dataset, record["n_train"], record["size"], record["world_version"])
    course_config.seed_everything(seed)
    prediction = predict_stego(features, val, seed, out / "runs" / f"stego~{slug}_{dataset}_seed{seed}", max_steps,
                               changes=STEGO_ABLATIONS[variant], shift_features=train.features,
                               recalibrate=variant == RECENTRED)
    cell = {"metrics": score_cell(prediction, val, dataset, val.world.num_classes, params, workers),
            "seconds": round(time.perf_counter() - start, 1)}
    write_json(path, cell)
    return cell


def variant_attracted_shares(variant: str, train: Split, record: dict) -> dict[str, float]:
    """Label-free diagnostic of a STEGO ablation (``"STEGO"``: the full method): the share of each pair kind's
    feature correspondences F above its shift b on the variant's training features
    (:func:`course_lib.stego.diagnostics.attracted_shares`): the patch pairs its loss pulls together. The full
    method's b are calibrated to attract 0.2 / 0.1 / 0.02 (self / kNN / random); a variant that keeps those b
    but changes F (no spatial centering, five-crop) attracts other shares."""
    from .stego.diagnostics import attracted_shares

    features = train.features if variant != FIVE_CROP else \
        native_five_crop_features(train.world.kind, record["n_train"], record["size"], record["world_version"])
    config, table = stego_setup(features, 0, changes=STEGO_ABLATIONS.get(variant, {}), shift_features=train.features,
                                recalibrate=variant == RECENTRED)
    return {kind: round(float(share), 4) for kind, share in attracted_shares(config, features.features, table).items()}


def attraction_precision(train: Split, pointwise: bool) -> dict[str, float]:
    """A diagnostic that uses labels: with b set so that each pair kind attracts the toy recipe's shares
    (``attracted_shares`` of :data:`~course_lib.stego.configs.TOY_CONFIG`) of the (spatially centred when
    ``pointwise``) correspondences F of all training images, the share of attracted patch pairs whose two patches
    have the same class (:meth:`~course_lib.stego.diagnostics.PairCorrespondences.same_class_precision`)."""
    from .models.feature_correspondences import patch_labels
    from .stego.configs import TOY_CONFIG
    from .stego.diagnostics import PAIR_KINDS, pair_correspondences, shifts_for_shares

    features = train.features.features
    pairs = pair_correspondences(features, patch_labels(train.labels, tuple(features.shape[-2:])),
                                 _knn(train.features), pointwise=pointwise)
    shifts = shifts_for_shares(pairs, dict(zip(PAIR_KINDS, TOY_CONFIG.attracted_shares)))
    return {kind: round(pairs[kind].same_class_precision(shifts[kind]), 4) for kind in PAIR_KINDS}


def ablation_rows(cells: dict[tuple[str, str, int], dict], ablations: dict[tuple[str, str, int], dict],
                  seeds: Sequence[int], extras: dict[str, dict] | None = None) -> list[dict]:
    """The rows of ``ablations.json``: ``{"method", "variant", "dataset", "seeds", "metrics", "notes"}``; STEGO's
    full method from the ``stego`` cells, its variants from ``ablations`` (``extras``: more fields per variant,
    e.g. :func:`variant_attracted_shares` as ``"attracted_shares"``); PASS's from the ``pass`` cells."""
    rows = []
    for dataset in ABLATION_DATASETS:
        sources = {"STEGO": {s: cells.get(("stego", dataset, s)) for s in seeds}}
        sources.update({variant: {s: ablations.get((variant, dataset, s)) for s in seeds} for variant in STEGO_ABLATIONS})
        for variant, by_seed in sources.items():
            ran = [s for s in seeds if by_seed[s] is not None]
            if ran:
                rows.append({"method": "stego", "variant": variant, "dataset": dataset, "seeds": ran,
                             "metrics": {name: [by_seed[s]["metrics"][name] for s in ran]
                                         for name in by_seed[ran[0]]["metrics"]},
                             **(extras or {}).get(variant, {}),
                             "notes": "STEGO's shifts b of the full method (calibrated once); one change per row"})
    ran = [s for s in seeds if ("pass", "objects", s) in cells]
    for variant, prefix in PASS_VARIANTS.items() if ran else ():
        rows.append({"method": "pass", "variant": variant, "dataset": "objects", "seeds": ran,
                     "metrics": {name: [cells["pass", "objects", s]["metrics"][prefix + name] for s in ran]
                                 for name in OBJECT_METRICS},
                     "notes": "from the same PASS runs (toy preset), ImageNet-S evaluation, no CRF"})
    return rows


def ablation_markdown(rows: list[dict]) -> str:
    """``ablations.md``: mean ± std per variant (percent)."""
    lines = ["# Toy ablations", "", "Mean ± std over the seeds (percent)."]
    for method, names in (("stego", ("mIoU", "mIoU_crf", "accuracy", "accuracy_crf")), ("pass", OBJECT_METRICS)):
        chosen = [row for row in rows if row["method"] == method]
        if chosen:
            shares = any("attracted_shares" in row for row in chosen)
            lines += ["", f"## {method} ({chosen[0]['dataset']})", "",
                      "| variant | seeds | " + " | ".join(names) + (" | attracted self / kNN / random" if shares else "")
                      + " |", "|---" * (len(names) + 2 + shares) + "|"]
            lines += [f"| {row['variant']} | {len(row['seeds'])} | " +
                      " | ".join(mean_std(row["metrics"].get(name, [])) for name in names) +
                      (" | " + " / ".join(f"{v:.2f}" for v in row.get("attracted_shares", {}).values()) if shares else "")
                      + " |" for row in chosen]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m course_lib.compare", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, skip=("dataset", "seed", "data_root"))
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2],
                        help="training / clustering seeds, one cell per seed (default 0 1 2)")
    parser.add_argument("--methods", nargs="+", choices=METHODS + BASELINES, default=list(METHODS + BASELINES))
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--world-version", type=int, choices=(1, 2), default=2,
                        help="toy world version (ToyWorld(version=...)); default 2, the themed scenes of the shipped "
                             "comparison (1: the world the lessons' shipped runs were trained on)")
    parser.add_argument("--crf-scale", choices=("stego", "scaled"), default="scaled",
                        help="stego: STEGO's CRF constants (θα = 67 px, set for 320-px images); scaled (default): "
                             "θα scaled to the image side (CRFParams.scaled_to)")
    parser.add_argument("--n-train", type=positive_int, default=None,
                        help="training images (default the toy world's 1000)")
    parser.add_argument("--n-val", type=positive_int, default=None, help="validation images (default 200)")
    parser.add_argument("--size", type=positive_int, default=96, help="image side in pixels (default 96)")
    parser.add_argument("--ablations", action="store_true",
                        help="also STEGO's ablations on scenes (one retrained variant per ingredient and seed) and "
                             "PASS's (read from its cells): DIR/ablations.json and DIR/ablations.md")
    return parser.parse_args(argv)


def resolved(args: argparse.Namespace) -> dict:
    """The configuration record (``DIR/config.json``); seeds, methods and datasets may change between runs."""
    profile = course_config.profile(args.profile)
    if profile != "toy":
        raise course_config.ConfigError(f"--profile {profile}: the comparison runs on the toy world only "
                                        "(use --profile toy)")
    if "stego" in args.methods and args.n_train is not None:
        from .stego.configs import stego_config

        batch = stego_config("toy").batch_size
        if args.n_train < batch:
            raise course_config.ConfigError(f"--n-train {args.n_train} does not fill one STEGO batch of {batch} "
                                            f"images: give --n-train {batch} or more, or leave stego out of --methods")
    params = STEGO_CRF if args.crf_scale == "stego" else STEGO_CRF.scaled_to(args.size)
    return {"profile": profile, "world_version": args.world_version, "crf_scale": args.crf_scale,
            "crf_bilateral_sxy": params.bilateral_sxy, "n_train": args.n_train, "n_val": args.n_val,
            "size": args.size, "backbone": BACKBONE, "max_steps": args.max_steps, "smoke": course_config.smoke(),
            "seeds": list(args.seeds), "methods": list(args.methods), "datasets": list(args.datasets),
            "ablations": args.ablations}


def main(argv: list[str] | None = None) -> list[dict] | None:
    args = parse_args(argv)
    apply_common(args)
    record = resolved(args)
    if args.print_config:
        print_config(record)
        return None
    out = prepare_out(args.out)
    guard_run(out, record, overwrite=args.overwrite, outputs=("cells", "runs", "comparison.json", "comparison.md",
                                                             "ablations.json", "ablations.md"),
              ignore=("seeds", "methods", "datasets", "ablations"))
    write_json(out / "config.json", record)
    params = STEGO_CRF if args.crf_scale == "stego" else STEGO_CRF.scaled_to(args.size)
    workers = args.threads or 1
    loaded: dict[str, tuple[Split, Split]] = {}

    def splits(dataset: str) -> tuple[Split, Split]:
        if dataset not in loaded:
            loaded[dataset] = (load_split(dataset, "train", args.n_train, args.size, args.world_version),
                               load_split(dataset, "val", args.n_val, args.size, args.world_version, flipped=True))
        return loaded[dataset]

    cells = {}
    start = time.perf_counter()
    for dataset in args.datasets:
        for method in args.methods:
            if unavailable(method, dataset):
                continue
            for seed in args.seeds:
                cell = run_cell(method, dataset, seed, splits, out, params, workers, args.max_steps, record)
                cells[method, dataset, seed] = cell
                shown = ", ".join(f"{k} {v:.1f}" for k, v in cell["metrics"].items())
                print(f"{method} / {dataset} / seed {seed}: {shown} ({cell['seconds']} s)", flush=True)
    rows = build_rows(cells, args.methods, args.datasets, args.seeds, record)
    references_path = out / "cells" / "references.json"
    if not references_path.is_file():
        write_json(references_path, reference_rows(args.world_version, args.n_val, args.size))
    rows += [row for row in json.loads(references_path.read_text()) if row["dataset"] in args.datasets]
    write_json(out / "comparison.json", rows)
    (out / "comparison.md").write_text(markdown(rows, record))
    if args.ablations:
        ablations = {}
        for dataset in (d for d in ABLATION_DATASETS if d in args.datasets):
            for variant in STEGO_ABLATIONS:
                for seed in args.seeds:
                    cell = ablation_cell(variant, dataset, seed, splits, out, params, workers, args.max_steps, record)
                    ablations[variant, dataset, seed] = cell
                    print(f"stego ablation {variant} / {dataset} / seed {seed}: mIoU {cell['metrics']['mIoU']:.1f}, "
                          f"with CRF {cell['metrics']['mIoU_crf']:.1f} ({cell['seconds']} s)", flush=True)
        extras: dict[str, dict] = {}
        if "scenes" in args.datasets:
            train = splits("scenes")[0]
            extras = {variant: {"attracted_shares": variant_attracted_shares(variant, train, record)}
                      for variant in ("STEGO", *STEGO_ABLATIONS)}
            for variant, pointwise in (("STEGO", True), (RECENTRED, False)):
                extras[variant]["attraction_precision"] = attraction_precision(train, pointwise)
        table = ablation_rows(cells, ablations, args.seeds, extras)
        write_json(out / "ablations.json", table)
        (out / "ablations.md").write_text(ablation_markdown(table))
        print(f"wrote {out / 'ablations.json'} and {out / 'ablations.md'}")
    print(f"wrote {out / 'comparison.json'} and {out / 'comparison.md'} ({time.perf_counter() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    run_cli(main)
