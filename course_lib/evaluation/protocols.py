"""The LUSS evaluation protocols of ImageNet-S: distance matching and semi-supervised fine-tuning.

Gao et al., "Large-scale Unsupervised Semantic Segmentation" (TPAMI 2022) evaluate representations
without training a classifier by *distance matching*, and with a few labels by *semi-supervised
fine-tuning* on the ``train-semi`` split. Facts taken from the official code:

- Distance matching (``LUSSeg/PASS``, ``distance_matching/get_instance.py`` and
  ``distance_matching/inference_distance_matching.py``): on each labelled ``train-semi`` image the label
  map is resized to the feature size (nearest) and every label value present except 1000 ('other' = 0
  included) gives one reference embedding, the average feature of its pixels, labelled by that class.
  The references are L2-normalised, so scaling the average does not matter; queries are the
  L2-normalised pixel features of a validation image. Each query takes its k = 10 most cosine-similar
  references; each neighbour votes for its class with weight ``exp(cos / T)``, T = 0.07 (DINO's weighted
  k-NN); the class with the largest sum wins. The predicted id map (feature size) is upsampled to the
  image size with *nearest* interpolation. (PASS first upsamples its ResNet-50 features 4× bilinearly,
  for both references and queries: do that in the feature function if wanted.)
- Semi-supervised fine-tuning (``LUSSeg/ImageNetSegModel``, ``main_segfinetune.py`` and
  ``engine_segfinetune.py``): a 1×1 convolution head ``nn.Conv2d(C, K + 1, 1)`` on the patch features,
  cross-entropy with 1000 ignored, evaluation with the logits upsampled *bilinearly* to the label size
  before the argmax. The full-scale default is the README's recipe, which fine-tunes the whole network
  (:class:`SemiSupervisedConfig`, :func:`semi_supervised_finetune`, :func:`semi_supervised_config`); the toy
  profile keeps a head-only variant (:func:`semi_supervised_fit`: frozen backbone, a head trained on features
  computed once, which runs on a CPU in seconds).

The full recipe, value by value (``LUSSeg/ImageNetSegModel``):

- ``README.md:14-25``: batch 32 per GPU × 8 GPUs (``--accum_iter 1``: 256 in all), ``--epochs 100``,
  ``--blr 5e-4`` (lr = blr · 256 / 256, ``main_segfinetune.py:307-310``), ``--layer_decay 0.50``,
  ``--weight_decay 0.05``, ``--drop_path 0.1`` (ViT-S/16). For PASS's ResNet-50 ``MODEL_ZOO.md`` ("Command
  for SSL (ResNet-50 D32)") has ``--layer_decay 0.4 --weight_decay 0.0005`` and no drop path
  (:data:`SEMI_SUPERVISED_PRESETS`).
- ``main_segfinetune.py:130-134`` warm-up 5 epochs, ``:125-129`` min lr 1e-6, ``util/lr_sched.py:10-23``: per
  iteration, linear warm-up from 0, then half-cosine to the min lr, each group's lr × its layer scale;
  ``:330`` AdamW (β 0.9, 0.999); ``util/lr_decay.py:30-43``: no weight decay on 1-D parameters (biases,
  norms) and ``pos_embed`` / ``cls_token`` (timm's ``no_weight_decay``), scale = decay^(L − layer).
- Layers (``util/lr_decay.py:52``, ``get_layer_id``): ViT (``models/models_vit.py:98-115``, L = depth + 1):
  tokens and patch embedding 0, block i → i + 1, the rest (final norm, head) L. ResNet
  (``models/models_resnet.py:164`` and ``:276-294``, L = Σ blocks + 1): stem (``conv1``, ``bn1``) 0, block b
  of stage s → (blocks of the stages before s) + b + 1, the rest (head) L. :func:`layer_decay_groups`.
- ``engine_segfinetune.py:61-69``: the logits upsampled ×2 (bilinear) in the loss, the labels resized
  (nearest) to them; the ResNet model already upsamples its logits ×2 in ``forward``
  (``models/models_resnet.py:272``; ``head_upsample`` 2 in the ResNet preset).
- ``util/datasets.py:34-59``: training crops RandomResizedCrop 224, scale 0.14-1 (labels nearest,
  ``util/transforms.py:208-211``), flip, SwAV's colour distortion and blur; evaluation at short side 256.
- ``engine_segfinetune.py:126-147``: above 1000² pixels the logits are upsampled to a *longer side* of 1000,
  the argmax taken there and the ids upsampled (nearest) (:func:`capped_prediction`, rule "longer").
- ``models/models_vit.py:31-41``: the ViT's final norm is a fresh LayerNorm (``fc_norm``; the pre-trained
  ``norm`` is not loaded) and the head's weights are truncated-normal with std 2e-5; the ResNet's head is
  Kaiming fan-out (``models/models_resnet.py:193-195``).

Labels follow the course's datasets: H×W int64 with -1 = ignore (ImageNet-S's 1000 is mapped to -1 on
loading; a raw 1000 is ignored as well).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .. import config as course_config
from ..data.transforms import normalize
from ..models.features import extract_features
from .probes import (
    LinearProbe,
    Size,
    check_features,
    check_labels,
    output_size,
    predict_segmentation,
    resolve_device,
    train_segmentation_head,
)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""A frozen backbone: ImageNet-normalised images B×3×H×W → features B×C×h×w."""

