"""Triton kernels against the reference (CPU tensors under TRITON_INTERPRET=1, CUDA with HSSN_TEST_GPU=1)."""
import os

import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import reference as R
from trees import chain_tree, cityscapes_like, random_tree, wide_tree

DEVICE = "cuda" if os.environ.get("HSSN_TEST_GPU") == "1" and torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    hk.backends.unavailable_reason("triton", torch.device(DEVICE)) is not None,
    reason=str(hk.backends.unavailable_reason("triton", torch.device(DEVICE))),
)
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
TREES = {
    "cityscapes": cityscapes_like,
    "shuffled": lambda: random_tree(11, shuffle=True),
    "unbalanced": lambda: random_tree(5, max_depth=5, shuffle=True),
    "wide166": wide_tree,
    "chain16": lambda: chain_tree(16, 2),
}


def _case(tree, shape, dtype, seed, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    h = TREES[tree]()
    z = (torch.randn((shape[0], h.num_channels) + shape[1:], generator=g) * 3).to(dtype).to(DEVICE)
    t = torch.tensor(h.leaves)[torch.randint(h.num_leaves, (shape[0],) + shape[1:], generator=g)]
    t[torch.rand(t.shape, generator=g) < ignore_frac] = 255
    return h, z, t.to(DEVICE)


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-12)).item()


@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_tree_min_matches_reference(tree, reduction):
    h, z, t = _case(tree, (2, 3, 5), torch.float32, seed=hash((tree, reduction)) % 1000)
    zt, zr = z.clone().requires_grad_(), z.clone().requires_grad_()
    out = hk.focal_tree_min_loss(zt, t, h, reduction=reduction, backend="triton")
    ref = R.focal_tree_min_loss(zr, t, h, reduction=reduction)
    assert _rel(out, ref) < 1e-5
    gout = torch.rand_like(ref) + 0.5  # random grad_output
    (out * gout).sum().backward()
    (ref * gout).sum().backward()
    assert _rel(zt.grad, zr.grad) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_focal_tree_min_low_precision(dtype):
    h, z, t = _case("cityscapes", (1, 7, 9), dtype, seed=3)
    zt = z.clone().requires_grad_()
    out = hk.focal_tree_min_loss(zt, t, h, backend="triton")
    out.backward()
    zr = z.float().requires_grad_()
    ref = R.focal_tree_min_loss(zr, t, h)
    ref.backward()
    assert out.dtype == dtype and zt.grad.dtype == dtype
    assert _rel(out.float(), ref) < TOL[dtype]
    assert _rel(zt.grad.float(), zr.grad) < TOL[dtype] * 4


def test_non_contiguous_and_nc_layouts():
    h, z, t = _case("cityscapes", (2, 4, 6), torch.float32, seed=4)
    big = torch.randn(2, 30, 4, 6, device=DEVICE)
    big[:, 2:28] = z
    view = big[:, 2:28]  # channel-sliced view: not contiguous
    assert not view.is_contiguous()
    a = hk.focal_tree_min_loss(view, t, h, backend="triton", reduction="none")
    assert _rel(a, R.focal_tree_min_loss(z, t, h, reduction="none")) < 1e-5
    flat = z.movedim(1, -1).reshape(-1, 26)
    b = hk.focal_tree_min_loss(flat, t.reshape(-1), h, backend="triton", reduction="sum")
    assert _rel(b, R.focal_tree_min_loss(flat, t.reshape(-1), h, reduction="sum")) < 1e-5
    tt = z.transpose(2, 3)  # spatially transposed view
    assert _rel(hk.focal_tree_min_loss(tt, t.transpose(1, 2), h, backend="triton"),
                R.focal_tree_min_loss(tt, t.transpose(1, 2), h)) < 1e-5


