"""``load_backbone(name)``: every backbone of the course behind one call.

- ``"toy_vit"``: the tiny ViT-8 trained by our DINO on the toy world, shipped in ``course_lib/assets``.
- ``"dino_vits8" | "dino_vits16" | "dino_vitb8" | "dino_vitb16"``: the official DINO checkpoints, read
  from ``COURSE_CACHE/weights`` (``python data_scripts/get_weights.py --model NAME`` fetches them).
- ``"resnet18" | "resnet50"``: torchvision ResNets with random weights (PASS trains them itself).

Every backbone is returned in eval mode, with ``.patch_size`` and ``.patch_features(x)`` (ImageNet-normalised
B×3×H×W → B×C×h×w); none normalises its input itself.
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..config import CourseError
from ..data.hub import WEIGHTS, weights_path
from .resnet import build_resnet
from .vit import DINO_ARCHITECTURES, VisionTransformer, vit_from_name

TOY_VIT_ASSET = "toy_vit.pt"
RESNETS = ("resnet18", "resnet50")
BACKBONES = ("toy_vit", *DINO_ARCHITECTURES, *RESNETS)


class WeightsNotFoundError(CourseError, FileNotFoundError):
    """A backbone's weight file is missing; the message names the command that fetches it."""


def toy_vit_path() -> Path:
    """Path of the shipped toy backbone checkpoint (inside the installed package)."""
    return Path(str(resources.files("course_lib") / "assets" / TOY_VIT_ASSET))


def backbone_cache_key(name: str, backbone: nn.Module | None = None) -> str:
    """Name under which a backbone's features (and runs built on them) are cached: ``name`` itself, except
    ``toy_vit`` (retrained in place): ``toy_vit-w<sha256[:12]>`` of the loaded weights (``backbone``, or the
    shipped checkpoint), so cached results always belong to the weights that computed them."""
    if name != "toy_vit":
        return name
    weights = (backbone if backbone is not None else load_backbone("toy_vit")).state_dict()
    digest = hashlib.sha256()
    for key, tensor in sorted(weights.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"toy_vit-w{digest.hexdigest()[:12]}"


def load_dino_checkpoint(model: VisionTransformer, path: str | Path) -> VisionTransformer:
    """Load an official DINO backbone file into ``model`` with a strict ``load_state_dict``.

    Accepts the released backbone-only files and full training checkpoints (``teacher`` entry with
    ``backbone.`` / ``module.`` prefixes, as DINO's ``main_dino.py`` writes them).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "teacher" in state:
        state = state["teacher"]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()
             if not k.removeprefix("module.").startswith("head.")}
    model.load_state_dict(state, strict=True)
    return model


def load_backbone(name: str, device: str | torch.device | None = "cpu",
                  weights_dir: str | Path | None = None, random_init: bool = False) -> nn.Module:
    """The backbone ``name`` in eval mode on ``device`` (see the module docstring for the names).

    ``random_init=True`` gives the same architecture with random weights (seeded, no file needed): the
    "untrained network" reference of the lessons.

    Raises:
        ValueError: an unknown name.
        WeightsNotFoundError: an official DINO file is missing (the message gives the fetch command).
    """
    if random_init:
        torch.manual_seed(0)
    if name == "toy_vit":
        from ..ssl.dino import load_toy_vit  # the toy checkpoint stores its DINO training config
        path = toy_vit_path()
        if not path.exists():
            raise WeightsNotFoundError(f"the shipped toy backbone {path} is missing: reinstall course_lib or "
                                       "retrain it with `python -m course_lib.ssl.dino --out build/dino_toy`")
        model = load_toy_vit(path, random_init=random_init)
    elif name in DINO_ARCHITECTURES and random_init:
        model = vit_from_name(name)
    elif name in DINO_ARCHITECTURES:
        path = weights_path(name, weights_dir)
        if not path.exists():
            raise WeightsNotFoundError(
                f"{WEIGHTS[name].description}: weights not found at {path}. Fetch them with:\n"
                f"    python data_scripts/get_weights.py --model {name}")
        model = load_dino_checkpoint(vit_from_name(name), path)
    elif name in RESNETS:
        model = build_resnet(name)
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return model.to(device).eval()
