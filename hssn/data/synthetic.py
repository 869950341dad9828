"""A procedural dataset with a real 3-level class tree, generated on the fly (no files, no download).

Each image is a background (plain colour or a two-colour gradient), one or two textured rectangles
(horizontal / vertical stripes, checker board, dot grid) and one to three solid shapes (circle,
ellipse, square, triangle pointing left / right) painted on top, plus a little Gaussian noise; with
``overlap=False`` no box covers another box and no shape another shape.
Colours are random, so a class is told by its geometry or pattern: the coarse class (smooth,
shape, texture) from local statistics, the fine class from the shape outline or the pattern.

Items are deterministic per (seed, split, index). Triangles pointing left and right are a flip pair.
The coarse variant (``coarse_fraction > 0``) labels a share of the scenes only up to ``coarse_level``
(every pixel's label replaced by its ancestor there: inner-node labels, ``partial_labels``).
"""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .common import Transform

TREE = {
    "background": {"smooth": {"plain": {}, "gradient": {}}},
    "shape": {
        "round": {"circle": {}, "ellipse": {}},
        "angular": {"square": {}, "triangle-left": {}, "triangle-right": {}},
    },
    "texture": {
        "stripes": {"horizontal-stripes": {}, "vertical-stripes": {}},
        "pattern": {"checker": {}, "dots": {}},
    },
}
"""The class tree: 11 leaves (channels 0-10), 5 families, 3 groups (19 channels)."""

HIERARCHY = ClassHierarchy.from_nested(TREE)
LEAF = {name: HIERARCHY.names.index(name) for name in HIERARCHY.names}
FLIP_PAIRS = [(LEAF["triangle-left"], LEAF["triangle-right"])]
PALETTE = torch.tensor([
    [40, 40, 40], [110, 110, 150],                 # plain, gradient
    [230, 60, 60], [250, 150, 60],                 # circle, ellipse
    [60, 120, 230], [60, 200, 230], [140, 80, 230],  # square, triangle-left, triangle-right
    [60, 200, 80], [170, 230, 60],                 # horizontal / vertical stripes
    [230, 220, 60], [230, 100, 200],               # checker, dots
], dtype=torch.uint8)
SPLITS = ("train", "val", "test")


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3)


MAX_CONTRAST = 0.85
"""The largest ``min_dist`` :func:`_contrasting` guarantees: every colour has a corner of the RGB cube at least
sqrt(3) / 2 away."""


def _contrasting(rng: np.random.Generator, other: np.ndarray, min_dist: float = 0.45) -> np.ndarray:
    """A random colour at least ``min_dist`` (Euclidean, RGB in [0, 1], <= :data:`MAX_CONTRAST`) from
    ``other``: 50 draws, then the farthest corner of the cube."""
    for _ in range(50):
        c = _colour(rng)
        if np.linalg.norm(c - other) >= min_dist:
            return c
    return np.where(other < 0.5, 1.0, 0.0)


def _background(rng, yy, xx, gradient_contrast: float):
    h, w = yy.shape
    if rng.random() < 0.5:
        return np.broadcast_to(_colour(rng), (h, w, 3)).copy(), LEAF["plain"]
    a = _colour(rng)
    b = _contrasting(rng, a, gradient_contrast)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    return a + (b - a) * t[..., None], LEAF["gradient"]


