"""DINO: self-distillation with no labels (Caron et al., ICCV 2021), in our own code.

A student ViT g_θs and a teacher g_θt of the same architecture each end in a projection head that outputs
K logits. The teacher sees only the two global crops, the student every crop (2 global + several local);
for every pair of a teacher view u and a different student view v the loss is the cross-entropy

    H(P_t(u), P_s(v)) = - Σ_k P_t(u)_k log P_s(v)_k                                      (DINO eq. 1-3)
    P_s(v) = softmax(g_θs(v) / τ_s),   P_t(u) = softmax((g_θt(u) - c) / τ_t)

with a low teacher temperature τ_t (sharpening) and a centre c, an exponential moving average of the
teacher's batch means (centering); sharpening and centering together avoid collapse. The student learns by
gradient descent, the teacher is an EMA of the student: θt ← λ θt + (1 - λ) θs, λ following a cosine
schedule from ``momentum_teacher`` to 1 (eq. 2 of the paper's §3.1).

**The toy backbone's recipe (``DINOConfig`` defaults) and why it departs from plain DINO.** DINO learns
semantic patch tokens only implicitly, over hundreds of GPU-epochs. With the course's budget (minutes on two CPU
cores) plain DINO never left collapse: within a few hundred steps the [CLS] features of all images became
nearly identical and the loss sat at log K, with or without a patch-level DINO term (``dense_weight``, each
student patch token predicting the teacher's distribution at the same image location in the other global crop,
as in iBOT's patch loss without masking). The toy run therefore changes three things, each measured:

1. **Augmentations that match the toy world's nuisances** (the invariances a self-supervised method learns
   are the ones its augmentations encode): crops at the image's own pixel scale (``native_scale``: toy
   textures keep their scale, so resizing would only teach scale invariance the classes do not need), no
   Gaussian blur (it wipes out the fine textures that define the classes), and :class:`RandomRecolour`, which
   recolours each view the way the toy world colourises its regions, so that colour, the shortcut that matches
   two views of one image, is gone.
2. **A convolutional stem** (``conv_stem``) instead of the linear patchify projection: a small ViT trained
   from scratch on little data needs the local bias of a few convolutions to see texture.
3. **A cross-view patch InfoNCE term** (:class:`PatchContrastLoss`, ``contrast_weight``): each student patch
   token must recognise the token at the same image location in the other global crop among the patches of
   the other images, as in dense contrastive methods (DenseCL). Unlike DINO's self-distillation targets, this
   signal exists from the first step, so training leaves the collapsed start; DINO's [CLS] loss (eq. 1-4)
   is kept unchanged beside it.

``python -m course_lib.ssl.dino --out DIR`` trains the course's tiny toy backbone on the toy world
(the checkpoint shipped in ``course_lib/assets/toy_vit.pt`` was made this way; see its JSON). It follows the
course's CLI convention (:mod:`course_lib.cli`: ``--profile --dataset --out --data-root --device --threads
--seed --max-steps --print-config``, ``config.json`` and ``metrics.json``, ``COURSE_SMOKE``: 8 images, 2
steps); the full profile uses the official DINO weights instead (``data_scripts/get_weights.py``).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from .. import cli
from .. import config as course_config
from ..config import get_device, progress, seed_everything
from ..data.toyworld import ToyWorld
from ..data.transforms import RandomRecolour, normalize
from ..models.vit import VisionTransformer


class DINOHead(nn.Module):
    """Projection head: MLP (3 layers, GELU) → bottleneck → L2 norm → weight-normalised linear to K logits.

    The last layer's weight rows are normalised to unit length (DINO's weight norm with the gain fixed
    to 1, ``norm_last_layer=True``). B×D → B×K.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 256, bottleneck_dim: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = nn.Parameter(torch.randn(out_dim, bottleneck_dim) * bottleneck_dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return x @ F.normalize(self.last_layer, dim=-1).t()


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student over all view pairs u ≠ v.

    Args:
        out_dim: K, the number of head outputs.
        n_global: number of global crops (the teacher's views; the first ones of the student's list).
        teacher_temp: τ_t (DINO: 0.04, warmed up from ``warmup_teacher_temp``).
        student_temp: τ_s (0.1).
        center_momentum: m of the centre update c ← m c + (1 - m) mean(teacher logits) (0.9).
    """

    def __init__(self, out_dim: int, n_global: int = 2, teacher_temp: float = 0.04,
                 student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.n_global, self.teacher_temp = n_global, teacher_temp
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: list[torch.Tensor], teacher_out: list[torch.Tensor],
                teacher_temp: float | None = None) -> torch.Tensor:
        """student_out: one B×K tensor per crop (globals first); teacher_out: one B×K per global crop."""
        temp = self.teacher_temp if teacher_temp is None else teacher_temp
        teacher_probs = [F.softmax((t - self.center) / temp, dim=-1).detach() for t in teacher_out]
        student_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total, pairs = 0.0, 0
        for iq, probs in enumerate(teacher_probs):
            for v, logp in enumerate(student_logp):
                if v == iq:
                    continue  # never the same view for teacher and student
                total = total + (-(probs * logp).sum(dim=-1)).mean()
                pairs += 1
        self.update_center(torch.cat(teacher_out))
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        batch_center = teacher_logits.mean(dim=0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            batch_center /= torch.distributed.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def random_resized_box(height: int, width: int, scale: tuple[float, float],
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A random crop box (top, left, h, w) covering a fraction ``scale`` of the area with aspect ``ratio``
    (the sampling of ``RandomResizedCrop``; the whole image after 10 failed tries)."""
    for _ in range(10):
        area = height * width * float(torch.empty(()).uniform_(*scale))
        aspect = math.exp(float(torch.empty(()).uniform_(math.log(ratio[0]), math.log(ratio[1]))))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, ()))
            left = int(torch.randint(0, width - w + 1, ()))
            return top, left, h, w
    return 0, 0, height, width


