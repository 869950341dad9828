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
