"""The shipped dataset trees, the Mapillary derivation and the palettes."""
import json

import pytest
import torch

from fixtures_datasets import MAPILLARY_LABELS
from hssn import hierarchies
from hssn.data import palettes
from hssn.hierarchies import mapillary
from hssn_kernels import ClassHierarchy


def level_counts(h: ClassHierarchy) -> list[int]:
    return [len(h.nodes_at_level(lvl)) for lvl in range(1, h.height + 1)]


def parent_name(h: ClassHierarchy, name: str) -> str:
    return h.names[h.parents[h.names.index(name)]]


@pytest.mark.parametrize("name, leaves, channels, counts", [
    ("cityscapes", 19, 26, [7, 19]),
    ("lip", 20, 25, [2, 3, 20]),
    ("pascal_person_part", 7, 12, [2, 3, 7]),
    ("mapillary_v2", 124, 177, [8, 45, 124]),
    ("mapillary_v2_merged", 124, 150, [8, 18, 124]),
])
def test_shipped_tree_shapes(name, leaves, channels, counts):
    h = hierarchies.get(name)
    assert (h.num_leaves, h.num_channels, level_counts(h)) == (leaves, channels, counts)
    assert h.leaves == tuple(range(leaves)), "leaves must take the first channels"
    levels = [h.level(c) for c in range(leaves, channels)]
    assert levels == sorted(levels, reverse=True), "inner nodes: coarsest level last"
    assert all(h.level(c) == h.height for c in h.leaves), "every leaf at full depth"
    assert hierarchies.get(name) is h
    assert len(hierarchies.metadata(name)["leaf_colors"]) == leaves


@pytest.mark.parametrize("name, pairs", [
    ("cityscapes", [("car", "vehicle"), ("rider", "human"), ("sky", "sky-group"), ("road", "flat"),
                    ("traffic sign", "object"), ("terrain", "nature"), ("fence", "construction")]),
    ("lip", [("left-arm", "upper-body"), ("face", "upper-body"), ("jumpsuits", "upper-body"), ("socks", "lower-body"),
             ("right-shoe", "lower-body"), ("skirt", "lower-body"), ("upper-body", "human"), ("lower-body", "human"),
             ("background", "background-l2"), ("background-l2", "background-l1")]),
    ("pascal_person_part", [("head", "upper-body"), ("lower-arm", "upper-body"), ("upper-leg", "lower-body"),
                            ("lower-body", "human"), ("background", "background-l2")]),
    ("mapillary_v2", [("construction--flat--road", "construction--flat"), ("construction--flat", "construction"),
                      ("nature--sky", "nature--sky--*"), ("nature--sky--*", "nature"),
                      ("object--bench", "object--bench--*"), ("object--traffic-sign--front", "object--traffic-sign"),
                      ("marking--discrete--arrow--left", "marking--discrete"),
                      ("human--rider--bicyclist", "human--rider"), ("void--unlabeled", "void--unlabeled--*")]),
    ("mapillary_v2_merged", [("construction--flat--road", "construction--flat"),
                             ("construction--flat", "construction"),
                             ("nature--sky", "nature--*"), ("nature--*", "nature"), ("object--bench", "object--*"),
                      ("marking--discrete--arrow--left", "marking--discrete"),
                      ("human--rider--bicyclist", "human--rider")]),
])
def test_named_parents(name, pairs):
    h = hierarchies.get(name)
    for child, parent in pairs:
        assert parent_name(h, child) == parent


def test_cityscapes_leaf_order_is_train_id_order():
    h = hierarchies.get("cityscapes")
    assert h.names[13] == "car" and h.names[0] == "road" and h.names[18] == "bicycle"
    assert h.names[h.ancestor_at_level(13, 1)] == "vehicle"
    assert h.names[19:] == ("flat", "construction", "object", "nature", "sky-group", "human", "vehicle")


def test_flip_pairs():
    assert hierarchies.flip_pairs("lip") == [(14, 15), (16, 17), (18, 19)]
    names = hierarchies.get("lip").names
    assert [(names[a], names[b]) for a, b in hierarchies.flip_pairs("lip")] == [
        ("left-arm", "right-arm"), ("left-leg", "right-leg"), ("left-shoe", "right-shoe")]
    assert hierarchies.flip_pairs("cityscapes") == []


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="available: ade20k, cityscapes, lip, mapillary_v2, mapillary_v2_merged, "
                                         "pascal_part108, pascal_person_part"):
        hierarchies.get("coco")


