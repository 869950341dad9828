"""A user's own dataset: a folder of images, a folder of label PNGs and a class-tree file.

Layout under ``root`` (``split`` optional)::

    images[/{split}]/**/{key}.{jpg,jpeg,png,...}
    labels[/{split}]/**/{key}.png      single-channel PNG (8- or 16-bit): pixel = leaf channel id or ignore_index
                                       (any node's channel id with ``partial_labels=True``: a coarse label)
    hierarchy.json | hierarchy.yaml    the tree (read when ``hierarchy`` is not given)

Images and labels pair by their path relative to the folder, without the extension.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from hssn import hierarchies
from hssn_kernels import ClassHierarchy

from .common import (IMAGE_EXTENSIONS, HierarchicalSegmentationDataset, Transform, identity_lookup, pair_folders,
                     require_dir)
from .palettes import voc_colormap

TREE_FILE_NAMES = ("hierarchy.json", "hierarchy.yaml", "hierarchy.yml")


def resolve_hierarchy(hierarchy: ClassHierarchy | str | Path | None, root: Path) -> tuple[ClassHierarchy, dict]:
    """(tree, metadata) from a ClassHierarchy, a shipped tree name, a tree-file path, or ``root``'s tree file."""
    if isinstance(hierarchy, ClassHierarchy):
        return hierarchy, {"leaf_colors": voc_colormap(hierarchy.num_leaves).tolist(), "flip_pairs": []}
    if hierarchy is None:
        found = next((root / n for n in TREE_FILE_NAMES if (root / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no hierarchy given and no tree file ({', '.join(TREE_FILE_NAMES)}) in {root}")
        return hierarchies.read_tree_file(found)
    if isinstance(hierarchy, str) and hierarchy in hierarchies.available():
        return hierarchies.get(hierarchy), hierarchies.metadata(hierarchy)
    if isinstance(hierarchy, (str, Path)):
        path = Path(hierarchy)
        if not path.is_file():
            raise FileNotFoundError(f"tree file not found: {path} (shipped trees: {', '.join(hierarchies.available())})")
        return hierarchies.read_tree_file(path)
    raise TypeError(f"hierarchy must be a ClassHierarchy, a tree name or a path, got {type(hierarchy).__name__}")


class FolderDataset(HierarchicalSegmentationDataset):
    """Images + label PNGs of leaf channel ids + a tree; see the module docstring for the layout.

    ``palette`` (L, 3) and ``flip_pairs`` override those stored in the tree file (default: the VOC
    colour map and no pairs). ``partial_labels=True`` accepts inner-node ids (pixels known only up to a
    parent, README "Partial labels"); a value that is no channel is still an error naming the file.
    """

    def __init__(self, root: str | Path, hierarchy: ClassHierarchy | str | Path | None = None,
                 split: str | None = None, images: str = "images", labels: str = "labels",
                 transforms: Transform | None = None, ignore_index: int = 255,
                 palette: torch.Tensor | Sequence[Sequence[int]] | None = None,
                 flip_pairs: Sequence[Sequence[int]] | None = None, partial_labels: bool = False):
        root = Path(root)
        tree, meta = resolve_hierarchy(hierarchy, root)
        image_dir = require_dir(root / images / (split or ""), "image")
        label_dir = require_dir(root / labels / (split or ""), "label")
        samples = pair_folders(image_dir, label_dir, IMAGE_EXTENSIONS, recursive=True)
        ids = range(tree.num_channels) if partial_labels else tree.leaves
        self.inner_raw_ids = frozenset() if partial_labels else frozenset(range(tree.num_channels)) - set(tree.leaves)
        super().__init__(samples, tree, identity_lookup(ids, ignore_index),
                         meta["leaf_colors"] if palette is None else palette,
                         meta["flip_pairs"] if flip_pairs is None else flip_pairs, ignore_index, transforms,
                         partial_labels)
