"""PASS and the LUSS pipeline (Gao et al., "Large-scale Unsupervised Semantic Segmentation", TPAMI 2022).

- :mod:`.multicrop`: multi-crop views with their boxes; :mod:`.p2p`: pixel-to-pixel alignment;
  :mod:`.d2s`: deep-to-shallow supervision; :mod:`.pretrain`: the pre-training (SwAV + P2P + D2S).
- :mod:`.attention`: pixel attention; :mod:`.labels`: clustering into pseudo-labels, the 'other'
  threshold τ (sweep, Otsu); :mod:`.finetune`: the segmentation network and inference.
- :mod:`.pipeline`: the steps on a run folder and the command line ``python -m course_lib.luss``
  (:func:`smoke_settings`: a preset at ``COURSE_SMOKE`` size).
- :mod:`.training`: schedules, LARS, checkpoints, ``torchrun`` processes; :mod:`.data`: image sets.
"""
from .attention import AttentionConfig, AttentionModel, PixelAttention, load_attention_model, train_attention
from .d2s import ShallowHead, deep_to_shallow_loss
from .data import InMemoryImages, PseudoLabelDataset, image_batches
from .finetune import FinetuneConfig, SegmentationModel, finetune, load_segmentation_model, predict_dataset
from .labels import (KMeansResult, apply_threshold, cluster_ids, embed_images, kmeans, mask_scores,
                     otsu_threshold, pooled_embeddings, raw_label_maps, tau_sweep, unsupervised_scores)
from .multicrop import CropSpec, MultiCropDataset, MultiCropWithBoxes
from .p2p import PixelToPixelHead, overlap_grids, pixel_to_pixel_loss, sample_at
from .pipeline import Pipeline, Settings, settings_for, smoke_settings
from .pretrain import PASSModel, PretrainConfig, load_pass_model, pass_losses, pretrain

__all__ = [
    "AttentionConfig", "AttentionModel", "CropSpec", "FinetuneConfig", "InMemoryImages", "KMeansResult",
    "MultiCropDataset", "MultiCropWithBoxes", "PASSModel", "Pipeline", "PixelAttention", "PixelToPixelHead",
    "PretrainConfig", "PseudoLabelDataset", "SegmentationModel", "Settings", "ShallowHead", "apply_threshold",
    "cluster_ids", "deep_to_shallow_loss", "embed_images", "finetune", "image_batches", "kmeans",
    "load_attention_model", "load_pass_model", "load_segmentation_model", "mask_scores", "otsu_threshold",
    "overlap_grids", "pass_losses", "pixel_to_pixel_loss", "pooled_embeddings", "predict_dataset", "pretrain",
    "raw_label_maps", "sample_at", "settings_for", "smoke_settings", "tau_sweep", "train_attention",
    "unsupervised_scores",
]
