"""LIP (Look Into Person) human parsing: 20 labels under upper-body / lower-body / human.

Accepted layouts under ``root`` (the first whose folders exist wins):

* official: ``TrainVal_images/{split}_images/*.jpg`` and
  ``TrainVal_parsing_annotations/{split}_segmentations/*.png`` (each folder may be nested once more in a
  same-named folder, as the zip files extract), with ``{split}_id.txt`` in ``TrainVal_images/`` or ``root``;
* flattened (CE2P / SCHP style): ``{split}_images/``, ``{split}_segmentations/``, ``{split}_id.txt`` at ``root``.

``split`` is "train" or "val". With an id list, exactly the listed ids are used (each must have an
image and a label); without one, images and labels are paired by file name. Label values 0-19 are leaf
ids, 255 is void (mapped to ``ignore_index``); a horizontal flip must swap the ``flip_pairs`` (14/15 arms, 16/17 legs, 18/19 shoes).
"""
from __future__ import annotations

from pathlib import Path

from hssn import hierarchies
from hssn.errors import UserError

from .common import (HierarchicalSegmentationDataset, Transform, files_by_key, identity_lookup, pair_files,
                     read_id_list)
from .palettes import leaf_palette

NUM_CLASSES = 20


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_dir()), None)


def lip_folders(root: Path, split: str) -> tuple[Path, Path, Path | None]:
    """(image folder, label folder, id list or None) of ``split``; FileNotFoundError listing the paths tried."""
    img_names = [f"TrainVal_images/{split}_images", f"TrainVal_images/TrainVal_images/{split}_images",
                 f"{split}_images"]
    lab_names = [f"TrainVal_parsing_annotations/{split}_segmentations",
                 f"TrainVal_parsing_annotations/TrainVal_parsing_annotations/{split}_segmentations",
                 f"{split}_segmentations"]
    image_dir = _first_existing([root / n for n in img_names])
    label_dir = _first_existing([root / n for n in lab_names])
    if image_dir is None:
        raise FileNotFoundError(f"LIP image folder not found under {root}; tried {', '.join(img_names)}")
    if label_dir is None:
        raise FileNotFoundError(f"LIP label folder not found under {root}; tried {', '.join(lab_names)}")
    lists = [image_dir.parent / f"{split}_id.txt", root / "TrainVal_images" / f"{split}_id.txt",
             root / f"{split}_id.txt"]
    id_list = next((p for p in lists if p.is_file()), None)
    return image_dir, label_dir, id_list


def paired_samples(image_dir: Path, label_dir: Path, id_list: Path | None, image_exts=(".jpg", ".jpeg", ".png"),
                   label_ext: str = ".png") -> list[tuple[str, Path, Path]]:
    """Samples from an id list (FileNotFoundError naming a listed file that is missing) or by file name."""
    images = files_by_key(image_dir, image_exts)
    labels = files_by_key(label_dir, (label_ext,))
    if id_list is None:
        return pair_files(images, labels, image_dir, label_dir)
    ids = read_id_list(id_list)
    if not ids:
        raise UserError(f"split list {id_list} is empty")
    for i in ids:
        if i not in images:
            raise FileNotFoundError(f"image of id {i!r} listed in {id_list} not found in {image_dir}")
        if i not in labels:
            raise FileNotFoundError(f"label of id {i!r} listed in {id_list} not found: "
                                    f"{label_dir / (i + label_ext)}")
    return [(i, images[i], labels[i]) for i in ids]


class LIPDataset(HierarchicalSegmentationDataset):
    """LIP ``split`` ("train" / "val") under ``root``; see the module docstring for the layouts."""

    def __init__(self, root: str | Path, split: str = "train", transforms: Transform | None = None,
                 ignore_index: int = 255):
        if split not in ("train", "val"):
            raise UserError(f"LIP split must be 'train' or 'val', got {split!r}")
        image_dir, label_dir, id_list = lip_folders(Path(root), split)
        self.id_list = id_list
        super().__init__(paired_samples(image_dir, label_dir, id_list), hierarchies.get("lip"),
                         identity_lookup(range(NUM_CLASSES), ignore_index, raw_ignore=255), leaf_palette("lip"),
                         hierarchies.flip_pairs("lip"), ignore_index, transforms)
