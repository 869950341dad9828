"""Class-tree fixtures for tests: small hand-made trees and random trees (balanced and unbalanced)."""
from __future__ import annotations

import random

from hssn_kernels import ClassHierarchy

CITYSCAPES_LIKE = {
    "flat": {"road": {}, "sidewalk": {}},
    "construction": {"building": {}, "wall": {}, "fence": {}},
    "object": {"pole": {}, "traffic light": {}, "traffic sign": {}},
    "nature": {"vegetation": {}, "terrain": {}},
    "sky-group": {"sky": {}},
    "human": {"person": {}, "rider": {}},
    "vehicle": {"car": {}, "truck": {}, "bus": {}, "train": {}, "motorcycle": {}, "bicycle": {}},
}


def cityscapes_like() -> ClassHierarchy:
    """26 channels: 19 leaves + 7 categories (the Cityscapes shape)."""
    return ClassHierarchy.from_nested(CITYSCAPES_LIKE)


def random_tree(seed: int, max_depth: int = 4, max_channels: int = 60, balanced: bool = False,
                shuffle: bool = True) -> ClassHierarchy:
    """A random tree with at least one leaf; ``shuffle`` permutes channel ids (not leaves-first)."""
    rng = random.Random(seed)
    parents: list[int] = []
    frontier = [(-1, 0)]
    while frontier and len(parents) < max_channels:
        parent, depth = frontier.pop(0)
        if depth >= max_depth:
            continue
        kids = rng.randint(2, 4) if balanced or parent == -1 else rng.randint(0, 4)
        for _ in range(kids):
            if len(parents) >= max_channels:
                break
            parents.append(parent)
            frontier.append((len(parents) - 1, depth + 1))
    if shuffle:
        perm = list(range(len(parents)))
        rng.shuffle(perm)  # perm[old] = new
        new = [0] * len(parents)
        for old, p in enumerate(parents):
            new[perm[old]] = -1 if p == -1 else perm[p]
        parents = new
    return ClassHierarchy.from_parents(parents)


def chain_tree(depth: int = 16, width: int = 3) -> ClassHierarchy:
    """``width`` chains of ``depth`` nodes: the deepest allowed tree when depth = 16."""
    parents = []
    for _ in range(width):
        prev = -1
        for _ in range(depth):
            parents.append(prev)
            prev = len(parents) - 1
    return ClassHierarchy.from_parents(parents)


def wide_tree(num_leaves: int = 150, groups: int = 12, supergroups: int = 4) -> ClassHierarchy:
    """3-level tree with ``num_leaves`` leaves (Mapillary-like width): leaves first, coarsest last."""
    parents = [num_leaves + (i % groups) for i in range(num_leaves)]
    parents += [num_leaves + groups + (g % supergroups) for g in range(groups)]
    parents += [-1] * supergroups
    return ClassHierarchy.from_parents(parents)
