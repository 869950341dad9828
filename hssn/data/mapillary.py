"""Mapillary Vistas 2.0 with the tree derived from its label names (see :mod:`hssn.hierarchies.mapillary`).

Layout under ``root``::

    config_v2.0.json                         (names, colours, ``evaluate`` flags; id = list position)
    {training,validation}/images/{key}.jpg
    {training,validation}/v2.0/labels/{key}.png   (palette PNGs: the pixel index is the label id)

``split`` "train" / "val" map to ``training`` / ``validation``. The tree and the palette are derived
from the config found at ``root`` by ``tree`` (a rule of :mod:`hssn.hierarchies.mapillary`: ``"official"``,
Mapillary's own 8 / 45 / 124 grouping, the default; ``"merged"``, 8 / 18 / 124). For the official config
these are ``hssn.hierarchies.get("mapillary_v2")`` and ``get("mapillary_v2_merged")``.

Labels with ``evaluate: false`` (8 in v2.0: the ambiguous barrier / marking / sign / traffic-sign labels,
person-group, pole-group, vehicle-group, unlabeled), the official protocol: they are **trained** as leaves
(the paper's tree has all 124 labels as leaves) and **not scored**: ``scored_leaves`` = the config's flag,
and the evaluator scores only those classes (``eval.scored_classes: dataset``, the default; ``all`` scores
every leaf). ``ignore_non_evaluated=True`` also drops them from training (mapped to ``ignore_index``).
``evaluated`` holds the config's flag per leaf either way.
"""
from __future__ import annotations

from pathlib import Path

import torch

from hssn.errors import UserError
from hssn.hierarchies.mapillary import derive_from_config

from .common import HierarchicalSegmentationDataset, Transform, id_lookup, pair_folders, require_dir

SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}
CONFIG_NAME = "config_v2.0.json"


class MapillaryVistasDataset(HierarchicalSegmentationDataset):
    """Mapillary Vistas 2.0 ``split`` under ``root``; labels are config ids (= leaf channels)."""

    def __init__(self, root: str | Path, split: str = "train", transforms: Transform | None = None,
                 ignore_index: int = 255, ignore_non_evaluated: bool = False, tree: str = "official"):
        root = Path(root)
        if split not in SPLITS:
            raise UserError(f"Mapillary split must be one of {sorted(SPLITS)}, got {split!r}")
        hierarchy, labels = derive_from_config(root / CONFIG_NAME, tree)
        folder = root / SPLITS[split]
        image_dir = require_dir(folder / "images", "Mapillary image")
        label_dir = require_dir(folder / "v2.0" / "labels", "Mapillary v2.0 label")
        samples = pair_folders(image_dir, label_dir, (".jpg", ".jpeg"))
        self.evaluated = [bool(lab.get("evaluate", True)) for lab in labels]
        raw = {i: (i if ok or not ignore_non_evaluated else ignore_index) for i, ok in enumerate(self.evaluated)}
        if 255 not in raw:
            raw[255] = ignore_index  # not used by the official files; accepted as void
        palette = torch.tensor([lab["color"] for lab in labels], dtype=torch.uint8)
        super().__init__(samples, hierarchy, id_lookup(raw), palette, (), ignore_index, transforms)
        self.readable_names = [str(lab.get("readable", lab["name"])) for lab in labels]
        self.scored_leaves = list(self.evaluated)
