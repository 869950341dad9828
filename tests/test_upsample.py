"""Bilinear upsampling fused into the loss and path inference vs the F.interpolate expression."""
import pytest
import torch
import torch.nn.functional as F

import hssn_kernels as hk
from hssn_kernels import native, upsample
import oracle as ref
from trees import cityscapes_like, random_targets, random_tree

needs_native = pytest.mark.skipif(native.unavailable_reason(torch.device("cpu")) is not None,
                                  reason="native extension not built")

# (h, w, H, W): odd ratios, 1x1 logits, the same size, factor 1 on one axis, downsampling
SIZES = [(5, 7, 17, 23), (1, 1, 4, 6), (6, 6, 6, 6), (6, 9, 12, 18), (9, 6, 4, 5), (3, 4, 3, 13)]
# fp64 logits: the native CPU kernel returns its loss in fp32 (see README known limits)
LOSS_TOL = dict(rtol=2e-6, atol=1e-6)


def _expression(x, t, tree, reduction, align_corners, gamma=2.0):
    up = F.interpolate(x, size=tuple(t.shape[-2:]), mode="bilinear", align_corners=align_corners)
    return ref.focal_tree_min_loss(up, t, tree, gamma, 255, reduction)


def _grads(loss_fn, x, weights):
    a = x.detach().clone().requires_grad_()
    loss = loss_fn(a)
    (loss * weights).sum().backward()
    return loss.detach(), a.grad


@needs_native
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cpu_matches_the_interpolate_expression_fp64(size, align_corners, reduction):
    h, w, H, W = size
    tree = random_tree(7, max_depth=3, max_channels=20)
    x = torch.randn(2, tree.num_channels, h, w, dtype=torch.float64) * 3
    t = random_targets(tree, (2, H, W))
    weights = torch.randn(2, H, W, dtype=torch.float64) if reduction == "none" else torch.tensor(0.7, dtype=torch.float64)
    la, ga = _grads(lambda a: _expression(a, t, tree, reduction, align_corners), x, weights)
    lb, gb = _grads(lambda a: hk.focal_tree_min_loss(a, t, tree, reduction=reduction, backend="cpu",
                                                     upsample="bilinear", align_corners=align_corners), x, weights)
    assert lb.shape == la.shape and lb.dtype == la.dtype and gb.dtype == torch.float64
    torch.testing.assert_close(lb, la, **LOSS_TOL)
    rtol = 1e-12 if reduction != "none" else 1e-6  # the per-pixel weights of "none" travel as fp32
    torch.testing.assert_close(gb, ga, rtol=rtol, atol=rtol * float(ga.abs().max()))


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_half_and_single_logits_against_fp32_math(dtype):
    tree = cityscapes_like()
    x = (torch.randn(2, tree.num_channels, 6, 10) * 2).to(dtype)
    t = random_targets(tree, (2, 21, 37))
    la, ga = _grads(lambda a: _expression(a.float(), t, tree, "mean", False), x, torch.tensor(1.0))
    lb, gb = _grads(lambda a: hk.focal_tree_min_loss(a, t, tree, backend="cpu", upsample="bilinear"), x,
                    torch.tensor(1.0))
    assert lb.dtype == dtype and gb.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(lb.float(), la, rtol=tol, atol=tol)
    torch.testing.assert_close(gb.float(), ga.float(), rtol=tol * 10, atol=tol * float(ga.abs().max()))


