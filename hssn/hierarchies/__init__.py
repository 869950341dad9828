"""Class trees of the supported datasets, shipped as data files in ``hssn/hierarchies/data/``.

``get(name)`` returns the :class:`hssn_kernels.ClassHierarchy` (cached), ``metadata(name)`` the
dataset metadata stored beside it (``leaf_colors``, ``flip_pairs``, ...), ``available()`` the names.
Leaves take the first channels in the dataset's label-id order, inner nodes follow, coarsest last.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .files import format_tree_file, read_tree_file

DATA_DIR = Path(__file__).resolve().parent / "data"

__all__ = ["DATA_DIR", "available", "get", "metadata", "flip_pairs", "path", "format_tree_file", "read_tree_file"]


def available() -> list[str]:
    """Names of the shipped trees (file stems in ``DATA_DIR``)."""
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def path(name: str) -> Path:
    """Path of the tree file of ``name``; ValueError listing the names when unknown."""
    file = DATA_DIR / f"{name}.json"
    if not file.is_file():
        raise UserError(f"unknown hierarchy {name!r}; available: {', '.join(available())}")
    return file


@functools.lru_cache(maxsize=None)
def _load(name: str) -> tuple[ClassHierarchy, dict]:
    return read_tree_file(path(name))


def get(name: str) -> ClassHierarchy:
    """The class tree of a shipped dataset (``"cityscapes"``, ``"mapillary_v2"``, ``"lip"``, ...)."""
    return _load(name)[0]


def metadata(name: str) -> dict:
    """A fresh copy of the metadata stored with the tree: ``leaf_colors`` (L lists of 3 ints),
    ``flip_pairs`` (list of (a, b) leaf ids), ``description``, and dataset-specific per-leaf lists."""
    return copy.deepcopy(_load(name)[1])


def flip_pairs(name: str) -> list[tuple[int, int]]:
    """Leaf-id pairs a horizontal flip swaps (empty for datasets without left/right classes)."""
    return list(_load(name)[1]["flip_pairs"])
