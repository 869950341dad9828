"""Triton triplet sampling and tree-triplet loss vs the reference (CPU under TRITON_INTERPRET=1; CUDA with
HSSN_TEST_GPU=1)."""
import pytest
import torch

import hssn_kernels as hk
import oracle as ref
from hssn_kernels import tree_triplet as tt
from trees import DEVICE, TOL, TREES, cityscapes_like, random_targets, random_tree, wide_tree

pytestmark = [pytest.mark.usefixtures("on_device"),
              pytest.mark.skipif(hk.backends.unavailable_reason("triton", torch.device(DEVICE)) is not None,
                                 reason=str(hk.backends.unavailable_reason("triton", torch.device(DEVICE))))]


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
        la = ref._triplet_loss(a, t, hierarchy, 30, 0.1, 0.5, hier_margin, distance, 5, 255, mode)
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
    ref._triplet_loss(a, t, hierarchy, 40, 0.1, 0.5, True, "cosine", 3, 255, "tree").backward()
    assert torch.equal(grads[0], grads[1])
    torch.testing.assert_close(grads[0], a.grad, **TOL[torch.float32])
    e2 = torch.randn(1, 4, 2, 2, requires_grad=True)
    one_leaf = torch.full((1, 2, 2), hierarchy.leaves[0])
    loss = tt.tree_triplet_loss(e2, one_leaf, hierarchy, 10, 0.1, 0.5, True,
                                "cosine", 0, 255, "tree")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(e2.grad, torch.zeros_like(e2))


@pytest.mark.parametrize("mode", ["tree", "vanilla"])
@pytest.mark.parametrize("seed", [0, 12345, 2**32 - 1])
def test_public_sampler_matches_reference(mode, seed):
    h = cityscapes_like()
    t = random_targets(h, (2, 6, 7))
    got = hk.sample_triplets(t, h, 40, seed=seed, mode=mode, backend="triton")
    want = ref.sample_triplets(t, h, 40, seed=seed, mode=mode)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert hk.sample_triplets(torch.zeros_like(t), h, 10, backend="triton")[0].numel() == 0


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("variant", ["hierarchy", "constant", "vanilla"])
def test_triplet_module_variants_match_reference(distance, variant):
    h = TREES["unbalanced"]()
    t = random_targets(h, (2, 5, 6))
    e = torch.randn(2, 16, 5, 6)
    losses, grads = [], []
    for backend in ("triton", "reference"):
        x = e.clone().requires_grad_()
        loss = hk.TreeTripletLoss(h, num_triplets=30, variant=variant, distance=distance, backend=backend)(x, t, seed=3)
        loss.backward()
        losses.append(loss)
        grads.append(x.grad)
    torch.testing.assert_close(losses[0], losses[1], **TOL[torch.float32])
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.float32])


def test_module_gradient_is_deterministic_with_repeated_pixels():
    h = cityscapes_like()
    t = random_targets(h, (1, 4, 4), ignore_frac=0.0)
    e = torch.randn(1, 8, 4, 4)
    grads = []
    for _ in range(2):
        x = e.clone().requires_grad_()
        hk.tree_triplet_loss(x, t, h, 100, backend="triton").backward()  # 16 pixels: many repeats
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])
