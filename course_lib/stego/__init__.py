"""STEGO (Hamilton et al., "Unsupervised Semantic Segmentation by Distilling Feature Correspondences",
ICLR 2022), with the official code's semantics.

- :mod:`.correlation`: ``tensor_correlation`` (eq. 1), spatial centering, ``correlation_loss`` (eq. 2-4),
  random sampling grids.
- :mod:`.pairs`: kNN partners (top-30 cached, partner from ranks 1..7), in-batch derangements.
- :mod:`.loss`: the self / kNN / random objective of a batch (eq. 5).
- :mod:`.head`: the segmentation head (linear + non-linear branches, Dropout2d).
- :mod:`.model`: head + cluster probe + linear probe, trained together.
- :mod:`.configs`: the official hyper-parameters per dataset / backbone and the toy ones.
- :mod:`.trainer`, :mod:`.experiment`, :mod:`.ablations`: training (DDP, checkpoints, resume),
  evaluation runs, ablations. :mod:`.evaluate`: flip-averaged codes, CRF, Hungarian / identity metrics.
- :mod:`.folder`: training on a folder of unlabelled images (``--dataset folder:DIR``), label-free diagnostics.
- ``python -m course_lib.stego.train``: the CLI (:mod:`.train`).
"""
from .configs import OFFICIAL_CONFIGS, TOY_CONFIG, StegoConfig, stego_config
from .correlation import (
    correlation_loss,
    feature_correspondence,
    random_coordinates,
    sample_grid,
    spatial_centering,
    tensor_correlation,
)
from .evaluate import (
    EvalBatch,
    StegoPredictions,
    cluster_log_probs,
    evaluate_stego,
    flip_averaged_codes,
    probe_log_probs,
)
from .experiment import StegoData, eval_batches, kmeans_baseline, prepare_data, run_experiment
from .head import StegoHead
from .loss import stego_loss
from .model import StegoModel
from .pairs import cached_knn_table, derangement, draw_positives, global_descriptors, knn_table
from ..distributed import DistContext, init_distributed
from .trainer import CachedPairs, OnlinePairs, train_stego

__all__ = [
    "OFFICIAL_CONFIGS", "TOY_CONFIG", "CachedPairs", "DistContext", "EvalBatch", "OnlinePairs", "StegoConfig",
    "StegoData", "StegoHead", "StegoModel", "StegoPredictions", "cached_knn_table", "cluster_log_probs",
    "correlation_loss",
    "derangement", "draw_positives", "eval_batches", "evaluate_stego", "feature_correspondence",
    "flip_averaged_codes", "global_descriptors", "init_distributed", "kmeans_baseline", "knn_table",
    "prepare_data", "probe_log_probs", "random_coordinates", "run_experiment", "sample_grid", "spatial_centering",
    "stego_config", "stego_loss", "tensor_correlation", "train_stego",
]
