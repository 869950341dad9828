"""PASCAL-Person-Part: 7 labels (background + 6 parts) under upper-body / lower-body / human.

Layout under ``root``::

    JPEGImages/{id}.jpg
    SegmentationPart/{id}.png            (values 0-6; 255 = void, mapped to ``ignore_index``)
    + one split list, the first found of:
      {split}_id.txt                                  one id per line (CE2P / SCHP / Graphonomy style)
      list/{split}_id.txt                             same
      pascal_person_part_trainval_list/{split}.txt    DeepLab style: "/JPEGImages/x.jpg /SegmentationPart/x.png"
                                                      (or one id per line)

``split`` is the list's name: "train" (1,716 images) or "val" (the 1,817-image test set most repos
call val). A split list is required: ``JPEGImages`` usually holds all of PASCAL VOC.
"""
from __future__ import annotations

from pathlib import Path

from hssn import hierarchies

from .common import HierarchicalSegmentationDataset, Transform, identity_lookup, read_id_list, require_dir
from .palettes import leaf_palette

NUM_CLASSES = 7


def split_list(root: Path, split: str) -> Path:
    """The split list file of ``split``; FileNotFoundError listing the names tried."""
    names = [f"{split}_id.txt", f"list/{split}_id.txt", f"pascal_person_part_trainval_list/{split}.txt"]
    found = next((root / n for n in names if (root / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"PASCAL-Person-Part split list not found under {root}; tried {', '.join(names)}")
    return found


def parse_line(root: Path, line: str, list_path: Path) -> tuple[str, Path, Path]:
    """(id, image, label) of one list line: an id, or an image path and a label path relative to root."""
    fields = line.split()
    if len(fields) == 1:
        name = fields[0]
        return name, root / "JPEGImages" / f"{name}.jpg", root / "SegmentationPart" / f"{name}.png"
    if len(fields) == 2:
        image, label = (root / f.lstrip("/") for f in fields)
        return image.stem, image, label
    raise ValueError(f"{list_path}: line {line!r} must hold an id or 'image_path label_path'")


class PascalPersonPartDataset(HierarchicalSegmentationDataset):
    """PASCAL-Person-Part ``split`` under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | Path, split: str = "train", transforms: Transform | None = None,
                 ignore_index: int = 255):
        root = Path(root)
        require_dir(root / "JPEGImages", "PASCAL-Person-Part image")
        require_dir(root / "SegmentationPart", "PASCAL-Person-Part label")
        self.list_path = split_list(root, split)
        lines = read_id_list(self.list_path)
        if not lines:
            raise ValueError(f"split list {self.list_path} is empty")
        samples = [parse_line(root, line, self.list_path) for line in lines]
        for name, image, label in samples:
            for path, what in ((image, "image"), (label, "label")):
                if not path.is_file():
                    raise FileNotFoundError(f"{what} of {name!r} listed in {self.list_path} not found: {path}")
        super().__init__(samples, hierarchies.get("pascal_person_part"),
                         identity_lookup(range(NUM_CLASSES), ignore_index, raw_ignore=255),
                         leaf_palette("pascal_person_part"), (), ignore_index, transforms)
