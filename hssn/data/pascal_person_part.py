"""PASCAL-Person-Part: 7 labels (background + 6 parts) under upper-body / lower-body / human.

Layout under ``root``::

    JPEGImages/{id}.jpg                  (the PASCAL VOC images)
    one label folder, the first found of (values 0-6; 255 = void, mapped to ``ignore_index``):
      SegmentationPart/{id}.png          (DeepLab / CE2P style)
      pascal_person_part_gt/{id}.png     (the official archive of Chen et al., "Detect What You Can", as unpacked)
    + one split list, the first found of:
      {split}_id.txt                                  one id per line (CE2P / SCHP / Graphonomy style)
      list/{split}_id.txt                             same
      pascal_person_part_trainval_list/{split}_id.txt the official archive: one id per line
      pascal_person_part_trainval_list/{split}.txt    the official archive / DeepLab style:
                                                      "/JPEGImages/x.jpg /SegmentationPart/x.png" (or one id)

A listed label path that does not exist (the official lists name ``/SegmentationPart/`` while the archive
unpacks to ``pascal_person_part_gt/``) is looked up by file name in the label folder found.

``split`` is the list's name: "train" (1,716 images) or "val" (the 1,817-image test set most repos
call val). A split list is required: ``JPEGImages`` usually holds all of PASCAL VOC.
"""
from __future__ import annotations

from pathlib import Path

from hssn import hierarchies
from hssn.errors import UserError

from .common import (HierarchicalSegmentationDataset, Transform, identity_lookup, path_inside, read_numbered_lines,
                     require_dir)
from .palettes import leaf_palette

NUM_CLASSES = 7


LABEL_DIRS = ("SegmentationPart", "pascal_person_part_gt")


def label_dir(root: Path) -> Path:
    """The first of :data:`LABEL_DIRS` under ``root``; FileNotFoundError naming both."""
    found = next((root / n for n in LABEL_DIRS if (root / n).is_dir()), None)
    if found is None:
        raise FileNotFoundError(f"PASCAL-Person-Part label folder not found under {root}: tried "
                                f"{' and '.join(LABEL_DIRS)}")
    return found


def split_list(root: Path, split: str) -> Path:
    """The split list file of ``split``; FileNotFoundError listing the names tried."""
    names = [f"{split}_id.txt", f"list/{split}_id.txt", f"pascal_person_part_trainval_list/{split}_id.txt",
             f"pascal_person_part_trainval_list/{split}.txt"]
    found = next((root / n for n in names if (root / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"PASCAL-Person-Part split list not found under {root}; tried {', '.join(names)}")
    return found


def parse_line(root: Path, labels: Path, line: str, list_path: Path, lineno: int) -> tuple[str, Path, Path]:
    """(id, image, label) of one list line: an id, or an image path and a label path relative to root
    (a missing label path is looked up by name in ``labels``, the label folder). Every path must stay inside
    ``root`` (``ValueError`` naming the list file and line otherwise)."""
    fields = line.split()
    if len(fields) == 1:
        name = fields[0]
        image = path_inside(root, f"JPEGImages/{name}.jpg", list_path, lineno)
        label = path_inside(root, f"{labels.name}/{name}.png", list_path, lineno)
        return name, image, label
    if len(fields) == 2:
        image, label = (path_inside(root, f, list_path, lineno) for f in fields)
        return image.stem, image, label if label.is_file() else labels / label.name
    raise UserError(f"{list_path}, line {lineno}: {line!r} must hold an id or 'image_path label_path'")


class PascalPersonPartDataset(HierarchicalSegmentationDataset):
    """PASCAL-Person-Part ``split`` under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | Path, split: str = "train", transforms: Transform | None = None,
                 ignore_index: int = 255):
        root = Path(root)
        require_dir(root / "JPEGImages", "PASCAL-Person-Part image")
        labels = label_dir(root)
        self.list_path = split_list(root, split)
        lines = read_numbered_lines(self.list_path)
        if not lines:
            raise UserError(f"split list {self.list_path} is empty")
        samples = [parse_line(root, labels, line, self.list_path, n) for n, line in lines]
        for name, image, label in samples:
            for path, what in ((image, "image"), (label, "label")):
                if not path.is_file():
                    raise FileNotFoundError(f"{what} of {name!r} listed in {self.list_path} not found: {path}")
        super().__init__(samples, hierarchies.get("pascal_person_part"),
                         identity_lookup(range(NUM_CLASSES), ignore_index, raw_ignore=255),
                         leaf_palette("pascal_person_part"), (), ignore_index, transforms)
