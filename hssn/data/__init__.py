"""Datasets (Cityscapes, Mapillary Vistas 2.0, LIP, PASCAL-Person-Part, folders of PNGs), transforms, palettes.

``build_dataset(name, root=..., split=...)`` is the entry point; classes are imported on first use.
Items: ``{"image": float32 (3, H, W) in [0, 1] (unnormalised), "label": int64 (H, W) leaf ids or
ignore_index, "name": str}``.
"""
from .registry import available, build_dataset, dataset_class, register_dataset

__all__ = ["available", "build_dataset", "dataset_class", "register_dataset"]



def __getattr__(name: str):
    """Dataset classes by class name (``hssn.data.FolderDataset``), imported on first access; the registry
    (``hssn.data.registry``) is the list."""
    from .registry import entry_for_class

    key = entry_for_class(name)
    if key is not None:
        return dataset_class(key)
    raise AttributeError(f"module 'hssn.data' has no attribute {name!r}")
