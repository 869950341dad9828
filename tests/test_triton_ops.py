"""The Triton custom ops: opcheck, torch.compile(fullgraph=True), and the "triton" backend entry."""
import os

import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import _triton_utils
from hssn_kernels.focal_tree_min import ftm_backward, ftm_forward, ftm_tables
from hssn_kernels.path_argmax import path_argmax
from hssn_kernels.tree_triplet import sample_triplets, triplet_forward
from trees import DEVICE, cityscapes_like, random_targets

H = cityscapes_like()
pytestmark = pytest.mark.skipif(_triton_utils.unavailable_reason(torch.device(DEVICE)) is not None,
                                reason=str(_triton_utils.unavailable_reason(torch.device(DEVICE))))
interpreter_only = pytest.mark.skipif(DEVICE != "cpu", reason="the CPU interpreter's half (HSSN_TEST_GPU unset)")


def _opcheck(op, args):
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_opcheck_ftm(on_device):
    tabs = ftm_tables(H, DEVICE)
    x = torch.randn(1, 26, 2, 3, requires_grad=True)
    t = random_targets(H, (1, 2, 3))
    for reduction, grad in ((2, True), (1, False), (0, False)):
        _opcheck(ftm_forward, (x, t, *tabs, 2.0, 255, reduction, grad))
    _opcheck(ftm_backward, (torch.randn(1, 2, 3), x.detach(), t, *tabs, 2.0, 255))


def test_opcheck_argmax_and_triplets(on_device):
    tabs = H.tables(DEVICE)
    _opcheck(path_argmax, (torch.randn(2, 26, 2, 2), tabs.dfs_perm, tabs.dfs_size, tabs.dfs_depth, H.height))
    t = random_targets(H, (1, 3, 4))
    _opcheck(sample_triplets, (t, tabs.leaf_index, tabs.tree_distance, 6, 1, 255, 0))
    table, count = sample_triplets(t, tabs.leaf_index, tabs.tree_distance, 6, 1, 255, 0)
    e = torch.randn(1, 5, 3, 4, requires_grad=True)
    _opcheck(triplet_forward, (e, t, table, count, tabs.leaf_index, tabs.tree_distance, 0.1, 0.5, H.height,
                               True, 0, True))


def test_torch_compile_fullgraph(on_device):
    torch._dynamo.reset()

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 26, 1)

        def forward(self, x, t):
            z = self.conv(x)
            loss = hk.focal_tree_min_loss(z, t, H, backend="triton", validate=False, nan_policy="propagate")
            return loss + 0.1 * hk.tree_triplet_loss(x, t, H, num_triplets=8, backend="triton", validate=False)

    model = Head()
    x = torch.randn(1, 4, 3, 4)
    t = random_targets(H, (1, 3, 4))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss = compiled(x, t)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(x, t)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


@interpreter_only
def test_backend_entry():
    assert _triton_utils.unavailable_reason(torch.device("cpu")) is None  # conftest sets TRITON_INTERPRET=1
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert _triton_utils.unavailable_reason(torch.device("meta")) is not None
    x = torch.randn(2, 26, 3, 3)
    t = random_targets(H, (2, 3, 3))
    torch.testing.assert_close(hk.focal_tree_min_loss(x, t, H, backend="triton"),
                               hk.focal_tree_min_loss(x, t, H, backend="reference"))
    leaf, levels = hk.hierarchical_argmax(x, H, backend="triton", levels=True)
    assert torch.equal(leaf, hk.hierarchical_argmax(x, H, backend="reference"))
    a = hk.sample_triplets(t, H, 10, seed=4, backend="triton")
    b = hk.sample_triplets(t, H, 10, seed=4, backend="reference")
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@interpreter_only
def test_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = _triton_utils.unavailable_reason(torch.device("cpu"))
    assert reason is not None and "TRITON_INTERPRET=1" in reason


# ----------------------------------------------------------------------------- device guard
def test_every_triton_launch_enters_the_device_guard(monkeypatch, on_device):
    """Each launch (loss, argmax, sampler, triplet loss, its gradient gather) runs under the guard of its
    tensor's device (torch.cuda.device for CUDA tensors), so tensors on cuda:1 never launch on cuda:0."""
    from hssn_kernels import _triton_utils as tu

    seen = []
    real = tu.launch_guard
    monkeypatch.setattr(tu, "launch_guard", lambda x: (seen.append(x.device), real(x))[1])
    h = cityscapes_like()
    z = torch.randn(2, h.num_channels, 4, 5, requires_grad=True)
    t = torch.randint(0, 19, (2, 4, 5))
    hk.focal_tree_min_loss(z, t, h, backend="triton").backward()
    hk.hierarchical_argmax(z.detach(), h, backend="triton")
    emb = torch.randn(2, 8, 4, 5, requires_grad=True)
    hk.tree_triplet_loss(emb, t, h, 20, backend="triton").backward()
    assert len(seen) == 5 and all(d.type == DEVICE for d in seen)


def test_launch_guard_selects_the_tensors_device(monkeypatch):
    import types

    from hssn_kernels import _triton_utils as tu

    entered = []

    class FakeDevice:
        def __init__(self, device):
            entered.append(device)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "device", FakeDevice)
    with tu.launch_guard(types.SimpleNamespace(device=torch.device("cuda", 1))):
        pass
    with tu.launch_guard(torch.zeros(1)):
        pass
    assert entered == [torch.device("cuda", 1)]
