"""The kernel tests' shared data, in one place: class trees (hand-made, random balanced and unbalanced, the
deepest, a Mapillary-wide one), the named set the kernel suites run, tolerances per dtype, random targets,
poisoned outputs, and the device the Triton suites run on."""
from __future__ import annotations

import os
import random

import torch

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


TREES = {
    "cityscapes": cityscapes_like,
    "shuffled": lambda: random_tree(3, max_depth=4, max_channels=40),
    "shuffled_balanced": lambda: random_tree(11, max_depth=3, balanced=True),
    "unbalanced": lambda: random_tree(5, max_depth=5, max_channels=30, shuffle=False),
    "chain16": lambda: chain_tree(16, 2),
    "wide166": wide_tree,
}
"""The trees every kernel suite runs (name -> factory): leaves-first and shuffled channel ids, balanced and
unbalanced, 16 deep, 166 channels."""

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float16: dict(rtol=1e-2, atol=1e-3),
       torch.bfloat16: dict(rtol=5e-2, atol=1e-2), torch.float64: dict(rtol=1e-10, atol=1e-12)}
"""Elementwise tolerances (``torch.testing.assert_close``) of a kernel's loss / gradient per logits dtype."""

REL_TOL = {torch.float64: 1e-5, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}
"""Max-relative-error tolerances (error / largest reference value) of the native kernels per logits dtype:
their fp64 runs fp32 math on CUDA."""

DEVICE = "cuda" if os.environ.get("HSSN_TEST_GPU") == "1" and torch.cuda.is_available() else "cpu"
"""Where the Triton suites run: CUDA with HSSN_TEST_GPU=1 (compiled kernels), else CPU (the interpreter)."""


def random_targets(hierarchy, shape, ignore_frac=0.2, ignore_index=255, dtype=torch.int64, device=None):
    """Random leaf labels with ``ignore_frac`` of ``ignore_index`` (drawn on the CPU generator; on ``device``,
    default the current default device)."""
    leaves = torch.tensor(hierarchy.leaves, device="cpu")
    t = leaves[torch.randint(len(leaves), shape, device="cpu")]
    t[torch.rand(shape, device="cpu") < ignore_frac] = ignore_index
    return t.to(dtype=dtype, device=device or torch.get_default_device())


def poison_empty(*shape, dtype=None, device=None):
    """torch.empty look-alike filled with NaN (floats) or -7 (integers) so unwritten outputs fail tests."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    fill = float("nan") if dtype is None or dtype.is_floating_point else -7
    return torch.full(shape, fill, dtype=dtype, device=device)
