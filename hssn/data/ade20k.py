"""ADE20K (SceneParsing, ``ADEChallengeData2016``): 150 classes under LogicSeg's 14 groups and 3 top classes.

Layout under ``root`` (the ``ADEChallengeData2016`` folder, or a folder holding it)::

    images/{training,validation}/ADE_{split}_{n}.jpg
    annotations/{training,validation}/ADE_{split}_{n}.png   (grey: 0 = other / void, 1-150 the classes)

Annotation value k in 1-150 is leaf channel k - 1 of ``hssn.hierarchies.get("ade20k")`` (the standard class
order); 0 maps to ``ignore_index``; any other value is an error naming the file. The tree and the choices
behind it are stated in its data file (``rule``: LogicSeg's groups, assigned by meaning).
"""
from __future__ import annotations

from pathlib import Path

from hssn import hierarchies
from hssn.errors import UserError

from .common import HierarchicalSegmentationDataset, Transform, id_lookup, pair_folders, require_dir
from .palettes import leaf_palette

NUM_CLASSES = 150
SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}
"""Split name -> folder name (the folder names are accepted as split names too)."""
FOLDER = "ADEChallengeData2016"


class ADE20KDataset(HierarchicalSegmentationDataset):
    """ADE20K ``split`` ("train" / "val", or the folder names) under ``root``; see the module docstring."""

    def __init__(self, root: str | Path, split: str = "train", transforms: Transform | None = None,
                 ignore_index: int = 255):
        if split not in SPLITS:
            raise UserError(f"ADE20K split must be one of {sorted(SPLITS)}, got {split!r}")
        root = Path(root)
        if (root / FOLDER).is_dir():
            root = root / FOLDER
        image_dir = require_dir(root / "images" / SPLITS[split], "ADE20K image")
        label_dir = require_dir(root / "annotations" / SPLITS[split], "ADE20K annotation")
        lut = id_lookup({0: ignore_index, **{k: k - 1 for k in range(1, NUM_CLASSES + 1)}})
        super().__init__(pair_folders(image_dir, label_dir, (".jpg", ".jpeg")), hierarchies.get("ade20k"), lut,
                         leaf_palette("ade20k"), (), ignore_index, transforms)