def test_metadata_is_a_copy():
    hierarchies.metadata("lip")["flip_pairs"].clear()
    assert len(hierarchies.metadata("lip")["flip_pairs"]) == 3


def test_mapillary_metadata_matches_config_flags():
    meta = hierarchies.metadata("mapillary_v2")
    h = hierarchies.get("mapillary_v2")
    not_evaluated = [h.names[i] for i, ok in enumerate(meta["evaluate"]) if not ok]
    assert len(not_evaluated) == 8 and "void--unlabeled" in not_evaluated
    assert meta["leaf_colors"][h.names.index("construction--flat--road")] == [128, 64, 128]


def official_metalevel_groups(names: list[str], level: int) -> list[list[str]]:
    """The partition of ``names`` that Mapillary's ``reduce_evaluation_to_metalevel(labels, ..., level)`` sums
    (written here from its code: the key is ``"--".join(name.split("--")[:level])``), groups sorted by key."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault("--".join(name.split("--")[:level]), []).append(name)
    return [sorted(groups[k]) for k in sorted(groups)]


@pytest.mark.parametrize("level", [1, 2])
def test_mapillary_tree_is_the_official_grouping(level):
    h = hierarchies.get("mapillary_v2")
    leaves = [h.names[c] for c in h.leaves]
    ours = [sorted(h.names[c] for c in h.leaves if h.ancestor_at_level(c, level) == node)
            for node in h.nodes_at_level(level)]
    assert sorted(ours) == official_metalevel_groups(leaves, level)
    assert len(ours) == {1: 8, 2: 45}[level]


@pytest.mark.parametrize("rule", ["official", "merged"])
def test_mapillary_rederive_matches_shipped(tmp_path, rule):
    config = tmp_path / "config_v2.0.json"
    config.write_text(json.dumps({"labels": MAPILLARY_LABELS}))
    derived, _ = mapillary.derive_from_config(config, rule)
    shipped = hierarchies.get(mapillary.TREE_FILES[rule])
    for leaf, lab in enumerate(MAPILLARY_LABELS):
        chain = [derived.names[c] for c in derived.ancestors(leaf)]
        assert chain == [shipped.names[c] for c in shipped.ancestors(shipped.names.index(lab["name"]))]
    assert derived.leaves == tuple(range(len(MAPILLARY_LABELS)))
    # the CLI writes a tree file with the same structure
    out = tmp_path / "tree.json"
    mapillary.main([str(config), "-o", str(out), "--rule", rule])
    assert ClassHierarchy.from_json(out) == derived


def test_mapillary_derivation_errors():
    with pytest.raises(ValueError, match="two non-empty"):
        mapillary.derive_mapillary_hierarchy(["sky"])
    with pytest.raises(ValueError, match="both a label and a derived group"):
        mapillary.derive_mapillary_hierarchy(["a--b", "a--b--c"])
    with pytest.raises(ValueError, match="rule must be one of"):
        mapillary.derive_mapillary_hierarchy(["a--b"], rule="paper")
    with pytest.raises(ValueError, match="id 5 at position 0"):
        mapillary.read_config_labels({"labels": [{"id": 5, "name": "a--b", "color": [0, 0, 0]}]})


def test_node_palette_and_level_colours():
    h = hierarchies.get("lip")
    leaf = palettes.leaf_palette("lip")
    nodes = palettes.node_palette(h, leaf)
    assert torch.equal(nodes[:20], leaf)
    bg1 = h.names.index("background-l1")
    assert nodes[bg1].tolist() == [0, 0, 0], "a one-child chain keeps its leaf's colour"
    lower = h.names.index("lower-body")
    kids = [c for c in h.descendants(lower) if h.is_leaf(c)]
    assert nodes[lower].tolist() == leaf[kids].double().mean(0).round().int().tolist()
    label = torch.tensor([[0, 14], [9, 255]])
    img = palettes.colorize_level(label, h, leaf, level=1)
    human = nodes[h.names.index("human")].tolist()
    assert img[0, 0].tolist() == [0, 0, 0] and img[0, 1].tolist() == human and img[1, 0].tolist() == human
    assert img[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="label ids outside"):
        palettes.colorize(torch.tensor([[20]]), leaf)


def test_voc_colormap():
    assert palettes.voc_colormap(4).tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
