"""Writers of tiny datasets in the real on-disk layouts (PNG / JPEG / palette PNG, lists, configs).

Each ``make_*`` writes a few 32x48 samples under ``root`` and returns ``{name: raw label array}`` so
tests can compare what the loaders read. Labels are 8x8 blocks of raw values; PNG images encode the
raw label in their red channel (``red = raw``) so alignment can be checked exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

H, W = 32, 48

#: A subset of the real Mapillary Vistas 2.0 labels (names, colours and evaluate flags as in the config).
MAPILLARY_LABELS = [
    {"name": "animal--bird", "readable": "Bird", "color": [165, 42, 42], "instances": True, "evaluate": True},
    {"name": "construction--flat--road", "readable": "Road", "color": [128, 64, 128], "instances": False,
     "evaluate": True},
    {"name": "construction--flat--sidewalk", "readable": "Sidewalk", "color": [244, 35, 232], "instances": False,
     "evaluate": True},
    {"name": "human--rider--bicyclist", "readable": "Bicyclist", "color": [255, 0, 0], "instances": True,
     "evaluate": True},
    {"name": "marking--discrete--arrow--left", "readable": "Lane Marking - Arrow (Left)", "color": [250, 170, 26],
     "instances": True, "evaluate": True},
    {"name": "nature--sky", "readable": "Sky", "color": [70, 130, 180], "instances": False, "evaluate": True},
    {"name": "object--traffic-sign--ambiguous", "readable": "Traffic Sign - Ambiguous", "color": [192, 192, 192],
     "instances": True, "evaluate": False},
    {"name": "object--vehicle--car", "readable": "Car", "color": [0, 0, 142], "instances": True, "evaluate": True},
    {"name": "void--unlabeled", "readable": "Unlabeled", "color": [0, 0, 0], "instances": False, "evaluate": False},
]


def block_labels(rng: np.random.Generator, values: Sequence[int], block: int = 8) -> np.ndarray:
    """(H, W) uint8 map of ``block``-sized squares of values drawn from ``values``."""
    grid = rng.choice(np.asarray(values), size=(H // block, W // block))
    return np.kron(grid, np.ones((block, block), dtype=np.int64)).astype(np.uint8)


def encode_image(raw: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image whose red channel is the raw label."""
    return np.stack([raw, np.full_like(raw, 7), 255 - raw], axis=-1).astype(np.uint8)


