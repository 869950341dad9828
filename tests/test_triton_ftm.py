"""Triton focal tree-min loss vs the reference (CPU under TRITON_INTERPRET=1; CUDA with HSSN_TEST_GPU=1)."""
import pytest
import torch

import hssn_kernels as hk
import oracle as ref
from hssn_kernels.focal_tree_min import ftm_forward, ftm_tables, focal_tree_min_loss
from trees import DEVICE, TOL, TREES, chain_tree, cityscapes_like, random_targets, random_tree, wide_tree

pytestmark = [pytest.mark.usefixtures("on_device"),
              pytest.mark.skipif(hk.backends.unavailable_reason("triton", torch.device(DEVICE)) is not None,
                                 reason=str(hk.backends.unavailable_reason("triton", torch.device(DEVICE))))]


def _compare(logits, target, hierarchy, reduction, gamma=2.0, grad_out=True):
    a = logits.detach().clone().requires_grad_()
    b = logits.detach().clone().requires_grad_()
    la = ref.focal_tree_min_loss(a, target, hierarchy, gamma, 255, reduction)
    lb = focal_tree_min_loss(b, target, hierarchy, gamma, 255, reduction)
    assert lb.dtype == la.dtype and lb.shape == la.shape
    tol = TOL[logits.dtype]
    torch.testing.assert_close(lb.float(), la.float(), rtol=tol["rtol"], atol=tol["atol"] * max(1, logits.shape[1]))
    go = torch.randn_like(la) if grad_out else torch.ones_like(la)
    la.backward(go)
    lb.backward(go)
    assert b.grad.dtype == logits.dtype
    torch.testing.assert_close(b.grad.float(), a.grad.float(), **tol)


@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference(tree, reduction, poisoned):
    hierarchy = TREES[tree]()
    x = torch.randn(2, hierarchy.num_channels, 3, 5) * 3
    _compare(x, random_targets(hierarchy, (2, 3, 5)), hierarchy, reduction)


@pytest.mark.parametrize("pixels", [35, 100, 200, 600])
@pytest.mark.parametrize("tree", ["cityscapes", "chain16"])
def test_block_sizes_and_deep_trees(pixels, tree, poisoned):
    """Images of 33-64 pixels and more (every BLOCK_P of pixel_config, 1-4 pixels per thread by height): each
    channel's gradient is written once, path nodes included (no two stores of one address)."""
    hierarchy = cityscapes_like() if tree == "cityscapes" else chain_tree(16, 2)
    x = torch.randn(2, hierarchy.num_channels, 1, pixels) * 3
    _compare(x, random_targets(hierarchy, (2, 1, pixels)), hierarchy, "mean")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype, poisoned):
    hierarchy = cityscapes_like()
    x = (torch.randn(2, 26, 3, 5) * 3).to(dtype)
    for reduction in ("mean", "none"):
        _compare(x, random_targets(hierarchy, (2, 3, 5)), hierarchy, reduction)


@pytest.mark.parametrize("view", ["channel_slice", "transposed_hw", "nc_transposed"])
def test_non_contiguous(view, poisoned):
    hierarchy = cityscapes_like()
    if view == "channel_slice":
        x, t = torch.randn(2, 30, 3, 5)[:, 2:28], random_targets(hierarchy, (2, 3, 5))
    elif view == "transposed_hw":
        x, t = torch.randn(2, 26, 5, 3).transpose(2, 3), random_targets(hierarchy, (2, 5, 3)).transpose(1, 2)
    else:
        x, t = torch.randn(26, 37).t(), random_targets(hierarchy, (37,))
    assert not x.is_contiguous()
    _compare(x, t, hierarchy, "none")
    _compare(x, t, hierarchy, "mean")


@pytest.mark.parametrize("tdtype", [torch.int32, torch.uint8])
def test_target_dtypes_gamma0(tdtype, poisoned):
    hierarchy = random_tree(5, max_depth=3)
    x = torch.randn(1, hierarchy.num_channels, 4, 7)
    _compare(x, random_targets(hierarchy, (1, 4, 7), dtype=tdtype), hierarchy, "sum", gamma=0.0)


def test_ties_go_to_lowest_channel(poisoned):
    hierarchy = random_tree(8, max_depth=3)
    x = torch.randint(-1, 2, (3, hierarchy.num_channels, 2, 3)).float()  # many exact ties
    _compare(x, random_targets(hierarchy, (3, 2, 3)), hierarchy, "none")


