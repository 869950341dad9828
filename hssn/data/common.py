"""Shared pieces of the dataset loaders: file reading, pairing, id mapping and the base Dataset.

Items are dicts ``{"image": float32 (3, H, W) in [0, 1], "label": int64 (H, W), "name": str}``; the
label holds leaf channel ids or ``ignore_index``. Normalisation (mean / std) is left to the model.
Every problem with the files raises at once, naming the file: a missing folder when the dataset is
built (FileNotFoundError), an unpaired image or label when it is built, a label value that is neither
a known id nor ignore, or an image / label size mismatch when the sample is read (ValueError).
"""
from __future__ import annotations

import os

from pathlib import Path
from typing import Callable, Container, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
Transform = Callable[[dict], dict]


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else FileNotFoundError naming it and ``what`` it should hold."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
"""PIL modes of single-channel 16-bit images ("I": how some Pillow versions open a 16-bit greyscale PNG)."""


def read_image(path: Path) -> torch.Tensor:
    """(3, H, W) float32 RGB in [0, 1] from any image file PIL reads, scaled by the image's bit depth: 8-bit
    images by 255, 16-bit greyscale ones by 65535 (grey to RGB). Other high-depth modes (float, 32-bit values
    above 65535) are refused."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = img.mode
            arr = np.asarray(img) if mode in SIXTEEN_BIT_MODES + ("F",) else np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated, not an image, broken header
        raise UserError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None
    if mode == "F":
        raise UserError(f"{path}: floating-point image (mode 'F'); expected 8-bit or 16-bit images")
    if mode in SIXTEEN_BIT_MODES:
        grey = arr.astype(np.float32)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise UserError(f"{path}: {mode!r} image with values outside [0, 65535]; expected 8-bit or 16-bit images")
        return torch.from_numpy(grey / 65535.0).expand(3, *grey.shape).contiguous()
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def read_label(path: Path) -> np.ndarray:
    """(H, W) int64 raw values of a single-channel label image.

    Palette ("P") PNGs give their indices (colours are never decoded); greyscale 8/16/32-bit images
    their values. RGB or RGBA label files are rejected: they hold colours, not ids.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                raise UserError(f"{path}: label image has mode {img.mode!r}; expected a single-channel "
                                "(greyscale or palette) PNG of class ids")
            arr = np.asarray(img)
    except (OSError, SyntaxError) as err:  # PIL: truncated, not an image, broken header
        raise UserError(f"{path}: unreadable label image ({type(err).__name__}: {err})") from None
    return arr.astype(np.int64)


INVALID = np.iinfo(np.int64).min
"""Lookup-table entry of a raw value that is neither a class nor void (not -1: an ``ignore_index`` may be)."""


def id_lookup(mapping: Mapping[int, int], size: int = 256) -> np.ndarray:
    """(size,) int64 table raw value -> channel id; unlisted values map to :data:`INVALID`.

    ``mapping`` lists every accepted raw value (map a void value to ``ignore_index`` explicitly).
    """
    size = max(size, max(mapping) + 1)
    lut = np.full(size, INVALID, dtype=np.int64)
    for raw, out in mapping.items():
        if raw < 0:
            raise UserError(f"raw label value {raw} is negative")
        lut[raw] = out
    return lut


RAW_VOID_16BIT = 65535
"""The raw void value of label files when ``ignore_index`` is negative (trees wider than 255 channels use
-1): no PNG holds -1, and 65535 is no channel (at most 4096)."""


def identity_lookup(ids: Iterable[int], ignore_index: int, raw_ignore: int | None = None) -> np.ndarray:
    """Table mapping ``ids`` to themselves and the raw void value ``raw_ignore`` (default: ``ignore_index``,
    or :data:`RAW_VOID_16BIT` for a negative one) to ``ignore_index``."""
    mapping = {int(i): int(i) for i in ids}
    if raw_ignore is None:
        raw_ignore = ignore_index if ignore_index >= 0 else RAW_VOID_16BIT
    if raw_ignore in mapping:
        raise UserError(f"void value {raw_ignore} is also a class id")
    mapping[int(raw_ignore)] = int(ignore_index)
    return id_lookup(mapping)


