"""The trainable part of STEGO: the head and the two probes trained alongside it (§3.3, §4.1).

As the official ``LitUnsupervisedSegmenter`` (``mhamilton723/STEGO``, ``src/train_segmentation.py``): the
head is trained with the correlation loss; on the *detached* codes of the same batch, the cluster probe
(cosine k-means, ``ClusterLookup``, K = classes + ``extra_clusters``) and the linear probe (1×1 conv,
cross-entropy on the labels) are trained at the same time with their own learning rate. The probes never
send gradients into the head, so the head stays unsupervised.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.probes import ClusterProbe, LinearProbe
from .configs import StegoConfig
from .head import StegoHead
from .loss import stego_loss


def upsampled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """STEGO's linear-probe loss: B×K×h×w logits upsampled bilinearly (``align_corners=False``) to the
    B×H×W labels, cross-entropy averaged over the pixels labelled 0..K-1 (others ignored; 0 if none).

    The value of :func:`course_lib.evaluation.probes.segmentation_cross_entropy`, computed with
    ``ignore_index`` instead of gathering the valid pixels: about 2.5× faster (forward and backward) on
    the toy world's 96×96 labels.
    """
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    labels = labels.to(logits.device).long()
    valid = (labels >= 0) & (labels < logits.shape[1])
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, torch.where(valid, labels, torch.full_like(labels, -100)), ignore_index=-100)


class StegoModel(nn.Module):
    """Head + cluster probe + linear probe; ``forward`` returns every training loss.

    Args:
        in_channels: the backbone's feature channels C.
        n_classes: ground-truth classes K (the linear probe's outputs).
        config: the run's :class:`StegoConfig` (code dimension, dropout, λ, b, ...).
    """

    def __init__(self, in_channels: int, n_classes: int, config: StegoConfig):
        super().__init__()
        self.config, self.in_channels, self.n_classes = config, in_channels, n_classes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.head = StegoHead(in_channels, config.code_dim, config.dropout, config.nonlinear)
        self.cluster_probe = ClusterProbe(config.code_dim, n_classes + config.extra_clusters, seed=config.seed)
        self.linear_probe = LinearProbe(config.code_dim, n_classes, seed=config.seed)

    def forward(self, features: torch.Tensor, features_pos: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Losses of one batch: B×C×h×w features, their kNN partners' features, B×H×W labels.

        Returns ``{"self", "knn", "rand", "correlation", "linear", "cluster", "total"}``, float32 scalars.

        Under autocast (bf16 on CUDA, as :func:`~.trainer.train_stego` runs it) only the head runs in
        reduced precision: the losses, probes included, are computed in float32 with autocast off.
        """
        signal, codes = self.head(torch.cat([features, features_pos]), with_signal=True)
        batch = features.shape[0]
        with torch.autocast(device_type=codes.device.type, enabled=False):
            signal, codes = signal.float(), codes.float()
            terms = stego_loss(signal[:batch], signal[batch:], codes[:batch], codes[batch:], self.config, generator)
            own_codes = codes[:batch]
            linear = upsampled_cross_entropy(self.linear_probe(own_codes.detach()), labels)
            cluster = self.cluster_probe.loss(own_codes)
        return {"self": terms["self"], "knn": terms["knn"], "rand": terms["rand"], "correlation": terms["total"],
                "linear": linear, "cluster": cluster, "total": terms["total"] + linear + cluster}

    def optimizer(self) -> torch.optim.Optimizer:
        """Adam with the head at ``config.lr`` and the probes at ``config.probe_lr`` (official: 5e-4, 5e-3)."""
        return torch.optim.Adam([
            {"params": self.head.parameters(), "lr": self.config.lr},
            {"params": list(self.cluster_probe.parameters()) + list(self.linear_probe.parameters()),
             "lr": self.config.probe_lr},
        ])

    def save(self, path: str | Path) -> None:
        """Write the weights with what :meth:`load` needs to rebuild the model."""
        torch.save({"config": self.config.to_dict(), "in_channels": self.in_channels, "n_classes": self.n_classes,
                    "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "StegoModel":
        """A model saved with :meth:`save` (or a training checkpoint), in eval mode."""
        state = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(state["in_channels"], state["n_classes"], StegoConfig.from_dict(state["config"]))
        model.load_state_dict(state["state_dict"])
        return model.eval()
