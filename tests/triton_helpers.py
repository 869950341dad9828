"""Shared helpers for the Triton tests: poisoned allocations, random inputs, tolerances."""
from __future__ import annotations

import pytest
import torch

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float16: dict(rtol=1e-2, atol=1e-3),
       torch.bfloat16: dict(rtol=5e-2, atol=1e-2), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def poison_empty(*shape, dtype=None, device=None):
    """torch.empty look-alike filled with NaN (floats) or -7 (integers) so unwritten outputs fail tests."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    fill = float("nan") if dtype is None or dtype.is_floating_point else -7
    return torch.full(shape, fill, dtype=dtype, device=device)


@pytest.fixture
def poisoned(monkeypatch):
    from hssn_kernels import _triton_utils

    monkeypatch.setattr(_triton_utils, "empty", poison_empty)


def random_targets(hierarchy, shape, ignore_frac=0.2, ignore_index=255, dtype=torch.int64):
    leaves = torch.tensor(hierarchy.leaves)
    t = leaves[torch.randint(len(leaves), shape)]
    t[torch.rand(shape) < ignore_frac] = ignore_index
    return t.to(dtype)