def test_all_ignored_and_empty(poisoned):
    hierarchy = cityscapes_like()
    x = torch.randn(2, 26, 3, 3, requires_grad=True)
    t = torch.full((2, 3, 3), 255)
    for reduction in ("mean", "sum"):
        loss = focal_tree_min_loss(x, t, hierarchy, 2.0, 255, reduction)
        (g,) = torch.autograd.grad(loss, x)
        assert loss.item() == 0.0 and torch.equal(g, torch.zeros_like(g))
    assert torch.equal(focal_tree_min_loss(x, t, hierarchy, 2.0, 255, "none"), torch.zeros(2, 3, 3))
    empty = torch.randn(0, 26, 4, 4, requires_grad=True)
    loss = focal_tree_min_loss(empty, torch.zeros(0, 4, 4, dtype=torch.long), hierarchy)
    loss.backward()
    assert loss.item() == 0.0 and empty.grad.shape == empty.shape


def test_nan_rule():
    hierarchy = cityscapes_like()
    x = torch.randn(1, 26, 2, 2)
    t = torch.tensor([[[0, 1], [255, 2]]])
    x[0, 20, 0, 0] = float("nan")  # valid pixel
    x[0, 3, 1, 0] = float("nan")  # ignored pixel: never read
    loss = focal_tree_min_loss(x, t, hierarchy, 2.0, 255, "none")
    assert torch.isnan(loss[0, 0, 0]) and torch.isfinite(loss[0, 1]).all() and loss[0, 1, 0] == 0
    assert torch.isnan(focal_tree_min_loss(x, t, hierarchy, 2.0, 255, "mean"))


def test_forward_only_and_deferred_gradient(poisoned):
    hierarchy = cityscapes_like()
    x = torch.randn(2, 26, 3, 3)
    t = random_targets(hierarchy, (2, 3, 3))
    with torch.no_grad():
        loss = focal_tree_min_loss(x, t, hierarchy)
    torch.testing.assert_close(loss, ref.focal_tree_min_loss(x, t, hierarchy))
    # forward run without the fused gradient, backward recomputes it (mean scaling on the device)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    loss_b, grad = ftm_forward(b, t, *ftm_tables(hierarchy, DEVICE), 2.0, 255, 2, False)
    assert grad.numel() == 0
    (3.0 * loss_b).backward()
    (3.0 * ref.focal_tree_min_loss(a, t, hierarchy)).backward()
    torch.testing.assert_close(b.grad, a.grad, **TOL[torch.float32])


def test_never_below_bce():
    hierarchy = random_tree(4, max_depth=4)
    x = torch.randn(2, hierarchy.num_channels, 4, 4)
    t = random_targets(hierarchy, (2, 4, 4), ignore_frac=0.0)
    tm = focal_tree_min_loss(x, t, hierarchy, 0.0, 255, "none")
    bce = ref.bce_loss(x, t, hierarchy, reduction="none")
    assert (tm >= bce - 1e-5).all()


def test_thousand_channels():
    hierarchy = wide_tree(900, 80, 20)  # 1000 channels
    x = torch.randn(3, hierarchy.num_channels) * 3
    t = torch.tensor(hierarchy.leaves)[torch.randint(hierarchy.num_leaves, (3,))]
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    la = ref.focal_tree_min_loss(a, t, hierarchy, 2.0, -1, "sum")
    lb = focal_tree_min_loss(b, t, hierarchy, 2.0, -1, "sum")
    la.backward()
    lb.backward()
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(b.grad, a.grad, **TOL[torch.float32])


@pytest.mark.parametrize("tree", ["unbalanced", "shuffled"])
def test_public_api_matches_reference(tree):
    hierarchy = TREES[tree]()
    x = torch.randn(2, hierarchy.num_channels, 3, 5) * 3
    t = random_targets(hierarchy, (2, 3, 5)).to(torch.uint8)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = hk.focal_tree_min_loss(a, t, hierarchy, reduction="none", backend="triton")
    want = ref.focal_tree_min_loss(b, t, hierarchy, reduction="none")
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    go = torch.rand_like(want) + 0.5
    (got * go).sum().backward()
    (want * go).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, **TOL[torch.float32])
    x[0, 1, 2, 3] = float("nan")
    t[0, 2, 3] = hierarchy.leaves[0]
    per = hk.focal_tree_min_loss(x, t, hierarchy, backend="triton", reduction="none", nan_policy="propagate")
    assert torch.isnan(per[0, 2, 3]) and torch.isfinite(per[1]).all()
