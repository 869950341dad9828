"""Name -> dataset class registry with lazy imports, and the ``build_dataset`` entry point."""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from hssn.errors import UserError

from .common import Transform


@dataclass(frozen=True)
class DatasetEntry:
    """Where a dataset class lives; ``needs_root`` = its constructor takes ``root`` first."""

    module: str
    cls: str
    needs_root: bool = True

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)


_REGISTRY: dict[str, DatasetEntry] = {
    "cityscapes": DatasetEntry("hssn.data.cityscapes", "CityscapesDataset"),
    "mapillary_v2": DatasetEntry("hssn.data.mapillary", "MapillaryVistasDataset"),
    "lip": DatasetEntry("hssn.data.lip", "LIPDataset"),
    "pascal_person_part": DatasetEntry("hssn.data.pascal_person_part", "PascalPersonPartDataset"),
    "ade20k": DatasetEntry("hssn.data.ade20k", "ADE20KDataset"),
    "pascal_part108": DatasetEntry("hssn.data.pascal_part108", "PascalPart108Dataset"),
    "folder": DatasetEntry("hssn.data.folder", "FolderDataset"),
    "synthetic": DatasetEntry("hssn.data.synthetic", "SyntheticDataset", needs_root=False),
    "mixed": DatasetEntry("hssn.data.mixed", "MixedDataset", needs_root=False),
}


def available() -> list[str]:
    """Registered dataset names."""
    return sorted(_REGISTRY)


def accepts(name: str, kwarg: str) -> bool:
    """Whether the dataset class registered under ``name`` takes the constructor keyword ``kwarg``."""
    return kwarg in inspect.signature(dataset_class(name)).parameters


def entry_for_class(cls_name: str) -> str | None:
    """The registered name whose class is called ``cls_name``, or None."""
    return next((name for name, e in _REGISTRY.items() if e.cls == cls_name), None)


def register_dataset(name: str, module: str, cls: str, needs_root: bool = True) -> None:
    """Register ``module.cls`` under ``name`` (imported on first use); ValueError if the name is taken."""
    if name in _REGISTRY:
        raise UserError(f"dataset {name!r} is already registered")
    _REGISTRY[name] = DatasetEntry(module, cls, needs_root)


def dataset_class(name: str) -> type:
    """The class registered under ``name``; ValueError listing the names when unknown."""
    if name not in _REGISTRY:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name].load()


def build_dataset(name: str, root: str | Path | None = None, split: str = "train",
                  transforms: Transform | None = None, **kwargs: Any) -> Dataset:
    """``name``'s dataset for ``split`` under ``root`` (not needed for "synthetic"); ``kwargs`` go to
    the class (e.g. ``ignore_index``, ``hierarchy`` for "folder")."""
    cls = dataset_class(name)
    if not _REGISTRY[name].needs_root:
        if root is not None:
            kwargs["root"] = root
        return cls(split=split, transforms=transforms, **kwargs)
    if root is None:
        raise UserError(f"dataset {name!r} needs root= (the dataset folder; data.root in a config)")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root} (data.root of dataset {name!r})")
    return cls(root, split=split, transforms=transforms, **kwargs)
