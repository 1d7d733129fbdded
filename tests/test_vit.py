"""Our DINO ViT: official key layout loads strictly; outputs match a plain reference computation."""
import io
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.models import VisionTransformer, WeightsNotFoundError, load_backbone
from course_lib.models.backbones import load_dino_checkpoint
from course_lib.models.vit import vit_from_name


def official_layout(patch: int, dim: int, depth: int, img: int = 224) -> dict[str, tuple[int, ...]]:
    """Key → shape of a backbone-only DINO release file (e.g. dino_deitsmall8_pretrain.pth), written out by hand."""
    grid = img // patch
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, grid * grid + 1, dim),
              "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,),
              "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                   b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                   b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                   b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                   b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
                   b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)}
    return shapes


def random_state(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 * torch.randn(shape, generator=g) for k, shape in layout.items()}


@pytest.mark.parametrize("name,patch,dim", [("dino_vits8", 8, 384), ("dino_vits16", 16, 384),
                                            ("dino_vitb16", 16, 768)])
def test_official_layout_loads_strictly(name, patch, dim):
    model = vit_from_name(name)
    layout = official_layout(patch, dim, 12)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    model.load_state_dict(random_state(layout), strict=True)


def test_unexpected_or_missing_keys_fail():
    model = VisionTransformer(8, 48, 2, 3, img_size=32)
    state = random_state(official_layout(8, 48, 2, img=32))
    with pytest.raises(RuntimeError):
        model.load_state_dict({**state, "head.weight": torch.zeros(1)}, strict=True)
    state.pop("norm.bias")
    with pytest.raises(RuntimeError):
        model.load_state_dict(state, strict=True)


def reference_forward(state: dict, x: torch.Tensor, patch: int, heads: int, depth: int):
    """The DINO ViT written out with explicit softmax attention; returns (final tokens, last attention)."""
    dim = state["cls_token"].shape[-1]
    tokens = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=patch)
    h, w = tokens.shape[-2:]
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([state["cls_token"].expand(len(x), 1, dim), tokens], 1)
    pos = state["pos_embed"]
    n0 = pos.shape[1] - 1
    if not (h * w == n0 and x.shape[-1] == x.shape[-2]):
        side = int(math.sqrt(n0))
        grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)], 1)
    tokens = tokens + pos
    d = dim // heads
    attention = None
    for i in range(depth):
        b = f"blocks.{i}."
        y = F.layer_norm(tokens, (dim,), state[b + "norm1.weight"], state[b + "norm1.bias"], eps=1e-6)
        qkv = y @ state[b + "attn.qkv.weight"].T + state[b + "attn.qkv.bias"]
        q, k, v = qkv.reshape(len(x), -1, 3, heads, d).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(len(x), -1, dim)
        tokens = tokens + out @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"]
        y = F.layer_norm(tokens, (dim,), state[b + "norm2.weight"], state[b + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"])
        tokens = tokens + y @ state[b + "mlp.fc2.weight"].T + state[b + "mlp.fc2.bias"]
    tokens = F.layer_norm(tokens, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6)
    return tokens, attention, (h, w)


@pytest.mark.parametrize("patch", [8, 16])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (96, 64), (70, 53)])
def test_patch_features_and_attention_match_reference(patch, size):
    depth, heads, dim = 2, 3, 48
    model = VisionTransformer(patch, dim, depth, heads, img_size=64).eval()
    state = random_state(official_layout(patch, dim, depth, img=64), seed=patch)
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    tokens, attention, (h, w) = reference_forward(state, x, patch, heads, depth)
    with torch.no_grad():
        features = model.patch_features(x)
        last = model.last_attention(x)
        cls = model(x)
    assert features.shape == (2, dim, size[0] // patch, size[1] // patch) == (2, dim, h, w)
    expected = tokens[:, 1:].transpose(1, 2).reshape(2, dim, h, w)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    assert last.shape == (2, heads, 1 + h * w, 1 + h * w)
    torch.testing.assert_close(last, attention, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-5, rtol=1e-5)
    assert model.cls_attention_maps(x).shape == (2, heads, h, w)


def test_position_embeddings_unchanged_at_training_size():
    model = VisionTransformer(8, 48, 1, 3, img_size=32)
    assert model.interpolate_pos_encoding(16, 32, 32) is model.pos_embed
    assert model.interpolate_pos_encoding(24, 32, 48).shape == (1, 25, 48)


def test_bad_inputs_are_explained():
    model = VisionTransformer(8, 48, 1, 3, img_size=32)
    with pytest.raises(ValueError, match="B×3×H×W"):
        model.patch_features(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="smaller than one"):
        model.patch_features(torch.zeros(1, 3, 4, 32))
    with pytest.raises(ValueError, match="divisible"):
        VisionTransformer(8, 50, 1, 3)
    with pytest.raises(ValueError, match="num_register_tokens must be 0 or more, got -1"):
        VisionTransformer(14, 48, 1, 3, num_register_tokens=-1)


def test_load_backbone_reads_official_file_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="get_weights.py --model dino_vits16"):
        load_backbone("dino_vits16")
    (tmp_path / "weights").mkdir()
    state = random_state(official_layout(16, 384, 12))
    torch.save(state, tmp_path / "weights" / "dino_deitsmall16_pretrain.pth")
    model = load_backbone("dino_vits16")
    assert not model.training and model.patch_size == 16
    torch.testing.assert_close(model.state_dict()["blocks.3.attn.qkv.weight"], state["blocks.3.attn.qkv.weight"])
    assert model.patch_features(torch.zeros(1, 3, 32, 48)).shape == (1, 384, 2, 3)


def test_training_checkpoint_with_prefixes_loads():
    model = VisionTransformer(8, 48, 1, 3, img_size=32)
    state = random_state(official_layout(8, 48, 1, img=32))
    teacher = {f"backbone.{k}": v for k, v in state.items()} | {"head.mlp.0.weight": torch.zeros(2, 2)}
    buffer = io.BytesIO()
    torch.save({"teacher": teacher}, buffer)
    buffer.seek(0)
    load_dino_checkpoint(model, buffer)
    torch.testing.assert_close(model.norm.weight.detach(), state["norm.weight"])


def test_unknown_backbone():
    with pytest.raises(ValueError, match="toy_vit.*dinov2_vits14.*dinov2_vitb14_reg"):
        load_backbone("dinov2_vitl14")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_give_stride_32_features(name):
    model = load_backbone(name)
    assert model.patch_features(torch.zeros(1, 3, 64, 96)).shape[-2:] == (2, 3)


def test_conv_stem_gives_the_patchify_grid():
    model = VisionTransformer(8, 32, 1, 2, img_size=32, conv_stem=True).eval()
    for size in [(32, 32), (40, 56), (45, 61)]:
        assert model.patch_features(torch.zeros(1, 3, *size)).shape == (1, 32, size[0] // 8, size[1] // 8)
    with pytest.raises(ValueError, match="power-of-two"):
        VisionTransformer(12, 32, 1, 2, conv_stem=True)