def map_label(raw: np.ndarray, lut: np.ndarray, path: Path, inner: Container[int] = ()) -> torch.Tensor:
    """(H, W) int64 channel ids of raw values through ``lut``; ValueError naming ``path`` and the
    offending values when a value is not in the table (naming ``data.partial_labels`` when they are all
    raw values of inner nodes, ``inner``: coarse labels)."""
    out_of_range = (raw < 0) | (raw >= len(lut))
    mapped = lut[np.clip(raw, 0, len(lut) - 1)]
    bad = out_of_range | (mapped == INVALID)
    if bad.any():
        values = np.unique(raw[bad])
        if inner and all(int(v) in inner for v in values):
            raise UserError(f"{path}: label values {values[:10].tolist()} are inner nodes of the tree (coarse "
                            "labels): set data.partial_labels=true to train on them")
        raise UserError(f"{path}: label values {values[:10].tolist()} are neither class ids of this "
                        f"dataset nor the ignore value")
    return torch.from_numpy(mapped)


def pair_files(images: Mapping[str, Path], labels: Mapping[str, Path], image_dir: Path,
               label_dir: Path) -> list[tuple[str, Path, Path]]:
    """Sorted (name, image, label) triples of two ``{key: path}`` maps; ValueError naming the files
    when an image has no label or a label no image."""
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_label:
        files = ", ".join(str(images[k]) for k in no_label[:5])
        raise UserError(f"{len(no_label)} image(s) without a label in {label_dir}: {files}")
    if no_image:
        files = ", ".join(str(labels[k]) for k in no_image[:5])
        raise UserError(f"{len(no_image)} label(s) without an image in {image_dir}: {files}")
    if not images:
        raise UserError(f"no images found in {image_dir}")
    return [(k, images[k], labels[k]) for k in sorted(images)]


def pair_folders(image_dir: Path, label_dir: Path, image_exts: Sequence[str], label_exts: Sequence[str] = (".png",),
                 recursive: bool = False) -> list[tuple[str, Path, Path]]:
    """:func:`pair_files` of the images (``image_exts``) and labels (``label_exts``) of two folders, paired by
    file name (relative path with ``recursive``)."""
    return pair_files(files_by_key(image_dir, image_exts, recursive=recursive),
                      files_by_key(label_dir, label_exts, recursive=recursive), image_dir, label_dir)


def files_by_key(folder: Path, suffixes: Sequence[str], strip: str = "", recursive: bool = False) -> dict[str, Path]:
    """``{key: path}`` of files in ``folder`` whose names end with one of ``suffixes`` (case-insensitive);
    the key is the path relative to ``folder`` (posix) without the suffix and without ``strip``."""
    pattern = "**/*" if recursive else "*"
    out: dict[str, Path] = {}
    for p in sorted(folder.glob(pattern)):
        if not p.is_file():
            continue
        suffix = next((s for s in suffixes if p.name.lower().endswith(s.lower())), None)
        if suffix is None:
            continue
        key = p.relative_to(folder).as_posix()[: -len(suffix)]
        if strip and key.endswith(strip):
            key = key[: -len(strip)]
        if key in out:
            raise UserError(f"two files for sample {key!r}: {out[key]} and {p}")
        out[key] = p
    return out