IMAGENET_S_IGNORE = 1000


def distance_matching_references(features: torch.Tensor, labels: torch.Tensor,
                                 ignore_index: int = IMAGENET_S_IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference embeddings of LUSS distance matching: one per (image, class present) pair.

    Args:
        features: B×C×h×w features of the labelled images.
        labels: B×H×W class ids (0 = 'other' is a class; ids < 0 and ``ignore_index`` are skipped),
            resized to h×w with nearest interpolation, as the official code does.
    Returns:
        ``(embeddings, classes)``: R×C mean features of the segments (not normalised) and their R class
        ids, ordered by image then class. Images are independent: the references of several batches
        can be concatenated.
    """
    check_features(features)
    check_labels(features, labels)
    height, width = features.shape[-2:]
    labels = labels.to(features.device)
    if tuple(labels.shape[-2:]) != (height, width):
        labels = F.interpolate(labels[:, None].double(), size=(height, width), mode="nearest")[:, 0].long()
    labels = labels.long()
    valid = (labels >= 0) & (labels != ignore_index)
    if not valid.any():
        raise ValueError("distance_matching_references: no labelled pixel (all ignored) at the feature size")
    n_ids = int(labels[valid].max()) + 1
    image_index = torch.arange(len(labels), device=labels.device)[:, None, None].expand_as(labels)
    keys = (image_index * n_ids + labels)[valid]
    segments, segment_of_pixel = torch.unique(keys, return_inverse=True)
    pixels = features.permute(0, 2, 3, 1)[valid].float()
    sums = torch.zeros(len(segments), features.shape[1], device=features.device).index_add_(
        0, segment_of_pixel, pixels)
    counts = torch.bincount(segment_of_pixel, minlength=len(segments)).float()
    return sums / counts[:, None], segments % n_ids


@torch.no_grad()
def distance_matching_scores(features: torch.Tensor, references: torch.Tensor, reference_classes: torch.Tensor,
                             k: int = 10, temperature: float = 0.07, n_classes: int | None = None,
                             chunk_size: int = 32_768) -> torch.Tensor:
    """Weighted k-NN votes B×K×h×w of every pixel: Σ over its k nearest references (cosine) of
    ``exp(cos / T)`` for the reference's class. Votes are computed relative to each pixel's best
    similarity, ``exp((cos − cos_max) / T)``, which rescales a pixel's votes and keeps them finite
    without changing its argmax. ``n_classes`` defaults to ``max(reference_classes) + 1``."""
    check_features(features, references.shape[1] if references.ndim == 2 else None)
    if references.ndim != 2 or reference_classes.ndim != 1 or len(references) != len(reference_classes):
        raise ValueError(f"references must be R×C with R class ids, got {tuple(references.shape)} and "
                         f"{tuple(reference_classes.shape)}")
    if len(references) == 0:
        raise ValueError("distance matching needs at least one reference embedding")
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be positive and temperature > 0, got k={k}, temperature={temperature}")
    n_classes = int(reference_classes.max()) + 1 if n_classes is None else n_classes
    if int(reference_classes.min()) < 0 or int(reference_classes.max()) >= n_classes:
        raise ValueError(f"reference classes must lie in 0..{n_classes - 1}")
    batch, channels, height, width = features.shape
    device = features.device
    keys = F.normalize(references.to(device).float(), dim=1, eps=1e-10)
    classes = reference_classes.to(device).long()
    queries = F.normalize(features.float(), dim=1, eps=1e-10).permute(0, 2, 3, 1).reshape(-1, channels)
    k = min(k, len(keys))
    scores = torch.zeros(len(queries), n_classes, device=device)
    for start in range(0, len(queries), chunk_size):
        similarity, neighbours = (queries[start:start + chunk_size] @ keys.T).topk(k, dim=1)
        votes = torch.exp((similarity - similarity[:, :1]) / temperature)
        scores[start:start + chunk_size].scatter_add_(1, classes[neighbours], votes)
    return scores.reshape(batch, height, width, n_classes).permute(0, 3, 1, 2)


def distance_matching_predict(features: torch.Tensor, references: torch.Tensor, reference_classes: torch.Tensor,
                              k: int = 10, temperature: float = 0.07, size: Size = None,
                              n_classes: int | None = None) -> torch.Tensor:
    """LUSS distance matching: class ids B×H×W of B×C×h×w ``features`` by weighted k-NN over the
    (R×C, R) references of :func:`distance_matching_references` (k = 10, T = 0.07 as the official
    code), predicted at h×w and upsampled to ``size`` (default h×w) with nearest interpolation."""
    scores = distance_matching_scores(features, references, reference_classes, k, temperature, n_classes)
    predictions = scores.argmax(1)
    height, width = output_size(features, size)
    if (height, width) != tuple(predictions.shape[-2:]):
        predictions = F.interpolate(predictions[:, None].float(), size=(height, width), mode="nearest")[:, 0]
    return predictions.long()


def semi_supervised_fit(feature_fn: FeatureFn, dataset: Dataset, n_classes: int, epochs: int = 30,
                        lr: float = 5e-3, batch_size: int = 8, head: nn.Module | None = None,
                        weight_decay: float = 0.0, seed: int = 0,
                        device: str | torch.device | None = None) -> nn.Module:
    """Semi-supervised protocol: train a segmentation head on a frozen backbone with few labelled images.

    Args:
        feature_fn: frozen backbone, ImageNet-normalised B×3×H×W → B×C×h×w (run once per image).
        dataset: the labelled split (ImageNet-S ``train-semi``; ``{"image", "label"}`` samples).
        n_classes: K, 'other' included (ImageNet-S-50: 51); labels outside ``0..K-1`` are ignored.
        head: B×C×h×w → B×K×h×w logits; default a 1×1 convolution (:class:`LinearProbe`).
    Returns:
        The trained head (eval mode), with ``loss_history`` (mean loss per epoch).
    """
    features, labels = extract_features(feature_fn, dataset, batch_size, device)
    if head is None:
        head = LinearProbe(features.shape[1], n_classes, seed=seed)
    history = train_segmentation_head(head, features, labels, epochs=epochs, lr=lr, batch_size=batch_size,
                                      seed=seed, weight_decay=weight_decay, device=device,
                                      desc="segmentation head")
    head.loss_history = history
    return head


@torch.no_grad()
def semi_supervised_predict(feature_fn: FeatureFn, head: nn.Module, images: torch.Tensor,
                            size: Size = None) -> torch.Tensor:
    """Class ids B×H×W of B×3×H×W images in [0, 1]: the head's logits upsampled bilinearly to ``size``
    (default the image size) before the argmax, as the official evaluation does."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B×3×H×W, got {tuple(images.shape)}")
    device = next(head.parameters()).device
    features = feature_fn(normalize(images.to(device)))
    check_features(features, name="feature_fn output")
    return predict_segmentation(head, features, size if size is not None else tuple(images.shape[-2:]))


