"""The native ops as torch ops: opcheck, torch.compile, clear errors from the native code, loading."""
import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import native
from trees import cityscapes_like, random_tree

pytestmark = pytest.mark.skipif(native.unavailable_reason(torch.device("cpu")) is not None,
                                reason=f"native extension unavailable: {native.unavailable_reason(torch.device('cpu'))}")


def inputs(h, shape=(2, 5, 6)):
    x = torch.randn((shape[0], h.num_channels) + shape[1:])
    t = torch.tensor(h.leaves)[torch.randint(h.num_leaves, shape)]
    t[0, 0] = 255
    return x, t


def tables(h):
    tabs = h.tables("cpu")
    return tabs.parent, tabs.bottom_up, tabs.ancestors, tabs.dfs


def test_opcheck_all_ops():
    h = random_tree(1, max_channels=25)
    x, t = inputs(h)
    tabs = h.tables("cpu")
    for red in (0, 1, 2):
        torch.library.opcheck(torch.ops.hssn.ftm_forward.default,
                              (x.requires_grad_(True), t, *tables(h), 2.0, 255, red, red != 0))
    torch.library.opcheck(torch.ops.hssn.ftm_backward.default, (torch.rand(t.shape), x.detach(), t, *tables(h), 2.0, 255))
    torch.library.opcheck(torch.ops.hssn.path_argmax.default, (x.detach(), tabs.dfs))
    torch.library.opcheck(torch.ops.hssn.sample_triplets.default, (t, tabs.leaf_index, tabs.tree_distance, 20, 1, 255, 0))
    trip, count = torch.ops.hssn.sample_triplets(t, tabs.leaf_index, tabs.tree_distance, 20, 1, 255, 0)
    e = torch.randn(2, 8, 5, 6, requires_grad=True)
    torch.library.opcheck(torch.ops.hssn.triplet_forward.default,
                          (e, t, trip, count, tabs.leaf_index, tabs.tree_distance, 0.1, 0.5, h.height, True, 0, True))


def test_torch_compile_fullgraph():
    h = cityscapes_like()
    x, t = inputs(h)

    h.tables("cpu")  # build the cached tables outside the trace

    def step(x, t):
        loss = native.focal_tree_min_loss(x, t, h, 2.0, 255, "mean")
        emb = x[:, :8]
        trip = native.tree_triplet_loss(emb, t, h, 20, 0.1, 0.5, True, "cosine", 0, 255, "tree")
        return loss + trip, native.hierarchical_argmax(x, h)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    la, leaf_a = compiled(xa, t)
    lb, leaf_b = step(xb, t)
    torch.testing.assert_close(la, lb)
    assert torch.equal(leaf_a, leaf_b)
    la.backward()
    lb.backward()
    torch.testing.assert_close(xa.grad, xb.grad)


def test_errors_from_native_code():
    h = cityscapes_like()
    x, t = inputs(h)
    p, b, a, d = tables(h)
    bad = t.clone()
    bad[1, 2, 3] = 20  # an inner node, not a leaf: that pixel's loss is NaN (labels are validated upstream)
    assert torch.isnan(torch.ops.hssn.ftm_forward(x, bad, p, b, a, d, 2.0, 255, 2, False)[0])
    bad[1, 2, 3] = 300  # out of range: the same, and no table is read at it
    per_pixel = torch.ops.hssn.ftm_forward(x, bad, p, b, a, d, 2.0, 255, 0, False)[0]
    assert torch.isnan(per_pixel[1, 2, 3]) and torch.isnan(per_pixel).sum() == 1
    with pytest.raises(RuntimeError, match="target must be int64, int32 or uint8"):
        torch.ops.hssn.ftm_forward(x, t.float(), p, b, a, d, 2.0, 255, 2, False)
    with pytest.raises(RuntimeError, match="logits must be a floating-point tensor"):
        torch.ops.hssn.ftm_forward(t[:, None].expand(-1, h.num_channels, -1, -1), t, p, b, a, d, 2.0, 255, 2, False)
    with pytest.raises(RuntimeError, match="table parent must be Int"):
        torch.ops.hssn.ftm_forward(x, t, p.long(), b, a, d, 2.0, 255, 2, False)
    with pytest.raises(RuntimeError, match="does not match logits shape"):
        torch.ops.hssn.ftm_forward(x, t[:, :-1], p, b, a, d, 2.0, 255, 2, False)
    with pytest.raises(RuntimeError, match="reduction must be 0"):
        torch.ops.hssn.ftm_forward(x, t, p, b, a, d, 2.0, 255, 5, False)
    with pytest.raises(RuntimeError, match=r"table dfs has shape \[3, 26\], expected size 4 in dim 0"):
        torch.ops.hssn.ftm_forward(x, t, p, b, a, d[:3], 2.0, 255, 2, False)
    with pytest.raises(RuntimeError, match="table dfs must be Int"):
        torch.ops.hssn.path_argmax(x, d.long())
    tabs = h.tables("cpu")
    bad_pixel = 1 * t[0].numel() + 2 * t.shape[2] + 3  # flat index of bad[1, 2, 3]
    trip, count = torch.ops.hssn.sample_triplets(bad, tabs.leaf_index, tabs.tree_distance, 50, 0, 255, 0)
    assert count > 0 and not (trip[: int(count)] == bad_pixel).any()  # a non-leaf label is never drawn
    trip = torch.tensor([[0, 1, 10_000]])
    with pytest.raises(RuntimeError, match="triplet pixel index 10000 outside"):
        torch.ops.hssn.triplet_forward(torch.randn(2, 4, 5, 6), t, trip, torch.tensor(1), tabs.leaf_index,
                                       tabs.tree_distance, 0.1, 0.5, h.height, True, 0, False)


