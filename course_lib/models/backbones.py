"""``load_backbone(name)``: every backbone of the course behind one call.

- ``"toy_vit"``: the tiny ViT-8 trained by our DINO on the toy world, shipped in ``course_lib/assets``.
- ``"dino_vits8" | "dino_vits16" | "dino_vitb8" | "dino_vitb16"``: the official DINO checkpoints, and
  ``"dinov2_vits14" | "dinov2_vitb14" | "dinov2_vits14_reg" | "dinov2_vitb14_reg"``: the official DINOv2 ones
  (patch 14; ``_reg``: 4 register tokens), read from ``COURSE_CACHE/weights`` under their official file names
  (``python data_scripts/get_weights.py --model NAME`` fetches them).
- ``"resnet18" | "resnet50"``: torchvision ResNets with random weights (PASS trains them itself).

Every backbone is returned in eval mode, with ``.patch_size`` and ``.patch_features(x)`` (ImageNet-normalised
B×3×H×W → B×C×h×w; DINOv2 takes the same normalisation as DINO); none normalises its input itself.

Weight files are read with ``torch.load(weights_only=True)`` (:func:`read_weights`) and loaded strictly
(:func:`load_state_strict`); a missing file raises :class:`WeightsNotFoundError`, an unusable one (not a PyTorch
file, truncated, empty, a directory, another architecture) :class:`CorruptWeightsError`, both naming the file and
the ``get_weights.py`` command that fixes it. :func:`weights_problem` is the check ``get_weights.py`` makes.
"""
from __future__ import annotations

import hashlib
import pickle
import re
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from ..config import CourseError
from ..data.hub import WEIGHTS, weights_path
from .resnet import build_resnet
from .vit import VIT_ARCHITECTURES, VisionTransformer, vit_from_name

TOY_VIT_ASSET = "toy_vit.pt"
RESNETS = ("resnet18", "resnet50")
BACKBONES = ("toy_vit", *VIT_ARCHITECTURES, *RESNETS)


class WeightsNotFoundError(CourseError, FileNotFoundError):
    """A backbone's weight file is missing; the message names the command that fetches it."""


class CorruptWeightsError(WeightsNotFoundError, RuntimeError):
    """A weight file is there but unusable (not a PyTorch file, truncated, empty, a directory, or a state dict
    of another architecture); the message names the file and the command that fetches a fresh copy.
    ``reason`` is the problem alone (without the path and the command)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def fetch_command(name: str, force: bool = False) -> str:
    """The command that downloads the official weight file of ``name`` (``--force``: replace the file there)."""
    return f"python data_scripts/get_weights.py --model {name}" + (" --force" if force else "")


def official_weights_file(name: str, weights_dir: str | Path | None = None) -> Path:
    """The official weight file of ``name`` (a :data:`course_lib.data.hub.WEIGHTS` key) in ``weights_dir``
    (default ``COURSE_CACHE/weights``), which must exist.

    Raises:
        WeightsNotFoundError: nothing is there (the message gives the fetch command).
        CorruptWeightsError: a directory or an empty file is there.
    """
    path = weights_path(name, weights_dir)
    if not path.exists():
        raise WeightsNotFoundError(f"{WEIGHTS[name].description}: weights not found at {path}. Fetch them with:\n"
                                   f"    {fetch_command(name)}")
    if not path.is_file():
        raise _corrupt(path, name, "it is a directory, not a file")
    return path


def read_weights(path: str | Path | BinaryIO, name: str | None = None) -> dict:
    """The state dict in a weight file, read with ``torch.load(weights_only=True)`` (tensors and plain
    containers only: a file from outside never runs code), on the CPU.

    Raises:
        CorruptWeightsError: the file cannot be read (a directory, empty, truncated, not a PyTorch file,
            or it holds objects other than tensors) or holds no dict; names ``path`` and, when ``name``
            (a :data:`course_lib.data.hub.WEIGHTS` key) is given, the command that fetches a fresh copy.
    """
    if isinstance(path, (str, Path)):
        path = Path(path)
        if path.is_dir():
            raise _corrupt(path, name, "it is a directory, not a file")
        if path.is_file() and path.stat().st_size == 0:
            raise _corrupt(path, name, "it is empty (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, which would run whatever code the file holds: not shown
        raise _corrupt(path, name, "it is not a PyTorch weight file (the safe loader, weights_only=True, refuses "
                                   "it: random bytes, or pickled objects other than tensors)") from None
    except EOFError:
        raise _corrupt(path, name, "it ends too early (a truncated file)") from None
    except Exception as error:  # noqa: BLE001  (the zip reader's OSError / RuntimeError on a damaged archive)
        with open(path, "rb") as file:
            zip_format = file.read(4) == b"PK\x03\x04"   # torch's format since 1.6 (a truncated one lacks its end)
        if not zip_format:   # neither torch's zip format nor a pickle the safe loader can read
            raise _corrupt(path, name, "it is not a PyTorch weight file (the safe loader, weights_only=True, "
                                       f"cannot read it: {type(error).__name__})") from None
        first_line = (str(error).splitlines() or [""])[0][:160]
        raise _corrupt(path, name, f"torch.load cannot read it, it is truncated or damaged "
                                   f"({type(error).__name__}: {first_line})") from None
    if not isinstance(state, dict):
        raise _corrupt(path, name, f"it holds a {type(state).__name__}, not a state dict")
    return state


def load_state_strict(model: nn.Module, state: dict, path: str | Path | BinaryIO,
                      name: str | None = None) -> nn.Module:
    """``model.load_state_dict(state, strict=True)``; a model on the ``meta`` device takes the tensors as they
    are (``assign``), which checks keys and shapes without allocating anything.

    Raises:
        CorruptWeightsError: missing or unexpected keys, or shapes that differ (the file is of another
            architecture), naming the first few, ``path`` and the fetch command of ``name``.
    """
    meta = any(parameter.is_meta for parameter in model.parameters())
    try:
        model.load_state_dict(state, strict=True, assign=meta)
    except RuntimeError as error:
        raise _corrupt(path, name, "its keys or shapes do not match the architecture ("
                                   + _summarise_load_errors(str(error)) + ")") from None
    return model


_SHAPE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[.*?\])\) "
                             r"from checkpoint, the shape in current model is torch\.Size\((\[.*?\])\)")


def _summarise_load_errors(message: str, shown: int = 3) -> str:
    """torch's ``load_state_dict`` error in one line: counts of missing / unexpected keys and shape mismatches,
    each with its first ``shown`` names."""
    def listed(items: list[str]) -> str:
        return ", ".join(items[:shown]) + (", …" if len(items) > shown else "")

    parts, mismatches = [], []
    for line in (line.strip() for line in message.splitlines()[1:]):
        keys = re.match(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)", line)
        mismatch = _SHAPE_MISMATCH.match(line)
        if keys:
            names = re.findall(r'"([^"]+)"', keys.group(2))
            parts.append(f"{len(names)} {keys.group(1).lower()} key(s): {listed(names)}")
        elif mismatch:
            key, in_file, expected = mismatch.groups()
            mismatches.append(f"{key} is {in_file} in the file, {expected} expected")
        elif line:
            parts.append(line[:200])
    if mismatches:
        parts.append(f"{len(mismatches)} shape mismatch(es): {listed(mismatches)}")
    return "; ".join(parts)


def _corrupt(path: object, name: str | None, reason: str) -> CorruptWeightsError:
    what = f"{WEIGHTS[name].description} file" if name in WEIGHTS else "weight file"
    where = path if isinstance(path, (str, Path)) else "the given file object"
    fix = f" Fetch a fresh copy with:\n    {fetch_command(name, force=True)}" if name in WEIGHTS else ""
    return CorruptWeightsError(f"{where} is not a usable {what}: {reason}.{fix}", reason)


def weights_architecture(name: str) -> nn.Module:
    """The architecture whose state dict the official file of ``name`` holds, on the ``meta`` device (no
    memory, no initialisation cost): DINO's and DINOv2's ViTs, or torchvision's ResNets with their classifier."""
    import torchvision

    with torch.device("meta"):
        if name in VIT_ARCHITECTURES:
            return vit_from_name(name)
        if name.startswith("resnet") and name in WEIGHTS:
            return getattr(torchvision.models, name)(weights=None)
    raise ValueError(f"no official weight file is registered for {name!r}: choose one of {', '.join(WEIGHTS)}")


