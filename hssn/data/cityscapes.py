"""Cityscapes (fine annotations) with the 19 train classes under the 7 official categories.

Layout under ``root``::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png       (ids 0-33, mapped to trainIds here)
    gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png  (optional; read instead when present)

labelIds map to the 19 trainIds of the official table (e.g. 26 "car" -> 13); every other id
(unlabeled, parking, guard rail, caravan, ...) maps to ``ignore_index``. Label values outside 0-33
(or, in a labelTrainIds file, outside 0-18 and 255) are an error.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hssn import hierarchies

from .common import HierarchicalSegmentationDataset, Transform, files_by_key, id_lookup, pair_files, require_dir
from .palettes import leaf_palette

#: Official labelId -> trainId of the 19 evaluated classes (cityscapesscripts ``labels.py``).
LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
NUM_LABEL_IDS = 34  # labelIds 0..33

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"


class CityscapesDataset(HierarchicalSegmentationDataset):
    """Cityscapes ``split`` ("train", "val" or "test": the folder name) under ``root``; labels are
    trainIds 0-18 (= leaf channels of ``hssn.hierarchies.get("cityscapes")``) or ``ignore_index``."""

    def __init__(self, root: str | Path, split: str = "train", transforms: Transform | None = None,
                 ignore_index: int = 255):
        root = Path(root)
        image_dir = require_dir(root / "leftImg8bit" / split, "Cityscapes image")
        label_dir = require_dir(root / "gtFine" / split, "Cityscapes label")
        images = files_by_key(image_dir, (IMAGE_SUFFIX,), recursive=True)
        label_ids = files_by_key(label_dir, (LABEL_SUFFIX,), recursive=True)
        train_ids = files_by_key(label_dir, (TRAIN_ID_SUFFIX,), recursive=True)
        labels = {**label_ids, **train_ids}
        samples = [(Path(k).name, img, lab) for k, img, lab in pair_files(images, labels, image_dir, label_dir)]
        raw = {i: LABEL_ID_TO_TRAIN_ID.get(i, ignore_index) for i in range(NUM_LABEL_IDS)}
        self._train_id_lut = id_lookup({**{t: t for t in range(19)}, 255: ignore_index})
        super().__init__(samples, hierarchies.get("cityscapes"), id_lookup(raw), leaf_palette("cityscapes"),
                         (), ignore_index, transforms)

    def lookup(self, label_path: Path) -> np.ndarray:
        """The trainId table for ``*_labelTrainIds.png`` files, the labelId table otherwise."""
        return self._train_id_lut if label_path.name.endswith(TRAIN_ID_SUFFIX) else self._lut