def _save(array: np.ndarray, path: Path, mode: str | None = None, palette: Sequence[int] = ()) -> None:
    """Write ``array`` with PIL; ``mode="P"`` writes a palette PNG of indices with ``palette`` colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":
        img = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array, np.uint8).tobytes())
        img.putpalette(list(palette))
    else:
        img = Image.fromarray(array)
    img.save(path)


def make_cityscapes(root: Path, split: str = "train", train_ids_for: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Two cities, 2 + 1 samples; the first sample's top-left block is labelId 26 (car). Samples named in
    ``train_ids_for`` get a ``_gtFine_labelTrainIds.png`` (and no labelIds file)."""
    from hssn.data.cityscapes import LABEL_ID_TO_TRAIN_ID

    rng = np.random.default_rng(1)
    out = {}
    for city, idx in (("aachen", 0), ("aachen", 1), ("bonn", 0)):
        stem = f"{city}_{idx:06d}_000019"
        raw = block_labels(rng, list(range(34)))
        raw[:8, :8] = 26
        _save(encode_image(raw), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        if stem in train_ids_for:
            lut = np.full(256, 255, dtype=np.uint8)
            for k, v in LABEL_ID_TO_TRAIN_ID.items():
                lut[k] = v
            _save(lut[raw], root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png")
        else:
            _save(raw, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
        _save(np.zeros((H, W, 3), np.uint8), root / "gtFine" / split / city / f"{stem}_gtFine_color.png")
        out[stem] = raw
    return out


def make_mapillary(root: Path, split: str = "training", n: int = 3) -> dict[str, np.ndarray]:
    """``config_v2.0.json`` with :data:`MAPILLARY_LABELS`, JPEG images, palette ("P") label PNGs."""
    root.mkdir(parents=True, exist_ok=True)
    labels = [dict(lab, id=i) for i, lab in enumerate(MAPILLARY_LABELS)]
    (root / "config_v2.0.json").write_text(json.dumps({"labels": labels, "version": "2.0", "mapping": "mvd20"}))
    palette = [v for lab in MAPILLARY_LABELS for v in lab["color"]]
    rng = np.random.default_rng(2)
    out = {}
    for i in range(n):
        key = f"mvd{i:019d}abc"
        raw = block_labels(rng, list(range(len(MAPILLARY_LABELS))))
        _save(encode_image(raw), root / split / "images" / f"{key}.jpg")
        _save(raw, root / split / "v2.0" / "labels" / f"{key}.png", mode="P", palette=palette)
        out[key] = raw
    return out


def _image_label_pairs(stems, values, seed: int, image: Path, label: Path, image_ext: str) -> dict[str, np.ndarray]:
    """For each stem, a grey label PNG of ``values`` blocks in ``label`` and its image in ``image``."""
    rng = np.random.default_rng(seed)
    out = {}
    for stem in stems:
        raw = block_labels(rng, values)
        _save(encode_image(raw), image / f"{stem}{image_ext}")
        _save(raw, label / f"{stem}.png")
        out[stem] = raw
    return out


def make_ade20k(root: Path, split: str = "train", n: int = 3) -> dict[str, np.ndarray]:
    """``ADEChallengeData2016/images/{training,validation}/ADE_*.jpg`` and grey ``annotations/.../ADE_*.png``
    with values 0 (void) and 1-150."""
    folder = {"train": "training", "val": "validation"}[split]
    base = root / "ADEChallengeData2016"
    stems = [f"ADE_{split}_{i + 1:08d}" for i in range(n)]
    return _image_label_pairs(stems, [0, 1, 2, 13, 18, 21, 150], 5, base / "images" / folder,
                              base / "annotations" / folder, ".jpg")


def make_pascal_part108(root: Path, split: str = "train", n: int = 3) -> dict[str, np.ndarray]:
    """LogicSeg's ``img_dir/{split}/*.png`` images and grey ``ann108_dir/{split}/*.png`` labels (0-107, 255)."""
    return _image_label_pairs([f"2008_{i:06d}" for i in range(n)], [0, 1, 18, 77, 88, 107, 255], 6,
                              root / "img_dir" / split, root / "ann108_dir" / split, ".png")


def make_lip(root: Path, split: str = "train", layout: str = "official", with_ids: bool = True,
             n: int = 3) -> dict[str, np.ndarray]:
    """LIP in the ``official`` (TrainVal_*) or ``flat`` (CE2P) layout; values 0-19 and some 255."""
    if layout == "official":
        img_dir, lab_dir = root / "TrainVal_images" / f"{split}_images", \
            root / "TrainVal_parsing_annotations" / f"{split}_segmentations"
        list_path = root / "TrainVal_images" / f"{split}_id.txt"
    else:
        img_dir, lab_dir, list_path = root / f"{split}_images", root / f"{split}_segmentations", root / f"{split}_id.txt"
    rng = np.random.default_rng(3)
    out = {}
    for i in range(n):
        name = f"{100 + i}_{i:06d}"
        raw = block_labels(rng, list(range(20)) + [255])
        _save(encode_image(raw), img_dir / f"{name}.jpg")
        _save(raw, lab_dir / f"{name}.png")
        out[name] = raw
    if with_ids:
        list_path.write_text("".join(f"{k}\n" for k in out))
    return out


def make_pascal_person_part(root: Path, split: str = "train", list_style: str = "id",
                            n: int = 3) -> dict[str, np.ndarray]:
    """JPEGImages / SegmentationPart (palette PNG, VOC colours) and a split list: ``id`` ({split}_id.txt)
    or ``deeplab`` (pascal_person_part_trainval_list/{split}.txt with two paths per line); ``official``: the
    archive of Chen et al. as unpacked: grey PNGs in pascal_person_part_gt/, and in
    pascal_person_part_trainval_list/ both {train,val}.txt (paths naming /SegmentationPart/) and
    {train,val}_id.txt."""
    from hssn.data.palettes import voc_colormap

    palette = voc_colormap(256).flatten().tolist()
    rng = np.random.default_rng(4)
    out = {}
    for i in range(n):
        name = f"2008_{i:06d}"
        raw = block_labels(rng, list(range(7)) + [255])
        _save(encode_image(raw), root / "JPEGImages" / f"{name}.jpg")
        if list_style == "official":
            _save(raw, root / "pascal_person_part_gt" / f"{name}.png")
        else:
            _save(raw, root / "SegmentationPart" / f"{name}.png", mode="P", palette=palette)
        out[name] = raw
    # an image of another split that the list must leave out
    _save(np.zeros((H, W, 3), np.uint8), root / "JPEGImages" / "2009_999999.jpg")
    lists = root / "pascal_person_part_trainval_list"
    if list_style == "id":
        (root / f"{split}_id.txt").write_text("".join(f"{k}\n" for k in out))
    else:
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("".join(f"/JPEGImages/{k}.jpg /SegmentationPart/{k}.png\n" for k in out))
    if list_style == "official":
        (lists / f"{split}_id.txt").write_text("".join(f"{k}\n" for k in out))
    return out


def make_folder(root: Path, split: str | None = None, n: int = 3) -> dict[str, np.ndarray]:
    """images/ (PNG) + labels/ (leaf ids of a 3-leaf tree, some 255) + hierarchy.yaml."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "hierarchy.yaml").write_text(
        "names: [cat, dog, tree, animal, plant]\nparents: [3, 3, 4, -1, -1]\n"
        "leaf_colors: [[255, 0, 0], [0, 255, 0], [0, 0, 255]]\n")
    rng = np.random.default_rng(5)
    out = {}
    for i in range(n):
        key = f"sub/{i:03d}" if i == 0 else f"{i:03d}"
        raw = block_labels(rng, [0, 1, 2, 255])
        _save(encode_image(raw), root / "images" / (split or "") / f"{key}.png")
        _save(raw, root / "labels" / (split or "") / f"{key}.png")
        out[key] = raw
    return out