CAP_RULES = ("height", "longer")
"""Which side :func:`capped_prediction` sets to ``max_res``: PASS's ``inference.py:133-136`` always the height;
ImageNetSegModel's ``engine_segfinetune.py:127-142`` the longer side."""


def capped_prediction(logits: torch.Tensor, size: tuple[int, int], max_res: int | None = 1000,
                      rule: str = "longer") -> torch.Tensor:
    """Class ids B×H×W at ``size`` = (H, W) from B×K×h×w logits, as the official inference does.

    Up to ``max_res``² pixels (H·W ≤ max_res², or ``max_res`` None): the logits are upsampled bilinearly
    (``align_corners=False``) to H×W and the argmax taken. Above it, to save memory, the logits are upsampled
    to an intermediate size, the argmax taken there, and the ids upsampled to H×W with (legacy) nearest
    interpolation. The intermediate size is (max_res, ⌊max_res·W/H⌋) with ``rule="height"`` (PASS
    ``inference.py:133-136``; a wide image is then predicted *above* its own height) and, with
    ``rule="longer"`` (ImageNetSegModel ``engine_segfinetune.py:127-142``), the longer side set to max_res.
    """
    if rule not in CAP_RULES:
        raise ValueError(f"rule must be one of {', '.join(CAP_RULES)}, got {rule!r}")
    height, width = int(size[0]), int(size[1])
    if max_res is None or height * width <= max_res * max_res:
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).argmax(dim=1)
    if rule == "height" or height > width:
        inner = (max_res, int(max_res * width / height))
    else:
        inner = (int(max_res * height / width), max_res)
    ids = F.interpolate(logits, size=inner, mode="bilinear", align_corners=False).argmax(dim=1, keepdim=True)
    return F.interpolate(ids.float(), size=(height, width), mode="nearest")[:, 0].long()