@needs_native
def test_non_contiguous_logits_all_ignored_and_small_bands(monkeypatch):
    tree = cityscapes_like()
    base = torch.randn(2, 9, tree.num_channels, 7, dtype=torch.float64)
    x = base.transpose(1, 2)  # (2, C, 9, 7), not contiguous
    t = random_targets(tree, (2, 30, 19), ignore_frac=0.5)
    expect = _grads(lambda a: _expression(a, t, tree, "mean", False), x, torch.tensor(1.0))
    monkeypatch.setattr(upsample, "BAND_ELEMENTS", 7)  # every band split into single rows
    got = _grads(lambda a: hk.focal_tree_min_loss(a, t, tree, backend="cpu", upsample="bilinear"), x,
                 torch.tensor(1.0))
    torch.testing.assert_close(got[0], expect[0], **LOSS_TOL)
    torch.testing.assert_close(got[1], expect[1], rtol=1e-12, atol=1e-14)
    void = torch.full_like(t, 255)
    loss, grad = _grads(lambda a: hk.focal_tree_min_loss(a, void, tree, backend="cpu", upsample="bilinear"), x,
                        torch.tensor(1.0))
    assert float(loss) == 0.0 and bool((grad == 0).all())


@needs_native
def test_gather_fold_equals_index_add_fold(monkeypatch):
    tree = cityscapes_like()
    x = torch.randn(2, tree.num_channels, 5, 9, dtype=torch.float64)
    t = random_targets(tree, (2, 17, 31))
    expect = _grads(lambda a: hk.focal_tree_min_loss(a, t, tree, backend="cpu", upsample="bilinear"), x,
                    torch.tensor(1.0))
    monkeypatch.setattr(upsample, "INDEX_ADD_DEVICES", ())  # the fold used on CUDA
    got = _grads(lambda a: hk.focal_tree_min_loss(a, t, tree, backend="cpu", upsample="bilinear"), x,
                 torch.tensor(1.0))
    torch.testing.assert_close(got[1], expect[1], rtol=1e-13, atol=1e-15)


@needs_native
def test_deterministic_across_runs_and_thread_counts():
    tree = cityscapes_like()
    x = torch.randn(2, tree.num_channels, 16, 32)
    t = random_targets(tree, (2, 64, 128))
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            runs.append(_grads(lambda a: hk.focal_tree_min_loss(a, t, tree, backend="cpu", upsample="bilinear"), x,
                               torch.tensor(1.0)))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


def test_reference_path_gradcheck():
    tree = hk.ClassHierarchy.from_nested({"a": {"a1": {}, "a2": {}}, "b": {"b1": {}}})
    x = torch.randn(1, tree.num_channels, 3, 2, dtype=torch.float64, requires_grad=True)
    t = random_targets(tree, (1, 5, 7))
    torch.autograd.gradcheck(lambda a: hk.focal_tree_min_loss(a, t, tree, backend="reference", upsample="bilinear"),
                             (x,))


@needs_native
def test_ablation_losses_and_modules_take_upsample():
    tree = cityscapes_like()
    x = torch.randn(2, tree.num_channels, 4, 6, dtype=torch.float64)
    t = random_targets(tree, (2, 11, 13))
    up = F.interpolate(x, size=(11, 13), mode="bilinear", align_corners=False)
    for fn in (hk.bce_loss, hk.focal_bce_loss, hk.leaf_cross_entropy, hk.tree_min_loss):
        torch.testing.assert_close(fn(x, t, tree, upsample="bilinear"), fn(up, t, tree), **LOSS_TOL)
    module = hk.FocalTreeMinLoss(tree, upsample="bilinear")
    torch.testing.assert_close(module(x, t), hk.focal_tree_min_loss(up, t, tree), **LOSS_TOL)
    crit = hk.HierarchicalLoss(tree, segmentation="ftm", triplet=None, upsample="bilinear")
    torch.testing.assert_close(crit(x, t)["seg"], hk.focal_tree_min_loss(up, t, tree), **LOSS_TOL)