def read_numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) of the non-empty lines of a split list file."""
    text = require_file(path, "split list").read_text()
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_id_list(path: Path) -> list[str]:
    """Non-empty stripped lines of a split list file."""
    return [line for _, line in read_numbered_lines(path)]


def path_inside(root: Path, relative: str, source: Path, lineno: int) -> Path:
    """``root / relative`` when it stays inside ``root`` once ``..`` are resolved (lexically, so a root that
    holds symlinks still works); ``ValueError`` naming ``source`` and the line otherwise (``../../x``,
    ``/../x``, an absolute path)."""
    joined = Path(os.path.normpath(root / relative.lstrip("/")))
    if os.path.isabs(relative.lstrip("/")) or not joined.is_relative_to(Path(os.path.normpath(root))):
        raise UserError(f"{source}, line {lineno}: path {relative!r} points outside the dataset root {root}")
    return joined


class HierarchicalSegmentationDataset(Dataset):
    """Base loader: ``samples`` of (name, image path, label path) read and mapped through ``lut``.

    Attributes: ``hierarchy`` (ClassHierarchy), ``ignore_index`` (int), ``palette`` (uint8 (L, 3)
    leaf colours), ``flip_pairs`` (list of (a, b) leaf ids), ``class_names`` (leaf names), ``samples``,
    ``scored_leaves`` (None, or L bools in leaf order: the classes the dataset's official benchmark scores),
    ``partial_labels`` (labels may be inner-node ids: ``lut`` may map to any channel).
    """

    scored_leaves: list[bool] | None = None
    inner_raw_ids: Container[int] = ()
    """Raw label values that are inner nodes (datasets whose raw values are channel ids): their error names
    ``data.partial_labels``."""

    def __init__(self, samples: Sequence[tuple[str, Path, Path]], hierarchy: ClassHierarchy, lut: np.ndarray,
                 palette: torch.Tensor, flip_pairs: Sequence[Sequence[int]] = (), ignore_index: int = 255,
                 transforms: Transform | None = None, partial_labels: bool = False):
        if not isinstance(hierarchy, ClassHierarchy):
            raise TypeError(f"hierarchy must be a ClassHierarchy, got {type(hierarchy).__name__}")
        leaves = set(hierarchy.leaves)
        if ignore_index in leaves:
            raise UserError(f"ignore_index {ignore_index} is a leaf id of the hierarchy")
        mapped = {int(v) for v in np.unique(lut) if v != INVALID}
        labels = set(range(hierarchy.num_channels)) if partial_labels else leaves
        if not mapped <= labels | {ignore_index}:
            raise UserError(f"id table maps to {sorted(mapped - labels - {ignore_index})}, not "
                            f"{'channels' if partial_labels else 'leaves'}")
        self.partial_labels = bool(partial_labels)
        palette = torch.as_tensor(palette, dtype=torch.uint8)
        if palette.shape != (hierarchy.num_leaves, 3):
            raise UserError(f"palette must be ({hierarchy.num_leaves}, 3), got {tuple(palette.shape)}")
        if transforms is not None and not callable(transforms):
            raise TypeError("transforms must be callable on the item dict")
        self.samples = list(samples)
        self.hierarchy = hierarchy
        self.ignore_index = int(ignore_index)
        self.palette = palette
        self.flip_pairs = [(int(a), int(b)) for a, b in flip_pairs]
        for a, b in self.flip_pairs:
            if a not in leaves or b not in leaves:
                raise UserError(f"flip pair ({a}, {b}) is not two leaf ids")
        self.class_names = [hierarchy.names[c] for c in hierarchy.leaves]
        self.transforms = transforms
        self._lut = lut

    def __len__(self) -> int:
        return len(self.samples)

    def lookup(self, label_path: Path) -> np.ndarray:
        """Raw value -> channel id table for one label file (subclasses may vary it per file)."""
        return self._lut

    def load(self, index: int) -> dict:
        """The untransformed item ``index``."""
        name, image_path, label_path = self.samples[index]
        image = read_image(image_path)
        label = map_label(read_label(label_path), self.lookup(label_path), label_path, self.inner_raw_ids)
        if tuple(image.shape[1:]) != tuple(label.shape):
            raise UserError(f"size mismatch: image {image_path} is {tuple(image.shape[1:])} (H, W) but "
                            f"label {label_path} is {tuple(label.shape)}")
        return {"image": image, "label": label, "name": name}

    def __getitem__(self, index: int) -> dict:
        item = self.load(index)
        return self.transforms(item) if self.transforms is not None else item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(samples={len(self)}, leaves={self.hierarchy.num_leaves}, "
                f"channels={self.hierarchy.num_channels}, ignore_index={self.ignore_index})")
