"""Pixel attention (PASS, Gao et al. TPAMI 2022, §4.2): which pixels and channels make up the object.

The frozen pre-trained backbone's last feature map is upsampled ×4 (bilinear) and L2-normalised per
pixel, x̂ (B×C×H×W). A 1×1-conv MLP gives a per-pixel, per-channel attention

    a = σ( BN(W₂ ReLU(BN(W₁ x̂))) + b ),     b ∈ R^C a learnable bias initialised to 0,

and the image embedding is the attention-weighted average  v = (1/HW) Σ_{h,w} x̂ ⊙ a, passed through the
frozen projection head to the SwAV embedding space. Only the attention module and the prototypes are
trained, with the SwAV loss (two crops, queue from the first epoch, no prototype freezing): to explain
the image with few, consistent prototypes the attention must keep the object and drop the background.
Its channel mean ā (B×1×H×W) is the foreground score the label step thresholds at τ.

The official step puts the whole model in train mode (``LUSSeg/PASS main_pixel_attention.py:196``) with
only the attention and the prototypes trainable (``:74-77``): the frozen backbone's BatchNorm layers
normalise with batch statistics and re-estimate their running statistics (momentum 0.1, PyTorch's default
of ``nn.BatchNorm2d``, ``src/resnet.py:186``) on the attention step's crops; the checkpoint saves them
(``:171-181``, the whole state dict) and the clustering (``cluster.py:29-43``) and the pseudo-labels then
run the network in eval mode with those statistics. ``AttentionConfig.train_backbone_bn`` does that (the
ImageNet-S presets); the toy preset keeps the backbone in eval mode, with pre-training's statistics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..config import seed_everything
from ..models.resnet import build_resnet
from ..ssl.swav import Prototypes, freeze_prototypes_if_early, swapped_prediction_loss, swav_codes
from .d2s import image_mlp
from .multicrop import CropSpec, MultiCropDataset, MultiCropWithBoxes
from .pretrain import PASSModel, SwAVQueueSlot, load_pass_model
from ..distributed import init_distributed
from .training import (CONV_INITS, build_optimizer, config_from_dict, cosine_schedule, fit, init_convs_,
                       load_checkpoint, make_loader, unwrap, wrap_model)


class PixelAttention(nn.Module):
    """a = σ(BN(W₂ ReLU(BN(W₁ x̂))) + b): B×C×H×W normalised features → B×C×H×W attention in (0, 1)."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1), nn.BatchNorm2d(channels))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x_hat: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x_hat) + self.bias)


def upsampled_features(backbone: nn.Module, images: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Last-stage features of normalised images, bilinearly upsampled ×``factor``: B×C×(factor·h)×(factor·w)."""
    features = backbone(images)
    return F.interpolate(features, scale_factor=factor, mode="bilinear", align_corners=False)


class AttentionModel(nn.Module):
    """Frozen backbone and projection head, trainable :class:`PixelAttention` and prototypes.

    While training, the projection head's BN layers use batch statistics, as in the official code (the
    attention-pooled features are on another scale than the plain average the head was trained on); so do
    the backbone's with ``train_backbone_bn`` (official: the whole model in train mode, the running statistics
    re-estimated and saved), else the backbone stays in eval mode with pre-training's statistics."""

    def __init__(self, backbone: nn.Module, projection_head: nn.Module, prototypes: Prototypes, upsample: int = 4,
                 train_backbone_bn: bool = False):
        super().__init__()
        self.backbone, self.projection_head, self.prototypes = backbone, projection_head, prototypes
        self.attention = PixelAttention(backbone.out_channels)
        self.upsample, self.train_backbone_bn = upsample, train_backbone_bn
        for module in (backbone, projection_head):
            module.requires_grad_(False)

    @classmethod
    def from_pass_model(cls, model: PASSModel, upsample: int = 4, train_backbone_bn: bool = False
                        ) -> "AttentionModel":
        return cls(model.backbone, model.projection_head, model.prototypes, upsample, train_backbone_bn)

    def train(self, mode: bool = True) -> "AttentionModel":
        super().train(mode)
        if not self.train_backbone_bn:
            self.backbone.eval()
        return self

    def maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images B×3×H×W → (upsampled features F, attention a), both B×C×h×w (h = upsample·H/stride)."""
        with torch.no_grad():
            features = upsampled_features(self.backbone, images, self.upsample)
        return features, self.attention(F.normalize(features, dim=1))

    def forward(self, crops: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """V crops (B×3×s×s, equal sizes) → embeddings z (V × B×D) and scores z·C^T (V × B×K)."""
        batch = crops[0].shape[0]
        features, attention = self.maps(torch.cat(crops))
        pooled = (F.normalize(features, dim=1) * attention).mean(dim=(2, 3))
        embeddings = F.normalize(self.projection_head(pooled), dim=1)
        return list(embeddings.split(batch)), list(self.prototypes(embeddings).split(batch))


@dataclass
class AttentionConfig:
    """Settings of the pixel-attention step (defaults: PASS on ImageNet-S50: 20 epochs, lr 6.0)."""

    crops: list[CropSpec] = field(default_factory=lambda: [CropSpec(224, 2, 0.08, 1.0)])
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    grayscale_p: float = 0.2
    invert_p: float = 0.0
    jitter_p: float = 0.8                   # SwAV's colour jitter (0.8, 0.8, 0.8, 0.2) with this probability
    recolour_p: float = 0.0                 # toy-world recolouring (data.transforms.RandomRecolour)
    crops_for_assign: tuple[int, int] = (0, 1)
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    queue_length: int = 3840
    epoch_queue_starts: int = 0
    epochs: int = 20
    batch_size: int = 32
    base_lr: float = 6.0
    final_lr: float = 0.0006
    weight_decay: float = 1e-6
    optimizer: str = "lars"                 # "lars", "sgd" or "adamw" (training.OPTIMIZERS)
    freeze_prototypes_niters: int = 0
    upsample: int = 4
    train_backbone_bn: bool = True          # official: backbone BN in train mode, statistics re-estimated; toy False
    conv_init: str = "kaiming_fan_out"      # the attention's convolutions (training.CONV_INITS): official; toy "torch"
    seed: int = 10010
    workers: int = 0
    feat_dim: int = 128  # set from the pre-trained model

    def __post_init__(self) -> None:
        self.crops = [CropSpec(**c) if isinstance(c, dict) else CropSpec(*c) if isinstance(c, (list, tuple)) else c
                      for c in self.crops]
        self.blur_sigma = tuple(self.blur_sigma)
        self.crops_for_assign = tuple(self.crops_for_assign)
        if len({spec.size for spec in self.crops}) != 1:
            raise ValueError("the attention step trains on crops of one size")
        if self.conv_init not in CONV_INITS:
            raise ValueError(f"conv_init must be one of {', '.join(CONV_INITS)}, got {self.conv_init!r}")

    @classmethod
    def from_dict(cls, values: dict) -> "AttentionConfig":
        """The config of a saved dict; one saved before ``train_backbone_bn`` / ``conv_init`` existed kept the
        backbone in eval mode and PyTorch's default initialisation."""
        return config_from_dict(cls, values, {"train_backbone_bn": False, "conv_init": "torch"})