def weights_problem(name: str, path: str | Path) -> str | None:
    """Why ``path`` is not a usable official weight file of ``name`` (``None`` when it is): it must load with
    ``torch.load(weights_only=True)`` as a state dict of the expected architecture (strict keys and shapes).
    ``data_scripts/get_weights.py`` checks every file with it, present or just downloaded."""
    try:
        if name in VIT_ARCHITECTURES:
            load_dino_checkpoint(weights_architecture(name), path, name)
        else:
            state = read_weights(path, name)
            load_state_strict(weights_architecture(name), state, path, name)
    except CorruptWeightsError as error:
        return error.reason
    return None


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


def load_dino_checkpoint(model: VisionTransformer, path: str | Path | BinaryIO,
                         name: str | None = None) -> VisionTransformer:
    """Load an official DINO or DINOv2 backbone file into ``model`` with a strict ``load_state_dict``.

    Accepts the released backbone-only files and full training checkpoints (``teacher`` entry with
    ``backbone.`` / ``module.`` prefixes, as DINO's ``main_dino.py`` writes them). Read with
    ``weights_only=True``; a file that cannot be read or does not fit ``model`` raises
    :class:`CorruptWeightsError` naming ``path`` (and, given the model ``name``, its fetch command).
    """
    state = read_weights(path, name)
    if isinstance(state.get("teacher"), dict):
        state = state["teacher"]
    keys = {key: str(key).removeprefix("module.") for key in state}
    state = {keys[key].removeprefix("backbone."): value for key, value in state.items()
             if not keys[key].startswith("head.")}
    return load_state_strict(model, state, path, name)


def load_backbone(name: str, device: str | torch.device | None = "cpu",
                  weights_dir: str | Path | None = None, random_init: bool = False) -> nn.Module:
    """The backbone ``name`` in eval mode on ``device`` (see the module docstring for the names).

    ``random_init=True`` gives the same architecture with random weights (seeded, no file needed): the
    "untrained network" reference of the lessons.

    Raises:
        ValueError: an unknown name.
        WeightsNotFoundError: an official DINO / DINOv2 file is missing (the message gives the fetch command);
            :class:`CorruptWeightsError` (a subclass) when the file there is unusable.
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
    elif name in VIT_ARCHITECTURES and random_init:
        model = vit_from_name(name)
    elif name in VIT_ARCHITECTURES:
        model = load_dino_checkpoint(vit_from_name(name), official_weights_file(name, weights_dir), name)
    elif name in RESNETS:
        model = build_resnet(name)
    else:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return model.to(device).eval()
