"""The toy world: generated images with pixel labels, a small offline segmentation benchmark.

Two kinds of images, both built from the texture bank of :mod:`course_lib.data.textures`:

- ``scenes`` (CocoStuff-like, :data:`SCENE_CLASSES`): 2-4 *stuff* regions (v2: 1-3, by theme;
  a smooth random partition of the image, from horizon-like bands to wavy blobs) and 1-4 *things* on top
  (shapes of radius 13-28 % of the image side, at random positions, rotations and aspect ratios).
  Every pixel is labelled (no ignore pixels).
- ``objects`` (ImageNet-S-like, :data:`OBJECT_CLASSES`): one object of a main category per
  image, covering 3-60 % of the image (the square root of the fraction is uniform), on a
  cluttered background that counts as 'other' (id 0): 2-3 stuff textures and 2-6 small
  distractor blobs that belong to no category.
  A one-pixel band inside the object's outline is ignore (-1), as ImageNet-S marks unsure pixels
  with 1000. Image ``i`` shows category ``1 + i mod K``, so every prefix of a split is balanced.

Each class has its own texture (and, for things and objects, its own shape); **colour never
decides the class**: every region or shape is colourised by mapping its texture's grey levels
between two random colours of one pool shared by all classes (:data:`COLOUR_POOL`), in random
order (textures appear in positive or negative), with brightness and colour jitter and a little
sensor noise. Clustering raw pixel colours therefore
does poorly, while features that see texture and shape at the scale of an 8×8 to 16×16 patch
separate the classes.

Images are deterministic: image ``i`` depends only on ``(seed, kind, split, i)`` (and ``size``,
``version``), through a NumPy ``SeedSequence``; train and validation images never coincide.
Textures keep their pixel scale at every size (64-256 px); the layout scales with the image, so a
192-px render shows the same kind of scene at twice the resolution (for STEGO's five-crop, whose
corner crops of half the side are then 96-px views at the textures' native scale). Generating a
96-px image takes 1-3 ms on one core, a 192-px one about 6 ms.

**Version 2** (``ToyWorld(..., version=2)``; version 1 stays the default until the shipped runs are
retrained on v2): each ``scenes`` image first draws one of the :data:`SCENE_THEMES` (field, street,
indoor, shore), a prior over its stuff and things and their counts, so that classes co-occur as
in a photo collection (the nearest neighbour of a street scene is a street scene), while a share
:data:`THEME_LEAK` of every draw ignores the theme: a theme makes classes likely, it never decides
them. Colours are drawn as in v1. ``objects`` images are the same in both versions.
:mod:`course_lib.data.toyworld_report` measures what the themes change.

Default sizes (:data:`DEFAULT_N_IMAGES`): 1000 training and 200 validation images of each kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon as polygon_pixels
from torch.utils.data import Dataset

from ..config import progress
from .label_png import write_imagenet_s_png
from .textures import random_crop

KINDS = ("scenes", "objects")
SPLITS = ("train", "val")
MIN_SIZE, MAX_SIZE = 64, 256
DEFAULT_N_IMAGES = {
    ("scenes", "train"): 1000,
    ("scenes", "val"): 200,
    ("objects", "train"): 1000,
    ("objects", "val"): 200,
}


@dataclass(frozen=True)
class ClassSpec:
    """One toy-world class: its name, its texture (bank name) and its shape (``None`` for stuff)."""

    name: str
    texture: str | None
    shape: str | None = None

    @property
    def is_thing(self) -> bool:
        return self.shape is not None


SCENE_SPECS: tuple[ClassSpec, ...] = (
    ClassSpec("sky", "sky"),
    ClassSpec("water", "water"),
    ClassSpec("grass", "grass"),
    ClassSpec("gravel", "gravel"),
    ClassSpec("brick", "brick"),
    ClassSpec("sand", "sand"),
    ClassSpec("wood", "wood"),
    ClassSpec("ball", "dots", "disc"),
    ClassSpec("sign", "diagonal_stripes", "triangle"),
    ClassSpec("box", "checker", "rectangle"),
    ClassSpec("star", "crosshatch", "star"),
    ClassSpec("kite", "zigzag", "diamond"),
)
"""The ``scenes`` classes, ids in order: 7 stuff classes then 5 thing classes."""

OBJECT_SPECS: tuple[ClassSpec, ...] = (
    ClassSpec("other", None),
    ClassSpec("ball", "dots", "disc"),
    ClassSpec("sign", "diagonal_stripes", "triangle"),
    ClassSpec("box", "checker", "rectangle"),
    ClassSpec("star", "crosshatch", "star"),
    ClassSpec("kite", "zigzag", "diamond"),
    ClassSpec("ring", "vertical_stripes", "annulus"),
    ClassSpec("cross", "wavy_lines", "cross"),
    ClassSpec("nut", "honeycomb", "hexagon"),
    ClassSpec("moon", "rings", "crescent"),
    ClassSpec("heart", "herringbone", "heart"),
)
"""The ``objects`` classes: id 0 'other' (background), then 10 categories."""

SCENE_CLASSES: tuple[str, ...] = tuple(spec.name for spec in SCENE_SPECS)
OBJECT_CLASSES: tuple[str, ...] = tuple(spec.name for spec in OBJECT_SPECS)

BACKGROUND_TEXTURES: tuple[str, ...] = ("sky", "water", "grass", "gravel", "brick", "sand", "wood", "speckle")
"""Textures of the ``objects`` background and distractors ('other'): none is a category's texture."""

