"""PASS fine-tuning and inference (Gao et al. TPAMI 2022, §4.4): a segmentation network on pseudo-labels.

The pre-trained backbone (the pre-training checkpoint, not the attention step's) gets a 1×1-conv head
with K + 1 outputs ('other' and the K clusters), trained with pixel-wise cross-entropy on the
pseudo-labels: random resized crops with flips, the labels downscaled (nearest) by
``label_scale`` (official 0.5) and the logits upsampled (bilinear) to them. The classifier is initialised
as the official ``src/resnet.py:354-358`` (Kaiming fan-out, ``conv_init``; PyTorch's default in the toy
preset). Inference resizes each image to a short side of 256 px, upsamples the logits to the full
resolution (bilinear) and takes the argmax, except for images of more than 1000² pixels: as the official
``inference.py:133-136`` (``--max_res 1000``), their logits are upsampled to a height of 1000 px (width in
proportion), the argmax taken there and the ids upsampled (nearest) to the full size
(:func:`course_lib.evaluation.protocols.capped_prediction`, rule "height"). The predictions are written as
ImageNet-S PNGs (id = R + 256·G), which ``python -m course_lib.evaluation.imagenet_s`` scores after the
image-level matching.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..config import seed_everything
from ..data.label_png import write_imagenet_s_png
from ..data.transforms import RandomRecolour, crop_pair, normalize, resize_pair
from ..evaluation.protocols import capped_prediction
from ..models.resnet import build_resnet
from ..ssl.swav import float32_loss
from .data import image_batches, sample_name
from .multicrop import random_crop_box
from .pretrain import load_pass_model
from ..distributed import init_distributed
from .training import (CONV_INITS, build_optimizer, config_from_dict, cosine_schedule, fit, init_convs_,
                       load_checkpoint, make_loader, wrap_model)


class SegmentationModel(nn.Module):
    """ResNet backbone + 1×1-conv classifier: normalised B×3×H×W → B×(K+1)×h×w logits (h = H / stride)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes + 1, 1)
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, size: tuple[int, int], max_res: int | None = 1000) -> torch.Tensor:
        """Predicted ids 0..K (B×H×W) at ``size``: logits bilinearly upsampled, then argmax; above ``max_res``²
        pixels at a height of ``max_res`` first, as the official ``inference.py:133-136``
        (:func:`course_lib.evaluation.protocols.capped_prediction`; None: no cap)."""
        return capped_prediction(self(images), size, max_res, rule="height")


@dataclass
class FinetuneConfig:
    """Settings of the fine-tuning step (defaults: PASS on ImageNet-S: 20 epochs, lr 0.6, crops of 224)."""

    num_classes: int = 50
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    label_scale: float = 0.5
    recolour_p: float = 0.0                 # toy-world recolouring of the crops (data.transforms.RandomRecolour)
    epochs: int = 20
    batch_size: int = 32
    base_lr: float = 0.6
    final_lr: float = 0.0006
    weight_decay: float = 1e-6
    optimizer: str = "lars"                 # "lars", "sgd" or "adamw" (training.OPTIMIZERS)
    conv_init: str = "kaiming_fan_out"      # the classifier (training.CONV_INITS): official; toy "torch"
    infer_short_side: int | None = 256
    infer_max_res: int | None = 1000        # official inference.py:53: above 1000² px predict at height 1000
    seed: int = 10010
    workers: int = 0

    def __post_init__(self) -> None:
        self.crop_scale = tuple(self.crop_scale)
        if self.conv_init not in CONV_INITS:
            raise ValueError(f"conv_init must be one of {', '.join(CONV_INITS)}, got {self.conv_init!r}")
        if self.infer_max_res is not None and (isinstance(self.infer_max_res, bool)
                                               or not isinstance(self.infer_max_res, int) or self.infer_max_res < 1):
            raise ValueError(f"infer_max_res must be a positive number of pixels or None, got {self.infer_max_res!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneConfig":
        """The config of a saved dict; one saved before ``conv_init`` existed used PyTorch's default."""
        return config_from_dict(cls, values, {"conv_init": "torch"})


class SegmentationCrops(Dataset):
    """Random resized crops (with flips) of images and their labels: ``"image"`` normalised 3×s×s,
    ``"label"`` s×s int64 (bilinear image, nearest label); with ``recolour_p`` > 0 the image is recoloured
    the toy world's way (:class:`course_lib.data.transforms.RandomRecolour`) with that probability; ``colour``
    (a transform of a 3×s×s image in [0, 1], e.g. SwAV's colour distortion) is applied after it."""

    def __init__(self, dataset: Dataset, size: int, scale: tuple[float, float], recolour_p: float = 0.0,
                 colour: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.dataset, self.size, self.scale = dataset, size, scale
        self.recolour = RandomRecolour(recolour_p)
        self.colour = colour

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        image, label = sample["image"], sample["label"]
        x, y, w, h = random_crop_box(*image.shape[-2:], self.scale)
        image, label = resize_pair(*crop_pair(image, label, y, x, h, w), (self.size, self.size))
        if torch.rand(()) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        image = self.recolour(image)
        return {"image": normalize(image if self.colour is None else self.colour(image)), "label": label}


@float32_loss
def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, label_scale: float) -> torch.Tensor:
    """Cross-entropy of B×(K+1)×h×w logits, upsampled to the labels downscaled by ``label_scale``."""
    size = (max(1, round(labels.shape[-2] * label_scale)), max(1, round(labels.shape[-1] * label_scale)))
    targets = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, targets, ignore_index=-1)


