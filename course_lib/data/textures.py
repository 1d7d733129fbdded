"""The toy world's texture bank: grey-level textures that carry the class, not the colour.

Every texture is a ``T×T`` float32 map in ``[0, 1]`` (``T ≥ 160``) that the toy world crops at a
random offset and colourises with a random pair of colours (see :mod:`course_lib.data.toyworld`).
Two families, all recognisable inside an 8×8 to 16×16 pixel patch of a 96-px image, because they
differ in frequency, orientation and structure:

- **photographs** shipped with scikit-image (offline, no download): ``grass``, ``gravel``,
  ``brick`` (rotated so the courses run horizontally), ``speckle`` (the Hubble deep field),
  rescaled so that their structures are a few pixels wide;
- **procedural** patterns: smooth gradients, waves, fine noise, wood grain, dots, stripes at an angle,
  checkers, cross-hatching, zig-zags, honeycombs, rings, herringbone, wavy lines.

The textures are fixed (the bank is built from a fixed seed) and the pixel scale is fixed: an
image of 64 or 256 px shows more or fewer periods of the same textures, not a zoomed copy.
:func:`texture_bank` builds the bank once per process (about half a second) and caches it; windows
larger than the default bank's textures (renders of more than 128 px) come from a second,
512-px bank with the same pixel scale (built on first use).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from scipy import ndimage

BANK_SIZE = 256
"""Side of the procedural textures; photographs keep their rescaled size (at least 160 px)."""
LARGE_BANK_SIZE = 512
"""Side of every texture of the large bank, which serves windows that do not fit the default one
(toy-world renders of more than 128 px, up to 256 px with room for random offsets)."""

_BANK_SEED = 2022


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(y, x)``, each ``size×size`` float64."""
    return np.mgrid[0:size, 0:size].astype(np.float64)


def _stretch(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low``-``high`` percentile range to ``[0, 1]`` (clipped), as float32."""
    lo, hi = np.percentile(values, [low, high])
    return np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _square_wave(phase: np.ndarray, sharpness: float = 2.0) -> np.ndarray:
    """A softened square wave in ``[0, 1]`` of ``phase`` (period 1): anti-aliased stripes."""
    return np.clip(0.5 + sharpness * np.sin(2 * np.pi * phase), 0.0, 1.0)


def _lattice_distance(y: np.ndarray, x: np.ndarray, spacing: float, hexagonal: bool = True) -> np.ndarray:
    """Distance of every pixel to the nearest point of a square or hexagonal lattice."""
    row_height = spacing * (np.sqrt(3) / 2 if hexagonal else 1.0)
    best = np.full(y.shape, np.inf)
    row = np.floor(y / row_height)
    for row_offset in (-1, 0, 1, 2):  # a handful of candidate rows covers the nearest point
        r = row + row_offset
        shift = (np.mod(r, 2) * spacing / 2) if hexagonal else 0.0
        cx = np.round((x - shift) / spacing) * spacing + shift
        best = np.minimum(best, np.hypot(y - r * row_height, x - cx))
    return best


def _smooth_noise(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    """White noise blurred with a Gaussian of ``sigma`` px, standardised to zero mean, unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (field - field.mean()) / field.std()


def _photo(name: str, scale: float, rotate: bool = False) -> np.ndarray:
    """A grey-level scikit-image photograph, rescaled by ``scale`` with anti-aliasing, with
    its slow illumination changes removed and its contrast stretched to ``[0, 1]``."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import rescale

    image = getattr(skimage.data, name)()
    image = rgb2gray(image[..., :3]) if image.ndim == 3 else image / 255.0
    if rotate:
        image = np.rot90(image)
    image = rescale(image, scale, anti_aliasing=True)
    image = image - ndimage.gaussian_filter(image, sigma=12) + image.mean()
    return _stretch(image)


def _sky(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth, almost flat gradients (no structure at patch scale)."""
    return np.clip(0.5 + 0.2 * _smooth_noise(rng, sigma=28, size=size), 0.0, 1.0).astype(np.float32)


def _water(rng: np.random.Generator, size: int) -> np.ndarray:
    """Horizontal ripples (period ~6 px) whose phase wobbles slowly."""
    y, x = _grid(size)
    phase = (y + 2.5 * _smooth_noise(rng, sigma=10, size=size)) / 6.0
    ripples = 0.5 + 0.5 * np.sin(2 * np.pi * phase) + 0.08 * _smooth_noise(rng, sigma=1.0, size=size)
    return _stretch(ripples)


def _sand(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fine isotropic grain (~1-2 px), the highest frequency in the bank."""
    return _stretch(_smooth_noise(rng, sigma=0.7, size=size) + 0.3 * _smooth_noise(rng, sigma=3.0, size=size))


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vertical grain: streaks of irregular spacing (~3-6 px), long along y, thin along x."""
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size)), (10.0, 0.9), mode="wrap")
    return _stretch(grain)


