"""A folder of your own images, without labels: reading the files and a dataset over them.

- :func:`read_photo`: an image file → H×W×3 uint8 RGB (EXIF orientation, greyscale / palette / CMYK /
  16-bit, alpha composited over white), the one reader of :mod:`course_lib.segment` and of training on a
  folder (``python -m course_lib.stego.train --dataset folder:DIR``).
- :func:`folder_images`: the image files of a folder (``.jpg``, ``.jpeg``, ``.png``, any case, not its
  sub-folders), the unreadable ones set apart with the reason.
- :func:`folder_fingerprint`: a short hash of the folder's resolved path and its file list (names, sizes,
  modification times), the key of the caches prepared for it (features, kNN table).
- :class:`UnlabelledImageFolder`: the course's sample dicts over those files (label all -1), optionally
  STEGO's five-crop of every image (crop ``c`` of image ``i`` is item ``5·i + c``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..config import ConfigError
from .five_crop import five_crop
from .folders import JointTransform, list_image_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""The files of an image folder that are read (suffix compared case-insensitively)."""
ALPHA_BACKGROUND = (255, 255, 255)
"""The colour transparent pixels are composited over: white."""
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
"""What PIL raises for a file that is not a readable image."""


def read_photo(path: str | Path) -> np.ndarray:
    """An image file → H×W×3 uint8 RGB, EXIF orientation applied.

    Greyscale (``L``, ``1``), palette (``P``), CMYK and 16-bit greyscale become RGB (16-bit values scaled by
    1/257, PIL's convert would clip them at 255); an alpha channel (``RGBA``, ``LA``, a palette with
    transparency) is composited over white, not dropped (a transparent pixel's colour is undefined, often
    black). A file that is not a readable image raises one of :data:`UNREADABLE`: ``OSError``
    (``UnidentifiedImageError``, a truncated file), ``ValueError``, ``SyntaxError``, ``EOFError`` or
    ``Image.DecompressionBombError`` (more than twice ``Image.MAX_IMAGE_PIXELS``)."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # a loaded copy; decoding errors surface here
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        image = Image.fromarray(((values + 128) // 257).astype(np.uint8), mode="L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255)), rgba)
    return np.array(image.convert("RGB"))


def image_files(folder: str | Path, flag: str = "--images") -> list[Path]:
    """The image files of ``folder`` (suffixes :data:`IMAGE_SUFFIXES`, any case, not recursive), sorted, unread.

    Raises:
        ConfigError: ``folder`` is not a folder or holds no image file (``flag`` names the option).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: no such folder; give the folder that holds your images")
    files = list_image_files(folder, IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{flag} {folder} holds no image file ({', '.join(IMAGE_SUFFIXES)}, any case; "
                          "sub-folders are not read)")
    return files


def folder_images(folder: str | Path, flag: str = "--images") -> tuple[list[Path], list[dict]]:
    """The readable image files of ``folder`` (sorted) and ``{"file", "reason"}`` for every unreadable one.

    Each file is opened and checked by PIL (``verify``: the header, and a PNG's checksums) without decoding it.

    Raises:
        ConfigError: ``folder`` is not a folder, holds no image file, or none that is readable (``flag`` names
            the option in the message).
    """
    files = image_files(folder, flag)
    readable, skipped = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()
            readable.append(path)
        except UNREADABLE as error:
            skipped.append({"file": path.name, "reason": f"{type(error).__name__}: {error}"})
    if not readable:
        reasons = "; ".join(f"{entry['file']}: {entry['reason']}" for entry in skipped[:5])
        raise ConfigError(f"{flag} {folder}: none of its {len(files)} image files can be read ({reasons})")
    return readable, skipped


def folder_fingerprint(files: Sequence[Path]) -> str:
    """12 hex digits of SHA-256 over the files' resolved paths, sizes and modification times (ns): another
    folder, an added / removed / replaced file gives another key."""
    digest = hashlib.sha256()
    for path in files:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


class UnlabelledImageFolder(Dataset):
    """Sample dicts over image files: ``"image"`` 3×H×W float32 in [0, 1], ``"label"`` H×W int64 all -1
    (no labels), ``"meta"`` with ``"name"`` and ``"image_path"``; ``transform(image, label)`` applied last.

    ``five_crop``: item ``5·i + c`` is crop ``c`` (top-left, top-right, bottom-left, bottom-right, centre;
    half of each side, :func:`~course_lib.data.five_crop.five_crop`) of file ``i`` at its own size, then the
    transform, as STEGO five-crops its source images before its loader resizes them (the crops are made on
    the fly, not written to disk).
    """

    def __init__(self, files: Sequence[Path], transform: JointTransform | None = None, five_crop: bool = False):
        self.files, self.transform, self.five_crop = [Path(path) for path in files], transform, five_crop
        self._last: tuple[int, torch.Tensor] | None = None  # the five crops of a file are read in a row

    def __len__(self) -> int:
        return len(self.files) * (5 if self.five_crop else 1)

    def _image(self, file_index: int) -> torch.Tensor:
        if self._last is None or self._last[0] != file_index:
            photo = read_photo(self.files[file_index])
            self._last = (file_index, torch.from_numpy(photo).permute(2, 0, 1).float().div(255))
        return self._last[1]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        file_index, crop = divmod(index, 5) if self.five_crop else (index, 0)
        image = self._image(file_index)
        label = torch.full(image.shape[1:], -1, dtype=torch.long)
        if self.five_crop:
            image, label = five_crop(image, label)[crop]
        if self.transform is not None:
            image, label = self.transform(image, label)
        path = self.files[file_index]
        return {"image": image, "label": label, "meta": {"name": path.stem, "image_path": str(path)}}
