"""Derive the Mapillary Vistas class tree from the ``--`` segments of its label names.

Rule (every leaf ends at depth 3):

* leaf (level 3)    = the full label name, in config id order (``construction--flat--road``);
* level 2           = the first two segments (``construction--flat``) for names of 3+ segments;
  names of exactly 2 segments (``nature--sky``, ``object--bench``) share one level-2 node per first
  segment, named ``<first>--*`` (``nature--*``, ``object--*``);
* level 1           = the first segment (``construction``).

Segments past the third (``marking--discrete--arrow--left``) stay in the leaf name only. Inner nodes
follow the leaves, level 2 then level 1, each level ordered by its lowest leaf id. On the 124
labels of ``config_v2.0.json`` this gives 8 / 18 / 124 nodes at levels 1 / 2 / 3 (150 channels).

Regenerate the shipped file: ``python -m hssn.hierarchies.mapillary config_v2.0.json -o out.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping, Sequence

from hssn_kernels import ClassHierarchy

from .files import format_tree_file

RULE = ("level 1 = first '--' segment; level 2 = first two segments, or '<first>--*' for 2-segment names; "
        "leaf = full name (depth 3)")


def read_config_labels(config: str | Path | Mapping) -> list[dict]:
    """The ``labels`` list of a Mapillary config (a path or the parsed dict), checked for id order."""
    if not isinstance(config, Mapping):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"Mapillary config not found: {path}")
        config = json.loads(path.read_text())
    labels = config.get("labels")
    if not isinstance(labels, list) or not labels:
        raise ValueError("Mapillary config has no 'labels' list")
    for i, lab in enumerate(labels):
        for key in ("name", "color"):
            if key not in lab:
                raise ValueError(f"Mapillary label {i} has no '{key}'")
        if "id" in lab and int(lab["id"]) != i:
            raise ValueError(f"Mapillary label {lab['name']!r} has id {lab['id']} at position {i}")
    return [dict(lab) for lab in labels]


def derive_mapillary_hierarchy(names: Sequence[str]) -> ClassHierarchy:
    """Three-level tree over ``names`` (leaf i = names[i]) by the module's rule."""
    level2: dict[str, str] = {}  # level-2 name -> its level-1 name, in order of first leaf
    leaf_parent = []
    for name in names:
        parts = name.split("--")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"Mapillary label {name!r} needs at least two non-empty '--' segments")
        group = "--".join(parts[:2]) if len(parts) >= 3 else f"{parts[0]}--*"
        level2.setdefault(group, parts[0])
        leaf_parent.append(group)
    level1 = list(dict.fromkeys(level2.values()))
    all_names = list(names) + list(level2) + level1
    index = {n: i for i, n in enumerate(all_names)}
    if len(index) != len(all_names):
        dup = next(n for n in all_names if all_names.count(n) > 1)
        raise ValueError(f"Mapillary tree: name {dup!r} is both a label and a derived group")
    parents = [index[g] for g in leaf_parent] + [index[p] for p in level2.values()] + [-1] * len(level1)
    return ClassHierarchy.from_parents(parents, all_names)


def derive_from_config(config: str | Path | Mapping) -> tuple[ClassHierarchy, list[dict]]:
    """(tree, labels) of a Mapillary ``config_v2.0.json`` (path or parsed dict)."""
    labels = read_config_labels(config)
    return derive_mapillary_hierarchy([lab["name"] for lab in labels]), labels


def tree_file_text(config: str | Path | Mapping) -> str:
    """The tree data file (JSON text) derived from a config, as shipped in ``data/mapillary_v2.json``."""
    hierarchy, labels = derive_from_config(config)
    return format_tree_file(
        hierarchy,
        [lab["color"] for lab in labels],
        dataset="mapillary_v2",
        description="Mapillary Vistas 2.0, derived from config_v2.0.json by hssn.hierarchies.mapillary. "
                    "'evaluate' is the config's flag per leaf; 'readable' its display name.",
        rule=RULE,
        evaluate=[bool(lab.get("evaluate", True)) for lab in labels],
        readable=[str(lab.get("readable", lab["name"])) for lab in labels],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Derive the Mapillary class tree from config_v2.0.json")
    parser.add_argument("config", help="path to config_v2.0.json")
    parser.add_argument("-o", "--output", help="tree file to write (default: print to stdout)")
    args = parser.parse_args(argv)
    text = tree_file_text(args.config)
    if args.output:
        Path(args.output).write_text(text)
        hierarchy = ClassHierarchy.from_json(args.output)
        counts = [len(hierarchy.nodes_at_level(lvl)) for lvl in range(1, hierarchy.height + 1)]
        print(f"wrote {args.output}: {hierarchy.num_channels} channels, nodes per level {counts}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