def finetune(config: FinetuneConfig, pretrained: str | Path, dataset: Dataset, out_dir: str | Path,
             device: str | torch.device | None = None, max_steps: int | None = None) -> Path:
    """Train a :class:`SegmentationModel` initialised from the pre-trained backbone on ``dataset``
    (sample dicts whose ``"label"`` are pseudo-labels 0..K); resumes from ``out_dir/checkpoint.pt``."""
    processes = init_distributed(device)
    out_dir = Path(out_dir)
    seed_everything(config.seed + processes.rank)
    pass_model, pass_config, _ = load_pass_model(pretrained)
    segmenter = SegmentationModel(pass_model.backbone, config.num_classes)
    init_convs_(segmenter.classifier, config.conv_init)
    model = wrap_model(segmenter, processes)
    optimizer, lars_decay = build_optimizer(model.parameters(), config.optimizer, config.base_lr, config.weight_decay)
    loader = make_loader(SegmentationCrops(dataset, config.crop_size, config.crop_scale, config.recolour_p),
                         config.batch_size, processes, shuffle=True, seed=config.seed, drop_last=True,
                         workers=config.workers)
    schedule = cosine_schedule(config.base_lr, config.final_lr, len(loader) * config.epochs)

    def compute_losses(batch: dict, iteration: int) -> dict[str, torch.Tensor]:
        logits = model(batch["image"].to(processes.device))
        return {"loss": segmentation_loss(logits, batch["label"].to(processes.device), config.label_scale)}

    fit(model, optimizer, loader, compute_losses, epochs=config.epochs, schedule=schedule, processes=processes,
        checkpoint_path=out_dir / "checkpoint.pt", config={**asdict(config), "arch": pass_config.arch},
        seed=config.seed, lars_weight_decay=lars_decay, max_steps=max_steps,
        desc="finetune epoch")
    return out_dir / "checkpoint.pt"


def load_segmentation_model(path: str | Path) -> tuple[SegmentationModel, FinetuneConfig, list[dict]]:
    """A fine-tuned :class:`SegmentationModel` (eval mode), its config and loss history."""
    state = load_checkpoint(path, "fine-tuning checkpoint")
    config = FinetuneConfig.from_dict(state["config"])
    model = SegmentationModel(build_resnet(state["config"]["arch"]), config.num_classes)
    model.load_state_dict(state["model"])
    return model.eval(), config, state["history"]


@torch.no_grad()
def predict_dataset(model: SegmentationModel, dataset: Dataset, short_side: int | None = 256, batch_size: int = 32,
                    device: str | torch.device = "cpu", out_dir: str | Path | None = None,
                    max_res: int | None = 1000) -> list[np.ndarray]:
    """Predicted ids (0..K, H×W at each image's resolution) for every image (images above ``max_res``² pixels
    through the official cap, :meth:`SegmentationModel.predict`); with ``out_dir`` also written as
    ImageNet-S PNGs ``out_dir/<name>.png``. Returns them in dataset order."""
    model = model.to(device).eval()
    predictions = []
    for images, metas, sizes in image_batches(dataset, batch_size, short_side, desc="predicting"):
        ids = model.predict(images.to(device), sizes[0], max_res).cpu().numpy()
        for prediction, meta in zip(ids, metas):
            if out_dir is not None:
                write_imagenet_s_png(Path(out_dir) / f"{sample_name(meta)}.png", prediction)
            predictions.append(prediction)
    return predictions