def _dots(rng: np.random.Generator, size: int) -> np.ndarray:
    """Polka dots of radius 2.2 px on a hexagonal lattice of spacing 8 px."""
    y, x = _grid(size)
    return np.clip(2.7 - _lattice_distance(y, x, 8.0), 0.0, 1.0).astype(np.float32)


def _diagonal_stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes at 45 degrees, period 6 px."""
    y, x = _grid(size)
    return _square_wave((x + y) / (6.0 * np.sqrt(2))).astype(np.float32)


def _vertical_stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vertical stripes, period 5 px."""
    y, x = _grid(size)
    return _square_wave(x / 5.0).astype(np.float32)


def _checker(rng: np.random.Generator, size: int) -> np.ndarray:
    """An axis-aligned checkerboard of 5-px cells."""
    y, x = _grid(size)
    return np.clip(0.5 + 3.0 * np.sin(np.pi * x / 5.0) * np.sin(np.pi * y / 5.0), 0.0, 1.0).astype(np.float32)


def _crosshatch(rng: np.random.Generator, size: int) -> np.ndarray:
    """Thin dark lines along both diagonals (period 7 px) on a light ground."""
    y, x = _grid(size)
    period = 7.0

    def line(u: np.ndarray) -> np.ndarray:
        distance = np.abs(np.mod(u, period) - period / 2)  # 0 on the line centre
        return np.clip(1.5 * (distance - 0.7), 0.0, 1.0)

    return np.minimum(line((x + y) / np.sqrt(2)), line((x - y) / np.sqrt(2))).astype(np.float32)


def _zigzag(rng: np.random.Generator, size: int) -> np.ndarray:
    """Horizontal chevrons: stripes of period 6 px that zig-zag with period 10 px."""
    y, x = _grid(size)
    triangle = 2 * np.abs(np.mod(x / 10.0, 1.0) - 0.5)  # 0..1..0
    return _square_wave((y + 6.0 * triangle) / 6.0).astype(np.float32)


def _honeycomb(rng: np.random.Generator, size: int) -> np.ndarray:
    """Hexagonal cells (spacing 9 px) outlined by dark walls."""
    y, x = _grid(size)
    spacing = 9.0
    # the walls are where the two nearest lattice points are equally far
    row_height = spacing * np.sqrt(3) / 2
    row = np.floor(y / row_height)
    candidates = []
    for row_offset in (-1, 0, 1, 2):
        r = row + row_offset
        shift = np.mod(r, 2) * spacing / 2
        for column_offset in (-1, 0, 1):
            cx = (np.round((x - shift) / spacing) + column_offset) * spacing + shift
            candidates.append(np.hypot(y - r * row_height, x - cx))
    nearest = np.sort(np.stack(candidates), axis=0)
    return np.clip(nearest[1] - nearest[0] - 0.8, 0.0, 1.0).astype(np.float32)


def _rings(rng: np.random.Generator, size: int) -> np.ndarray:
    """Small open rings (radius 3 px, 1-px wall) on a hexagonal lattice of spacing 10 px."""
    y, x = _grid(size)
    distance = _lattice_distance(y, x, 10.0)
    return np.clip(1.6 - np.abs(distance - 3.0) * 1.6, 0.0, 1.0).astype(np.float32)


def _herringbone(rng: np.random.Generator, size: int) -> np.ndarray:
    """Diagonal stripes (period 5 px) whose direction flips in vertical bands 8 px wide."""
    y, x = _grid(size)
    direction = np.where(np.mod(np.floor(x / 8.0), 2) == 0, 1.0, -1.0)
    return _square_wave((y + direction * x) / (5.0 * np.sqrt(2))).astype(np.float32)


def _wavy_lines(rng: np.random.Generator, size: int) -> np.ndarray:
    """Vertical lines (period 6 px) that meander with period 12 px."""
    y, x = _grid(size)
    return _square_wave((x + 2.5 * np.sin(2 * np.pi * y / 12.0)) / 6.0, sharpness=1.2).astype(np.float32)