def test_bad_upsample_arguments_are_named():
    tree = cityscapes_like()
    x = torch.randn(1, tree.num_channels, 4, 6)
    t = random_targets(tree, (1, 8, 12))
    with pytest.raises(ValueError, match=r"\(1, 8, 12\).*\(1, %d, 4, 6\)" % tree.num_channels):
        hk.focal_tree_min_loss(x, t, tree)  # upsample=None: sizes must match, both shapes named
    with pytest.raises(ValueError, match="upsample must be one of"):
        hk.focal_tree_min_loss(x, t, tree, upsample="nearest")
    with pytest.raises(ValueError, match="same B"):
        hk.focal_tree_min_loss(x, t.expand(2, 8, 12), tree, upsample="bilinear")
    with pytest.raises(ValueError, match="size must be"):
        hk.hierarchical_argmax(x, tree, size=(0, 3))
    with pytest.raises(ValueError, match="needs size"):
        hk.hierarchical_argmax(x, tree, violations=True)


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_native)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_argmax_with_size_equals_argmax_of_interpolate(backend, align_corners):
    tree = random_tree(3, max_depth=4, max_channels=30)
    x = torch.randn(2, tree.num_channels, 7, 5) * 2
    size = (23, 16)
    up = F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    expect = hk.hierarchical_argmax(up, tree, backend=backend)
    leaf, viol = hk.hierarchical_argmax(x, tree, backend=backend, size=size, align_corners=align_corners,
                                        violations=True)
    assert torch.equal(leaf, expect)
    assert torch.equal(viol, upsample.tree_violations(up, tree))
    assert torch.equal(ref.hierarchical_argmax(x, tree, size=size, align_corners=align_corners), expect)
    leaf2, levels = hk.hierarchical_argmax(x, tree, backend=backend, size=size, align_corners=align_corners,
                                           levels=True)
    assert torch.equal(leaf2, leaf) and torch.equal(levels[-1], leaf)


@needs_native
def test_opcheck_and_compile():
    tree = cityscapes_like()
    x = torch.randn(2, tree.num_channels, 4, 5, requires_grad=True)
    t = random_targets(tree, (2, 9, 11))
    args = (x, t, list(tree.parents), False, "cpu", 2.0, 255, 2, True)
    torch.library.opcheck(upsample.upsampled_ftm, args)
    torch.library.opcheck(upsample.upsampled_ftm, (x, t, list(tree.parents), True, "cpu", 2.0, 255, 0, False))

    def fn(a):
        return hk.focal_tree_min_loss(a, t, tree, upsample="bilinear", backend="cpu", validate=False,
                                      nan_policy="propagate")

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    a = x.detach().clone().requires_grad_()
    b = x.detach().clone().requires_grad_()
    fn(a).backward()
    compiled(b).backward()
    torch.testing.assert_close(b.grad, a.grad)


def test_triton_matches_the_expression_under_the_interpreter():
    from hssn_kernels import _triton_utils

    reason = _triton_utils.unavailable_reason(torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    tree = cityscapes_like()
    x = torch.randn(1, tree.num_channels, 3, 4, dtype=torch.float32)
    t = random_targets(tree, (1, 7, 9))
    for reduction, weights in (("mean", torch.tensor(1.0)), ("none", torch.randn(1, 7, 9))):
        la, ga = _grads(lambda a: _expression(a, t, tree, reduction, False), x, weights)
        lb, gb = _grads(lambda a: hk.focal_tree_min_loss(a, t, tree, reduction=reduction, backend="triton",
                                                         upsample="bilinear"), x, weights)
        torch.testing.assert_close(lb, la, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-5)


@needs_native
def test_saves_no_logits_when_the_gradient_is_fused():
    tree = cityscapes_like()
    x = torch.randn(2, tree.num_channels, 8, 8, requires_grad=True)
    t = random_targets(tree, (2, 32, 32))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s.shape) or s, lambda s: s):
        hk.focal_tree_min_loss(x, t, tree, backend="cpu", upsample="bilinear")
    assert saved == [x.shape]  # only the fused low-res gradient


@needs_native
def test_double_backward_is_a_clear_error():
    tree = cityscapes_like()
    x = torch.randn(1, tree.num_channels, 3, 3, requires_grad=True)
    t = random_targets(tree, (1, 7, 7))
    loss = hk.focal_tree_min_loss(x, t, tree, backend="cpu", upsample="bilinear")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, x, create_graph=True)
