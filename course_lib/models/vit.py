"""The DINO and DINOv2 Vision Transformers, written in plain PyTorch, loading the official checkpoints.

Architecture of Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (ICCV 2021),
itself the ViT of Dosovitskiy et al. (ICLR 2021) with DeiT's sizes: a patch embedding (a P×P convolution
with stride P), a learnable [CLS] token, learnable position embeddings, ``depth`` pre-norm blocks
(LayerNorm → multi-head self-attention → residual; LayerNorm → MLP(4×, GELU) → residual) and a final
LayerNorm. The parameter names follow the official code, so ``dino_deitsmall8_pretrain.pth`` and friends
load with a strict ``load_state_dict``.

DINOv2 (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024) keeps this
block and adds, in the layout of ``facebookresearch/dinov2`` (``dinov2/models/vision_transformer.py``,
``dinov2/layers/block.py``, ``dinov2/hub/backbones.py``): LayerScale γ after each residual branch
(``blocks.N.ls1.gamma``, ``blocks.N.ls2.gamma``), the iBOT ``mask_token``, patch 14 with a 518-px position grid
(37×37), and for the ``_reg`` models R = 4 register tokens (Darcet et al., "Vision Transformers Need Registers",
ICLR 2024) placed between [CLS] and the patches. The ViT-S/B hub models are built with ``block_chunks=0``, so
their files hold plain ``blocks.N.*`` keys, loaded here with a strict ``load_state_dict``.

Inputs are images normalised with the ImageNet mean and std (``course_lib.data.normalize``): B×3×H×W, for
DINO and DINOv2 alike. H and W need not equal the training size: the position embeddings are resized bicubically
as the official ``interpolate_pos_encoding`` does (see :meth:`VisionTransformer.interpolate_pos_encoding`).
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


class LayerScale(nn.Module):
    """x ↦ γ ⊙ x with a learned per-channel γ ∈ R^D (CaiT's LayerScale; DINOv2's ``ls1`` / ``ls2``).

    γ starts at ``init_value``: 1.0, the ``init_values`` with which ``dinov2/hub/backbones.py`` builds the
    released models (an untrained one then equals the block without LayerScale).
    """

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + γ₁ ⊙ Attn(LN(x)), then x + γ₂ ⊙ MLP(LN(x)).

    Without ``layer_scale`` (DINO) γ₁ = γ₂ = 1 and the block has no ``ls1`` / ``ls2`` parameters.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layer_scale: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DINO's and DINOv2's ViT: ``VisionTransformer(patch_size, embed_dim, depth, num_heads, *, img_size=224,
    layer_scale=False, num_register_tokens=0)``.

    ViT-S: embed_dim 384, depth 12, 6 heads; ViT-B: 768, 12, 12. ``img_size`` sets the number of learned
    position embeddings ((img_size / P)² + 1): 224 for DINO (patch 8 or 16), 518 for DINOv2 (patch 14, 37×37).
    The defaults are DINO (v1); ``layer_scale=True`` gives DINOv2's layout (LayerScale γ in every block and the
    ``mask_token`` that every DINOv2 checkpoint holds), ``num_register_tokens`` = R extra learned tokens after
    [CLS] (0, or 4 for the ``_reg`` models). ``interpolate_offset`` and ``interpolate_antialias`` choose how the
    position grid is resized (:meth:`interpolate_pos_encoding`). ``conv_stem=True`` replaces the patchify
    projection by a small convolutional stem (toy backbone option).

    Tokens are ordered [CLS, registers, patches]: 1 + R + N with N = h·w, h = H // P, w = W // P. H and W need
    not be multiples of P: the last H mod P rows and W mod P columns are then not seen (DINO's patchify drops
    them; DINOv2's ``PatchEmbed`` would refuse such an input), so give multiples of P (224 / 322 px for
    patch 14) wherever features must line up with pixels.

    - ``forward(x)`` → B×D, the final-normed [CLS] token (what DINO's projection head receives).
    - ``patch_features(x)`` → B×D×h×w, the last block's patch tokens after the final norm.
    - ``last_attention(x)`` → B×heads×(1+R+N)×(1+R+N), the last block's attention weights.
    """

    def __init__(self, patch_size: int = 16, embed_dim: int = 384, depth: int = 12, num_heads: int = 6, *,
                 img_size: int = 224, mlp_ratio: float = 4.0, conv_stem: bool = False, layer_scale: bool = False,
                 num_register_tokens: int = 0, interpolate_offset: float = 0.1,
                 interpolate_antialias: bool = False):
        super().__init__()
        if num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be 0 or more, got {num_register_tokens}")
        self.patch_size, self.embed_dim, self.depth, self.num_heads = patch_size, embed_dim, depth, num_heads
        self.img_size = img_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset, self.interpolate_antialias = interpolate_offset, interpolate_antialias
        self.patch_embed = (ConvPatchEmbed if conv_stem else PatchEmbed)(patch_size, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        # learned, without position embedding (dinov2/models/vision_transformer.py, prepare_tokens_with_masks)
        self.register_tokens = (nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
                                if num_register_tokens else None)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        # iBOT's embedding of masked patches: used by DINOv2's training only, kept so its files load strictly
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim)) if layer_scale else None
        self._init_weights()

    @property
    def num_prefix_tokens(self) -> int:
        """1 + R: the tokens before the patches ([CLS] and the registers)."""
        return 1 + self.num_register_tokens

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)  # as DINOv2's init_weights
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, n_patches: int, height: int, width: int) -> torch.Tensor:
        """Position embeddings for an H×W input: 1×(1+N)×D, the patch part (√N₀ × √N₀) resized bicubically
        to h×w = (H // P)×(W // P), computed in float32 and returned in the embeddings' dtype.

        Identity when the token count matches and the input is square. Otherwise, as DINO and DINOv2's
        ``interpolate_pos_encoding``: with ``interpolate_offset`` o > 0 (DINO; DINOv2 without registers,
        o = 0.1) ``F.interpolate`` gets the scale factors ((h + o)/√N₀, (w + o)/√N₀) (the offset avoids
        rounding to one patch too few; torch also samples with these factors, so o changes the values);
        with o = 0 (DINOv2 ``_reg`` models) it gets the size (h, w). ``interpolate_antialias`` is passed on
        (off for DINO and DINOv2, on for the ``_reg`` models: ``dinov2/hub/backbones.py:107``). Official:
        ``dinov2/models/vision_transformer.py:180-212`` (facebookresearch/dinov2 b8931f7).
        """
        trained = self.pos_embed.shape[1] - 1
        if n_patches == trained and height == width:
            return self.pos_embed
        side = int(math.sqrt(trained))
        rows, cols = height // self.patch_size, width // self.patch_size
        pos_embed = self.pos_embed.float()
        patch_pos = pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            resize = {"scale_factor": ((rows + self.interpolate_offset) / side,
                                       (cols + self.interpolate_offset) / side)}
        else:
            resize = {"size": (rows, cols)}
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.interpolate_antialias, **resize)
        if patch_pos.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position-embedding grid {tuple(patch_pos.shape[-2:])} != {(rows, cols)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dim)
        return torch.cat((pos_embed[:, :1], patch_pos), dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W → B×(1+R+N)×D: patch tokens, [CLS] prepended, position embeddings added, then the R
        register tokens inserted after [CLS] (they get no position embedding)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected B×3×H×W normalised images, got shape {tuple(x.shape)}")
        if x.shape[-2] < self.patch_size or x.shape[-1] < self.patch_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than one {self.patch_size}px patch")
        height, width = x.shape[-2:]
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(len(x), -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(tokens.shape[1] - 1, height, width)
        if self.register_tokens is not None:
            tokens = torch.cat((tokens[:, :1], self.register_tokens.expand(len(x), -1, -1), tokens[:, 1:]), dim=1)
        return tokens

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All final-normed tokens: B×(1+R+N)×D."""
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
        """B×3×H×W → B×D×h×w: last block's patch tokens after the final norm, [CLS] and registers removed."""
        height, width = self.feature_grid(x)
        tokens = self.forward_tokens(x)[:, self.num_prefix_tokens:]
        return tokens.transpose(1, 2).reshape(len(x), self.embed_dim, height, width)

    def last_attention(self, x: torch.Tensor) -> torch.Tensor:
        """B×heads×(1+R+N)×(1+R+N): the last block's attention weights over [CLS, registers, patches]
        (row 0 = [CLS] attending to all)."""
        tokens = self.prepare_tokens(x)
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        last = self.blocks[-1]
        return last.attn.attention_map(last.norm1(tokens))

    def cls_attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """B×heads×h×w: how much the [CLS] token attends to each patch in the last block."""
        height, width = self.feature_grid(x)
        attention = self.last_attention(x)[:, :, 0, self.num_prefix_tokens:]
        return attention.reshape(len(x), -1, height, width)


DINO_ARCHITECTURES: dict[str, dict] = {
    "dino_vits16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "dino_vits8": dict(patch_size=8, embed_dim=384, depth=12, num_heads=6),
    "dino_vitb16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "dino_vitb8": dict(patch_size=8, embed_dim=768, depth=12, num_heads=12),
}
"""The official DINO backbones (224-px position grid; facebookresearch/dino ``hubconf.py``)."""

_DINOV2 = dict(patch_size=14, depth=12, img_size=518, layer_scale=True)
_REGISTERS = dict(num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)
DINOV2_ARCHITECTURES: dict[str, dict] = {
    "dinov2_vits14": dict(_DINOV2, embed_dim=384, num_heads=6),
    "dinov2_vitb14": dict(_DINOV2, embed_dim=768, num_heads=12),
    "dinov2_vits14_reg": dict(_DINOV2, embed_dim=384, num_heads=6, **_REGISTERS),
    "dinov2_vitb14_reg": dict(_DINOV2, embed_dim=768, num_heads=12, **_REGISTERS),
}
"""The official DINOv2 ViT-S/14 and ViT-B/14 backbones, as facebookresearch/dinov2 (commit b8931f7) builds them:
``dinov2/hub/backbones.py:21-28`` (img_size 518, patch 14, init_values 1.0 → LayerScale, block_chunks 0 → plain
``blocks.N`` keys, antialias off, offset 0.1) and ``:106-108`` (the ``_reg`` models: 4 registers, antialias on,
offset 0.0); ``dinov2/models/vision_transformer.py:55`` (qkv bias), ``:96`` (LayerNorm eps 1e-6), ``:169``
(``mask_token`` 1×D)."""

VIT_ARCHITECTURES: dict[str, dict] = {**DINO_ARCHITECTURES, **DINOV2_ARCHITECTURES}


def vit_from_name(name: str) -> VisionTransformer:
    """An untrained ViT with the architecture of the official DINO or DINOv2 model ``name``."""
    if name not in VIT_ARCHITECTURES:
        raise ValueError(f"unknown DINO / DINOv2 model {name!r}; choose one of {', '.join(VIT_ARCHITECTURES)}")
    return VisionTransformer(**VIT_ARCHITECTURES[name])
