"""STEGO's ablations, computed: each row retrains (or re-evaluates) with one ingredient changed.

Rows (the paper's Table 3 ingredients that the toy world can test): the full method; without the 0-clamp
on the code correspondence; without spatial centering of the feature correspondence; without the kNN
term (λ_knn = 0); without the CRF (same model, evaluated without it); five-crop switched (on if the
configuration trains without, off otherwise); and the k-means-on-features baseline for reference.
Every training row uses the same data, seed, number of steps and shifts b as the full method.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from .configs import StegoConfig
from .diagnostics import calibrate_shifts
from .experiment import StegoData, prepare_data, run_experiment
from ..distributed import DistContext

RETRAINED = {
    "no 0-clamp": {"zero_clamp": False},
    "no spatial centering": {"pointwise": False},
    "no kNN term": {"lambda_knn": 0.0},
}
METRIC_KEYS = ("cluster_mIoU", "cluster_accuracy", "linear_mIoU", "linear_accuracy")


def _row(name: str, result: dict, suffix: str = "") -> dict:
    return {"variant": name, **{key: result[key + suffix] for key in METRIC_KEYS}}


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("-", "")


def run_ablations(config: StegoConfig, data: StegoData, full_result: dict | None, baseline: dict | None,
                  backbone: nn.Module, out_dir: str | Path, context: DistContext | None = None,
                  prepare_options: dict | None = None, crf_workers: int | None = None) -> list[dict] | None:
    """Train and evaluate every ablation under ``out_dir/<variant>`` (resumable); the table on process 0.

    Args:
        full_result / baseline: the full method's :func:`~.experiment.run_experiment` result and the
            k-means baseline (process 0; ``None`` elsewhere).
        prepare_options: the :func:`~.experiment.prepare_data` options of ``data`` (to build the
            five-crop-switched data the same way).
    Returns:
        Rows ``{"variant", "cluster_mIoU", "cluster_accuracy", "linear_mIoU", "linear_accuracy"}``
        (``linear_*`` is ``None`` for the baseline) on process 0, ``None`` on the others.
    """
    context = context or DistContext()
    out_dir = Path(out_dir)
    if config.attracted_shares is not None:  # every row keeps the full method's shifts: one change at a time
        config = replace(calibrate_shifts(config, data.source.features, data.source.table), attracted_shares=None)
    results = {}
    for name, change in RETRAINED.items():
        results[name] = run_experiment(replace(config, **change), data, out_dir / _slug(name), context,
                                       crf_workers=crf_workers, desc=name)
    crop_name = "no five-crop" if config.five_crop else "five-crop"
    crop_config = replace(config, five_crop=not config.five_crop)
    crop_data = prepare_data(crop_config, backbone, context, **(prepare_options or {}))
    results[crop_name] = run_experiment(crop_config, crop_data, out_dir / _slug(crop_name), context,
                                        crf_workers=crf_workers, desc=crop_name)
    if not context.is_main:
        return None
    rows = [_row("STEGO", full_result)]
    rows += [_row(name, results[name]) for name in RETRAINED]
    if config.crf:
        rows.append(_row("no CRF", full_result, "_no_crf"))
    rows.append(_row(crop_name, results[crop_name]))
    rows.append({"variant": "k-means on features", "cluster_mIoU": baseline["mIoU"],
                 "cluster_accuracy": baseline["accuracy"], "linear_mIoU": None, "linear_accuracy": None})
    return rows
