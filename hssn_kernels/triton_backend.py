"""The "triton" backend of :mod:`hssn_kernels.backends`: the Triton kernels behind the backend interface.

Usable for CUDA tensors whenever ``triton`` imports, and for CPU tensors only under Triton's
interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is first imported; slow, for tests).
Inputs are validated upstream by :mod:`hssn_kernels.functional`.
"""
from __future__ import annotations

import os

import torch

from .focal_tree_min import focal_tree_min_loss, ftm_kernel, ftm_kernel_backward
from .path_argmax import hierarchical_argmax
from .tree_triplet import sample_triplets_padded, tree_triplet_loss

__all__ = ["unavailable_reason", "focal_tree_min_loss", "ftm_kernel", "ftm_kernel_backward", "hierarchical_argmax", "sample_triplets_padded",
           "tree_triplet_loss"]


def unavailable_reason(device: torch.device) -> str | None:
    """None when the Triton kernels can run on ``device``, else why not."""
    device = torch.device(device)
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1":
            return None
        return "Triton runs CPU tensors only under its interpreter: set TRITON_INTERPRET=1 before importing triton"
    return f"Triton kernels need CUDA tensors, got {device.type} tensors"

