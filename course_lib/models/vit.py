"""The DINO Vision Transformer, written in plain PyTorch, loading the official DINO checkpoints.

Architecture of Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (ICCV 2021),
itself the ViT of Dosovitskiy et al. (ICLR 2021) with DeiT's sizes: a patch embedding (a P×P convolution
with stride P), a learnable [CLS] token, learnable position embeddings, ``depth`` pre-norm blocks
(LayerNorm → multi-head self-attention → residual; LayerNorm → MLP(4×, GELU) → residual) and a final
LayerNorm. The parameter names follow the official code, so ``dino_deitsmall8_pretrain.pth`` and friends
load with a strict ``load_state_dict``.

Inputs are images normalised with the ImageNet mean and std (``course_lib.data.normalize``): B×3×H×W.
H and W need not equal the training size: the position embeddings are resized bicubically exactly as
DINO's ``interpolate_pos_encoding`` does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6  # DINO uses LayerNorm(eps=1e-6) everywhere


class PatchEmbed(nn.Module):
    """Non-overlapping P×P patches → D-dimensional tokens: B×3×H×W → B×(h·w)×D, h = H // P."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ConvPatchEmbed(nn.Module):
    """Convolutional stem (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021):
    log2(P) stride-2 3×3 convolutions with BatchNorm and ReLU, then a 1×1 projection: B×3×H×W → B×(h·w)×D.

    An option for small backbones trained from scratch (the toy ViT); the official DINO models use
    :class:`PatchEmbed`.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"a convolutional stem needs a power-of-two patch size, got {patch_size}")
        self.patch_size = patch_size
        layers, channels = [], in_chans
        for i in range(int(math.log2(patch_size))):
            width = max(embed_dim // 2 ** (int(math.log2(patch_size)) - 1 - i), 16)
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels, embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        features = self.proj(self.stem(x))[..., :height, :width]  # the same grid as a P×P patchify
        return features.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (DINO's ``attn.qkv`` / ``attn.proj``)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each B×heads×N×d
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)  # fused kernel on GPU; same maths as softmax(qkᵀ/√d)v
        return self.proj(out.transpose(1, 2).flatten(2))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q kᵀ / √d): B×heads×N×N (explicit, since the fused kernel does not return it)."""
        q, k, _ = self._qkv(x)
        return ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


class Mlp(nn.Module):
    """Linear(D, 4D) → GELU → Linear(4D, D) (``mlp.fc1`` / ``mlp.fc2``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """DINO's ViT: ``VisionTransformer(patch_size, embed_dim, depth, num_heads)``.

    ViT-S: embed_dim 384, depth 12, 6 heads; ViT-B: 768, 12, 12 (patch 8 or 16). ``img_size`` sets the
    number of learned position embeddings ((img_size / P)² + 1; 224 for the official weights).
    ``conv_stem=True`` replaces the patchify projection by a small convolutional stem (toy backbone option).

    - ``forward(x)`` → B×D, the final-normed [CLS] token (what DINO's projection head receives).
    - ``patch_features(x)`` → B×D×h×w, the last block's patch tokens after the final norm.
    - ``last_attention(x)`` → B×heads×(1+N)×(1+N), the last block's attention weights.
    """

    def __init__(self, patch_size: int = 16, embed_dim: int = 384, depth: int = 12, num_heads: int = 6,
                 img_size: int = 224, mlp_ratio: float = 4.0, conv_stem: bool = False):
        super().__init__()
        self.patch_size, self.embed_dim, self.depth, self.num_heads = patch_size, embed_dim, depth, num_heads
        self.img_size = img_size
        self.patch_embed = (ConvPatchEmbed if conv_stem else PatchEmbed)(patch_size, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, n_patches: int, height: int, width: int) -> torch.Tensor:
        """Position embeddings for an H×W input: 1×(1+N)×D, the patch part resized bicubically.

        Follows DINO: identity when the token count matches and the input is square; otherwise a bicubic
        ``interpolate`` with scale factors ((h + 0.1)/√N₀, (w + 0.1)/√N₀) (the 0.1 avoids floating-point
        rounding to one patch too few).
        """
        trained = self.pos_embed.shape[1] - 1
        if n_patches == trained and height == width:
            return self.pos_embed
        side = int(math.sqrt(trained))
        h0 = height // self.patch_size + 0.1
        w0 = width // self.patch_size + 0.1
        patch_pos = self.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, scale_factor=(h0 / side, w0 / side), mode="bicubic")
        if patch_pos.shape[-2:] != (int(h0), int(w0)):
            raise RuntimeError(f"position-embedding grid {tuple(patch_pos.shape[-2:])} != {(int(h0), int(w0))}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dim)
        return torch.cat((self.pos_embed[:, :1], patch_pos), dim=1)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W → B×(1+N)×D: patch tokens, [CLS] prepended, position embeddings added."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected B×3×H×W normalised images, got shape {tuple(x.shape)}")
        if x.shape[-2] < self.patch_size or x.shape[-1] < self.patch_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than one {self.patch_size}px patch")
        height, width = x.shape[-2:]
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(len(x), -1, -1), tokens), dim=1)
        return tokens + self.interpolate_pos_encoding(tokens.shape[1] - 1, height, width)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All final-normed tokens: B×(1+N)×D."""
        tokens = self.prepare_tokens(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[:, 0]

    def feature_grid(self, x: torch.Tensor) -> tuple[int, int]:
        """(h, w) = (H // P, W // P), the patch grid of an input."""
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W → B×D×h×w: last block's patch tokens after the final norm, [CLS] removed."""
        height, width = self.feature_grid(x)
        tokens = self.forward_tokens(x)[:, 1:]
        return tokens.transpose(1, 2).reshape(len(x), self.embed_dim, height, width)

    def last_attention(self, x: torch.Tensor) -> torch.Tensor:
        """B×heads×(1+N)×(1+N): the last block's attention weights (row 0 = [CLS] attending to all)."""
        tokens = self.prepare_tokens(x)
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        last = self.blocks[-1]
        return last.attn.attention_map(last.norm1(tokens))

    def cls_attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """B×heads×h×w: how much the [CLS] token attends to each patch in the last block."""
        height, width = self.feature_grid(x)
        attention = self.last_attention(x)[:, :, 0, 1:]
        return attention.reshape(len(x), -1, height, width)


DINO_ARCHITECTURES: dict[str, dict] = {
    "dino_vits16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "dino_vits8": dict(patch_size=8, embed_dim=384, depth=12, num_heads=6),
    "dino_vitb16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "dino_vitb8": dict(patch_size=8, embed_dim=768, depth=12, num_heads=12),
}


def vit_from_name(name: str) -> VisionTransformer:
    """An untrained ViT with the architecture of the official DINO model ``name`` (224-px position grid)."""
    if name not in DINO_ARCHITECTURES:
        raise ValueError(f"unknown DINO model {name!r}; choose one of {', '.join(DINO_ARCHITECTURES)}")
    return VisionTransformer(**DINO_ARCHITECTURES[name], img_size=224)
