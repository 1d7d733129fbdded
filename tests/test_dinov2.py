"""DINOv2 in our ViT (issue 18, item 3): the official key layout loads strictly, the outputs match a written-out
reference computation (LayerScale, registers, non-square inputs), the position grid is resized as the official
code does, and the weight files are registered, fetched and loaded as the DINO ones.

Official facts pinned here (facebookresearch/dinov2, commit b8931f7):
- ``dinov2/hub/backbones.py:21-28``: img_size 518, patch 14, init_values 1.0 (LayerScale), block_chunks 0 (plain
  ``blocks.N`` keys), antialias off, offset 0.1; ``:106-108``: the ``_reg`` models, 4 registers, antialias on,
  offset 0.0.
- ``dinov2/hub/utils.py:14-20`` and ``dinov2/hub/backbones.py:57``: the URL
  ``https://dl.fbaipublicfiles.com/dinov2/<arch>/<arch>[_reg4]_pretrain.pth``.
- ``dinov2/models/vision_transformer.py:113-114, 169`` (``register_tokens`` 1×R×D, ``mask_token`` 1×D),
  ``:180-212`` (``interpolate_pos_encoding``), ``:214-233`` (registers inserted after [CLS], after the position
  embeddings), ``:268`` (patch tokens = final-normed tokens after 1 + R).
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_data_scripts import server  # noqa: E402,F401  (fixture)

from course_lib.data import hub  # noqa: E402
from course_lib.data.download import DownloadError, record_path  # noqa: E402
from course_lib.data.prepare import prepare_weights  # noqa: E402
from course_lib.models import VisionTransformer, WeightsNotFoundError, load_backbone  # noqa: E402
from course_lib.models.backbones import BACKBONES, weights_architecture  # noqa: E402

DINOV2 = {  # name: (embed_dim, heads, registers, official file)
    "dinov2_vits14": (384, 6, 0, "dinov2_vits14_pretrain.pth"),
    "dinov2_vitb14": (768, 12, 0, "dinov2_vitb14_pretrain.pth"),
    "dinov2_vits14_reg": (384, 6, 4, "dinov2_vits14_reg4_pretrain.pth"),
    "dinov2_vitb14_reg": (768, 12, 4, "dinov2_vitb14_reg4_pretrain.pth"),
}
# how the official hub resizes the position grid: (interpolate_offset, interpolate_antialias)
RESIZE = {0: (0.1, False), 4: (0.0, True)}


def dinov2_layout(dim: int, depth: int, registers: int, img: int = 518, patch: int = 14) -> dict[str, tuple]:
    """Key → shape of a DINOv2 release file (e.g. dinov2_vits14_reg4_pretrain.pth), written out by hand."""
    grid = img // patch
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, grid * grid + 1, dim), "mask_token": (1, dim),
              "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,),
              "norm.weight": (dim,), "norm.bias": (dim,)}
    if registers:
        shapes["register_tokens"] = (1, registers, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                   b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                   b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,), b + "ls1.gamma": (dim,),
                   b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                   b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
                   b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,), b + "ls2.gamma": (dim,)}
    return shapes


def random_state(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {key: 0.1 * torch.randn(shape, generator=g) for key, shape in layout.items()}


def small_dinov2(registers: int, dim: int = 32, heads: int = 2, depth: int = 1, img: int = 518) -> VisionTransformer:
    offset, antialias = RESIZE[registers]
    return VisionTransformer(14, dim, depth, heads, img_size=img, layer_scale=True, num_register_tokens=registers,
                             interpolate_offset=offset, interpolate_antialias=antialias).eval()


# ------------------------------------------------------------------------------------------------ key layout

@pytest.mark.parametrize("name", DINOV2)
def test_architectures_have_the_official_key_layout(name):
    dim, heads, registers, _ = DINOV2[name]
    model = weights_architecture(name)  # on the meta device: shapes only
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == dinov2_layout(dim, 12, registers)
    assert model.patch_size == 14 and model.num_heads == heads and model.num_register_tokens == registers


@pytest.mark.parametrize("registers", [0, 4])
def test_a_state_dict_in_the_official_layout_loads_strictly(registers):
    model = small_dinov2(registers, depth=2)
    state = random_state(dinov2_layout(32, 2, registers))
    model.load_state_dict(state, strict=True)
    torch.testing.assert_close(model.blocks[1].ls2.gamma.detach(), state["blocks.1.ls2.gamma"])
    with pytest.raises(RuntimeError, match="mask_token"):  # every key counts
        model.load_state_dict({k: v for k, v in state.items() if k != "mask_token"}, strict=True)
    other = 4 - registers                                  # the other register count is another architecture
    with pytest.raises(RuntimeError, match="register_tokens"):
        model.load_state_dict(random_state(dinov2_layout(32, 2, other)), strict=True)


def test_the_dino_v1_layout_is_unchanged_by_default():
    keys = set(VisionTransformer(8, 32, 1, 2, img_size=32).state_dict())
    assert not {key for key in keys if "ls1" in key or "ls2" in key or key in ("mask_token", "register_tokens")}


# --------------------------------------------------------------------------------------- reference computation

def reference_dinov2(state: dict, x: torch.Tensor, heads: int, registers: int):
    """DINOv2 written out in plain torch (one block): patch embedding, the position grid resized as the official
    hub model does, [CLS, registers, patches], LayerScale on both residual branches, the final norm.
    Returns (final tokens, the block's attention weights, (h, w))."""
    dim = state["cls_token"].shape[-1]
    tokens = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=14)
    h, w = tokens.shape[-2:]
    tokens = torch.cat([state["cls_token"].expand(len(x), 1, dim), tokens.flatten(2).transpose(1, 2)], 1)
    pos = state["pos_embed"]
    side = math.isqrt(pos.shape[1] - 1)
    if (h, w) != (side, side):
        grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        if registers:   # dinov2_*_reg: size=(h, w), antialias on
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        else:           # dinov2_*: scale factors (h + 0.1)/37, (w + 0.1)/37, antialias off
            grid = F.interpolate(grid, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)], 1)
    tokens = tokens + pos
    if registers:
        tokens = torch.cat([tokens[:, :1], state["register_tokens"].expand(len(x), -1, -1), tokens[:, 1:]], 1)
    d = dim // heads
    y = F.layer_norm(tokens, (dim,), state["blocks.0.norm1.weight"], state["blocks.0.norm1.bias"], eps=1e-6)
    q, k, v = (y @ state["blocks.0.attn.qkv.weight"].T + state["blocks.0.attn.qkv.bias"]).reshape(
        len(x), -1, 3, heads, d).permute(2, 0, 3, 1, 4)
    attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    out = (attention @ v).transpose(1, 2).reshape(len(x), -1, dim)
    out = out @ state["blocks.0.attn.proj.weight"].T + state["blocks.0.attn.proj.bias"]
    tokens = tokens + state["blocks.0.ls1.gamma"] * out
    y = F.layer_norm(tokens, (dim,), state["blocks.0.norm2.weight"], state["blocks.0.norm2.bias"], eps=1e-6)
    y = F.gelu(y @ state["blocks.0.mlp.fc1.weight"].T + state["blocks.0.mlp.fc1.bias"])
    tokens = tokens + state["blocks.0.ls2.gamma"] * (y @ state["blocks.0.mlp.fc2.weight"].T
                                                     + state["blocks.0.mlp.fc2.bias"])
    return F.layer_norm(tokens, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-6), attention, (h, w)


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("size", [(70, 70), (42, 98), (112, 56), (518, 518)])
def test_outputs_match_the_reference_computation(registers, size):
    dim, heads = 32, 2
    model = small_dinov2(registers, dim, heads)
    state = random_state(dinov2_layout(dim, 1, registers), seed=registers)
    state["blocks.0.ls1.gamma"] = 0.5 + state["blocks.0.ls1.gamma"]   # γ far from 1: LayerScale matters
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    tokens, attention, (h, w) = reference_dinov2(state, x, heads, registers)
    with torch.no_grad():
        features, last, cls = model.patch_features(x), model.last_attention(x), model(x)
        maps = model.cls_attention_maps(x)
    prefix = 1 + registers
    assert features.shape == (2, dim, size[0] // 14, size[1] // 14) == (2, dim, h, w)
    torch.testing.assert_close(features, tokens[:, prefix:].transpose(1, 2).reshape(2, dim, h, w),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls, tokens[:, 0], atol=1e-5, rtol=1e-5)
    assert last.shape == (2, heads, prefix + h * w, prefix + h * w)   # over [CLS, registers, patches]
    torch.testing.assert_close(last, attention, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps, attention[:, :, 0, prefix:].reshape(2, heads, h, w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(224, 224), (224, 322), (14, 28), (322, 224)])
def test_patch_features_have_one_vector_per_14px_patch(size):
    model = small_dinov2(4, dim=16)
    features = model.patch_features(torch.zeros(2, 3, *size))
    assert features.shape == (2, 16, size[0] // 14, size[1] // 14)


# ----------------------------------------------------------------------------------------- position grid

def test_the_518px_grid_is_resized_to_the_input_grid():
    model = small_dinov2(0)
    assert model.pos_embed.shape == (1, 1 + 37 * 37, 32)
    assert model.interpolate_pos_encoding(37 * 37, 518, 518) is model.pos_embed   # training size: unchanged
    assert model.interpolate_pos_encoding(16 * 23, 224, 322).shape == (1, 1 + 16 * 23, 32)
    assert model.interpolate_pos_encoding(23 * 16, 322, 224).shape == (1, 1 + 23 * 16, 32)


def test_the_offset_gives_the_right_grid_and_enters_the_values():
    """546 px = 39 patches: the plain scale 39/37 gives 38 rows (floating point), 39.1/37 gives 39
    (facebookresearch/dino issue 8, kept by dinov2/models/vision_transformer.py:195-199)."""
    grid = torch.randn(1, 32, 37, 37)
    assert F.interpolate(grid, scale_factor=39 / 37, mode="bicubic").shape[-1] == 38
    model = small_dinov2(0)
    assert model.patch_features(torch.zeros(1, 3, 546, 546)).shape == (1, 32, 39, 39)
    # torch samples with the given scale factor: the offset moves the values, not only the size
    with torch.no_grad():
        with_offset = model.interpolate_pos_encoding(16 * 23, 224, 322)
        model.interpolate_offset = 0.0
        by_size = model.interpolate_pos_encoding(16 * 23, 224, 322)
    assert with_offset.shape == by_size.shape and not torch.allclose(with_offset, by_size, atol=1e-4)
    expected = F.interpolate(model.pos_embed[:, 1:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2),
                             scale_factor=(16.1 / 37, 23.1 / 37), mode="bicubic")
    torch.testing.assert_close(with_offset[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, -1, 32))


def test_the_register_models_resize_by_size_with_antialiasing():
    model = small_dinov2(4)
    assert (model.interpolate_offset, model.interpolate_antialias) == (0.0, True)
    with torch.no_grad():
        resized = model.interpolate_pos_encoding(16 * 16, 224, 224)[:, 1:]
    grid = model.pos_embed[:, 1:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 16), mode="bicubic", antialias=True)
    torch.testing.assert_close(resized, expected.permute(0, 2, 3, 1).reshape(1, -1, 32))
    without = F.interpolate(grid, size=(16, 16), mode="bicubic").permute(0, 2, 3, 1).reshape(1, -1, 32)
    assert not torch.allclose(resized, without, atol=1e-4)


# --------------------------------------------------------------------------------------- weights and loading

@pytest.mark.parametrize("name", DINOV2)
def test_registry_entries_point_at_the_official_files(name):
    entry = hub.WEIGHTS[name]
    arch = name.removesuffix("_reg")
    assert entry.filename == DINOV2[name][3]
    assert entry.url == f"https://dl.fbaipublicfiles.com/dinov2/{arch}/{entry.filename}"
    assert not entry.checksum_known    # none published: trusted on first use, verified by a strict load
    assert name in BACKBONES


def test_a_missing_file_names_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as error:
        load_backbone("dinov2_vits14_reg")
    assert "python data_scripts/get_weights.py --model dinov2_vits14_reg" in str(error.value)
    assert str(tmp_path / "weights" / "dinov2_vits14_reg4_pretrain.pth") in str(error.value)


def constant_state(name: str, value: float) -> dict[str, torch.Tensor]:
    """The official state dict of ``name`` in a few kB: every tensor a broadcast view of one number."""
    return {key: torch.tensor(value).expand(tensor.shape)
            for key, tensor in weights_architecture(name).state_dict().items()}


def test_load_backbone_reads_the_official_file(tmp_path):
    torch.save(constant_state("dinov2_vits14_reg", 0.25), tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    model = load_backbone("dinov2_vits14_reg", weights_dir=tmp_path)
    assert not model.training and model.patch_size == 14 and model.num_register_tokens == 4
    assert torch.all(model.blocks[11].ls1.gamma == 0.25) and torch.all(model.register_tokens == 0.25)
    assert model.patch_features(torch.zeros(1, 3, 28, 42)).shape == (1, 384, 2, 3)


@pytest.mark.filterwarnings("ignore::course_lib.data.download.UnverifiedDownloadWarning")
def test_get_weights_fetches_records_and_checks_a_dinov2_file(server, tmp_path):  # noqa: F811
    def payload(name: str) -> bytes:
        buffer = io.BytesIO()
        torch.save(constant_state(name, 0.0), buffer)
        return buffer.getvalue()

    server.files["dinov2_vits14_reg4_pretrain.pth"] = payload("dinov2_vits14_reg")
    paths = prepare_weights(["dinov2_vits14_reg"], tmp_path / "weights", mirror=server.base_url, progress=False)
    assert paths["dinov2_vits14_reg"] == tmp_path / "weights" / "dinov2_vits14_reg4_pretrain.pth"
    assert record_path(paths["dinov2_vits14_reg"]).exists()           # the SHA-256 recorded on first fetch
    server.files["dinov2_vits14_pretrain.pth"] = payload("dinov2_vits14_reg")   # registers: another network
    with pytest.raises(DownloadError, match="unexpected key.*register_tokens"):
        prepare_weights(["dinov2_vits14"], tmp_path / "weights", mirror=server.base_url, progress=False)
