"""The native kernels (hssn_kernels._C, backends "cpu" and "cuda") against the reference ops.

Every comparison runs on the CPU and, where a GPU and the CUDA kernels are available, again with CUDA
tensors and ``backend="cuda"`` (the reference runs on the CPU copies). ``HSSN_TEST_GPU=1`` on a GPU
machine turns CUDA kernels that cannot run (an extension built without them) into a failure instead of a skip.
"""
import math
import os

import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import native
import oracle as R
from trees import REL_TOL, TREES, cityscapes_like, random_tree, wide_tree

pytestmark = pytest.mark.skipif(native.unavailable_reason(torch.device("cpu")) is not None,
                                reason=f"native extension unavailable: {native.unavailable_reason(torch.device('cpu'))}")

def _cuda_skip_reason():
    """None when the CUDA kernels can run here, else why the cuda cases are skipped."""
    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False)"
    return native.unavailable_reason(torch.device("cuda"))


CUDA_SKIP = _cuda_skip_reason()
GPU_MACHINE = os.environ.get("HSSN_TEST_GPU") == "1" and torch.cuda.is_available()
"""HSSN_TEST_GPU=1 on a machine with a GPU: CUDA kernels that cannot run there fail instead of skipping."""
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    CUDA_SKIP is not None and not GPU_MACHINE, reason=f"cuda cases: {CUDA_SKIP}"))]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device of the native kernels under test; its name is also the backend name."""
    if request.param == "cuda" and CUDA_SKIP is not None:
        pytest.fail(f"HSSN_TEST_GPU=1 but the CUDA kernels cannot run: {CUDA_SKIP}")
    return request.param


def skip_fp64_on_cuda(device, dtype):
    if device == "cuda" and dtype == torch.float64:
        pytest.skip("the CUDA kernels take fp32 / bf16 / fp16 logits")


def fp(device):
    """The most precise logits dtype of the device's kernels (fp64 on CPU, fp32 on CUDA) and its tolerance."""
    return (torch.float64, 1e-5) if device == "cpu" else (torch.float32, 1e-4)


def make_inputs(h, shape, dtype=torch.float32, ignore_frac=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((shape[0], h.num_channels) + tuple(shape[1:]), generator=g) * 3).to(dtype)
    leaves = torch.tensor(h.leaves)
    t = leaves[torch.randint(len(leaves), shape, generator=g)]
    t[torch.rand(shape, generator=g) < ignore_frac] = 255
    return x, t


def close(a, b, rtol):
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    scale = b.abs().max().clamp(min=1e-6)
    assert torch.isfinite(a).all() == torch.isfinite(b).all()
    err = ((a - b).abs().max() / scale).item()
    assert err <= rtol, f"max relative error {err:.3g} > {rtol}"


@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ftm_matches_reference(tree, dtype, reduction, device):
    skip_fp64_on_cuda(device, dtype)
    h = TREES[tree]()
    x, t = make_inputs(h, (2, 5, 7), dtype)
    xa = x.to(device).requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    la = hk.focal_tree_min_loss(xa, t.to(device), h, reduction=reduction, backend=device)
    lb = R.focal_tree_min_loss(xb, t, h, reduction=reduction)
    assert la.dtype == lb.dtype == dtype and la.shape == lb.shape
    close(la, lb, REL_TOL[dtype])
    go = torch.rand_like(lb, dtype=torch.float32).to(dtype) + 0.5
    (ga,) = torch.autograd.grad(la, xa, go.to(device))
    (gb,) = torch.autograd.grad(lb, xb, go)
    assert ga.dtype == dtype
    close(ga, gb, REL_TOL[dtype])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_ftm_gammas_and_nc_layout(gamma, device):
    dtype, tol = fp(device)
    h = random_tree(3, max_channels=50)
    x, t = make_inputs(h, (37,), dtype)  # (N, C) with an odd N
    xa = x.to(device).requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    la = hk.focal_tree_min_loss(xa, t.to(device), h, gamma=gamma, backend=device)
    lb = R.focal_tree_min_loss(xb, t, h, gamma=gamma)
    close(la, lb, tol)
    close(torch.autograd.grad(la, xa)[0], torch.autograd.grad(lb, xb)[0], tol)