@dataclass(frozen=True)
class SemiSupervisedConfig:
    """The semi-supervised protocol's recipe (defaults: ``LUSSeg/ImageNetSegModel``'s README for ViT-S/16;
    each value's source in the module docstring).

    ``mode`` "finetune" trains the whole network (:func:`semi_supervised_finetune`, the full-scale default);
    "head" a head on the frozen backbone's features (:func:`semi_supervised_fit`, the toy profile), which reads
    ``epochs``, ``lr``, ``batch_size`` and ``weight_decay`` only. ``lr`` None: blr · batch_size / 256.
    """

    mode: str = "finetune"
    epochs: int = 100
    batch_size: int = 256              # 32 per GPU × 8 GPUs × accum_iter 1
    blr: float = 5e-4
    lr: float | None = None
    layer_decay: float = 0.50
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    min_lr: float = 1e-6
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.14, 1.0)
    head_upsample: int = 1             # the model's own ×2 of its logits (ImageNetSegModel's ResNet)
    loss_upsample: int = 2             # the logits ×2 in the loss
    fresh_final_norm: bool = True      # ViT: a new final LayerNorm (fc_norm), not the pre-trained one
    eval_short_side: int = 256
    max_res: int | None = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("finetune", "head"):
            raise ValueError(f"mode must be 'finetune' or 'head', got {self.mode!r}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must lie in (0, 1], got {self.layer_decay}")

    @property
    def absolute_lr(self) -> float:
        """The peak learning rate: ``lr``, or blr · batch_size / 256 (``main_segfinetune.py:309-310``)."""
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256


SEMI_SUPERVISED_PRESETS: dict[str, SemiSupervisedConfig] = {
    "vit": SemiSupervisedConfig(),
    "resnet": SemiSupervisedConfig(layer_decay=0.4, weight_decay=5e-4, head_upsample=2),
    "toy": SemiSupervisedConfig(mode="head", epochs=30, batch_size=8, lr=5e-3, weight_decay=0.0),
}
"""The full recipes for a ViT (README) and for PASS's ResNet-50 (MODEL_ZOO), and the toy head-only variant."""


def semi_supervised_config(profile: str | None = None, backbone: nn.Module | None = None) -> SemiSupervisedConfig:
    """The protocol's recipe for ``profile`` (default ``COURSE_PROFILE``): the head-only toy variant, or the
    official fine-tuning recipe of ``backbone``'s kind (a ResNet gets MODEL_ZOO's ResNet-50 values)."""
    if course_config.profile(profile) == "toy":
        return SEMI_SUPERVISED_PRESETS["toy"]
    return SEMI_SUPERVISED_PRESETS["resnet" if _is_resnet(backbone) else "vit"]


def _is_resnet(backbone: nn.Module | None) -> bool:
    return backbone is not None and hasattr(backbone, "layer1") and hasattr(backbone, "conv1")


def backbone_layers(backbone: nn.Module) -> int:
    """L of the layer-wise decay: ViT depth + 1 (``models_vit.py:29``), ResNet Σ blocks + 1 (``models_resnet.py:164``)."""
    if _is_resnet(backbone):
        return sum(len(getattr(backbone, f"layer{stage}")) for stage in range(1, 5)) + 1
    if hasattr(backbone, "blocks"):
        return len(backbone.blocks) + 1
    raise TypeError(f"layer-wise decay knows ViTs (blocks) and ResNets (layer1-4), not {type(backbone).__name__}")


