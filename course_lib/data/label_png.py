"""Label images on disk: the ImageNet-S RGB encoding and single-channel label PNGs.

ImageNet-S stores a class id per pixel as ``id = R + 256·G`` in an RGB PNG (B unused):
0 is 'other' (background), 1..K the categories, 1000 'ignore'. Decoding must widen before multiplying,
because ``uint8 * 256`` overflows under NumPy 2. Reading a file takes the shortest path there is: Pillow
keeps an RGB image as 4 bytes per pixel (R, G, B, padding), so its ``RGBX`` bytes seen as little-endian
16-bit words hold ``R + 256·G`` in every other word, with no arithmetic (the evaluator's inner loop).
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ..cli import replace_when_written
from ..config import CourseError

IMAGENET_S_OTHER = 0
IMAGENET_S_IGNORE = 1000


class LabelEncodingError(CourseError, ValueError):
    """A label image is not in the encoding its dataset uses."""


def encode_imagenet_s(label: np.ndarray) -> np.ndarray:
    """H×W integer ids (0 'other', 1..K, 1000 ignore; negative ids become 1000) → H×W×3 uint8 RGB."""
    ids = np.asarray(label).astype(np.int64)
    if ids.ndim != 2:
        raise LabelEncodingError(f"expected an H×W label map, got shape {ids.shape}")
    ids = np.where(ids < 0, IMAGENET_S_IGNORE, ids)
    if ids.max(initial=0) > 65535:
        raise LabelEncodingError(f"label id {ids.max()} does not fit the R + 256·G encoding")
    rgb = np.zeros(ids.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    return rgb


def decode_imagenet_s(rgb: np.ndarray, source: str | Path = "label image") -> np.ndarray:
    """H×W×3 uint8 (R + 256·G) → H×W int32 ids. Raises if the array is not an RGB label image."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise LabelEncodingError(
            f"{source}: ImageNet-S labels are RGB PNGs with id = R + 256·G, "
            f"but this image has shape {rgb.shape} (a single-channel or palette PNG?)"
        )
    return rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)


def write_imagenet_s_png(path: str | Path, label: np.ndarray) -> None:
    """Save an H×W id map as an ImageNet-S RGB label PNG (creates parent folders). The file appears under its
    name only once completely written (:func:`course_lib.cli.replace_when_written`), so an interrupted run never
    leaves a half-written label that a later read would take as a finished one."""
    with replace_when_written(path) as partial:
        Image.fromarray(encode_imagenet_s(label), mode="RGB").save(partial, format="PNG")


def read_imagenet_s_png(path: str | Path, num_classes: int | None = None,
                        dtype: np.dtype | type = np.int32) -> np.ndarray:
    """Read an ImageNet-S label PNG → H×W ids (0 'other', 1..K, 1000 ignore) of ``dtype``.

    With ``num_classes`` the ids are checked to lie in ``{0..K} ∪ {1000}``. ``dtype=np.uint16`` holds
    every id the encoding can store in half the memory of the default ``int32`` and saves a conversion
    (the evaluator reads its files so). A file Pillow cannot decode (truncated, damaged, not a PNG) raises
    :class:`LabelEncodingError` naming ``path``; a missing file raises ``FileNotFoundError``.
    """
    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
            pixels = image.tobytes("raw", "RGBX" if mode == "RGB" else mode) if mode in ("RGB", "RGBA") else b""
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as error:
        raise LabelEncodingError(f"{path}: cannot be read as a PNG ({error}); the file is truncated or damaged: "
                                 "write or download it again") from None
    if mode not in ("RGB", "RGBA"):
        raise LabelEncodingError(f"{path}: ImageNet-S labels are RGB PNGs with id = R + 256·G, got PIL mode {mode!r}")
    ids = np.frombuffer(pixels, "<u2").reshape(height, width, 2)[..., 0].astype(dtype)
    if num_classes is not None:
        bad = (ids > num_classes) & (ids != IMAGENET_S_IGNORE)
        if bad.any():
            raise LabelEncodingError(
                f"{path}: ids {sorted(np.unique(ids[bad]).tolist())[:5]} are outside 0..{num_classes} "
                f"and not the ignore id {IMAGENET_S_IGNORE}; is this the right subset (num_classes={num_classes})?"
            )
    return ids


def read_index_png(path: str | Path) -> np.ndarray:
    """Read a single-channel (mode ``L``, ``P`` or ``I``) label PNG → H×W int64 indices.

    Palette PNGs (PASCAL VOC) give their palette indices, not colours. RGB images are refused.
    """
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise LabelEncodingError(
                f"{path}: expected a single-channel label PNG (mode L, P or I), got mode {image.mode!r}; "
                "is this a colour visualisation rather than the label file?"
            )
        return np.asarray(image).astype(np.int64)