@pytest.mark.parametrize("target_dtype", [torch.int32, torch.uint8])
def test_target_dtypes_and_all_ignored(target_dtype):
    h, z, t = _case("cityscapes", (1, 3, 7), torch.float32, seed=5)
    out = hk.focal_tree_min_loss(z, t.to(target_dtype), h, backend="triton")
    assert _rel(out, R.focal_tree_min_loss(z, t, h)) < 1e-5
    zz = z.clone().requires_grad_()
    none = hk.focal_tree_min_loss(zz, torch.full_like(t, 255).to(target_dtype), h, backend="triton")
    none.backward()
    assert none.item() == 0.0 and zz.grad.abs().sum().item() == 0.0


def test_forward_only_and_nan_rule():
    h, z, t = _case("shuffled", (1, 4, 5), torch.float32, seed=6, ignore_frac=0.0)
    with torch.no_grad():
        assert _rel(hk.focal_tree_min_loss(z, t, h, backend="triton"), R.focal_tree_min_loss(z, t, h)) < 1e-5
    z = z.clone()
    z[0, 1, 2, 3] = float("nan")
    per = hk.focal_tree_min_loss(z, t, h, backend="triton", reduction="none", nan_policy="propagate")
    assert torch.isnan(per[0, 2, 3]) and torch.isfinite(per[0, 0]).all()


@pytest.mark.parametrize("tree", ["cityscapes", "unbalanced", "wide166", "chain16"])
def test_argmax_matches_reference(tree):
    h, z, _ = _case(tree, (2, 5, 7), torch.float32, seed=7)
    assert torch.equal(hk.hierarchical_argmax(z, h, backend="triton"), R.hierarchical_argmax(z, h))
    zeros = torch.zeros_like(z)  # all ties: the lowest leaf of the deepest paths
    assert torch.equal(hk.hierarchical_argmax(zeros, h, backend="triton"), R.hierarchical_argmax(zeros, h))


@pytest.mark.parametrize("mode", ["tree", "vanilla"])
@pytest.mark.parametrize("seed", [0, 12345, 2**32 - 1])
def test_same_triplets_as_reference(mode, seed):
    h, _, t = _case("cityscapes", (2, 6, 7), torch.float32, seed=8)
    got = hk.sample_triplets(t, h, 40, seed=seed, mode=mode, backend="triton")
    want = R.sample_triplets(t, h, 40, seed=seed, mode=mode)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    one = torch.zeros_like(t)
    assert hk.sample_triplets(one, h, 10, backend="triton")[0].numel() == 0


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("variant", ["hierarchy", "constant", "vanilla"])
def test_triplet_loss_and_gradient(distance, variant):
    h, _, t = _case("unbalanced", (2, 5, 6), torch.float32, seed=9)
    e = torch.randn(2, 16, 5, 6, device=DEVICE)
    losses, grads = [], []
    for backend in ("triton", "reference"):
        x = e.clone().requires_grad_()
        loss = hk.TreeTripletLoss(h, num_triplets=30, variant=variant, distance=distance, backend=backend)(x, t, seed=3)
        loss.backward()
        losses.append(loss)
        grads.append(x.grad)
    assert _rel(losses[0], losses[1]) < 1e-5
    assert _rel(grads[0], grads[1]) < 1e-5


def test_triplet_gradient_is_deterministic():
    h, _, t = _case("cityscapes", (1, 4, 4), torch.float32, seed=10, ignore_frac=0.0)
    e = torch.randn(1, 8, 4, 4, device=DEVICE)
    grads = []
    for _ in range(2):
        x = e.clone().requires_grad_()
        hk.tree_triplet_loss(x, t, h, 100, backend="triton").backward()  # 16 pixels: many repeats
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_opcheck():
    from hssn_kernels.focal_tree_min import ftm_tables

    h, z, t = _case("cityscapes", (1, 3, 4), torch.float32, seed=11)
    tabs = h.tables(z.device)
    utils = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(torch.ops.hssn.triton_ftm_forward,
                          (z.requires_grad_(), t, *ftm_tables(h, z.device), 2.0, 255, 2, True), test_utils=utils)
    torch.library.opcheck(torch.ops.hssn.triton_path_argmax,
                          (z.detach(), tabs.dfs_perm, tabs.dfs_size, tabs.dfs_depth, h.height), test_utils=utils)