_PROCEDURAL: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "sky": _sky,
    "water": _water,
    "sand": _sand,
    "wood": _wood,
    "dots": _dots,
    "diagonal_stripes": _diagonal_stripes,
    "vertical_stripes": _vertical_stripes,
    "checker": _checker,
    "crosshatch": _crosshatch,
    "zigzag": _zigzag,
    "honeycomb": _honeycomb,
    "rings": _rings,
    "herringbone": _herringbone,
    "wavy_lines": _wavy_lines,
}

_PHOTOGRAPHS: dict[str, tuple[str, float, bool]] = {
    # texture name: (skimage.data function, scale, rotate by 90 degrees)
    "grass": ("grass", 0.5, False),
    "gravel": ("gravel", 0.4, False),
    "brick": ("brick", 0.35, True),
    "speckle": ("hubble_deep_field", 0.35, False),
}

TEXTURE_NAMES: tuple[str, ...] = tuple(_PROCEDURAL) + tuple(_PHOTOGRAPHS)
"""Every texture of the bank."""

FLIPPABLE: frozenset[str] = frozenset({"sky", "sand", "grass", "gravel", "brick", "wood", "speckle", "water"})
"""Textures whose class survives a horizontal or vertical flip (no diagonal orientation)."""


@lru_cache(maxsize=2)
def texture_bank(size: int = BANK_SIZE) -> dict[str, np.ndarray]:
    """All textures of the bank, ``name → T×T`` float32 in ``[0, 1]`` (built once per process and size).

    ``size`` is the side of the procedural textures: :data:`BANK_SIZE` (the default bank, which
    every image of at most 128 px uses) or :data:`LARGE_BANK_SIZE` (the bank of larger renders).
    The procedural textures are computed on a ``size×size`` grid with the same pixel scale (periods,
    blur widths in pixels), so a larger bank has more periods, not larger ones; the photographs
    keep their rescaled resolution and are mirrored (``numpy.pad(mode="symmetric")``) up to
    ``size`` where they are smaller: every photograph is in :data:`FLIPPABLE`, so a mirrored copy
    shows the same class.

    The arrays are read-only: crop and copy them, never modify them in place.
    """
    if size not in (BANK_SIZE, LARGE_BANK_SIZE):
        raise ValueError(f"texture banks are {BANK_SIZE} or {LARGE_BANK_SIZE} px, got size={size!r}")
    rng = np.random.default_rng(_BANK_SEED)
    bank = {name: make(rng, size) for name, make in _PROCEDURAL.items()}
    for name, spec in _PHOTOGRAPHS.items():
        photo = _photo(*spec)
        if size > BANK_SIZE:
            padding = [(0, max(size - side, 0)) for side in photo.shape]
            photo = np.pad(photo, padding, mode="symmetric")
        bank[name] = photo
    for texture in bank.values():
        texture.setflags(write=False)
    return bank


def random_crop(
    texture_name: str, height: int, width: int, rng: np.random.Generator, flip: bool | None = None
) -> np.ndarray:
    """A random ``height×width`` window of a bank texture (a view; copy it before writing).

    The window comes from the default bank when it fits there (every image of at most 128 px),
    otherwise from the large bank (:data:`LARGE_BANK_SIZE`, up to 512×512 windows): both have the
    same pixel scale. Textures listed in :data:`FLIPPABLE` are also flipped at random unless
    ``flip=False``.
    """
    texture = texture_bank()[texture_name]
    if height > texture.shape[0] or width > texture.shape[1]:
        texture = texture_bank(LARGE_BANK_SIZE)[texture_name]
    if height > texture.shape[0] or width > texture.shape[1]:
        raise ValueError(
            f"a {height}×{width} crop does not fit texture {texture_name!r} of shape {texture.shape}; "
            f"the texture bank serves windows of at most {LARGE_BANK_SIZE}×{LARGE_BANK_SIZE} px"
        )
    top = int(rng.integers(0, texture.shape[0] - height + 1))
    left = int(rng.integers(0, texture.shape[1] - width + 1))
    window = texture[top : top + height, left : left + width]
    if flip is not False and texture_name in FLIPPABLE:
        flips = rng.integers(0, 2, size=2)
        window = window[:: -1 if flips[0] else 1, :: -1 if flips[1] else 1]
    return window
