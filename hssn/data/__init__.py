"""Datasets (Cityscapes, Mapillary Vistas 2.0, LIP, PASCAL-Person-Part, folders of PNGs), transforms, palettes.

``build_dataset(name, root=..., split=...)`` is the entry point; classes are imported on first use.
Items: ``{"image": float32 (3, H, W) in [0, 1] (unnormalised), "label": int64 (H, W) leaf ids or
ignore_index, "name": str}``.
"""
from .registry import available, build_dataset, dataset_class, register_dataset

__all__ = ["available", "build_dataset", "dataset_class", "register_dataset"]

_CLASSES = {
    "CityscapesDataset": "cityscapes",
    "MapillaryVistasDataset": "mapillary_v2",
    "LIPDataset": "lip",
    "PascalPersonPartDataset": "pascal_person_part",
    "FolderDataset": "folder",
}


def __getattr__(name: str):
    """Dataset classes by name (``hssn.data.FolderDataset``), imported on first access."""
    if name in _CLASSES:
        return dataset_class(_CLASSES[name])
    raise AttributeError(f"module 'hssn.data' has no attribute {name!r}")