def layer_id(backbone: nn.Module, name: str) -> int:
    """The layer (0..L) of the backbone parameter ``name`` for the layer-wise decay, as ImageNetSegModel's
    ``get_layer_id`` (``models_vit.py:108-115``, ``models_resnet.py:287-294``): the stem or the tokens and patch
    embedding 0, ViT block i → i + 1, ResNet block b of stage s → Σ blocks of stages < s + b + 1, the rest L."""
    layers = backbone_layers(backbone)
    parts = name.split(".")
    if _is_resnet(backbone):
        if parts[0] in ("conv1", "bn1"):
            return 0
        if parts[0].startswith("layer"):
            stage = int(parts[0][5:])
            return sum(len(getattr(backbone, f"layer{s}")) for s in range(1, stage)) + int(parts[1]) + 1
        return layers
    if parts[0] in ("cls_token", "pos_embed", "register_tokens", "mask_token", "patch_embed"):
        return 0
    if parts[0] == "blocks":
        return int(parts[1]) + 1
    return layers


NO_WEIGHT_DECAY = ("pos_embed", "cls_token")
"""timm's ``VisionTransformer.no_weight_decay()``, which ``main_segfinetune.py:327`` passes on."""


def layer_decay_groups(net: "SemiSupervisedNet", weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW parameter groups of the layer-wise decay (``util/lr_decay.py:13-78``): per (layer, decay or not)
    a group with ``lr_scale`` = layer_decay^(L − layer) and weight decay 0 for 1-D parameters and
    :data:`NO_WEIGHT_DECAY`; the head is layer L (scale 1)."""
    layers = backbone_layers(net.backbone)
    groups: dict[tuple[int, bool], dict] = {}
    named = [(name, layer_id(net.backbone, name), param) for name, param in net.backbone.named_parameters()]
    named += [(f"head.{name}", layers, param) for name, param in net.head.named_parameters()]
    for name, layer, param in named:
        if not param.requires_grad:
            continue
        decay = not (param.ndim == 1 or name in NO_WEIGHT_DECAY)
        group = groups.setdefault((layer, decay), {"params": [], "lr_scale": layer_decay ** (layers - layer),
                                                   "weight_decay": weight_decay if decay else 0.0})
        group["params"].append(param)
    return list(groups.values())


def warmup_cosine_lr(config: SemiSupervisedConfig, epoch: float) -> float:
    """The learning rate at fractional ``epoch`` (``util/lr_sched.py:10-17``): linear from 0 over the warm-up,
    then half-cosine from the peak to ``min_lr`` at the last epoch."""
    peak = config.absolute_lr
    if epoch < config.warmup_epochs:
        return peak * epoch / config.warmup_epochs
    progress = (epoch - config.warmup_epochs) / max(config.epochs - config.warmup_epochs, 1e-12)
    return config.min_lr + (peak - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class SemiSupervisedNet(nn.Module):
    """A backbone (``.patch_features``: ImageNet-normalised B×3×H×W → B×C×h×w) with a 1×1-conv head of
    ``n_classes`` outputs ('other' included): ``forward`` → B×K×(s·h)×(s·w) logits, s = ``head_upsample``."""

    def __init__(self, backbone: nn.Module, channels: int, n_classes: int, head_upsample: int = 1):
        super().__init__()
        self.backbone, self.head_upsample = backbone, head_upsample
        self.head = nn.Conv2d(channels, n_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone.patch_features(images))
        if self.head_upsample != 1:
            logits = F.interpolate(logits, scale_factor=self.head_upsample, mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor, short_side: int | None = 256, max_res: int | None = 1000) -> torch.Tensor:
        """Class ids B×H×W of B×3×H×W images in [0, 1] (one size): resized to ``short_side``, the logits brought
        back to H×W by :func:`capped_prediction` (rule "longer", ImageNetSegModel's evaluation)."""
        from ..luss.data import resize_short_side  # luss imports evaluation: import on use

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be B×3×H×W, got {tuple(images.shape)}")
        device = next(self.parameters()).device
        logits = self(normalize(resize_short_side(images.to(device), short_side)))
        return capped_prediction(logits.float(), tuple(images.shape[-2:]), max_res, rule="longer")


def _init_head(net: SemiSupervisedNet, vit: bool) -> None:
    """The official head initialisation: ViT truncated normal std 2e-5 (``models_vit.py:41``), ResNet Kaiming
    fan-out (``models_resnet.py:193-195``); biases keep PyTorch's default."""
    if vit:
        nn.init.trunc_normal_(net.head.weight, std=2e-5)
    else:
        nn.init.kaiming_normal_(net.head.weight, mode="fan_out", nonlinearity="relu")


def _loss(logits: torch.Tensor, labels: torch.Tensor, upsample: int) -> torch.Tensor:
    """Cross-entropy of B×K×h×w logits upsampled ×``upsample`` (bilinear) against B×H×W labels resized
    (nearest) to them (``engine_segfinetune.py:61-69``); labels outside 0..K-1 ignored, a batch without
    any labelled pixel gives 0 (with a gradient, never NaN)."""
    logits = F.interpolate(logits.float(), scale_factor=upsample, mode="bilinear", align_corners=False)
    targets = F.interpolate(labels[:, None].double(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    targets = targets.masked_fill((targets < 0) | (targets >= logits.shape[1]), -1)
    if not (targets >= 0).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, ignore_index=-1)


def semi_supervised_finetune(backbone: nn.Module, dataset: Dataset, n_classes: int,
                             config: SemiSupervisedConfig | None = None, device: str | torch.device | None = None,
                             max_steps: int | None = None) -> SemiSupervisedNet:
    """The full-scale semi-supervised protocol: fine-tune ``backbone`` and a 1×1-conv head on ``dataset``.

    Args:
        backbone: a course ViT or ResNet (``.patch_features``, ``.embed_dim`` / ``.out_channels``), with its
            pre-trained weights; it is trained (pass a copy to keep the original).
        dataset: the labelled split (ImageNet-S ``train-semi``): ``{"image" 3×H×W in [0, 1], "label" H×W}``.
        n_classes: K + 1 outputs ('other' included; ImageNet-S50: 51).
        config: the recipe (default :func:`semi_supervised_config` of ``backbone``); its ``mode`` must be
            "finetune".
        max_steps: stop after this many iterations (tests, smoke runs; ``COURSE_SMOKE`` caps it at 2).
    Returns:
        The trained :class:`SemiSupervisedNet` (eval mode) with ``loss_history`` (the loss of every iteration).
    The forward passes run under bf16 autocast on CUDA (the official code uses fp16 autocast with a scaler).
    """
    from ..cli import cap_steps
    from ..luss.finetune import SegmentationCrops
    from ..luss.multicrop import colour_distortion
    from ..luss.training import make_loader  # luss imports evaluation: import on use
    from ..distributed import DistContext

    config = config or semi_supervised_config("full", backbone)
    if config.mode != "finetune":
        raise ValueError("semi_supervised_finetune trains the whole network: use a config with mode='finetune' "
                         "(or semi_supervised_fit for the head-only variant)")
    device = resolve_device(device)
    course_config.seed_everything(config.seed)
    vit = not _is_resnet(backbone)
    channels = backbone.embed_dim if vit else backbone.out_channels
    if vit and config.fresh_final_norm:
        nn.init.ones_(backbone.norm.weight)
        nn.init.zeros_(backbone.norm.bias)
    net = SemiSupervisedNet(backbone, channels, n_classes, config.head_upsample)
    _init_head(net, vit)
    net = net.to(device).train()
    optimizer = torch.optim.AdamW(layer_decay_groups(net, config.weight_decay, config.layer_decay),
                                  lr=config.absolute_lr)
    crops = SegmentationCrops(dataset, config.crop_size, config.crop_scale, colour=colour_distortion(config.crop_size))
    loader = make_loader(crops, min(config.batch_size, len(crops)), DistContext(device=device), shuffle=True,
                         seed=config.seed, drop_last=False)
    total = cap_steps(config.epochs * len(loader), max_steps)
    history: list[float] = []
    bf16 = device.type == "cuda"
    for epoch in range(config.epochs):
        if len(history) >= total:
            break
        loader.sampler.generator.manual_seed(config.seed + 1000 * epoch)
        for step, batch in enumerate(course_config.progress(loader, desc=f"fine-tuning {epoch + 1}/{config.epochs}",
                                                            leave=False)):
            if len(history) >= total:
                break
            lr = warmup_cosine_lr(config, epoch + step / len(loader))
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(batch["image"].to(device))
            loss = _loss(logits, batch["label"].to(device), config.loss_upsample)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    net.loss_history = history
    return net.eval()