COLOUR_POOL = np.array(
    [
        [0.08, 0.08, 0.10],  # near black
        [0.93, 0.93, 0.90],  # near white
        [0.50, 0.50, 0.50],  # grey
        [0.80, 0.15, 0.12],  # red
        [0.95, 0.55, 0.10],  # orange
        [0.95, 0.85, 0.25],  # yellow
        [0.50, 0.50, 0.12],  # olive
        [0.20, 0.65, 0.20],  # green
        [0.08, 0.32, 0.15],  # dark green
        [0.10, 0.58, 0.60],  # teal
        [0.50, 0.72, 0.95],  # sky blue
        [0.15, 0.28, 0.80],  # blue
        [0.08, 0.10, 0.35],  # navy
        [0.50, 0.22, 0.62],  # purple
        [0.95, 0.58, 0.72],  # pink
        [0.45, 0.28, 0.12],  # brown
        [0.86, 0.76, 0.56],  # beige
    ],
    dtype=np.float32,
)
"""Colours shared by every class; each instance maps its texture between two of them."""

_LUMINANCE = COLOUR_POOL @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MIN_LUMINANCE_GAP = 0.2  # the two colours of an instance differ enough to show its texture
_COLOUR_PAIRS = np.array(
    [(dark, light) for dark in range(len(COLOUR_POOL)) for light in range(len(COLOUR_POOL))
     if _LUMINANCE[light] - _LUMINANCE[dark] >= _MIN_LUMINANCE_GAP]
)
_SENSOR_NOISE = 0.015
_KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}
_SPLIT_CODES = {split: code for code, split in enumerate(SPLITS)}


def _regular_polygon(corners: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(corners) / corners
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    angles = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _cross(a: float = 0.36) -> np.ndarray:
    """A plus sign whose arms are ``2a`` wide."""
    return np.array([(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
                     (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)], dtype=np.float64)


def _heart(corners: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, corners, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 16.5


_DISC = _regular_polygon(40)
SHAPES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    # shape: (outline, hole or None), unit size, centred on the origin, (x, y) vertices
    "disc": (_DISC, None),
    "triangle": (_regular_polygon(3, 1.1, -np.pi / 2), None),
    "rectangle": (np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]), None),
    "star": (_star(), None),
    "diamond": (np.array([(0.0, -1.0), (0.65, 0.0), (0.0, 1.0), (-0.65, 0.0)]), None),
    "annulus": (_DISC, 0.55 * _DISC),
    "cross": (_cross(), None),
    "hexagon": (_regular_polygon(6), None),
    "crescent": (_DISC, 0.85 * _DISC + np.array([0.45, -0.2])),
    "heart": (_heart(), None),
}
"""Outline (and hole) polygons of the thing and object shapes."""


def _polygon_area(vertices: np.ndarray) -> float:
    x, y = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _shape_area(shape: str) -> float:
    """Approximate area of a unit shape (outline minus hole, at least 35 % of the outline: the
    crescent's hole sticks out of its disc)."""
    outline, hole = SHAPES[shape]
    area = _polygon_area(outline) - (_polygon_area(hole) if hole is not None else 0.0)
    return max(area, 0.35 * _polygon_area(outline))


