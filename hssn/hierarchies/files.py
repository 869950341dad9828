"""Reading and writing the tree data files: ``{"names", "parents"}`` plus dataset metadata.

A tree file is JSON (or YAML) that :meth:`hssn_kernels.ClassHierarchy.from_json` reads directly; the
extra keys it ignores carry the dataset metadata:

* ``dataset`` (str), ``description`` (str);
* ``leaf_colors``: one ``[r, g, b]`` (0-255) per leaf, in leaf-id order;
* ``flip_pairs``: ``[[a, b], ...]`` leaf ids a horizontal flip swaps (e.g. left-arm / right-arm);
* dataset-specific lists (Mapillary: ``evaluate``, ``readable``), one entry per leaf.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

_SCALAR_KEYS = ("dataset", "description", "rule")


def format_tree_file(hierarchy: ClassHierarchy, leaf_colors: Sequence[Sequence[int]],
                     flip_pairs: Sequence[Sequence[int]] = (), **extra: Any) -> str:
    """JSON text of a tree file: one name / colour per line so diffs stay readable.

    ``extra`` holds scalar keys (``dataset``, ``description``, ``rule``) and per-leaf lists.
    """
    if len(leaf_colors) != hierarchy.num_leaves:
        raise UserError(f"{len(leaf_colors)} leaf colours for {hierarchy.num_leaves} leaves")
    lines = ["{"]
    for key in _SCALAR_KEYS:
        if key in extra:
            lines.append(f" {json.dumps(key)}: {json.dumps(extra.pop(key))},")
    lines.append(' "names": [\n' + ",\n".join(f"  {json.dumps(n)}" for n in hierarchy.names) + "\n ],")
    lines.append(f' "parents": {json.dumps(list(hierarchy.parents))},')
    colors = ",\n".join(f"  {json.dumps([int(v) for v in c])}" for c in leaf_colors)
    lines.append(' "leaf_colors": [\n' + colors + "\n ],")
    for key, values in extra.items():
        if len(values) != hierarchy.num_leaves:
            raise UserError(f"'{key}' has {len(values)} entries for {hierarchy.num_leaves} leaves")
        lines.append(f' {json.dumps(key)}: {json.dumps(list(values))},')
    lines.append(f' "flip_pairs": {json.dumps([[int(a), int(b)] for a, b in flip_pairs])}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def voc_colormap(n: int) -> torch.Tensor:
    """(n, 3) uint8 PASCAL VOC colour map (bit-interleaved ids; 0 = black)."""
    out = torch.zeros((n, 3), dtype=torch.uint8)
    for i in range(n):
        rgb, c = [0, 0, 0], i
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        out[i] = torch.tensor(rgb, dtype=torch.uint8)
    return out


def read_tree_file(path: str | Path) -> tuple[ClassHierarchy, dict]:
    """(hierarchy, metadata) of a tree file; metadata always has ``leaf_colors`` and ``flip_pairs``.

    Missing ``leaf_colors`` default to the PASCAL VOC colour map; missing ``flip_pairs`` to ``[]``.
    """
    path = Path(path)
    hierarchy = ClassHierarchy.from_json(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(path.read_text())
    else:
        raw = json.loads(path.read_text())
    meta = {k: v for k, v in raw.items() if k not in ("names", "parents", "tree")}
    meta.setdefault("leaf_colors", voc_colormap(hierarchy.num_leaves).tolist())
    meta.setdefault("flip_pairs", [])
    _check_metadata(path, hierarchy, meta)
    meta["flip_pairs"] = [tuple(int(v) for v in pair) for pair in meta["flip_pairs"]]
    return hierarchy, meta


def _check_metadata(path: Path, hierarchy: ClassHierarchy, meta: Mapping) -> None:
    colors = meta["leaf_colors"]
    if not isinstance(colors, list) or len(colors) != hierarchy.num_leaves \
            or any(not isinstance(c, list) or len(c) != 3 for c in colors):
        raise UserError(f"{path}: 'leaf_colors' must hold one [r, g, b] per leaf ({hierarchy.num_leaves})")
    for i, c in enumerate(colors):
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c):
            raise UserError(f"{path}: 'leaf_colors' entry {i} is {c}; each of r, g, b must be an int in [0, 255]")
    leaves = set(hierarchy.leaves)
    for pair in meta["flip_pairs"]:
        if len(pair) != 2 or not set(pair) <= leaves or pair[0] == pair[1]:
            raise UserError(f"{path}: flip pair {pair} must be two distinct leaf ids")
