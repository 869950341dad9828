"""ClassHierarchy: constructors, queries, tables, validation."""
import json

import pytest
import torch

from hssn_kernels import MAX_CHANNELS, MAX_DEPTH, ClassHierarchy
from trees import cityscapes_like, random_tree

SMALL = {"P": {"a": {}, "b": {}}, "Q": {"c": {}}}


def test_from_nested_puts_leaves_first_and_coarsest_last():
    h = ClassHierarchy.from_nested({"A": {"B": {"x": {}, "y": {}}, "z": {}}, "C": {"w": {}}})
    assert h.names == ("x", "y", "z", "w", "B", "A", "C")
    assert h.parents == (4, 4, 5, 6, 5, -1, -1)
    assert h.leaves == (0, 1, 2, 3)
    assert h.height == 3 and h.num_channels == 7 and h.num_leaves == 4
    assert [h.level(c) for c in range(7)] == [3, 3, 2, 2, 2, 1, 1]


def test_queries():
    h = ClassHierarchy.from_nested(SMALL)  # a b c P Q
    assert h.ancestors(0) == (0, 3)
    assert h.descendants(3) == (0, 1, 3)
    assert h.children(4) == (2,)
    assert h.roots == (3, 4)
    assert h.tree_distance.tolist() == [[0, 2, 4], [2, 0, 4], [4, 4, 0]]
    assert h.tree_distance.dtype == torch.int64
    assert h.leaf_to_level(1).tolist() == [3, 3, 4, 3, 4]
    assert h.leaf_to_level(2).tolist() == [0, 1, 2, 3, 4]


def test_unbalanced_tree_distance_and_levels():
    # leaf "s" hangs from the root; leaves "x" is 3 deep.
    h = ClassHierarchy.from_nested({"s": {}, "A": {"B": {"x": {}}}})
    s, x = h.names.index("s"), h.names.index("x")
    assert h.distance(s, x) == 4
    assert h.leaf_to_level(2)[s] == s  # shallower leaves stand for themselves
    assert h.leaf_to_level(2)[x] == h.names.index("B")


def test_tables_shapes_and_cache():
    h = cityscapes_like()
    t = h.tables("cpu")
    assert t is h.tables(torch.device("cpu"))
    assert t.ancestors.shape == (26, 2) and t.path.shape == (26, 2)
    assert t.level_map.shape == (2, 26)
    assert t.tree_distance.shape == (19, 19)
    assert t.desc_ptr[-1] == t.desc_idx.numel()
    # bottom_up lists children before parents
    pos = {int(c): i for i, c in enumerate(t.bottom_up)}
    assert all(pos[c] < pos[p] for c, p in enumerate(h.parents) if p >= 0)
    assert bool(t.is_ancestor[0, h.parents[0]]) and not bool(t.is_ancestor[h.parents[0], 0])


@pytest.mark.parametrize("seed", range(5))
def test_random_tree_invariants(seed):
    h = random_tree(seed, shuffle=True)
    t = h.tables()
    for c in range(h.num_channels):
        a = h.ancestors(c)
        assert len(a) == h.level(c)
        assert t.path[c, : len(a)].tolist() == list(reversed(a))
        for d in h.descendants(c):
            assert c in h.ancestors(d)
    for i, u in enumerate(h.leaves):
        for j, v in enumerate(h.leaves):
            assert h.tree_distance[i, j] == h.tree_distance[j, i]
            assert (h.tree_distance[i, j] == 0) == (u == v)


def test_json_yaml_roundtrip(tmp_path):
    h = random_tree(3)
    for name in ("tree.json", "tree.yaml"):
        h.to_json(tmp_path / name)
        assert ClassHierarchy.from_json(tmp_path / name) == h
    (tmp_path / "nested.yaml").write_text("tree:\n  P: {a: {}, b: {}}\n  Q: {c: {}}\n")
    assert ClassHierarchy.from_json(tmp_path / "nested.yaml") == ClassHierarchy.from_nested(SMALL)
    assert ClassHierarchy.from_dict(h.to_dict()) == h
    assert json.loads((tmp_path / "tree.json").read_text())["parents"] == list(h.parents)


@pytest.mark.parametrize(
    "parents, names, message",
    [
        ([1, 0], None, "cycle"),
        ([1, 2, 0, -1], None, "cycle"),
        ([0], None, "its own parent"),
        ([5, -1], None, "out of range"),
        ([-2, -1], None, "out of range"),
        ([-1, -1], ["a", "a"], "duplicate class name"),
        ([-1, -1], ["a"], "names for 2 channels"),
        ([], None, "no channels"),
    ],
)
def test_validation_errors(parents, names, message):
    with pytest.raises(ValueError, match=message):
        ClassHierarchy.from_parents(parents, names)


def test_limits():
    deep = [-1] + list(range(MAX_DEPTH))  # MAX_DEPTH + 1 levels
    with pytest.raises(ValueError, match="levels deep"):
        ClassHierarchy.from_parents(deep)
    ClassHierarchy.from_parents(deep[:-1])
    with pytest.raises(ValueError, match="channels; the limit"):
        ClassHierarchy.from_parents([-1] * (MAX_CHANNELS + 1))


def test_nested_errors():
    with pytest.raises(ValueError, match="duplicate"):
        ClassHierarchy.from_nested({"A": {"x": {}}, "B": {"x": {}}})
    with pytest.raises(ValueError, match="must be a dict"):
        ClassHierarchy.from_nested({"A": [1, 2]})


def test_hashable_and_picklable():
    import pickle

    h = cityscapes_like()
    assert pickle.loads(pickle.dumps(h)) == h
    assert len({h, cityscapes_like()}) == 1


def test_distance_table_equals_distance():
    h = random_tree(4, max_depth=4, max_channels=25)
    table = h.distance_table(range(h.num_channels), h.leaves)
    assert table.tolist() == [[h.distance(c, q) for q in h.leaves] for c in range(h.num_channels)]
    assert torch.equal(h.distance_table(h.leaves, h.leaves), h.tables("cpu").tree_distance)
