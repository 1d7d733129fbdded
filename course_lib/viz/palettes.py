"""Colours for label maps: a deterministic class palette, colourised labels and overlays.

Conventions used by every figure of the course:

- class ``i`` is drawn in ``class_palette(n)[i]``: the first 19 colours are Kelly's colours of
  maximum contrast (white, black and grey left out), the rest come from the PASCAL VOC bit
  pattern, so up to 2²⁴ classes get distinct colours and the same id always gets the same colour;
- ignore pixels (any negative id, e.g. -1) are drawn black, :data:`IGNORE_COLOUR`; map dataset
  ignore ids (255, 1000) to -1 before colourising;
- ``class_palette(n, background=True)`` draws id 0 ('other' in ImageNet-S) dark grey.

Images may be torch tensors ``3×H×W`` or NumPy arrays ``H×W×3`` (float in ``[0, 1]`` or uint8).
"""
from __future__ import annotations

import numpy as np
import torch

IGNORE_COLOUR = np.array([0, 0, 0], dtype=np.uint8)
"""Colour of ignore pixels (negative ids): black. No palette colour is black."""

BACKGROUND_COLOUR = np.array([72, 72, 72], dtype=np.uint8)
"""Colour of id 0 with ``class_palette(n, background=True)``: dark grey."""

_KELLY = np.array(
    [
        [0xF3, 0xC3, 0x00], [0x87, 0x56, 0x92], [0xF3, 0x84, 0x00], [0xA1, 0xCA, 0xF1],
        [0xBE, 0x00, 0x32], [0xC2, 0xB2, 0x80], [0x00, 0x88, 0x56], [0xE6, 0x8F, 0xAC],
        [0x00, 0x67, 0xA5], [0xF9, 0x93, 0x79], [0x60, 0x4E, 0x97], [0xF6, 0xA6, 0x00],
        [0xB3, 0x44, 0x6C], [0xDC, 0xD3, 0x00], [0x88, 0x2D, 0x17], [0x8D, 0xB6, 0x00],
        [0x65, 0x45, 0x22], [0xE2, 0x58, 0x22], [0x2B, 0x3D, 0x26],
    ],
    dtype=np.uint8,
)


def _bit_pattern_colours(indices: np.ndarray) -> np.ndarray:
    """PASCAL VOC colour map: the bits of ``index`` spread over the high bits of R, G and B
    (distinct for distinct indices below 2²⁴; only index 0 is black)."""
    colours = np.zeros((len(indices), 3), dtype=np.int64)
    values = indices.astype(np.int64).copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((values >> channel) & 1) << shift
        values >>= 3
    return colours.astype(np.uint8)


def _colour_codes(colours: np.ndarray) -> np.ndarray:
    """One integer per ``n×3`` uint8 colour, for set operations."""
    return (colours.astype(np.int64) * np.array([1 << 16, 1 << 8, 1])).sum(1)


def class_palette(n: int, background: bool = False) -> np.ndarray:
    """``n×3`` uint8 colours, one per class id, distinct and deterministic.

    With ``background=True`` id 0 is dark grey (:data:`BACKGROUND_COLOUR`, for 'other') and the
    categories 1..n-1 take the colours that ids 0..n-2 have otherwise.
    """
    if n < 0:
        raise ValueError(f"a palette needs a non-negative number of colours, got {n}")
    if background:
        return np.concatenate([BACKGROUND_COLOUR[None], class_palette(max(n - 1, 0))])[:n]
    missing = max(n - len(_KELLY), 0)
    extra = _bit_pattern_colours(np.arange(1, 2 * missing + 2))
    # skip bit-pattern colours that repeat a Kelly colour or the background grey
    reserved = np.concatenate([_KELLY, BACKGROUND_COLOUR[None]])
    extra = extra[~np.isin(_colour_codes(extra), _colour_codes(reserved))][:missing]
    return np.concatenate([_KELLY, extra])[:n].copy()


def _as_numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def to_uint8_image(image) -> np.ndarray:
    """Any displayable image → ``H×W×3`` uint8.

    Accepts torch ``3×H×W`` (or ``1×H×W``) and NumPy ``H×W×3`` (or ``H×W``, or a channel-first
    array when the last axis is not 1 or 3), float in ``[0, 1]`` or uint8. Normalised images
    (values far outside ``[0, 1]``) are refused: undo the normalisation first.
    """
    is_tensor = isinstance(image, torch.Tensor)
    array = _as_numpy(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"expected one image (3×H×W tensor or H×W×3 array), got shape {array.shape}")
    channel_first = array.shape[0] in (1, 3) and (is_tensor or array.shape[-1] not in (1, 3))
    if channel_first:
        array = array.transpose(1, 2, 0)
    if array.shape[-1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 colour channels, got an image of shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"expected a float or uint8 image, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.size and (array.min() < -0.01 or array.max() > 1.01):
        raise ValueError(
            f"float images must lie in [0, 1], got values in [{array.min():.2f}, {array.max():.2f}]; "
            "is this image normalised with the ImageNet mean and std? Undo the normalisation first."
        )
    return np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)


def colorize(label, palette: np.ndarray | None = None) -> np.ndarray:
    """Integer label map ``H×W`` (or ``B×H×W``) → colours ``H×W×3`` (``B×H×W×3``) uint8.

    ``palette`` is ``n×3`` uint8 (default :func:`class_palette` with as many colours as the
    largest id needs); negative ids (ignore) become :data:`IGNORE_COLOUR` (black).
    """
    ids = _as_numpy(label)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {ids.dtype}; "
                        "take the argmax of scores before colourising")
    ids = ids.astype(np.int64)
    largest = int(ids.max(initial=-1))
    palette = class_palette(largest + 1) if palette is None else np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"a palette is n×3 uint8, got shape {palette.shape}")
    if largest >= len(palette):
        raise ValueError(f"label id {largest} has no colour in a palette of {len(palette)} colours; "
                         f"use class_palette({largest + 1}) or a larger palette")
    colours = np.concatenate([palette, IGNORE_COLOUR[None]])  # index -1 → ignore colour
    return colours[np.where(ids < 0, -1, ids)]


def overlay(image, label, alpha: float = 0.5, palette: np.ndarray | None = None) -> np.ndarray:
    """Blend the colourised ``label`` (H×W) over ``image`` → ``H×W×3`` uint8.

    ``alpha`` is the weight of the label colours; ignore pixels (negative ids) show the image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    pixels = to_uint8_image(image).astype(np.float32)
    ids = _as_numpy(label)
    if ids.shape != pixels.shape[:2]:
        raise ValueError(f"label of shape {ids.shape} does not match the image of size {pixels.shape[:2]}")
    colours = colorize(ids, palette).astype(np.float32)
    weight = np.where(ids < 0, 0.0, alpha)[..., None]
    return np.round((1 - weight) * pixels + weight * colours).astype(np.uint8)
