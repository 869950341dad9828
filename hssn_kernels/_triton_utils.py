"""Helpers shared by the Triton op modules (``focal_tree_min``, ``path_argmax``, ``tree_triplet``): the output
allocator (a test hook), pixel strides of the layouts the kernels read in place, and the launch guard."""
from __future__ import annotations

import contextlib

import torch

empty = torch.empty
"""Allocator of every kernel output that a kernel must fully write (the tests swap in a poisoning one)."""


def pixel_strides(x: torch.Tensor, channel_dim: bool) -> tuple[int, int, int, int, int, int]:
    """(B, H, W) sizes and strides of the pixel dims of a (B, C, H, W) / (N, C) / (B, H, W) / (N,) tensor."""
    if channel_dim:
        if x.dim() == 2:
            return x.shape[0], 1, 1, x.stride(0), 0, 0
        return x.shape[0], x.shape[2], x.shape[3], x.stride(0), x.stride(2), x.stride(3)
    if x.dim() == 1:
        return x.shape[0], 1, 1, x.stride(0), 0, 0
    return x.shape[0], x.shape[1], x.shape[2], x.stride(0), x.stride(1), x.stride(2)


def launch_guard(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Context for a launch on ``x``'s device: ``torch.cuda.device(x.device)`` for CUDA tensors (Triton launches
    on the current device and its current stream, so a tensor on ``cuda:1`` with ``cuda:0`` current would
    otherwise run on the wrong GPU), nothing otherwise (the CPU interpreter)."""
    if x.device.type == "cuda":
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()
