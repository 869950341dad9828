"""Derive the Mapillary Vistas class tree from the ``--`` segments of its label names.

Two rules (every leaf ends at depth 3; the leaf is the full label name, in config id order):

* ``"official"`` (the default, shipped as ``mapillary_v2``): the grouping of Mapillary's own evaluation code
  (``reduce_evaluation_to_metalevel`` in github.com/mapillary/mapillary_vistas): level 1 = the first segment
  (``construction``), level 2 = the first two segments (``construction--flat``); a two-segment label
  (``nature--sky``) is its own level-2 group, named ``<label>--*`` (``nature--sky--*``) so that names stay
  unique. On ``config_v2.0.json``: 8 / 45 / 124 nodes at levels 1 / 2 / 3 (177 channels).
* ``"merged"`` (shipped as ``mapillary_v2_merged``): as above, but the two-segment labels of one first
  segment share one level-2 node ``<first>--*`` (``nature--*``, ``object--*``): 8 / 18 / 124 (150 channels).

The paper reports 4 / 16 / 124 nodes; that tree is not published (the authors released no Mapillary code),
so it cannot be rebuilt. Segments past the third (``marking--discrete--arrow--left``) stay in the leaf name
only. Inner nodes follow the leaves, level 2 then level 1, each level ordered by its lowest leaf id.

Regenerate the shipped files: ``python -m hssn.hierarchies.mapillary config_v2.0.json -o out.json [--rule merged]``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping, Sequence

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .files import format_tree_file

RULES = {
    "official": "level 1 = first '--' segment; level 2 = first two segments (a 2-segment label is its own group, "
                "'<label>--*'); leaf = full name (depth 3); Mapillary's reduce_evaluation_to_metalevel",
    "merged": "level 1 = first '--' segment; level 2 = first two segments, or '<first>--*' shared by the "
              "2-segment names; leaf = full name (depth 3)",
}
"""Tree rule name -> its statement (stored in the tree file)."""
TREE_FILES = {"official": "mapillary_v2", "merged": "mapillary_v2_merged"}
"""Rule -> the shipped tree of ``config_v2.0.json`` (``hssn.hierarchies.get``)."""


def read_config_labels(config: str | Path | Mapping) -> list[dict]:
    """The ``labels`` list of a Mapillary config (a path or the parsed dict), checked for id order."""
    if not isinstance(config, Mapping):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"Mapillary config not found: {path}")
        config = json.loads(path.read_text())
    labels = config.get("labels")
    if not isinstance(labels, list) or not labels:
        raise UserError("Mapillary config has no 'labels' list")
    for i, lab in enumerate(labels):
        for key in ("name", "color"):
            if key not in lab:
                raise UserError(f"Mapillary label {i} has no '{key}'")
        if "id" in lab and int(lab["id"]) != i:
            raise UserError(f"Mapillary label {lab['name']!r} has id {lab['id']} at position {i}")
    return [dict(lab) for lab in labels]


def check_rule(rule: str) -> str:
    """``rule`` if it names one of :data:`RULES`, else ValueError listing them."""
    if rule not in RULES:
        raise UserError(f"Mapillary tree rule must be one of {sorted(RULES)}, got {rule!r}")
    return rule


def derive_mapillary_hierarchy(names: Sequence[str], rule: str = "official") -> ClassHierarchy:
    """Three-level tree over ``names`` (leaf i = names[i]) by ``rule`` (see :data:`RULES`)."""
    check_rule(rule)
    level2: dict[str, str] = {}  # level-2 name -> its level-1 name, in order of first leaf
    leaf_parent = []
    for name in names:
        parts = name.split("--")
        if len(parts) < 2 or not all(parts):
            raise UserError(f"Mapillary label {name!r} needs at least two non-empty '--' segments")
        if len(parts) >= 3:
            group = "--".join(parts[:2])
        else:
            group = f"{name}--*" if rule == "official" else f"{parts[0]}--*"
        level2.setdefault(group, parts[0])
        leaf_parent.append(group)
    level1 = list(dict.fromkeys(level2.values()))
    all_names = list(names) + list(level2) + level1
    index = {n: i for i, n in enumerate(all_names)}
    if len(index) != len(all_names):
        dup = next(n for n in all_names if all_names.count(n) > 1)
        raise UserError(f"Mapillary tree: name {dup!r} is both a label and a derived group")
    parents = [index[g] for g in leaf_parent] + [index[p] for p in level2.values()] + [-1] * len(level1)
    return ClassHierarchy.from_parents(parents, all_names)


def derive_from_config(config: str | Path | Mapping, rule: str = "official") -> tuple[ClassHierarchy, list[dict]]:
    """(tree, labels) of a Mapillary ``config_v2.0.json`` (path or parsed dict) by ``rule``."""
    labels = read_config_labels(config)
    return derive_mapillary_hierarchy([lab["name"] for lab in labels], rule), labels


def tree_file_text(config: str | Path | Mapping, rule: str = "official") -> str:
    """The tree data file (JSON text) derived from a config, as shipped in ``data/<TREE_FILES[rule]>.json``."""
    hierarchy, labels = derive_from_config(config, rule)
    return format_tree_file(
        hierarchy,
        [lab["color"] for lab in labels],
        dataset="mapillary_v2",
        description=f"Mapillary Vistas 2.0, derived from config_v2.0.json by hssn.hierarchies.mapillary (rule "
                    f"{rule!r}). 'evaluate' is the config's flag per leaf; 'readable' its display name.",
        rule=RULES[rule],
        evaluate=[bool(lab.get("evaluate", True)) for lab in labels],
        readable=[str(lab.get("readable", lab["name"])) for lab in labels],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Derive the Mapillary class tree from config_v2.0.json")
    parser.add_argument("config", help="path to config_v2.0.json")
    parser.add_argument("-o", "--output", help="tree file to write (default: print to stdout)")
    parser.add_argument("--rule", choices=sorted(RULES), default="official", help="grouping rule (default official)")
    args = parser.parse_args(argv)
    text = tree_file_text(args.config, args.rule)
    if args.output:
        Path(args.output).write_text(text)
        hierarchy = ClassHierarchy.from_json(args.output)
        counts = [len(hierarchy.nodes_at_level(lvl)) for lvl in range(1, hierarchy.height + 1)]
        print(f"wrote {args.output}: {hierarchy.num_channels} channels, nodes per level {counts}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
