"""The one-pass Triton kernels of fused bilinear upsampling (hssn_kernels.upsample_triton) vs the F.interpolate
expression and the band loop: on CPU under TRITON_INTERPRET=1, on CUDA with HSSN_TEST_GPU=1 (trees.DEVICE)."""
import pytest
import torch
import torch.nn.functional as F

import hssn_kernels as hk
from hssn_kernels import _triton_utils, upsample, upsample_triton
import oracle as ref
from trees import DEVICE, cityscapes_like, random_targets, random_tree

pytestmark = pytest.mark.skipif(hk.backends.unavailable_reason("triton", torch.device(DEVICE)) is not None,
                                reason=str(hk.backends.unavailable_reason("triton", torch.device(DEVICE))))

# (h, w, H, W): odd ratios, 1x1 logits, factor 1 on one axis, downsampling, H = 1, an integer ratio
SIZES = [(3, 5, 10, 13), (1, 1, 4, 6), (4, 9, 4, 18), (9, 6, 4, 5), (3, 4, 1, 13), (2, 3, 8, 12)]


def _expression(x, t, tree, reduction, align_corners, partial=False):
    up = F.interpolate(x, size=tuple(t.shape[-2:]), mode="bilinear", align_corners=align_corners)
    return ref.focal_tree_min_loss(up, t, tree, 2.0, 255, reduction, partial_labels=partial)


def _grads(loss_fn, x, weights):
    a = x.detach().clone().requires_grad_()
    loss = loss_fn(a)
    (loss * weights).sum().backward()
    return loss.detach(), a.grad


def _fused(tree, reduction="mean", align_corners=False, partial=False, backend="triton"):
    return lambda a, t: hk.focal_tree_min_loss(a, t, tree, reduction=reduction, backend=backend, upsample="bilinear",
                                               align_corners=align_corners, partial_labels=partial)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_fp64_equals_the_interpolate_expression(size, align_corners, poisoned, on_device):
    h, w, H, W = size
    tree = random_tree(11 + h, max_depth=4, max_channels=12)
    x = torch.randn(2, tree.num_channels, h, w, dtype=torch.float64) * 3
    t = random_targets(tree, (2, H, W))
    for reduction in ("mean", "sum", "none"):
        weights = torch.randn(2, H, W, dtype=torch.float64) if reduction == "none" else torch.tensor(0.7)
        la, ga = _grads(lambda a: _expression(a, t, tree, reduction, align_corners), x, weights)
        lb, gb = _grads(lambda a: _fused(tree, reduction, align_corners)(a, t), x, weights)
        assert lb.shape == la.shape and lb.dtype == torch.float64 and gb.dtype == torch.float64
        torch.testing.assert_close(lb, la, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gb, ga, rtol=1e-10, atol=1e-12 * float(ga.abs().max()))