TEXTURES: dict[str, Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]] = {
    "horizontal-stripes": lambda rng, yy, xx: (yy // rng.integers(3, 5)) % 2 == 0,
    "vertical-stripes": lambda rng, yy, xx: (xx // rng.integers(3, 5)) % 2 == 0,
    "checker": lambda rng, yy, xx: ((yy // (c := rng.integers(3, 5))) + (xx // c)) % 2 == 0,
    "dots": lambda rng, yy, xx: ((yy % (p := rng.integers(6, 8))) < 3) & ((xx % p) < 3),
}
"""Texture name -> boolean foreground-colour mask over pixel coordinates."""


def _rotated(yy, xx, cy, cx, angle):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    return c * dx + s * dy, -s * dx + c * dy


SHAPES: dict[str, Callable[[np.random.Generator, np.ndarray, np.ndarray, float, float, float], np.ndarray]] = {
    "circle": lambda rng, yy, xx, cy, cx, r: (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r,
    "ellipse": lambda rng, yy, xx, cy, cx, r: (
        lambda u, v: (u / r) ** 2 + (v / (0.45 * r)) ** 2 <= 1.0)(*_rotated(yy, xx, cy, cx, rng.uniform(0, np.pi))),
    "square": lambda rng, yy, xx, cy, cx, r: (
        lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85 * r)(*_rotated(yy, xx, cy, cx, rng.uniform(-0.3, 0.3))),
    # apex at the left: |dy| <= (dx + r) / 2 for dx in [-r, r]
    "triangle-left": lambda rng, yy, xx, cy, cx, r: (xx - cx <= r) & (np.abs(yy - cy) <= (xx - cx + r) * 0.55),
    "triangle-right": lambda rng, yy, xx, cy, cx, r: (cx - xx <= r) & (np.abs(yy - cy) <= (cx - xx + r) * 0.55),
}
"""Shape name -> boolean mask of a shape of radius ``r`` pixels centred at (cy, cx)."""


PLACEMENT_TRIES = 20
"""With ``overlap=False``: positions drawn for a texture box or shape before it is left out of the scene."""


def _place(draw: Callable[[], np.ndarray], taken: np.ndarray, overlap: bool) -> np.ndarray | None:
    """The mask ``draw()`` returns; with ``overlap=False`` redrawn until it misses ``taken`` (None after
    :data:`PLACEMENT_TRIES` misses)."""
    for _ in range(1 if overlap else PLACEMENT_TRIES):
        mask = draw()
        if overlap or not (mask & taken).any():
            return mask
    return None


def render(rng: np.random.Generator, height: int, width: int, max_textures: int = 2, max_shapes: int = 3,
           noise: float = 0.03, pattern_scale: float = 1.0, shape_scale: float = 1.0, gradient_contrast: float = 0.6,
           overlap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ((H, W, 3) float32 image in [0, 1], (H, W) int64 leaf ids). ``pattern_scale`` multiplies
    the texture periods, ``shape_scale`` the shape radii (1: radii from 1/8 to 1/4 of the image side),
    ``gradient_contrast`` is the least RGB distance (in [0, 1]^3) between a gradient's two end colours;
    ``overlap=False`` keeps texture boxes off each other and shapes off each other (no partly hidden outline
    or pattern; a shape may still lie on a texture)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    image, leaf = _background(rng, yy, xx, gradient_contrast)
    label = np.full((height, width), leaf, dtype=np.int64)
    size = min(height, width)
    taken = np.zeros((height, width), dtype=bool)
    for _ in range(rng.integers(1, max_textures + 1)):
        name = list(TEXTURES)[rng.integers(len(TEXTURES))]
        th, tw = rng.integers(size // 3, size // 2 + 1, size=2)

        def box():
            top, left = rng.integers(0, height - th + 1), rng.integers(0, width - tw + 1)
            return (yy >= top) & (yy < top + th) & (xx >= left) & (xx < left + tw)

        if (mask := _place(box, taken, overlap)) is None:
            continue
        taken |= mask
        fg = TEXTURES[name](rng, (yy / pattern_scale).astype(np.int64), (xx / pattern_scale).astype(np.int64))
        a = _colour(rng)
        b = _contrasting(rng, a)
        image[mask] = np.where(fg[mask][:, None], a, b)
        label[mask] = LEAF[name]
    taken[:] = False
    for _ in range(rng.integers(1, max_shapes + 1)):
        name = list(SHAPES)[rng.integers(len(SHAPES))]
        r = min(rng.uniform(size / 8, size / 4) * shape_scale, 0.45 * size)

        def shape():
            cy, cx = rng.uniform(r, height - r), rng.uniform(r, width - r)
            return SHAPES[name](rng, yy, xx, cy, cx, r)

        if (mask := _place(shape, taken, overlap)) is None:
            continue
        taken |= mask
        image[mask] = _colour(rng)
        label[mask] = LEAF[name]
    image = image + rng.normal(0.0, noise, size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


class SyntheticDataset(Dataset):
    """Procedural scenes with the :data:`TREE` hierarchy; see the module docstring.

    Args:
        split: "train", "val" or "test" (independent streams of scenes).
        transforms: callable on the item dict (e.g. ``hssn.data.transforms.build_train_transforms``).
        size: image size, an int (square) or (height, width), at least 16 pixels.
        length: number of items.
        seed: base seed; item ``i`` depends only on (seed, split, i).
        ignore_index: the void value (never produced: every pixel is labelled).
        max_textures, max_shapes, noise: scene complexity (noise = std of the Gaussian, image units).
        pattern_scale, shape_scale: texture periods and shape radii relative to the defaults.
        gradient_contrast: least RGB distance between a gradient background's end colours (in
            (0, :data:`MAX_CONTRAST`]).
        overlap: whether texture boxes may cover each other and shapes each other (see :func:`render`).
        coarse_fraction: share of the scenes (drawn per index) labelled only at ``coarse_level`` (1 or 2).
    """

    def __init__(self, split: str = "train", transforms: Transform | None = None, size: int | tuple[int, int] = 64,
                 length: int = 1000, seed: int = 0, ignore_index: int = 255, max_textures: int = 2,
                 max_shapes: int = 3, noise: float = 0.03, pattern_scale: float = 1.0, shape_scale: float = 1.0,
                 gradient_contrast: float = 0.6, overlap: bool = True, coarse_fraction: float = 0.0,
                 coarse_level: int = 2):
        if split not in SPLITS:
            raise UserError(f"synthetic split must be one of {SPLITS}, got {split!r}")
        hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if len(hw) != 2 or min(hw) < 16:
            raise UserError(f"size must be an int or (height, width) of at least 16 pixels, got {size!r}")
        if not isinstance(length, int) or length <= 0:
            raise UserError(f"length must be a positive int, got {length!r}")
        if ignore_index in HIERARCHY.leaves:
            raise UserError(f"ignore_index {ignore_index} is a leaf id of the synthetic tree")
        if transforms is not None and not callable(transforms):
            raise TypeError("transforms must be callable on the item dict")
        self.split, self.size, self.length, self.seed = split, hw, length, int(seed)
        self.max_textures, self.max_shapes, self.noise = max_textures, max_shapes, noise
        if not (pattern_scale > 0 and shape_scale > 0):
            raise UserError(f"pattern_scale and shape_scale must be > 0, got {pattern_scale}, {shape_scale}")
        self.pattern_scale, self.shape_scale = float(pattern_scale), float(shape_scale)
        if not 0 < gradient_contrast <= MAX_CONTRAST:
            raise UserError(f"gradient_contrast must be in (0, {MAX_CONTRAST}] (RGB distance), got {gradient_contrast!r}")
        self.gradient_contrast = float(gradient_contrast)
        if not isinstance(overlap, bool):
            raise TypeError(f"overlap must be a bool, got {overlap!r}")
        self.overlap = overlap
        if not 0.0 <= coarse_fraction <= 1.0:
            raise UserError(f"coarse_fraction must be in [0, 1], got {coarse_fraction!r}")
        if coarse_level not in range(1, HIERARCHY.height):
            raise UserError(f"coarse_level must be an inner level in [1, {HIERARCHY.height - 1}], got {coarse_level!r}")
        self.coarse_fraction, self.coarse_level = float(coarse_fraction), int(coarse_level)
        self.partial_labels = self.coarse_fraction > 0
        self.scored_leaves = None
        self.transforms = transforms
        self.hierarchy = HIERARCHY
        self.ignore_index = int(ignore_index)
        self.palette = PALETTE.clone()
        self.flip_pairs = list(FLIP_PAIRS)
        self.class_names = [HIERARCHY.names[c] for c in HIERARCHY.leaves]
        self._stream = zlib.crc32(split.encode())

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> dict:
        """The untransformed item ``index``: image (3, H, W) float32 in [0, 1], label (H, W) int64."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        rng = np.random.default_rng([self.seed, self._stream, index])
        image, label = render(rng, *self.size, self.max_textures, self.max_shapes, self.noise, self.pattern_scale,
                              self.shape_scale, self.gradient_contrast, self.overlap)
        if self.coarse_fraction > 0 and rng.random() < self.coarse_fraction:
            label = HIERARCHY.leaf_to_level(self.coarse_level).numpy()[label]
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "label": torch.from_numpy(label),
                "name": f"synthetic_{self.split}_{index:06d}"}

    def __getitem__(self, index: int) -> dict:
        item = self.load(index)
        return self.transforms(item) if self.transforms is not None else item

    def __repr__(self) -> str:
        return (f"SyntheticDataset(split={self.split!r}, length={self.length}, size={self.size}, "
                f"channels={HIERARCHY.num_channels}, leaves={HIERARCHY.num_leaves})")
