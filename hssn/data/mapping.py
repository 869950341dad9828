"""Cross-dataset evaluation: a dataset's classes mapped onto a model's class tree by a declared mapping file.

A mapping file (YAML) names its ``source`` tree (the dataset's labels) and ``target`` tree (the model's), each a
shipped tree name (``hssn.hierarchies``) or a tree file path, and ``map``: source class name -> target node name
(any level) or null (unmapped: the pixels are ignored). A source class appears at most once (a repeated key is
an error); every name must be a node of its tree. A pixel mapped onto an inner node counts at that node's level
and coarser, as a partial label does. Shipped mappings live in ``hssn/hierarchies/mappings/`` (:func:`available`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

MAPPING_DIR = Path(__file__).resolve().parent.parent / "hierarchies" / "mappings"


def available() -> list[str]:
    """Names of the shipped mappings (file stems in :data:`MAPPING_DIR`)."""
    return sorted(p.stem for p in MAPPING_DIR.glob("*.yaml"))


def _tree(ref: str, where: str) -> tuple[ClassHierarchy, dict]:
    """(tree, metadata) of a shipped tree name or a tree file (:func:`hssn.data.folder.resolve_hierarchy`);
    ``ValueError`` naming the mapping file ``where`` otherwise."""
    from hssn import hierarchies

    from .folder import resolve_hierarchy

    try:
        return resolve_hierarchy(ref, Path("."))
    except FileNotFoundError:
        raise UserError(f"{where}: tree {ref!r} is neither a shipped tree ({', '.join(hierarchies.available())}) "
                        f"nor a tree file") from None


class LabelMapping:
    """A parsed, validated mapping file: ``source`` / ``target`` hierarchies, ``target_meta`` (the target tree
    file's metadata: colours, flip pairs), ``pairs`` {source name: target name or None}, ``path``."""

    def __init__(self, path: str | Path):
        from hssn.engine.config import load_yaml

        self.path = Path(path)
        where = str(self.path)
        try:
            data = load_yaml(self.path.read_text())
        except ValueError as err:
            raise UserError(f"{where}: {err}") from None
        if not isinstance(data, dict) or set(data) - {"source", "target", "map", "description"} or \
                not {"source", "target", "map"} <= set(data):
            raise UserError(f"{where}: a label mapping is a mapping with keys source, target, map (and optionally "
                            f"description), got {sorted(data) if isinstance(data, dict) else type(data).__name__}")
        if not isinstance(data["map"], dict) or not data["map"]:
            raise UserError(f"{where}: 'map' must be a non-empty mapping of source class -> target node or null")
        self.source, _ = _tree(str(data["source"]), where)
        self.target, self.target_meta = _tree(str(data["target"]), where)
        self.pairs: dict[str, str | None] = {}
        for key, value in data["map"].items():
            if key not in self.source.names:
                raise UserError(f"{where}: source class {key!r} is not a node of the source tree {data['source']!r}")
            if value is not None and value not in self.target.names:
                raise UserError(f"{where}: {key!r} maps to {value!r}, not a node of the target tree "
                                f"{data['target']!r}")
            self.pairs[str(key)] = value

    @classmethod
    def load(cls, name_or_path: str | Path) -> "LabelMapping":
        """A shipped mapping name (``mapillary_v2_to_cityscapes``) or a YAML path."""
        text = str(name_or_path)
        shipped = MAPPING_DIR / f"{text}.yaml"
        if shipped.is_file():
            return cls(shipped)
        if Path(text).is_file():
            return cls(text)
        raise UserError(f"label mapping {text!r} not found: not a file and not one of the shipped mappings "
                        f"({', '.join(available())})")

    def lookup(self, hierarchy: ClassHierarchy) -> torch.Tensor:
        """(C_dataset,) int64: each channel of the dataset's tree ``hierarchy`` -> its target node, -1 when
        unmapped. The dataset's class names must be nodes of the mapping's source tree (a subset is fine)."""
        foreign = [n for n in hierarchy.names if n not in self.source.names]
        if foreign:
            raise UserError(f"{self.path}: the dataset's classes {foreign[:5]} are not in the mapping's source tree")
        return torch.tensor([-1 if self.pairs.get(n) is None else self.target.names.index(self.pairs[n])
                             for n in hierarchy.names], dtype=torch.int64)


class MappedDataset(Dataset):
    """``dataset`` with its labels mapped onto ``mapping.target`` (items as the dataset gives them, labels
    replaced; unmapped classes -> ``ignore_index``). ``hierarchy`` = the target tree, ``partial_labels`` = some
    class maps onto an inner node, ``scored_leaves`` = the target leaves some class maps onto (None when all
    are), palette and flip pairs from the target tree file."""

    def __init__(self, dataset: Dataset, mapping: LabelMapping):
        self.dataset, self.mapping = dataset, mapping
        self.hierarchy = mapping.target
        self.ignore_index = int(dataset.ignore_index)
        if 0 <= self.ignore_index < self.hierarchy.num_channels:
            raise UserError(f"{mapping.path}: ignore_index {self.ignore_index} is a channel of the target tree "
                            f"({self.hierarchy.num_channels} channels)")
        lut = mapping.lookup(dataset.hierarchy)
        self.lut = torch.where(lut < 0, self.ignore_index, lut)
        targets = set(lut[lut >= 0].tolist())
        self.partial_labels = any(not self.hierarchy.is_leaf(c) for c in targets) or \
            bool(getattr(dataset, "partial_labels", False))
        scored = [c in targets for c in self.hierarchy.leaves]
        self.scored_leaves = None if all(scored) else scored
        self.palette = torch.tensor(mapping.target_meta["leaf_colors"], dtype=torch.uint8)
        self.flip_pairs = [tuple(p) for p in mapping.target_meta["flip_pairs"]]
        self.class_names = [self.hierarchy.names[c] for c in self.hierarchy.leaves]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        label = item["label"]
        valid = label != self.ignore_index
        out = torch.full_like(label, self.ignore_index, dtype=torch.int64)
        out[valid] = self.lut[label[valid].long()]
        item["label"] = out
        return item

    def __repr__(self) -> str:
        return f"MappedDataset({self.dataset!r}, {self.mapping.path.name})"
