"""Triton triplet sampling and tree-triplet loss vs the reference (under TRITON_INTERPRET=1 on CPU)."""
import pytest
import torch

from hssn_kernels import reference as ref
from hssn_kernels import tree_triplet as tt
from triton_helpers import TOL, random_targets
from trees import cityscapes_like, random_tree, wide_tree


@pytest.mark.parametrize("mode", ["tree", "vanilla"])
def test_same_triplets_as_reference(mode):
    for seed, hierarchy in ((0, cityscapes_like()), (7, random_tree(2, max_depth=4)), (2**32 - 1, wide_tree())):
        t = random_targets(hierarchy, (2, 5, 7), ignore_frac=0.3)
        want = ref.sample_triplets_padded(t, hierarchy, 24, seed, 255, mode)
        got = tt.sample_triplets_padded(t, hierarchy, 24, seed, 255, mode)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_few_valid_one_class_none_valid():
    hierarchy = cityscapes_like()
    t = torch.full((1, 4, 4), 255)
    t[0, 1, 2], t[0, 3, 0], t[0, 2, 2] = 0, 5, 18  # three valid pixels
    for seed in (1, 2, 3):
        want = ref.sample_triplets_padded(t, hierarchy, 8, seed)
        got = tt.sample_triplets_padded(t, hierarchy, 8, seed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    one_class = torch.zeros(1, 4, 4, dtype=torch.long)
    table, count = tt.sample_triplets_padded(one_class, hierarchy, 8, 0)
    assert count.item() == 0 and (table == -1).all()
    table, count = tt.sample_triplets_padded(torch.full((1, 4, 4), 255), hierarchy, 8, 0)
    assert count.item() == 0 and (table == -1).all()
    assert tt.sample_triplets_padded(one_class, hierarchy, 0, 0)[0].shape == (0, 3)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_loss_and_gradient(distance, dtype):
    hierarchy = cityscapes_like()
    t = random_targets(hierarchy, (2, 4, 5), ignore_frac=0.2)
    e = torch.randn(2, 12, 4, 5).to(dtype)
    e[0, :, 0, 0] = 0  # a zero embedding (clamped cosine / zero distance paths)
    for hier_margin, mode in ((True, "tree"), (False, "vanilla")):
        a = e.clone().requires_grad_()
        b = e.clone().requires_grad_()
        la = ref._triplet_loss(a, t, hierarchy, 30, 0.1, 0.5, hier_margin, distance, 5, 255, mode, False)
        lb = tt.tree_triplet_loss(b, t, hierarchy, 30, 0.1, 0.5, hier_margin, distance, 5, 255, mode)
        assert lb.dtype == dtype
        torch.testing.assert_close(lb, la, **TOL[dtype])
        go = torch.rand(()) + 0.5
        la.backward(go)
        lb.backward(go)
        torch.testing.assert_close(b.grad, a.grad, **TOL[dtype])


def test_non_contiguous_deterministic_and_empty():
    hierarchy = random_tree(3, max_depth=3)
    t = random_targets(hierarchy, (9,), ignore_frac=0.0)  # few pixels: pixels repeat across triplets
    e = torch.randn(16, 9).t()  # (N, E) non-contiguous
    grads = []
    for _ in range(2):
        b = e.clone().t().contiguous().t().requires_grad_()
        tt.tree_triplet_loss(b, t, hierarchy, 40, 0.1, 0.5, True, "cosine", 3, 255, "tree").backward()
        grads.append(b.grad)
    a = e.clone().requires_grad_()
    ref._triplet_loss(a, t, hierarchy, 40, 0.1, 0.5, True, "cosine", 3, 255, "tree", False).backward()
    assert torch.equal(grads[0], grads[1])
    torch.testing.assert_close(grads[0], a.grad, **TOL[torch.float32])
    e2 = torch.randn(1, 4, 2, 2, requires_grad=True)
    one_leaf = torch.full((1, 2, 2), hierarchy.leaves[0])
    loss = tt.tree_triplet_loss(e2, one_leaf, hierarchy, 10, 0.1, 0.5, True,
                                "cosine", 0, 255, "tree")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(e2.grad, torch.zeros_like(e2))
