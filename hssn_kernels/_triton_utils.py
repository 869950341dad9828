"""Helpers shared by the Triton op modules (``focal_tree_min``, ``path_argmax``, ``tree_triplet``): the output
allocator (a test hook), pixel strides of the layouts the kernels read in place, the pixels-along-lanes launch
configuration, and the launch guard."""
from __future__ import annotations

import contextlib
import os

from packaging.version import Version
import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

empty = torch.empty
"""Allocator of every kernel output that a kernel must fully write (the tests swap in a poisoning one)."""


def pixel_strides(x: torch.Tensor, channel_dim: bool) -> tuple[int, int, int, int, int, int]:
    """(B, H, W) sizes and strides of the pixel dims of a (B, C, H, W) / (B, H, W) tensor; (N, C) / (N,) read as
    one 1 x N image."""
    if x.dim() == (2 if channel_dim else 1):
        return 1, 1, x.shape[0], 0, 0, x.stride(0)
    if channel_dim:
        return x.shape[0], x.shape[2], x.shape[3], x.stride(0), x.stride(2), x.stride(3)
    return x.shape[0], x.shape[1], x.shape[2], x.stride(0), x.stride(1), x.stride(2)


def plane_contiguous(h: int, w: int, s_h: int, s_w: int) -> bool:
    """Whether pixel (i, j) of an h x w plane sits at offset i * w + j (the kernels then index by q = i * w + j)."""
    return (w == 1 or s_w == 1) and (h == 1 or s_h == w)


PIXELS_PER_THREAD = 4
"""Consecutive pixels a thread owns in the pixels-along-lanes kernels (a 16-byte fp32 / 8-byte bf16 vector)
for trees of height <= 4; half that up to 8, one pixel deeper (their per-depth stacks grow with the height)."""


MAX_REGISTERS = 96
"""Register cap (``maxnreg``) of the pixels-along-lanes kernels for trees up to height 8: 5 programs of 4 warps
per SM (0.31 occupancy) where Triton 3.6's ptxas would take 117 registers (0.25); every variant stays
spill-free on Triton 3.6 and 3.8, sm_80 and sm_90 (tools/triton_resources.py). Deeper trees get
``DEEP_MAX_REGISTERS``; the upsampled argmax, which also interpolates, ``UPSAMPLED_MAX_REGISTERS``."""
UPSAMPLED_MAX_REGISTERS = 128
DEEP_MAX_REGISTERS = 255


def pixels_per_thread(depth: int) -> int:
    """Pixels a thread owns for a tree of height ``depth`` (see PIXELS_PER_THREAD)."""
    return PIXELS_PER_THREAD if depth <= 4 else (PIXELS_PER_THREAD // 2 if depth <= 8 else 1)


def pixel_config(hw: int, depth: int = 1, max_registers: int = MAX_REGISTERS) -> tuple[int, dict]:
    """(BLOCK_P, launch options) of a pixels-along-lanes kernel over an image of ``hw`` pixels and a tree of
    height ``depth``: 4 warps x 32 lanes x :func:`pixels_per_thread`, shrunk (power of two, >= 32) for small
    images; at most ``max_registers`` (``DEEP_MAX_REGISTERS`` past height 8). See docs/triton.md."""
    ppt = pixels_per_thread(depth)
    block = min(4 * 32 * ppt, max(32, triton.next_power_of_2(hw)))
    return block, {"num_warps": max(1, min(4, block // (32 * ppt))),
                   "maxnreg": max_registers if depth <= 8 else DEEP_MAX_REGISTERS}


def launch_guard(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Context for a launch on ``x``'s device: ``torch.cuda.device(x.device)`` for CUDA tensors (Triton launches
    on the current device and its current stream, so a tensor on ``cuda:1`` with ``cuda:0`` current would
    otherwise run on the wrong GPU), nothing otherwise (the CPU interpreter)."""
    if x.device.type == "cuda":
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def fast_exp(x):
    """exp(x) in fp32 as one ex2.approx.ftz (results below 2**-126 flush to 0); the exact exp under the
    interpreter, which has no PTX intrinsics."""
    if _INTERPRETED:
        return tl.exp(x)
    else:
        return libdevice.fast_expf(x)


@triton.jit
def fast_log2(x):
    """log2(x) in fp32 as one lg2.approx.ftz (absolute error < 2**-22); the exact log2 under the interpreter."""
    if _INTERPRETED:
        return tl.log2(x)
    else:
        return libdevice.fast_log2f(x)


@triton.jit
def fast_div(x, y):
    """x / y in fp32 as div.approx (one MUFU.RCP and a multiply; for |y| < 2**126); exact under the interpreter."""
    if _INTERPRETED:
        return x / y
    else:
        return libdevice.fast_dividef(x, y)


INTERPRETER_MIN = (3, 7)
"""The oldest Triton whose CPU interpreter runs these kernels (3.6's cannot loop over a runtime argument)."""


def unavailable_reason(device: torch.device) -> str | None:
    """None when the Triton kernels can run on ``device``, else why not (CUDA tensors whenever ``triton``
    imports; CPU tensors only under Triton's interpreter, ``TRITON_INTERPRET=1`` set before ``triton`` is
    first imported: slow, for tests)."""
    device = torch.device(device)
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            return "Triton runs CPU tensors only under its interpreter: set TRITON_INTERPRET=1 before importing triton"
        if Version(triton.__version__).release[:2] < INTERPRETER_MIN:
            return (f"Triton {triton.__version__}'s interpreter cannot run a loop over a kernel argument "
                    f"(`for j in range(C)`: its __index__ calls int() on a 1-element array, which recent numpy "
                    f"releases reject); Triton >= {'.'.join(map(str, INTERPRETER_MIN))} fixes it. CUDA tensors are unaffected")
        return None
    return f"Triton kernels need CUDA tensors, got {device.type} tensors"