class MultiCrop:
    """DINO's multi-crop augmentation on one 3×H×W uint8 image → list of crops (and the global crops' boxes).

    Two global crops (``global_size`` px, area scale ``global_scale``) and ``n_local`` local crops
    (``local_size`` px, area scale ``local_scale``), each flipped (p 0.5), colour-jittered (brightness,
    contrast, saturation, hue = ``jitter``, p ``jitter_p``), greyed (p ``grayscale_p``), blurred (global 1:
    p 1.0, global 2: p 0.1, local: p 0.5) and, for global 2, solarised (p 0.2). The defaults are DINO's.
    Crops are not normalised (see :func:`course_lib.data.normalize`).
    """

    def __init__(self, global_size: int = 64, local_size: int = 32, n_local: int = 4,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1), jitter_p: float = 0.8,
                 grayscale_p: float = 0.2, blur: bool = True, recolour_p: float = 0.0, native_scale: bool = False):
        colour = [v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p), v2.RandomGrayscale(p=grayscale_p),
                  RandomRecolour(recolour_p)]

        def blur_(p: float) -> list[v2.Transform]:
            return [v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.0))], p=p)] if blur else []

        self.global_styles = [v2.Compose([*colour, *blur_(1.0)]),
                              v2.Compose([*colour, *blur_(0.1), v2.RandomSolarize(128, p=0.2)])]
        self.local_style = v2.Compose([*colour, *blur_(0.5)])
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        self.global_scale, self.local_scale = global_scale, local_scale
        self.native_scale = native_scale

    def _view(self, image: torch.Tensor, size: int, scale: tuple[float, float],
              style: v2.Transform) -> tuple[torch.Tensor, torch.Tensor]:
        if self.native_scale:
            h = w = min(size, image.shape[-2], image.shape[-1])
            top = int(torch.randint(0, image.shape[-2] - h + 1, ()))
            left = int(torch.randint(0, image.shape[-1] - w + 1, ()))
        else:
            top, left, h, w = random_resized_box(image.shape[-2], image.shape[-1], scale)
        crop = v2.functional.resized_crop(image, top, left, h, w, [size, size], antialias=True)
        flip = bool(torch.rand(()) < 0.5)
        if flip:
            crop = crop.flip(-1)
        return style(crop), torch.tensor([top, left, h, w, float(flip)])

    def with_boxes(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(crops, boxes): boxes is 2×5, (top, left, height, width, flipped) of each global crop in ``image``.

        A float image in [0, 1] is converted to uint8 first (crops are then uint8)."""
        if image.is_floating_point():
            image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        views = [self._view(image, self.global_size, self.global_scale, style) for style in self.global_styles]
        local = [self._view(image, self.local_size, self.local_scale, self.local_style)[0]
                 for _ in range(self.n_local)]
        return [view for view, _ in views] + local, torch.stack([box for _, box in views])

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.with_boxes(image)[0]


def corresponding_grid(student_boxes: torch.Tensor, teacher_boxes: torch.Tensor,
                       grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each patch centre of a student crop falls in the teacher crop of the same image.

    Args:
        student_boxes, teacher_boxes: B×5 (top, left, height, width, flipped) in image pixels.
        grid: (h, w) patch grid of the student crop.
    Returns:
        ``grid_sample`` coordinates B×h×w×2 (x, y in [-1, 1], align_corners=False) into the teacher's patch
        grid, and a B×h×w mask of the patches that fall inside the teacher crop.
    """
    h, w = grid
    v = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    u = (torch.arange(w, dtype=torch.float32) + 0.5) / w

    def column(boxes: torch.Tensor, k: int) -> torch.Tensor:
        return boxes[:, k].float()[:, None, None]

    u = torch.where(column(student_boxes, 4) > 0, 1 - u, u[None, None, :].expand(len(student_boxes), 1, w))
    y_image = column(student_boxes, 0) + v[None, :, None] * column(student_boxes, 2)      # B×h×1
    x_image = column(student_boxes, 1) + u * column(student_boxes, 3)                     # B×1×w
    y_teacher = ((y_image - column(teacher_boxes, 0)) / column(teacher_boxes, 2)).expand(-1, h, w)
    x_teacher = ((x_image - column(teacher_boxes, 1)) / column(teacher_boxes, 3)).expand(-1, h, w)
    x_teacher = torch.where(column(teacher_boxes, 4) > 0, 1 - x_teacher, x_teacher)
    valid = (x_teacher >= 0) & (x_teacher <= 1) & (y_teacher >= 0) & (y_teacher <= 1)
    return torch.stack([2 * x_teacher - 1, 2 * y_teacher - 1], dim=-1), valid


def partner_tokens(tokens: torch.Tensor, student_boxes: torch.Tensor,
                   teacher_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of the teacher's crop (B×N×C on a square grid) at the image location of every patch of the
    student's crop (bilinear, :func:`corresponding_grid`): B×N×C, and the B×N mask of the student patches
    that fall inside the teacher crop."""
    batch, n, channels = tokens.shape
    side = math.isqrt(n)
    grid, valid = corresponding_grid(student_boxes, teacher_boxes, (side, side))
    sampled = F.grid_sample(tokens.transpose(1, 2).reshape(batch, channels, side, side), grid.to(tokens.device),
                            mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.flatten(2).transpose(1, 2), valid.flatten(1).to(tokens.device)


class DenseDINOLoss(nn.Module):
    """Patch-level self-distillation between the two global crops (our addition to DINO, see the module doc).

    Each student patch token of global crop v predicts the teacher's centred, sharpened distribution at the
    same image location in the other global crop u (bilinearly interpolated on the teacher's patch grid);
    patches outside the overlap contribute nothing. Its own centre, updated like DINO's.
    """

    def __init__(self, out_dim: int, teacher_temp: float = 0.04, student_temp: float = 0.1,
                 center_momentum: float = 0.9):
        super().__init__()
        self.teacher_temp, self.student_temp, self.center_momentum = teacher_temp, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_patches: list[torch.Tensor], teacher_patches: list[torch.Tensor],
                boxes: torch.Tensor, teacher_temp: float | None = None) -> torch.Tensor:
        """student_patches / teacher_patches: per global crop, B×N×K logits on an h×w grid (N = h·w);
        boxes: B×2×5 crop boxes. Returns the mean cross-entropy over overlapping patches."""
        temp = self.teacher_temp if teacher_temp is None else teacher_temp
        total, count = student_patches[0].new_zeros(()), 0
        for u, v in ((0, 1), (1, 0)):
            probs = F.softmax((teacher_patches[u].detach() - self.center) / temp, dim=-1)
            target, mask = partner_tokens(probs, boxes[:, v], boxes[:, u])                    # B×N×K, B×N
            logp = F.log_softmax(student_patches[v] / self.student_temp, dim=-1)
            total = total + (-(target * logp).sum(-1) * mask).sum()
            count += int(mask.sum())
        self.update_center(torch.cat(teacher_patches).flatten(0, 1))
        return total / max(count, 1)

    update_center = DINOLoss.update_center


class PatchContrastLoss(nn.Module):
    """Cross-view patch InfoNCE between the two global crops (the toy backbone's second addition to DINO).

    Each student patch token of crop v, through a small projector (Linear, GELU, Linear, L2 norm), must pick
    out the token at the same image location in crop u (bilinear on u's patch grid) among the patches of
    the *other* images of the batch (InfoNCE at temperature τ, as in dense contrastive methods such as
    DenseCL). Patches of the same image are left out of the denominator, so regions of one image are never
    pushed apart; ``n_samples`` overlapping patches per direction are drawn at random. Unlike DINO's targets,
    this signal exists from the first step, which is what lets the toy backbone leave the collapsed start.
    """

    def __init__(self, embed_dim: int, proj_dim: int = 64, hidden_dim: int = 256, temperature: float = 0.1,
                 n_samples: int = 1024):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, proj_dim))
        self.temperature, self.n_samples = temperature, n_samples

    def forward(self, patches: list[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """patches: per global crop, B×N×C tokens on a square grid; boxes: B×2×5. Returns the mean InfoNCE."""
        z = [F.normalize(self.proj(t), dim=-1) for t in patches]
        batch, n, _ = z[0].shape
        image_of = torch.arange(batch, device=z[0].device)[:, None].expand(batch, n)
        total = z[0].new_zeros(())
        for v, u in ((0, 1), (1, 0)):
            partner, keep = partner_tokens(z[u], boxes[:, v], boxes[:, u])
            if not keep.any():
                continue  # the crops do not overlap
            total = total + cross_image_info_nce(z[v][keep], F.normalize(partner[keep], dim=-1), image_of[keep],
                                                 self.temperature, self.n_samples) / 2
        return total


def cross_image_info_nce(anchors: torch.Tensor, positives: torch.Tensor, images: torch.Tensor,
                         temperature: float = 0.1, n_samples: int | None = 1024) -> torch.Tensor:
    """InfoNCE of N L2-normalised anchors (N×D) against their positives (N×D, row i the positive of anchor
    i), the other rows from *other images* being the negatives: rows of the same image (``images``, N ids)
    are left out of the denominator. At most ``n_samples`` random rows are used (None: all)."""
    if n_samples is not None:
        pick = torch.randperm(len(anchors), device=anchors.device)[:n_samples]
        anchors, positives, images = anchors[pick], positives[pick], images[pick]
    logits = anchors @ positives.t() / temperature
    same_image = (images[:, None] == images[None, :]).fill_diagonal_(False)
    logits = logits.masked_fill(same_image, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(anchors), device=logits.device))


def cosine_schedule(start: float, end: float, step: int, total: int, warmup: int = 0,
                    warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine to ``end``."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(warmup, 1)
    progress_ = (step - warmup) / max(total - warmup, 1)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(progress_, 1.0)))


@dataclass
class DINOConfig:
    """Everything that defines a DINO run of the toy backbone (saved beside the checkpoint)."""
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    img_size: int = 64          # position-embedding grid = global crop size / patch size
    conv_stem: bool = True      # convolutional stem instead of the patchify projection
    out_dim: int = 256          # K
    n_train_images: int = 2000  # toy-world scenes (train split), rendered at image_size
    image_size: int = 96
    global_size: int = 64
    local_size: int = 32
    n_local: int = 2
    batch_size: int = 32
    epochs: int = 40
    lr: float = 1e-3            # peak AdamW learning rate for a batch of 64 (scaled linearly), after warm-up
    min_lr: float = 1e-6
    warmup_epochs: int = 2
    weight_decay: float = 0.04  # cosine to weight_decay_end (DINO: 0.04 → 0.4)
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.99
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    student_temp: float = 0.1
    clip_grad: float = 3.0
    # Colour augmentation. DINO's is (0.4, 0.4, 0.2, 0.1) p 0.8, grey p 0.2; in the toy world colour is a
    # nuisance by construction (classes share colours), so the toy run randomises it much harder: the
    # invariances a self-supervised method learns are the ones its augmentations encode.
    jitter: tuple = (0.4, 0.4, 0.4, 0.5)
    jitter_p: float = 1.0
    grayscale_p: float = 0.5
    recolour_p: float = 1.0     # RandomRecolour: the toy world's own colour nuisance (0 = off)
    blur: bool = False          # DINO's Gaussian blur (it also wipes out fine textures)
    native_scale: bool = True   # crops at the image's pixel scale (no resizing), as toy textures keep theirs
    dense_weight: float = 0.0   # weight of the patch-level DINO term (0 = none)
    contrast_weight: float = 1.0  # weight of the cross-view patch InfoNCE term (PatchContrastLoss; 0 = plain DINO)
    freeze_last_layer_epochs: int = 1
    seed: int = 0
    extra: dict = field(default_factory=dict)


def build_vit(config: DINOConfig) -> VisionTransformer:
    return VisionTransformer(config.patch_size, config.embed_dim, config.depth, config.num_heads,
                             img_size=config.img_size, conv_stem=config.conv_stem)


def render_training_images(config: DINOConfig) -> torch.Tensor:
    """The training set as one N×3×H×W uint8 tensor (rendered once; the toy world is deterministic)."""
    world = ToyWorld("scenes", "train", n_images=config.n_train_images, size=config.image_size, seed=config.seed)
    images = np.stack([world.render(i)[0] for i in progress(range(len(world)), desc="rendering toy scenes")])
    return torch.from_numpy((images * 255).round().astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def _crops_batch(images: torch.Tensor, augment: MultiCrop) -> tuple[list[torch.Tensor], torch.Tensor]:
    """B×3×H×W uint8 → (one normalised B×3×s×s float tensor per crop position, B×2×5 global boxes)."""
    per_image = [augment.with_boxes(image) for image in images]
    crops = [normalize(torch.stack([views[i] for views, _ in per_image]).float() / 255)
             for i in range(len(per_image[0][0]))]
    return crops, torch.stack([boxes for _, boxes in per_image])


def dino_loss(student: nn.ModuleDict, teacher: nn.ModuleDict, crops: list[torch.Tensor], boxes: torch.Tensor,
              criterion: DINOLoss, dense_criterion: DenseDINOLoss, dense_weight: float,
              teacher_temp: float, contrast_weight: float = 0.0) -> torch.Tensor:
    """DINO's [CLS] loss over all crops, plus ``dense_weight`` × the patch-level DINO loss and
    ``contrast_weight`` × the patch InfoNCE (``student["contrast"]``) on the global crops."""
    teacher_tokens = [teacher["backbone"].forward_tokens(c) for c in crops[:2]]
    student_tokens = [student["backbone"].forward_tokens(c) for c in crops[:2]]
    teacher_out = [teacher["head"](t[:, 0]) for t in teacher_tokens]
    student_out = [student["head"](t[:, 0]) for t in student_tokens]
    student_out += [student["head"](student["backbone"](c)) for c in crops[2:]]
    loss = criterion(student_out, teacher_out, teacher_temp)
    if dense_weight > 0:
        dense = dense_criterion([student["head"](t[:, 1:]) for t in student_tokens],
                                [teacher["head"](t[:, 1:]) for t in teacher_tokens], boxes, teacher_temp)
        loss = loss + dense_weight * dense
    if contrast_weight > 0:
        loss = loss + contrast_weight * student["contrast"]([t[:, 1:] for t in student_tokens], boxes)
    return loss


def train_dino(config: DINOConfig, out_dir: str | Path, device: str | torch.device | None = None,
               time_budget_s: float | None = None, max_steps: int | None = None) -> VisionTransformer:
    """Train a ViT with DINO on toy-world scenes; checkpoints to ``out_dir/checkpoint.pt`` every epoch.

    Resumes from that checkpoint when it exists. Writes ``out_dir/log.jsonl`` (one line per epoch) and,
    at the end, the teacher backbone (DINO evaluates the teacher) to ``out_dir/toy_vit.pt``.
    ``time_budget_s`` stops cleanly after the first epoch that exceeds it, ``max_steps`` after that many
    optimisation steps in all (the epoch is cut short and logged; the schedules are kept).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = get_device(device)
    seed_everything(config.seed)
    images = render_training_images(config)
    augment = MultiCrop(config.global_size, config.local_size, config.n_local, jitter=tuple(config.jitter),
                        jitter_p=config.jitter_p, grayscale_p=config.grayscale_p, blur=config.blur,
                        recolour_p=config.recolour_p, native_scale=config.native_scale)
    student = nn.ModuleDict({"backbone": build_vit(config), "head": DINOHead(config.embed_dim, config.out_dim),
                             "contrast": PatchContrastLoss(config.embed_dim)})
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.to(device), teacher.to(device)
    criterion = DINOLoss(config.out_dim, 2, config.teacher_temp, config.student_temp).to(device)
    dense_criterion = DenseDINOLoss(config.out_dim, config.teacher_temp, config.student_temp).to(device)
    regularised = [p for n, p in student.named_parameters() if p.ndim > 1 and "pos_embed" not in n
                   and "cls_token" not in n]
    unregularised = [p for n, p in student.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n
                                                                      and "cls_token" not in n)]
    optimizer = torch.optim.AdamW([{"params": regularised}, {"params": unregularised, "weight_decay": 0.0}],
                                  lr=config.lr)
    steps_per_epoch = len(images) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    start_epoch = 0
    checkpoint_path = out_dir / "checkpoint.pt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        _check_resumable(state, config, checkpoint_path)
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        criterion.load_state_dict(state["criterion"])
        dense_criterion.load_state_dict(state["dense_criterion"])
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        print(f"resumed from {checkpoint_path.name} at epoch {start_epoch}")
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if max_steps is not None and epoch * steps_per_epoch >= max_steps:
            print(f"max_steps={max_steps} reached after epoch {epoch}")
            break
        order = torch.randperm(len(images))
        losses = []
        bar = progress(range(steps_per_epoch), desc=f"DINO epoch {epoch + 1}/{config.epochs}", leave=False)
        for i in bar:
            step = epoch * steps_per_epoch + i
            if max_steps is not None and step >= max_steps:
                break
            lr = cosine_schedule(config.lr * config.batch_size / 64, config.min_lr, step, total_steps,
                                 config.warmup_epochs * steps_per_epoch)
            optimizer.param_groups[0]["lr"] = optimizer.param_groups[1]["lr"] = lr
            optimizer.param_groups[0]["weight_decay"] = cosine_schedule(
                config.weight_decay_end, config.weight_decay, total_steps - step, total_steps)
            teacher_temp = cosine_schedule(config.teacher_temp, config.teacher_temp, step, total_steps,
                                           config.warmup_teacher_temp_epochs * steps_per_epoch,
                                           config.warmup_teacher_temp)
            crops, boxes = _crops_batch(images[order[i * config.batch_size:(i + 1) * config.batch_size]], augment)
            loss = dino_loss(student, teacher, [c.to(device) for c in crops], boxes, criterion, dense_criterion,
                             config.dense_weight, teacher_temp, config.contrast_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DINO loss is {loss.item()} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), config.clip_grad)
            if epoch < config.freeze_last_layer_epochs:
                student["head"].last_layer.grad = None
            optimizer.step()
            momentum = cosine_schedule(config.momentum_teacher, 1.0, step, total_steps)
            with torch.no_grad():
                for p_t, p_s in zip(teacher.parameters(), student.parameters()):
                    p_t.mul_(momentum).add_(p_s.detach(), alpha=1 - momentum)
            losses.append(loss.item())
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}")
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": lr,
                  "seconds": round(time.perf_counter() - started, 1)}
        with open(out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        cli.save_atomic({"student": student.state_dict(), "teacher": teacher.state_dict(),
                         "optimizer": optimizer.state_dict(), "criterion": criterion.state_dict(),
                         "dense_criterion": dense_criterion.state_dict(),
                         "epoch": epoch, "rng": torch.get_rng_state(), "config": asdict(config)}, checkpoint_path)
        save_backbone(teacher["backbone"], config, out_dir / "toy_vit.pt", epoch + 1)
        write_training_record(out_dir, config, device)
        if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
            print(f"time budget reached after epoch {epoch + 1}")
            break
    teacher["backbone"].eval()
    return teacher["backbone"]


def save_backbone(backbone: VisionTransformer, config: DINOConfig, path: str | Path, epochs_done: int) -> None:
    """Write the backbone's weights in fp16 (a few MB) with its architecture and training config."""
    state = {k: v.detach().to("cpu", torch.float16) for k, v in backbone.state_dict().items()}
    cli.save_atomic({"state_dict": state, "config": asdict(config), "epochs_done": epochs_done}, path)


def _check_resumable(state: dict, config: DINOConfig, checkpoint: Path) -> None:
    """A checkpoint resumes only the run that wrote it: the same configuration except ``epochs`` (training
    extended), and not one that has trained more epochs than ``config`` asks for; else ``ConfigError``."""
    saved, current = state["config"], asdict(config)
    changed = sorted(key for key in set(saved) | set(current)
                     if key != "epochs" and cli.to_json(saved.get(key)) != cli.to_json(current.get(key)))
    if changed:
        raise course_config.ConfigError(f"{checkpoint} belongs to a run with another configuration (differs in "
                                        f"{', '.join(changed)}): delete it or use another --out")
    if state["epoch"] + 1 > config.epochs:
        raise course_config.ConfigError(f"{checkpoint} has trained {state['epoch'] + 1} epochs, more than the "
                                        f"{config.epochs} asked for: delete it or use another --out")


_VALUE_FLAGS = {"epochs": cli.positive_int, "n_train_images": cli.positive_int, "batch_size": cli.positive_int,
                "lr": cli.positive_float, "out_dim": cli.positive_int, "dense_weight": cli.non_negative_float,
                "contrast_weight": cli.non_negative_float, "recolour_p": cli.probability}
"""The DINOConfig fields with a command-line flag, and the argparse type that checks each value."""
_SWITCHES = ("conv_stem", "native_scale", "blur")


def training_command(config: DINOConfig) -> str:
    """The ``python -m course_lib.ssl.dino`` command line that reproduces ``config``."""
    flags = [f"--{name.replace('_', '-')} {getattr(config, name)}" for name in _VALUE_FLAGS]
    flags += [f"--{'' if getattr(config, name) else 'no-'}{name.replace('_', '-')}" for name in _SWITCHES]
    return "python -m course_lib.ssl.dino --out OUT " + " ".join(flags)


def write_training_record(out_dir: str | Path, config: DINOConfig, device: torch.device | str) -> Path:
    """``out_dir/toy_vit.json``: config, reproducing command, hardware and the per-epoch log so far."""
    out_dir = Path(out_dir)
    log = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    record = {
        "command": training_command(config),
        "config": asdict(config), "epochs_done": len(log),
        "training_seconds": log[-1]["seconds"] if log else 0.0,
        "hardware": {"device": str(device), "cpu": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "torch": torch.__version__},
        "log": log,
    }
    return cli.write_json(out_dir / "toy_vit.json", record)


def load_toy_vit(path: str | Path, random_init: bool = False) -> VisionTransformer:
    """Load a backbone written by :func:`save_backbone` (strict), in fp32 and eval mode
    (``random_init``: its architecture only, weights left at their random initialisation)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    known = {"conv_stem": False,  # checkpoints written before the option existed have none
             **{k: v for k, v in blob["config"].items() if k in DINOConfig.__dataclass_fields__}}
    model = build_vit(DINOConfig(**known))
    if not random_init:
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()}, strict=True)
    return model.eval()


SMOKE_CONFIG = {"n_train_images": 8, "batch_size": 4, "epochs": 1, "warmup_epochs": 0}
"""``COURSE_SMOKE=1`` defaults (a flag given wins): 8 images in batches of 4, one epoch = 2 steps."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m course_lib.ssl.dino",
                                description="Train the toy ViT backbone with DINO on toy-world scenes.")
    cli.add_common_arguments(parser, out_required=False,
                             dataset_help="toy (the only one: the toy backbone trains on toy-world scenes)")
    for name, kind in _VALUE_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                            help=f"default {getattr(DINOConfig, name)}")
    for name, help_ in zip(_SWITCHES, ("convolutional stem instead of patchify", "crop at the image's pixel scale",
                                       "DINO's Gaussian blur")):
        parser.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                            default=getattr(DINOConfig, name), help=help_)
    parser.add_argument("--time-budget", type=cli.positive_float, default=None,
                        help="stop after the epoch past this (s)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> DINOConfig:
    """The run's :class:`DINOConfig`: flags, else ``COURSE_SMOKE``'s :data:`SMOKE_CONFIG`, else the defaults.

    Raises :class:`~course_lib.config.ConfigError` for the full profile (it uses the official DINO weights,
    it does not train them) and for a dataset other than the toy world."""
    if course_config.profile(args.profile) == "full":
        raise course_config.ConfigError(
            "the full profile uses the official DINO weights instead of training a backbone; fetch them with:\n"
            "    python data_scripts/get_weights.py --model dino_vits8\n"
            "(this CLI trains the course's toy backbone: --profile toy)")
    if args.dataset not in (None, "toy"):
        raise course_config.ConfigError(f"--dataset {args.dataset}: the toy backbone trains on the toy world only "
                                        "(--dataset toy)")
    values = {name: getattr(args, name) for name in _VALUE_FLAGS}
    if course_config.smoke():
        values = {**SMOKE_CONFIG, **{name: value for name, value in values.items() if value is not None}}
    values = {name: value for name, value in values.items() if value is not None}
    values.update({name: getattr(args, name) for name in _SWITCHES})
    if args.seed is not None:
        values["seed"] = args.seed
    config = DINOConfig(**values)
    if config.n_train_images < config.batch_size:
        raise course_config.ConfigError(f"--n-train-images {config.n_train_images} is fewer than one batch "
                                        f"(--batch-size {config.batch_size}): no training step would run")
    return config


def main(argv: list[str] | None = None) -> dict | None:
    """``python -m course_lib.ssl.dino [--out DIR]``: train the toy backbone (the course's CLI convention).

    ``DIR`` (default ``COURSE_CACHE/runs/dino_toy_toy_vit``) gets ``config.json`` at the start, then
    ``checkpoint.pt`` (resumed), ``log.jsonl``, ``toy_vit.pt``, ``toy_vit.json`` and ``metrics.json``
    (final loss, epochs and steps done, ``finished``, seconds; finite numbers only), each file but the log
    written under a temporary name and renamed. ``DIR/config.json`` is the run's record: another
    configuration is refused with the keys that differ (``--overwrite`` starts afresh), a finished identical
    run is reported and returned as it is (:func:`course_lib.cli.guard_run`). Returns the metrics (``None``
    for ``--print-config``)."""
    args = parse_args(argv)
    cli.apply_common(args)
    config = build_config(args)
    steps = config.n_train_images // config.batch_size * config.epochs  # as train_dino counts them
    max_steps = cli.cap_steps(steps, args.max_steps)
    out = Path(args.out) if args.out is not None else course_config.default_run_dir("dino", "toy", "toy_vit")
    resolved = {"profile": "toy", "smoke": course_config.smoke(), "out": str(out), "dino": asdict(config),
                "run": {"steps": max_steps, "max_steps": args.max_steps, "device": args.device or "auto",
                        "threads": args.threads, "time_budget": args.time_budget}}
    if args.print_config:
        cli.print_config(resolved)
        return None
    cli.prepare_out(out)
    finished = cli.guard_run(out, resolved, overwrite=args.overwrite, ignore=("run.time_budget",),
                             outputs=("checkpoint.pt", "log.jsonl", "toy_vit.pt", "toy_vit.json"))
    if finished is not None:
        return finished
    cli.write_json(out / "config.json", resolved)
    started = time.perf_counter()
    train_dino(config, out, args.device, args.time_budget, max_steps=max_steps if max_steps < steps else None)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    steps_per_epoch = config.n_train_images // config.batch_size
    metrics = {"final_loss": log[-1]["loss"] if log else None, "epochs_done": len(log), "steps": max_steps,
               "finished": len(log) >= math.ceil(max_steps / steps_per_epoch),  # False: stopped by --time-budget
               "seconds": time.perf_counter() - started, "backbone": "toy_vit.pt", "log": log}
    cli.write_json(out / "metrics.json", metrics)
    return metrics


if __name__ == "__main__":
    cli.run_cli(main)