def train_attention(config: AttentionConfig, pretrained: str | Path, dataset: Dataset, out_dir: str | Path,
                    device: str | torch.device | None = None, max_steps: int | None = None) -> Path:
    """Train the pixel attention on top of the pre-trained checkpoint ``pretrained``; resumes from
    ``out_dir/checkpoint.pt``, which holds the whole :class:`AttentionModel` (with ``train_backbone_bn``, the
    backbone's re-estimated BN statistics, which the clustering and the labels then use). Returns its path."""
    processes = init_distributed(device)
    out_dir = Path(out_dir)
    seed_everything(config.seed + processes.rank)
    pass_model, pass_config, _ = load_pass_model(pretrained)
    config.feat_dim = pass_config.feat_dim
    attention_model = AttentionModel.from_pass_model(pass_model, config.upsample, config.train_backbone_bn)
    init_convs_(attention_model.attention, config.conv_init)
    model = wrap_model(attention_model, processes)
    core = unwrap(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, lars_decay = build_optimizer(trainable, config.optimizer, config.base_lr, config.weight_decay)
    loader = make_loader(MultiCropDataset(dataset, MultiCropWithBoxes.from_config(config)), config.batch_size,
                         processes, shuffle=True, seed=config.seed, drop_last=True, workers=config.workers)
    schedule = cosine_schedule(config.base_lr, config.final_lr, len(loader) * config.epochs)
    queue = SwAVQueueSlot(config, processes, out_dir / f"queue{processes.rank}.pt")

    def compute_losses(batch: dict, iteration: int) -> dict[str, torch.Tensor]:
        core.prototypes.normalize_()
        embeddings, scores = model([crop.to(processes.device) for crop in batch["crops"]])
        codes = swav_codes(embeddings, scores, core.prototypes, config.crops_for_assign, queue.queue,
                           config.epsilon, config.sinkhorn_iterations)
        return {"loss": swapped_prediction_loss(scores, codes, config.crops_for_assign, config.temperature)}

    fit(model, optimizer, loader, compute_losses, epochs=config.epochs, schedule=schedule, processes=processes,
        checkpoint_path=out_dir / "checkpoint.pt", config={**asdict(config), "arch": pass_config.arch,
                                                           "hidden_mlp": pass_config.hidden_mlp,
                                                           "nmb_prototypes": pass_config.nmb_prototypes},
        seed=config.seed, lars_weight_decay=lars_decay,
        after_backward=lambda it: freeze_prototypes_if_early(core.prototypes, it, config.freeze_prototypes_niters),
        on_epoch_start=queue.start_if_due, on_epoch_end=lambda epoch: queue.save(),
        max_steps=max_steps, desc="attention epoch")
    return out_dir / "checkpoint.pt"


def load_attention_model(path: str | Path) -> tuple[AttentionModel, list[dict]]:
    """The trained :class:`AttentionModel` of an attention checkpoint (eval mode) and its loss history."""
    state = load_checkpoint(path, "pixel-attention checkpoint")
    config = state["config"]
    backbone = build_resnet(config["arch"])
    model = AttentionModel(backbone, image_mlp(backbone.out_channels, config["hidden_mlp"], config["feat_dim"]),
                           Prototypes(config["feat_dim"], config["nmb_prototypes"]), config["upsample"])
    model.load_state_dict(state["model"])
    return model.eval(), state["history"]