def test_ftm_non_contiguous_and_target_dtypes(device):
    h = cityscapes_like()
    base, t_full = make_inputs(h, (2, 9, 11))
    view = lambda b: b.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)[:, :, 1:, ::2]  # noqa: E731
    x, xd = view(base), view(base.to(device))  # strided views
    t, td = t_full[:, 1:, ::2], t_full.to(device)[:, 1:, ::2]
    assert not xd.is_contiguous() and not td.is_contiguous()
    ref = R.focal_tree_min_loss(x, t, h, reduction="none")
    for dt in (torch.int64, torch.int32, torch.uint8):
        close(hk.focal_tree_min_loss(xd, td.to(dt), h, reduction="none", backend=device), ref, 1e-4)
    xa = xd.detach().clone().requires_grad_(True)
    xb = x.detach().clone().requires_grad_(True)
    ga = torch.autograd.grad(hk.focal_tree_min_loss(xa, td, h, backend=device), xa)[0]
    gb = torch.autograd.grad(R.focal_tree_min_loss(xb, t, h), xb)[0]
    close(ga, gb, 1e-4)


def test_ftm_ties_go_to_lowest_channel(device):
    h = random_tree(5, max_channels=30)
    x = torch.zeros(4, h.num_channels, 3, 3, dtype=fp(device)[0])  # every logit ties
    x[1] = 1.0
    x[2, ::2] = -0.5
    t = torch.tensor(h.leaves)[torch.arange(36) % h.num_leaves].reshape(4, 3, 3)
    xa = x.to(device).requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    ga = torch.autograd.grad(hk.focal_tree_min_loss(xa, t.to(device), h, reduction="sum", backend=device), xa)[0]
    gb = torch.autograd.grad(R.focal_tree_min_loss(xb, t, h, reduction="sum"), xb)[0]
    close(ga, gb, fp(device)[1] / 10)


def test_ftm_all_ignored_and_nan_rule(device):
    h = cityscapes_like()
    x, t = make_inputs(h, (1, 4, 4))
    x, t = x.to(device), t.to(device)
    t_ign = torch.full_like(t, 255)
    xa = x.clone().requires_grad_(True)
    loss = hk.focal_tree_min_loss(xa, t_ign, h, backend=device)
    assert loss.item() == 0.0
    (g,) = torch.autograd.grad(loss, xa)
    assert (g == 0).all()
    # NaN at a non-ignored pixel -> NaN loss there; NaN at an ignored pixel is never read
    x2 = x.clone()
    t2 = t.clone()
    t2[0, 0, 0] = h.leaves[0]
    t2[0, 0, 1] = 255
    x2[0, 3, 0, 0] = float("nan")
    x2[0, 5, 0, 1] = float("nan")
    per = hk.focal_tree_min_loss(x2, t2, h, reduction="none", backend=device, nan_policy="propagate").cpu()
    assert math.isnan(per[0, 0, 0].item()) and per[0, 0, 1].item() == 0.0
    assert torch.isfinite(per.flatten()[2:]).all()


def test_ftm_outputs_fully_written(device):
    """Poison the allocator's memory first: unwritten output elements would show up as NaN."""
    h = wide_tree()
    x, t = make_inputs(h, (1, 3, 67), ignore_frac=0.5)
    x, t = x.to(device), t.to(device)
    for _ in range(3):
        torch.full((x.numel() * 2,), float("nan"), device=device)
        torch.full((t.numel(),), float("nan"), device=device)
    loss, grad = torch.ops.hssn.ftm_forward(x, t, *_ftm_tables(h, device), 2.0, 255, 2, True)
    assert torch.isfinite(grad).all() and torch.isfinite(loss)
    per, _ = torch.ops.hssn.ftm_forward(x, t, *_ftm_tables(h, device), 2.0, 255, 0, True)
    assert torch.isfinite(per).all() and (per[t == 255] == 0).all()
    gb = torch.ops.hssn.ftm_backward(torch.ones(t.shape, device=device), x, t, *_ftm_tables(h, device), 2.0, 255)
    assert torch.isfinite(gb).all() and (gb.permute(0, 2, 3, 1)[t == 255] == 0).all()


def test_ftm_forward_only_and_not_below_bce(device):
    h = random_tree(2, max_channels=45)
    x, t = make_inputs(h, (2, 6, 6))
    with torch.no_grad():
        loss = hk.focal_tree_min_loss(x.to(device).requires_grad_(True), t.to(device), h, gamma=0.0,
                                      reduction="none", backend=device).cpu()
    bce = R.bce_loss(x, t, h, reduction="none")
    assert (loss >= bce - 1e-5).all()
    _, grad = torch.ops.hssn.ftm_forward(x.to(device), t.to(device), *_ftm_tables(h, device), 2.0, 255, 2, False)
    assert grad.numel() == 0