def test_device_mix_error():
    """The CPU kernel itself (reached with redispatch: a mixed call would go to the other device's kernel)."""
    h = cityscapes_like()
    x, t = inputs(h)
    cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    op = torch.ops.hssn.ftm_forward.default
    with pytest.raises(RuntimeError, match="target is on meta but logits are on cpu"):
        op.redispatch(cpu, x, t.to("meta"), *tables(h), 2.0, 255, 2, False)
    with pytest.raises(RuntimeError, match="table parent is on meta but the inputs are on cpu"):
        op.redispatch(cpu, x, t, h.tables("cpu").parent.to("meta"), *tables(h)[1:], 2.0, 255, 2, False)
    with pytest.raises(RuntimeError, match="the CPU kernel got meta tensors"):
        op.redispatch(cpu, x.to("meta"), t.to("meta"), *(tab.to("meta") for tab in tables(h)), 2.0, 255, 2, False)


def test_backend_selection_and_reasons():
    assert native.unavailable_reason(torch.device("cpu")) is None
    assert hk.backends.available("cpu")["cpu"] is None
    assert "runs CPU tensors only" in hk.backends.available("meta")["cpu"]
    info = native.build_info()
    assert info["loaded"] and info["torch_version"] == torch.__version__


def test_missing_extension_reason(monkeypatch):
    monkeypatch.setattr(native, "_C", None)
    monkeypatch.setattr(native, "_LOAD_ERROR", "the native extension hssn_kernels._C is not built")
    assert "not built" in native.unavailable_reason(torch.device("cpu"))
    x, t = inputs(cityscapes_like())
    with pytest.raises(RuntimeError, match="not built"):
        hk.focal_tree_min_loss(x, t, cityscapes_like(), backend="cpu")


def test_info_report_says_what_auto_picks():
    from hssn_kernels import info

    text = info.report()
    assert 'backend="auto"' in text and "gpu_table.json" in text
    if hk.backends.gpu_table()["source"] == "predicted":  # until a GPU run's measured table is committed
        assert "predicted: a static model" in text
    for op in hk.backends.ranked_ops():
        assert f"cuda tensors  {op}" in text
    assert "focal_tree_min_loss bf16 C=150: triton, cuda" in text  # ranked by the predicted table


def test_every_registry_row_names_a_function_of_its_family():
    """``backends.OPS`` is the one list, filled by the modules' ``@register``: every row is a function of a known
    family, every op a fast backend implements has a reference (its spec), except the fused upsampling's raw
    kernels; the triplet ops keep their CUDA-first preference, the others the default order."""
    ops = hk.backends.OPS
    for op, impls in ops.items():
        for family, fn in impls.items():
            assert family in hk.backends.FAMILIES and callable(fn), (op, family)
    raw = {"ftm_kernel", "ftm_kernel_backward"}
    assert {op for op, impls in ops.items() if set(impls) - {"reference"}} - raw == set(hk.backends.ranked_ops())
    assert set(hk.backends.ranked_ops()) == {"focal_tree_min_loss", "hierarchical_argmax", "sample_triplets_padded",
                                              "tree_triplet_loss"}
    assert hk.backends.cuda_order("hierarchical_argmax") == hk.backends.AUTO_CUDA_DEFAULT
    import importlib.util

    if importlib.util.find_spec("triton") is not None:  # without Triton its modules cannot import, and say so
        assert not hk.backends.IMPORT_ERRORS, hk.backends.IMPORT_ERRORS
