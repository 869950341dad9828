"""Hostile inputs: every backend gives the same limit values, errors and no crash."""
import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import backends

TREE = hk.ClassHierarchy.from_nested({"a": {"a1": {}, "a2": {}}, "b": {"b1": {}, "b2": {}}})
FAST = [b for b in ("cpu", "triton") if backends.unavailable_reason(b, torch.device("cpu")) is None]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("value", [float("-inf"), float("inf")])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
def test_infinite_logits_give_the_reference_limits(backend, value, gamma):
    rows = []
    for c in range(TREE.num_channels):
        for leaf in TREE.leaves:
            x = torch.zeros(1, TREE.num_channels)
            x[0, c] = value
            rows.append((x, leaf))
    x = torch.cat([r[0] for r in rows])
    t = torch.tensor([r[1] for r in rows])
    expect = hk.focal_tree_min_loss(x, t, TREE, gamma, reduction="none", backend="reference", nan_policy="propagate")
    got = hk.focal_tree_min_loss(x, t, TREE, gamma, reduction="none", backend=backend, nan_policy="propagate")
    assert not torch.isnan(expect).any()
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parents", [[0.7, -1], ["0", -1], [True, -1], "01"])
def test_parents_must_be_ints(parents):
    with pytest.raises(TypeError, match="int"):
        hk.ClassHierarchy.from_parents(parents)


@pytest.mark.parametrize("name,text", [("tree.json", "{not json"), ("tree.yaml", "a: [1, 2\nb: {")])
def test_tree_file_parse_errors_name_the_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=name):
        hk.ClassHierarchy.from_json(path)


def test_tree_distance_table_matches_the_definition():
    from trees import random_tree

    for seed in range(20):
        tree = random_tree(seed, max_depth=6, max_channels=60)
        table = tree.tables().tree_distance
        for i, u in enumerate(tree.leaves):
            for j, v in enumerate(tree.leaves):
                assert int(table[i, j]) == tree.distance(u, v)