def test_ftm_deterministic(device):
    h = wide_tree()
    x, t = make_inputs(h, (2, 7, 9))
    x, t = x.to(device), t.to(device)
    a = torch.ops.hssn.ftm_forward(x, t, *_ftm_tables(h, device), 2.0, 255, 2, True)
    b = torch.ops.hssn.ftm_forward(x, t, *_ftm_tables(h, device), 2.0, 255, 2, True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _ftm_tables(h, device="cpu"):
    tabs = h.tables(device)
    return tabs.parent, tabs.bottom_up, tabs.ancestors, tabs.dfs


@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_path_argmax_matches_reference(tree, dtype, device):
    skip_fp64_on_cuda(device, dtype)
    h = TREES[tree]()
    x, _ = make_inputs(h, (2, 5, 9), dtype)
    leaf = hk.hierarchical_argmax(x.to(device), h, backend=device)
    assert leaf.dtype == torch.int64 and leaf.device.type == device
    assert torch.equal(leaf.cpu(), R.hierarchical_argmax(x, h))
    leaf2 = hk.hierarchical_argmax(x.to(device)[:, :, :, ::2], h, backend=device)  # a view, read in place
    assert torch.equal(leaf2.cpu(), R.hierarchical_argmax(x[:, :, :, ::2], h))


def test_path_argmax_ties_lowest_leaf(device):
    h = cityscapes_like()
    x = torch.zeros(3, h.num_channels)
    assert torch.equal(hk.hierarchical_argmax(x.to(device), h, backend=device).cpu(), R.hierarchical_argmax(x, h))


@pytest.mark.parametrize("mode", ["tree", "vanilla"])
@pytest.mark.parametrize("seed", [0, 12345, 2**32 - 1])
def test_same_triplets_as_reference(mode, seed, device):
    h = random_tree(4, max_channels=40)
    _, t = make_inputs(h, (2, 8, 9), ignore_frac=0.3)
    for dt in (torch.int64, torch.uint8):
        a = native.sample_triplets_padded(t.to(device, dt), h, 60, seed, 255, mode)
        b = R.sample_triplets_padded(t, h, 60, seed, 255, mode)
        assert torch.equal(a[0].cpu(), b[0]) and torch.equal(a[1].cpu(), b[1])
    empty = native.sample_triplets_padded(torch.full_like(t, 255).to(device), h, 5, seed, 255, mode)
    assert empty[1].item() == 0 and (empty[0] == -1).all()


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("hierarchy_margin", [True, False])
def test_triplet_loss_matches_reference(distance, dtype, hierarchy_margin, device):
    skip_fp64_on_cuda(device, dtype)
    h = cityscapes_like()
    _, t = make_inputs(h, (2, 6, 5))
    e = torch.randn(2, 16, 6, 5).to(dtype)
    e[0, :, 0, 0] = 0  # a zero embedding (clamped cosine)
    ea = e.to(device).requires_grad_(True)
    eb = e.clone().requires_grad_(True)
    kw = dict(num_triplets=40, distance=distance, hierarchy_margin=hierarchy_margin, seed=3)
    la = hk.tree_triplet_loss(ea, t.to(device), h, backend=device, **kw)
    lb = R.tree_triplet_loss(eb, t, h, **kw)
    close(la, lb, REL_TOL[dtype])
    close(torch.autograd.grad(la, ea)[0], torch.autograd.grad(lb, eb)[0], REL_TOL[dtype])


def test_triplet_forward_only_and_none(device):
    h = cityscapes_like()
    t = torch.full((1, 4, 4), 255, device=device)
    e = torch.randn(1, 8, 4, 4, device=device, requires_grad=True)
    loss = hk.tree_triplet_loss(e, t, h, backend=device)
    assert loss.item() == 0.0
    assert (torch.autograd.grad(loss, e)[0] == 0).all()
    _, t2 = make_inputs(h, (1, 4, 4), ignore_frac=0.0)
    with torch.no_grad():
        l2 = hk.tree_triplet_loss(e, t2.to(device), h, backend=device, num_triplets=10)
    close(l2, R.tree_triplet_loss(e.detach().cpu(), t2, h, num_triplets=10), 1e-5)
