"""Dataset folders on disk: where they are, checking their layout, reading their files.

Every real-dataset loader of the course builds on :class:`SegmentationFolder`: a list of image files,
their label files and a label decoder. Problems are reported early and say what to do:

- a missing dataset (or split, or list file) raises :class:`DatasetNotFoundError`, whose message names
  the ``data_scripts`` command that fetches or prepares it;
- an image listed without its label file (a half-copied folder) raises :class:`DatasetLayoutError`
  naming the missing file;
- a label in the wrong encoding raises :class:`~course_lib.data.label_png.LabelEncodingError`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .. import config
from ..config import CourseError
from .label_png import LabelEncodingError

JointTransform = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]

DATA_SCRIPT_COMMANDS = {
    "cocostuff": "python data_scripts/get_cocostuff.py",
    "cityscapes": "python data_scripts/get_cityscapes.py --from-dir DIR",
    "imagenet_s": "python data_scripts/get_imagenet_s.py --imagenet-dir DIR --subset {subset}",
    "voc": "python data_scripts/get_voc.py",
    "five_crop": "python data_scripts/five_crop.py --dataset {dataset} --split {split}",
}
"""The command that fetches or prepares each dataset (``{...}`` fields filled in by the loaders)."""

_COMMAND_NOTES = {
    "cityscapes": "DIR is the folder holding leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, "
    "downloaded by hand from https://www.cityscapes-dataset.com (registration required).",
    "imagenet_s": "DIR is your ImageNet-1k (ILSVRC2012) folder with train/ and val/ in wnid sub-folders.",
}


class DatasetNotFoundError(CourseError, FileNotFoundError):
    """A dataset (or one of its splits or list files) is not on disk; the message says how to get it."""


class DatasetLayoutError(CourseError, FileNotFoundError):
    """A dataset folder exists but a file its layout requires is missing (e.g. an image's label)."""


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` as a ``Path``, or :func:`course_lib.config.data_dir` when ``root`` is ``None``."""
    return config.data_dir() if root is None else Path(root).expanduser()


def fetch_command(script: str, root: Path | None = None, **fields: object) -> str:
    """The command of ``script`` (a key of ``DATA_SCRIPT_COMMANDS``), ``fields`` filled in, plus ``--data-dir root``."""
    command = DATA_SCRIPT_COMMANDS[script].format(**fields)
    return command if root is None else f"{command} --data-dir {root}"


def dataset_not_found(
    what: str, problem: str, script: str, root: Path | None = None, **fields: object
) -> DatasetNotFoundError:
    """A :class:`DatasetNotFoundError` saying ``what`` is missing, why (``problem``) and the command to run."""
    message = (
        f"{what} not found: {problem}.\n"
        f"Fetch or prepare it with:\n    {fetch_command(script, root, **fields)}\n"
    )
    if script in _COMMAND_NOTES:
        message += _COMMAND_NOTES[script] + "\n"
    return DatasetNotFoundError(
        message + "(Or set COURSE_DATA / pass root= to the folder that already holds the datasets.)"
    )


def require_dir(path: Path, what: str, script: str, root: Path | None = None, **fields: object) -> Path:
    """Return ``path`` if it is a folder, else raise :class:`DatasetNotFoundError` naming the fetch command."""
    if not path.is_dir():
        raise dataset_not_found(what, f"{path} does not exist", script, root, **fields)
    return path


def require_file(path: Path, what: str, script: str, root: Path | None = None, **fields: object) -> Path:
    """Return ``path`` if it is a file, else raise :class:`DatasetNotFoundError` naming the fetch command."""
    if not path.is_file():
        raise dataset_not_found(what, f"{path} does not exist", script, root, **fields)
    return path


def read_id_list(path: Path) -> list[str]:
    """The first whitespace-separated token of every non-empty line of a list file (ids or paths)."""
    with open(path, encoding="utf-8") as file:
        return [line.split()[0] for line in file if line.strip()]


def check_files_exist(paths: Sequence[str], what: str, hint: str) -> None:
    """Raise :class:`DatasetLayoutError` naming the first missing file (and how many are missing).

    Lists each folder once instead of one ``stat`` per file, so 100k paths take well under a second.
    """
    listings: dict[str, set[str]] = {}
    missing = []
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        if name not in listings[folder]:
            missing.append(path)
    if missing:
        raise DatasetLayoutError(
            f"{what}: {missing[0]} is missing ({len(missing)} of {len(paths)} files missing). {hint}"
        )


def read_rgb_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file → 3×H×W float32 tensor in [0, 1] (greyscale and RGBA converted to RGB)."""
    with Image.open(path) as image:
        array = np.array(image.convert("RGB"))  # a writable copy, owned by the tensor
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def list_image_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Sorted files of ``folder`` whose suffix (case-insensitive) is one of ``suffixes``."""
    wanted = tuple(suffix.lower() for suffix in suffixes)
    with os.scandir(folder) as entries:
        names = sorted(entry.name for entry in entries if entry.name.lower().endswith(wanted) and entry.is_file())
    return [folder / name for name in names]


class SegmentationFolder(Dataset):
    """Base of the real-dataset loaders: image files, their label files and a label decoder.

    ``ds[i]`` is the course's sample dict: ``"image"`` 3×H×W float32 in [0, 1] (not normalised),
    ``"label"`` H×W int64 (-1 ignore; all -1 for an image without a label file) and ``"meta"`` with
    ``"name"``, ``"index"``, ``"image_path"``, ``"label_path"`` (``""`` when unlabelled) and what
    :meth:`extra_meta` adds. ``transform(image, label) -> (image, label)`` is applied last.
    Subclasses set ``classes`` and implement :meth:`read_label`.
    """

    classes: Sequence[str] = ()

    def __init__(
        self,
        names: Sequence[str],
        image_paths: Sequence[str],
        label_paths: Sequence[str | None],
        transform: JointTransform | None = None,
    ) -> None:
        if not (len(names) == len(image_paths) == len(label_paths)):
            raise ValueError("names, image_paths and label_paths must have the same length")
        self.names = list(names)
        self.image_paths = [str(path) for path in image_paths]
        self.label_paths = [None if path is None else str(path) for path in label_paths]
        self.transform = transform

    def read_label(self, path: str) -> np.ndarray:
        """Decode one label file → H×W int64 array in the course convention (-1 ignore)."""
        raise NotImplementedError

    def extra_meta(self, index: int) -> dict:
        """Dataset-specific collatable meta values of sample ``index``."""
        return {}

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} samples")
        index = index % len(self)
        image_path, label_path = self.image_paths[index], self.label_paths[index]
        image = read_rgb_image(image_path)
        if label_path is None:
            label = torch.full(image.shape[1:], -1, dtype=torch.int64)
        else:
            label = torch.from_numpy(np.ascontiguousarray(self.read_label(label_path), dtype=np.int64))
            if tuple(label.shape) != tuple(image.shape[1:]):
                raise LabelEncodingError(
                    f"{label_path}: label is {tuple(label.shape)} (H×W) but its image {image_path} is "
                    f"{tuple(image.shape[1:])}; the label does not belong to this image or was resized."
                )
        if self.transform is not None:
            image, label = self.transform(image, label)
        meta = {
            "name": self.names[index],
            "index": index,
            "image_path": image_path,
            "label_path": label_path or "",
            **self.extra_meta(index),
        }
        return {"image": image, "label": label, "meta": meta}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(getattr(self, 'image_paths', ()))} images, {len(self.classes)} classes)"