@lru_cache(maxsize=8)
def _smooth_basis(size: int, knots: int) -> np.ndarray:
    """``size×knots`` Gaussian interpolation weights: ``B @ G @ B.T`` is a smooth ``size×size``
    field from a ``knots×knots`` grid of random values."""
    positions = (np.arange(size) + 0.5) / size
    centres = np.linspace(-0.15, 1.15, knots)
    width = 1.3 / (knots - 1)
    weights = np.exp(-0.5 * ((positions[:, None] - centres[None, :]) / (0.6 * width)) ** 2)
    return (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def _partition(rng: np.random.Generator, size: int, regions: int) -> np.ndarray:
    """``size×size`` region index in ``0..regions-1``: the argmax of smooth random fields, each
    tilted by a random linear ramp, so that regions range from bands to blobs."""
    basis = _smooth_basis(size, 5)
    noise = basis[None] @ rng.standard_normal((regions, 5, 5)).astype(np.float32) @ basis.T[None]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    angles = rng.uniform(0, 2 * np.pi, regions)
    ramps = (np.cos(angles)[:, None, None] * coords[None, None, :]
             + np.sin(angles)[:, None, None] * coords[None, :, None])
    tilt = rng.uniform(0.5, 3.0, (regions, 1, 1))
    return np.argmax(noise + tilt * ramps, axis=0)


def _random_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of the shared pool that differ in luminance, in random order (so a texture
    may appear in negative: its mean brightness says nothing about its class), with brightness
    and colour jitter."""
    pair = _COLOUR_PAIRS[rng.integers(len(_COLOUR_PAIRS))]
    low, high = COLOUR_POOL[pair if rng.integers(2) else pair[::-1]]
    brightness = rng.uniform(0.85, 1.15)
    jitter = rng.normal(0.0, 0.03, (2, 3)).astype(np.float32)
    return (np.clip(low * brightness + jitter[0], 0, 1), np.clip(high * brightness + jitter[1], 0, 1))


def _colourise(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey levels (any shape ``…``) in ``[0, 1]`` → colours ``…×3`` between two random pool colours."""
    low, high = _random_colours(rng)
    return low + grey[..., None] * (high - low)


def _shape_mask(shape: str, centre: np.ndarray, radius: float, aspect: float, angle: float,
                size: int) -> np.ndarray:
    """``size×size`` bool mask of a shape scaled to ``radius`` px, stretched by ``aspect``
    (x / y), rotated by ``angle`` (radians) and centred on ``centre`` = (x, y) px."""
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    mask = np.zeros((size, size), dtype=bool)

    def pixels(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = (vertices * stretch * radius) @ rotation.T + centre
        return polygon_pixels(points[:, 1], points[:, 0], shape=(size, size))

    outline, hole = SHAPES[shape]
    mask[pixels(outline)] = True
    if hole is not None:
        mask[pixels(hole)] = False
    return mask


def _paint_shape(image: np.ndarray, mask: np.ndarray, texture: str, rng: np.random.Generator) -> None:
    """Paint a colourised crop of ``texture`` into ``image`` (H×W×3) where ``mask`` is set."""
    size = mask.shape[0]
    image[mask] = _colourise(random_crop(texture, size, size, rng)[mask], rng)


def _paint_stuff(image: np.ndarray, rng: np.random.Generator, textures: list[str]) -> np.ndarray:
    """Fill ``image`` with a random partition into ``len(textures)`` textured regions; returns
    the H×W region index."""
    size = image.shape[0]
    regions = _partition(rng, size, len(textures))
    for index, texture in enumerate(textures):
        mask = regions == index
        if mask.any():
            _paint_shape(image, mask, texture, rng)
    return regions


def _random_pose(rng: np.random.Generator, shape: str, size: int, radius: float,
                 margin: float) -> tuple[np.ndarray, float, float]:
    """Centre (x, y), aspect ratio and angle of a shape; the centre stays ``margin·radius`` from the edges."""
    low, high = margin * radius, size - margin * radius
    centre = rng.uniform(low, high, 2) if high > low else np.full(2, size / 2)
    spread = 0.7 if shape == "rectangle" else 0.25  # log aspect ratio range
    aspect = float(np.exp(rng.uniform(-spread, spread)))
    angle = float(rng.uniform(0, 2 * np.pi))
    return centre, aspect, angle


@dataclass(frozen=True)
class SceneTheme:
    """A kind of ``scenes`` image (toy world v2): a prior over which stuff and things appear, and how many.

    ``stuff`` and ``things`` map class names to relative weights; classes of the other themes keep
    a small share :data:`THEME_LEAK` of every draw, so a theme makes its classes likely without
    deciding them. ``n_stuff`` and ``n_things`` are inclusive ranges of region and thing counts.
    """

    name: str
    stuff: dict[str, float]
    things: dict[str, float]
    n_stuff: tuple[int, int] = (2, 3)
    n_things: tuple[int, int] = (1, 4)

    def probabilities(self, class_ids: list[int], weights: dict[str, float]) -> np.ndarray:
        """Draw probabilities over ``class_ids`` (ids of :data:`SCENE_SPECS`): the theme's weights,
        normalised, mixed with a uniform draw of weight :data:`THEME_LEAK`."""
        theme = np.array([weights.get(SCENE_SPECS[i].name, 0.0) for i in class_ids])
        return (1 - THEME_LEAK) * theme / theme.sum() + THEME_LEAK / len(class_ids)


THEME_LEAK = 0.1
"""Share of every stuff and thing draw that ignores the theme (uniform over the stuff or thing classes)."""

SCENE_THEMES: tuple[SceneTheme, ...] = (
    SceneTheme("field", stuff={"grass": 3, "sky": 2}, things={"kite": 3, "ball": 1}, n_stuff=(1, 2)),
    SceneTheme("street", stuff={"brick": 3, "gravel": 3}, things={"sign": 3, "box": 1}, n_stuff=(1, 2)),
    SceneTheme("indoor", stuff={"wood": 3, "brick": 1}, things={"box": 3, "star": 1}, n_stuff=(1, 2)),
    SceneTheme("shore", stuff={"water": 3, "sand": 3, "sky": 2}, things={"ball": 3, "star": 1}, n_stuff=(2, 3)),
)
"""The themes of toy world v2 ``scenes``, each drawn with equal probability."""

VERSIONS = (1, 2)
_STUFF_IDS = [i for i, spec in enumerate(SCENE_SPECS) if not spec.is_thing]
_THING_IDS = [i for i, spec in enumerate(SCENE_SPECS) if spec.is_thing]


def _choose_stuff(rng: np.random.Generator, theme: SceneTheme | None) -> np.ndarray:
    """Stuff class ids of one scene, distinct: 2-4 uniform ones (v1) or the theme's draw (v2)."""
    if theme is None:
        return rng.choice(_STUFF_IDS, size=int(rng.integers(2, 5)), replace=False)
    count = int(rng.integers(theme.n_stuff[0], theme.n_stuff[1] + 1))
    return rng.choice(_STUFF_IDS, size=count, replace=False, p=theme.probabilities(_STUFF_IDS, theme.stuff))


def _choose_things(rng: np.random.Generator, theme: SceneTheme | None) -> np.ndarray:
    """Thing class ids of one scene, with repeats: 1-4 uniform ones (v1) or the theme's draw (v2)."""
    if theme is None:
        return rng.choice(_THING_IDS, size=int(rng.integers(1, 5)))
    count = int(rng.integers(theme.n_things[0], theme.n_things[1] + 1))
    return rng.choice(_THING_IDS, size=count, p=theme.probabilities(_THING_IDS, theme.things))


def _render_scene(rng: np.random.Generator, size: int,
                  theme: SceneTheme | None = None) -> tuple[np.ndarray, np.ndarray]:
    image = np.empty((size, size, 3), dtype=np.float32)
    chosen = _choose_stuff(rng, theme)
    regions = _paint_stuff(image, rng, [SCENE_SPECS[i].texture for i in chosen])
    label = chosen[regions].astype(np.int64)
    for class_id in _choose_things(rng, theme):
        spec = SCENE_SPECS[class_id]
        radius = size * rng.uniform(0.13, 0.28)
        centre, aspect, angle = _random_pose(rng, spec.shape, size, radius, margin=0.3)
        mask = _shape_mask(spec.shape, centre, radius, aspect, angle, size)
        _paint_shape(image, mask, spec.texture, rng)
        label[mask] = class_id
    return image, label


def _render_object(rng: np.random.Generator, size: int, category: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.empty((size, size, 3), dtype=np.float32)
    background = rng.choice(BACKGROUND_TEXTURES, size=int(rng.integers(2, 4)), replace=False)
    _paint_stuff(image, rng, list(background))
    for _ in range(int(rng.integers(2, 7))):  # distractor blobs: ellipses of background textures
        radius = size * rng.uniform(0.04, 0.1)
        centre, aspect, angle = _random_pose(rng, "disc", size, radius, margin=0.0)
        mask = _shape_mask("disc", centre, radius, aspect * rng.uniform(0.5, 2.0), angle, size)
        _paint_shape(image, mask, str(rng.choice(BACKGROUND_TEXTURES)), rng)
    spec = OBJECT_SPECS[category]
    fraction = rng.uniform(np.sqrt(0.03), np.sqrt(0.6)) ** 2
    radius = size * np.sqrt(fraction / _shape_area(spec.shape))
    centre, aspect, angle = _random_pose(rng, spec.shape, size, radius, margin=0.8)
    mask = _shape_mask(spec.shape, centre, radius, aspect, angle, size)
    _paint_shape(image, mask, spec.texture, rng)
    label = np.zeros((size, size), dtype=np.int64)
    label[mask] = category
    label[mask & ~ndimage.binary_erosion(mask)] = -1  # unsure pixels on the outline
    return image, label


class ToyWorld(Dataset):
    """Generated images with pixel labels (see the module docstring for the design).

    Args:
        kind: ``"scenes"`` (CocoStuff-like, :data:`SCENE_CLASSES`) or ``"objects"``
            (ImageNet-S-like, :data:`OBJECT_CLASSES`, 0 = 'other').
        split: ``"train"`` or ``"val"``; the two never share an image.
        n_images: number of images; default :data:`DEFAULT_N_IMAGES` (1000 train, 200 val).
        size: image side in pixels, 64-256 (square images). Textures keep their pixel scale at
            every size while the layout (regions, thing sizes) scales with the image: a 192-px
            render is the same kind of scene at twice the resolution, so each corner crop of
            half its side (STEGO's five-crop, ``course_lib.data.five_crop``) is a 96-px image
            with native-scale textures and things twice as large as in a 96-px render.
        seed: non-negative integer; the same arguments always give the same images.
        version: ``1`` (default; the world every shipped run was trained on) or ``2``:
            ``scenes`` drawn from :data:`SCENE_THEMES` (:meth:`theme`); ``objects`` are the
            same in both versions.

    ``ds[i]`` is a dict: ``"image"`` 3×H×W float32 in [0, 1] (not normalised), ``"label"``
    H×W int64 (-1 ignore) and ``"meta"`` (``"name"``, ``"index"``, for ``objects``
    ``"category"``, the image's main category id, and for v2 ``scenes`` ``"theme"``, its theme's name).
    """

    def __init__(self, kind: str = "scenes", split: str = "train", n_images: int | None = None,
                 size: int = 96, seed: int = 0, version: int = 1):
        if kind not in KINDS:
            raise ValueError(f"Unknown toy-world kind {kind!r}: use one of {', '.join(map(repr, KINDS))}.")
        if split not in SPLITS:
            raise ValueError(f"Unknown toy-world split {split!r}: use one of {', '.join(map(repr, SPLITS))}.")
        if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(f"Toy-world images are {MIN_SIZE}-{MAX_SIZE} px wide, got size={size!r}; "
                             "resize the images in a transform for other resolutions.")
        if n_images is None:
            n_images = DEFAULT_N_IMAGES[(kind, split)]
        if not isinstance(n_images, (int, np.integer)) or n_images < 1:
            raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if version not in VERSIONS:
            raise ValueError(f"Unknown toy-world version {version!r}: use one of {', '.join(map(str, VERSIONS))}.")
        self.kind, self.split = kind, split
        self.n_images, self.size, self.seed, self.version = int(n_images), int(size), int(seed), int(version)
        self.class_specs: tuple[ClassSpec, ...] = SCENE_SPECS if kind == "scenes" else OBJECT_SPECS
        self.classes: list[str] = [spec.name for spec in self.class_specs]

    @property
    def num_classes(self) -> int:
        """Number of classes, 'other' included for ``objects``."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.n_images

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index < 0:
            index += self.n_images
        if not 0 <= index < self.n_images:
            raise IndexError(f"index {index} out of range for a toy world of {self.n_images} images")
        return index

    def category(self, index: int) -> int:
        """Main category id of ``objects`` image ``index`` (``1 + index mod K``)."""
        if self.kind != "objects":
            raise ValueError("only 'objects' images have a main category; use image_categories() for scenes")
        return 1 + self._check_index(index) % (self.num_classes - 1)

    def _rng(self, index: int) -> np.random.Generator:
        """The random stream of image ``index`` (its theme, if any, is its first draw)."""
        key = (_KIND_CODES[self.kind], _SPLIT_CODES[self.split], self._check_index(index))
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    @property
    def themed(self) -> bool:
        """True when the images are drawn from :data:`SCENE_THEMES` (v2 ``scenes``)."""
        return self.kind == "scenes" and self.version >= 2

    def _draw_theme(self, rng: np.random.Generator) -> SceneTheme | None:
        return SCENE_THEMES[int(rng.integers(len(SCENE_THEMES)))] if self.themed else None

    def theme(self, index: int) -> str:
        """Theme name of v2 ``scenes`` image ``index`` (one of :data:`SCENE_THEMES`), without rendering it."""
        if not self.themed:
            raise ValueError(f"only version-2 'scenes' images have a theme; this is {self!r}: "
                             "use ToyWorld('scenes', ..., version=2)")
        return self._draw_theme(self._rng(index)).name

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` as NumPy arrays: H×W×3 float32 in [0, 1] and H×W int64 labels."""
        index = self._check_index(index)
        rng = self._rng(index)
        if self.kind == "scenes":
            image, label = _render_scene(rng, self.size, self._draw_theme(rng))
        else:
            image, label = _render_object(rng, self.size, self.category(index))
        image += _SENSOR_NOISE * rng.standard_normal(image.shape, dtype=np.float32)
        return np.clip(image, 0.0, 1.0, out=image), label

    def name(self, index: int) -> str:
        """File stem of image ``index``, e.g. ``toy_scenes_val_000007``."""
        return f"toy_{self.kind}_{self.split}_{self._check_index(index):06d}"

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        image, label = self.render(index)
        meta = {"name": self.name(index), "index": index}
        if self.kind == "objects":
            meta["category"] = self.category(index)
        if self.themed:
            meta["theme"] = self.theme(index)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.from_numpy(label),
            "meta": meta,
        }

    def image_categories(self, index: int) -> list[int]:
        """Sorted category ids present in image ``index``: for ``objects`` the image-level label
        of the LUSS protocols (its main category, 'other' excluded); for ``scenes`` every class
        with at least one pixel."""
        if self.kind == "objects":
            return [self.category(index)]
        return np.unique(self.render(index)[1]).tolist()

    def __repr__(self) -> str:
        return (f"ToyWorld(kind={self.kind!r}, split={self.split!r}, n_images={self.n_images}, "
                f"size={self.size}, seed={self.seed}" + (f", version={self.version})" if self.version != 1 else ")"))


def write_imagenet_s_layout(dataset: ToyWorld, root: str | Path, split_name: str = "validation") -> list[Path]:
    """Write an ``objects`` toy world in the ImageNet-S folder layout and label encoding.

    Writes ``root/<split_name>/<class>/<name>.JPEG`` (quality 95, no chroma subsampling),
    ``root/<split_name>-segmentation/<class>/<name>.png`` (RGB, id = R + 256·G, 0 'other',
    ignore -1 → 1000) and ``root/categories.txt`` (line ``i`` = folder name of class id ``i``,
    from 1; 0 'other' is implicit, as in the official category lists).
    Returns the written label paths, in dataset order.
    """
    if not isinstance(dataset, ToyWorld) or dataset.kind != "objects":
        raise ValueError("write_imagenet_s_layout needs a ToyWorld(kind='objects'): ImageNet-S has one "
                         "main category per image, which 'scenes' images do not have")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories.txt").write_text("".join(f"{name}\n" for name in dataset.classes[1:]))
    label_paths = []
    for index in progress(range(len(dataset)), desc=f"writing {split_name}"):
        image, label = dataset.render(index)
        folder, stem = dataset.classes[dataset.category(index)], dataset.name(index)
        image_path = root / split_name / folder / f"{stem}.JPEG"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(image_path, quality=95, subsampling=0)
        label_path = root / f"{split_name}-segmentation" / folder / f"{stem}.png"
        write_imagenet_s_png(label_path, label)
        label_paths.append(label_path)
    return label_paths