def test_partial_labels_and_ignored_pixels(poisoned, on_device):
    tree = random_tree(5, max_depth=4, max_channels=14)
    x = torch.randn(2, tree.num_channels, 3, 5, dtype=torch.float64) * 2
    t = torch.randint(0, tree.num_channels, (2, 9, 13))
    t[:, ::3] = 255
    la, ga = _grads(lambda a: _expression(a, t, tree, "mean", False, partial=True), x, torch.tensor(1.0))
    lb, gb = _grads(lambda a: _fused(tree, partial=True)(a, t), x, torch.tensor(1.0))
    torch.testing.assert_close(lb, la, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, ga, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_half_and_single_logits_against_fp32_math(dtype, poisoned, on_device):
    tree = random_tree(4, max_depth=3, max_channels=14)
    x = (torch.randn(2, tree.num_channels, 3, 5) * 2).to(dtype)
    t = random_targets(tree, (2, 11, 14))
    la, ga = _grads(lambda a: _expression(a.float(), t, tree, "mean", False), x, torch.tensor(1.0))
    lb, gb = _grads(lambda a: _fused(tree)(a, t), x, torch.tensor(1.0))
    assert lb.dtype == dtype and gb.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(lb.float(), la, rtol=tol, atol=tol)
    torch.testing.assert_close(gb.float(), ga.float(), rtol=tol * 10, atol=tol * float(ga.abs().max()))


def test_non_contiguous_and_channels_last_logits_and_targets(on_device):
    tree = random_tree(8, max_depth=3, max_channels=12)
    base = torch.randn(2, 6, tree.num_channels, 5, dtype=torch.float64)
    t = random_targets(tree, (2, 13, 11)).transpose(1, 2).contiguous().transpose(1, 2)  # (2, 13, 11) strided
    expect = _grads(lambda a: _expression(a, t, tree, "sum", True), base.transpose(1, 2), torch.tensor(1.0))
    for x in (base.transpose(1, 2), base.transpose(1, 2).contiguous(memory_format=torch.channels_last)):
        got = _grads(lambda a: _fused(tree, "sum", True)(a, t), x, torch.tensor(1.0))
        torch.testing.assert_close(got[0], expect[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], expect[1], rtol=1e-10, atol=1e-12)


def test_equals_the_band_loop_and_is_deterministic(on_device):
    tree = random_tree(2, max_depth=3, max_channels=16)
    x = torch.randn(2, tree.num_channels, 4, 5) * 2
    t = random_targets(tree, (2, 13, 14))
    runs = [_grads(lambda a: _fused(tree)(a, t), x, torch.tensor(1.0)) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])  # the same bits
    if DEVICE == "cpu" and hk.backends.unavailable_reason("cpu", torch.device("cpu")) is None:
        band = _grads(lambda a: _fused(tree, backend="cpu")(a, t), x, torch.tensor(1.0))
        torch.testing.assert_close(runs[0][0], band[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(runs[0][1], band[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("size", SIZES)
def test_argmax_and_violations_equal_the_band_path(size, on_device):
    h, w, H, W = size
    tree = random_tree(3 + w, max_depth=4, max_channels=30)
    x = torch.randn(2, tree.num_channels, h, w) * 2
    x[0, 0, 0, 0] = float("nan")
    for align_corners in (False, True):
        up = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=align_corners)
        leaf, viol = hk.hierarchical_argmax(x, tree, backend="triton", size=(H, W), align_corners=align_corners,
                                            violations=True)
        assert torch.equal(leaf, hk.hierarchical_argmax(up, tree, backend="reference"))
        assert torch.equal(viol, upsample.tree_violations(up, tree))


def test_opcheck():
    tree = random_tree(6, max_depth=3, max_channels=8)
    x = torch.randn(1, tree.num_channels, 2, 3, requires_grad=True)
    t = random_targets(tree, (1, 5, 7))
    torch.library.opcheck(upsample.upsampled_ftm, (x, t, list(tree.parents), False, "triton", 2.0, 255, 2, True))
    torch.library.opcheck(upsample.upsampled_ftm, (x, t, list(tree.parents), True, "triton", 2.0, 255, 0, False))


def _top_level_aten_ops(prof) -> list[str]:
    """The aten ops a profile recorded that no other aten op called (nested ones such as to -> copy_ not
    counted twice), custom ops' insides included."""
    return [e.name for e in prof.events() if e.name.startswith("aten::")
            and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]


@pytest.mark.skipif(DEVICE != "cpu", reason="counts the host side with the kernels stubbed out")
class _Stub:
    """A Triton kernel whose launches are only recorded (by name, in ``launches``): the host side alone."""

    def __init__(self, name: str, launches: list):
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(self.name)


def _count_allocations(monkeypatch) -> list[int]:
    """The bytes of every buffer the fused path allocates (``_triton_utils.empty``), appended as it runs."""
    sizes = []

    def tracked(*shape, dtype=None, device=None):
        out = torch.empty(*shape, dtype=dtype, device=device)
        sizes.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(_triton_utils, "empty", tracked)
    return sizes


def test_launch_and_aten_counts_do_not_grow_with_the_image(monkeypatch):
    """At most 4 kernel launches and 30 aten calls per forward + backward of a training step (its shape's plan
    cached by the first call), the same at 128x256 -> 512x1024 and 256x512 -> 1024x2048 (the launches stubbed:
    the host side at the real shapes)."""
    launches = []
    monkeypatch.setattr(upsample_triton, "_upsampled_ftm_kernel", _Stub("loss", launches))
    monkeypatch.setattr(upsample_triton, "_fold_kernel", _Stub("fold", launches))
    tree = cityscapes_like()
    counts = []
    for h, w in ((128, 256), (256, 512)):
        launches.clear()
        x = torch.zeros(1, tree.num_channels, h, w, dtype=torch.bfloat16, requires_grad=True)
        t = torch.zeros(1, 4 * h, 4 * w, dtype=torch.uint8)
        def step():
            hk.focal_tree_min_loss(x, t, tree, backend="triton", upsample="bilinear", validate=False,
                                   nan_policy="propagate").backward()

        step()  # the first call of a shape builds its launch plan and the tree's tables (cached)
        launches.clear()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        counts.append((len(launches), len(_top_level_aten_ops(prof))))
    assert counts[0] == counts[1] and counts[0][0] <= 4 and counts[0][1] <= 30, counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scratch_is_bounded_by_the_low_res_gradient(monkeypatch, dtype):
    """Bytes the fused path allocates: the low-res gradient, 2 fp32 partial sums per low-res value (4x the
    gradient's bytes for 16-bit logits, 2x for fp32) and one loss partial per program; nothing of the output
    size."""
    sizes = _count_allocations(monkeypatch)
    tree = random_tree(7, max_depth=3, max_channels=8)
    x = torch.randn(1, tree.num_channels, 4, 6).to(dtype).requires_grad_()
    t = random_targets(tree, (1, 16, 24))
    _fused(tree)(x, t).backward()
    grad, programs = x.numel() * x.element_size(), 4  # programs: 4 anchor rows x 1 column block x 1 image
    assert x.grad.dtype == dtype and grad in sizes
    assert sum(sizes) - grad - 4 * programs <= 4 * grad
    assert sum(sizes) == grad + 2 * x.numel() * 4 + 4 * programs


def test_scratch_at_the_mapillary_shape_is_4x_the_bf16_gradient(monkeypatch):
    """The same accounting at 2 x 177 x 128x256 -> 512x1024 bf16 (the launches stubbed: the allocations are the
    host's): 23.2 MB of gradient, 92.8 MB of partial sums (4x), 8 KB of loss partials."""
    sizes = _count_allocations(monkeypatch)
    monkeypatch.setattr(upsample_triton, "_upsampled_ftm_kernel", _Stub("loss", []))
    monkeypatch.setattr(upsample_triton, "_fold_kernel", _Stub("fold", []))
    from hssn import hierarchies

    tree = hierarchies.get("mapillary_v2")
    assert tree.num_channels == 177
    x = torch.zeros(2, 177, 128, 256, dtype=torch.bfloat16, requires_grad=True)
    t = torch.zeros(2, 512, 1024, dtype=torch.uint8)
    hk.focal_tree_min_loss(x, t, tree, backend="triton", upsample="bilinear", validate=False,
                           nan_policy="propagate").backward()
    grad, programs = x.numel() * 2, 2 * 128 * 8  # 128 anchor rows x 8 column blocks x 2 images
    assert sum(sizes) == grad + 4 * grad + 4 * programs


def test_compile_fullgraph(on_device):
    tree = random_tree(9, max_depth=3, max_channels=8)
    x = torch.randn(1, tree.num_channels, 3, 4)
    t = random_targets(tree, (1, 7, 9))

    def fn(a):
        return hk.focal_tree_min_loss(a, t, tree, backend="triton", upsample="bilinear", validate=False,
                                      nan_policy="propagate")

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager = _grads(fn, x, torch.tensor(1.0))
    got = _grads(compiled, x, torch.tensor(1.0))
    torch.testing.assert_close(got[0], eager[0])
    torch.testing.assert_close(got[1], eager[1])
