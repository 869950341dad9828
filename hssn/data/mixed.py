"""Several datasets that share one class tree, trained as one: each keeps its own label depth.

``MixedDataset(parts)``: the items of every part in order (part 0 first). The parts must share the
hierarchy (equal trees) and ``ignore_index``; the palette, flip pairs and class names are the first part's.
``partial_labels`` is true when any part has inner-node labels, so the loss and the metrics accept them.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch.utils.data import ConcatDataset, Dataset

from hssn.errors import UserError

from .common import Transform


class MixedDataset(ConcatDataset):
    """``parts``: datasets (or ``{"name", "root", "kwargs"}`` specs for :func:`hssn.data.build_dataset`, built
    for ``split``); ``transforms`` run on the items of every part (build the parts without their own).
    Indexing is ``torch.utils.data.ConcatDataset``'s (``datasets``, ``cumulative_sizes``)."""

    def __init__(self, parts: Sequence[Dataset | dict[str, Any]], split: str = "train",
                 transforms: Transform | None = None, partial_labels: bool = False):
        from .registry import accepts, build_dataset

        if not parts:
            raise UserError("MixedDataset needs at least one part")
        built = []
        for i, part in enumerate(parts):
            if isinstance(part, dict):
                unknown = set(part) - {"name", "root", "kwargs"}
                if "name" not in part or unknown:
                    raise UserError(f"mixed part {i} must be {{name, root, kwargs}}, got keys {sorted(part)}")
                kwargs = dict(part.get("kwargs") or {})
                if partial_labels and accepts(part["name"], "partial_labels"):
                    kwargs.setdefault("partial_labels", True)
                part = build_dataset(part["name"], part.get("root"), split=split, **kwargs)
            built.append(part)
        first = built[0]
        for i, part in enumerate(built[1:], 1):
            if part.hierarchy != first.hierarchy:
                raise UserError(f"mixed part {i} ({type(part).__name__}) has another class tree than part 0 "
                                f"({type(first).__name__}): the parts must share one tree")
            if part.ignore_index != first.ignore_index:
                raise UserError(f"mixed part {i} has ignore_index {part.ignore_index}, part 0 {first.ignore_index}")
        if transforms is not None and not callable(transforms):
            raise TypeError("transforms must be callable on the item dict")
        super().__init__(built)
        self.transforms = transforms
        self.hierarchy, self.ignore_index = first.hierarchy, first.ignore_index
        self.palette, self.flip_pairs, self.class_names = first.palette, first.flip_pairs, first.class_names
        self.scored_leaves = getattr(first, "scored_leaves", None)
        self.partial_labels = any(getattr(p, "partial_labels", False) for p in built)

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        return self.transforms(item) if self.transforms is not None else item

    def __repr__(self) -> str:
        return f"MixedDataset({', '.join(f'{type(p).__name__}({len(p)})' for p in self.datasets)})"
