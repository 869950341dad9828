"""PASCAL-Part-108 (108 part classes under 21 objects), in the layout LogicSeg (ICCV 2023) trains on.

Layout under ``root`` (LogicSeg's ``data/pascal_part``)::

    img_dir/{train,val}/*.png        (the PASCAL VOC 2010 images, as PNG)
    ann108_dir/{train,val}/*.png     (grey: 0-107 the part classes, 0 = background; 255 void)

Label value k is leaf channel k of ``hssn.hierarchies.get("pascal_part108")`` (LogicSeg's class order); 255
maps to ``ignore_index``; any other value is an error naming the file. The conversion of the official
PASCAL-Part annotations into these 108 ids is not published (LogicSeg reads a prepared archive), so only
the prepared layout is read here.
"""
from __future__ import annotations

from pathlib import Path

from hssn import hierarchies
from hssn.errors import UserError

from .common import HierarchicalSegmentationDataset, Transform, identity_lookup, pair_folders, require_dir
from .palettes import leaf_palette

NUM_CLASSES = 108
SPLITS = ("train", "val")


class PascalPart108Dataset(HierarchicalSegmentationDataset):
    """PASCAL-Part-108 ``split`` ("train" / "val") under ``root``; see the module docstring."""

    def __init__(self, root: str | Path, split: str = "train", transforms: Transform | None = None,
                 ignore_index: int = 255):
        if split not in SPLITS:
            raise UserError(f"PASCAL-Part-108 split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        image_dir = require_dir(root / "img_dir" / split, "PASCAL-Part-108 image")
        label_dir = require_dir(root / "ann108_dir" / split, "PASCAL-Part-108 annotation")
        super().__init__(pair_folders(image_dir, label_dir, (".png", ".jpg", ".jpeg")), hierarchies.get("pascal_part108"),
                         identity_lookup(range(NUM_CLASSES), ignore_index, raw_ignore=255),
                         leaf_palette("pascal_part108"), (), ignore_index, transforms)
