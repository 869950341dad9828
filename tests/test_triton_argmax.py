"""Triton path argmax vs the reference (CPU under TRITON_INTERPRET=1; CUDA with HSSN_TEST_GPU=1)."""
import pytest
import torch

import hssn_kernels as hk
import oracle as ref
from hssn_kernels.path_argmax import hierarchical_argmax
from trees import DEVICE, TREES, cityscapes_like, random_tree

pytestmark = [pytest.mark.usefixtures("on_device"),
              pytest.mark.skipif(hk.backends.unavailable_reason("triton", torch.device(DEVICE)) is not None,
                                 reason=str(hk.backends.unavailable_reason("triton", torch.device(DEVICE))))]


def _leaf_scores(logits, hierarchy):
    """(P, L) fp32 root-path score sums, for near-tie diagnostics."""
    s = torch.sigmoid(logits.movedim(1, -1).reshape(-1, logits.shape[1]).float())
    return torch.stack([s[:, list(hierarchy.ancestors(leaf))].sum(1) for leaf in hierarchy.leaves], 1)


def _check(logits, hierarchy):
    want = ref.hierarchical_argmax(logits, hierarchy)
    got = hierarchical_argmax(logits, hierarchy)
    assert got.dtype == torch.int64 and got.shape == want.shape
    differ = got != want
    if differ.any():  # only sigmoid ulp differences on near ties are tolerated
        scores = _leaf_scores(logits, hierarchy)[differ.reshape(-1)]
        pos = {c: i for i, c in enumerate(hierarchy.leaves)}
        gi = torch.tensor([pos[int(c)] for c in got[differ]])
        wi = torch.tensor([pos[int(c)] for c in want[differ]])
        gap = (scores.gather(1, gi[:, None]) - scores.gather(1, wi[:, None])).abs()
        assert (gap < 1e-5).all()


@pytest.mark.parametrize("tree", list(TREES))
def test_matches_reference(tree, poisoned):
    hierarchy = TREES[tree]()
    _check(torch.randn(2, hierarchy.num_channels, 3, 5) * 2, hierarchy)
    zeros = torch.zeros(2, hierarchy.num_channels, 3, 5)  # all ties: the lowest leaf of the best paths
    assert torch.equal(hk.hierarchical_argmax(zeros, hierarchy, backend="triton"), ref.hierarchical_argmax(zeros, hierarchy))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes(dtype, poisoned):
    hierarchy = cityscapes_like()
    _check((torch.randn(1, 26, 4, 5) * 2).to(dtype), hierarchy)


def test_non_contiguous_and_flat(poisoned):
    hierarchy = cityscapes_like()
    _check(torch.randn(2, 30, 3, 5)[:, 1:27], hierarchy)
    _check(torch.randn(2, 26, 5, 3).transpose(2, 3), hierarchy)
    _check(torch.randn(26, 19).t(), hierarchy)


def test_ties_lowest_leaf_and_empty(poisoned):
    hierarchy = random_tree(9, max_depth=3)
    x = torch.zeros(5, hierarchy.num_channels)
    assert torch.equal(hierarchical_argmax(x, hierarchy), ref.hierarchical_argmax(x, hierarchy))
    leaf = hierarchical_argmax(torch.zeros(0, hierarchy.num_channels, 2, 2), hierarchy)
    assert leaf.shape == (0, 2, 2)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton", "cuda"])
def test_nan_logits_score_zero_on_every_backend(backend):
    """One rule everywhere: a NaN logit scores 0 (as -inf); an all-NaN pixel gets the lowest leaf channel."""
    dev = torch.device("cpu" if backend in ("reference", "cpu") else DEVICE if backend == "triton" else "cuda")
    if hk.backends.unavailable_reason(backend, dev, "hierarchical_argmax"):
        pytest.skip(f"{backend} unavailable on {dev}")
    h = random_tree(31, max_depth=3, max_channels=30)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, h.num_channels, 3, 4, generator=gen) * 3
    z[0, :, 0, 0] = float("nan")
    z[1, torch.randperm(h.num_channels, generator=gen)[:5], 1, 1] = float("nan")
    as_ninf = torch.nan_to_num(z, nan=float("-inf"))
    got = hk.hierarchical_argmax(z.to(dev), h, backend=backend).cpu()
    assert torch.equal(got, ref.hierarchical_argmax(as_ninf, h))
    assert got[0, 0, 0] == min(h.leaves)
    assert torch.equal(hk.hierarchical_argmax(z.to(dev), h, backend=backend, size=(5, 7)).cpu(),
                       ref.hierarchical_argmax(z, h, size=(5, 7)))
