"""Path inference (Eq. 3) in Triton, as the ``hssn::triton_path_argmax`` custom op.

One program = ``BLOCK_P`` pixels x all channels (``[BLOCK_P, C_PAD]`` tile, channel = position).
``S_v = S_parent + sigmoid(z_v)`` is summed root first in fp32 (fp64 for fp64 logits) with
``DEPTH - 1`` gather steps along the channel axis, exactly the reference's summation order; the leaf
with the largest ``S`` wins, the lowest leaf channel on ties; a NaN logit scores 0. One read of the
logits (in place, through their strides), one int64 leaf-map write (level maps are a table lookup away:
``hssn_kernels.project_to_level``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _triton_utils as _tu
from .hierarchy import ClassHierarchy


@triton.jit
def _path_argmax_kernel(
    z_ptr, parent_ptr, leaf_index_ptr, leaf_out_ptr,
    P, C, H, W,
    s_zb, s_zc, s_zh, s_zw,
    DEPTH: tl.constexpr, BLOCK_P: tl.constexpr, C_PAD: tl.constexpr, FP64: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pix = pid * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    pmask = pix < P
    hw = H * W
    b = pix // hw
    rem = pix - b * hw
    h = rem // W
    w = rem - h * W

    cols = tl.arange(0, C_PAD)
    cmask = cols < C
    parent = tl.load(parent_ptr + cols, mask=cmask, other=-1)
    is_leaf = tl.load(leaf_index_ptr + cols, mask=cmask, other=-1) >= 0
    m2 = pmask[:, None] & cmask[None, :]
    zoff = b * s_zb + h * s_zh + w * s_zw
    z = tl.load(z_ptr + zoff[:, None] + cols.to(tl.int64)[None, :] * s_zc, mask=m2, other=0.0)
    if FP64:
        z = z.to(tl.float64)
    else:
        z = z.to(tl.float32)
    s = tl.where(z != z, 0.0, tl.sigmoid(z))  # a NaN logit scores 0, as -inf would
    zero = tl.zeros([BLOCK_P, C_PAD], dtype=z.dtype)
    pc = tl.where(parent >= 0, parent, 0)[None, :] + tl.zeros([BLOCK_P, C_PAD], dtype=tl.int32)
    has_parent = (parent >= 0)[None, :] & m2
    score = s
    for _ in tl.static_range(DEPTH - 1):
        score = tl.where(has_parent, tl.gather(score, pc, 1) + s, s)
    score = tl.where(is_leaf[None, :] & m2, score, zero - float("inf"))
    leaf = tl.argmax(score, axis=1, tie_break_left=True).to(tl.int64)
    tl.store(leaf_out_ptr + pix, leaf, mask=pmask)


def _config(c_pad: int) -> tuple[int, int]:
    """(BLOCK_P, num_warps): a 1024-element tile, 4 elements per thread (see docs/triton.md)."""
    block_p = max(1, min(128, 1024 // c_pad))
    return block_p, max(1, min(8, block_p * c_pad // 128))


@torch.library.custom_op("hssn::triton_path_argmax", mutates_args=())
def path_argmax(logits: torch.Tensor, parent: torch.Tensor, leaf_index: torch.Tensor, depth: int) -> torch.Tensor:
    """Leaf map (B, H, W) | (N,) int64; parent (C,) int32; leaf_index (C,) int32 (>= 0 marks leaves); depth =
    the tree's height."""
    num_c = logits.shape[1]
    nb, nh, nw, s_zb, s_zh, s_zw = _tu.pixel_strides(logits, True)
    pix_shape = (logits.shape[0],) + tuple(logits.shape[2:])
    num_p = nb * nh * nw
    leaf = _tu.empty(pix_shape, dtype=torch.int64, device=logits.device)
    if num_p > 0:
        c_pad = triton.next_power_of_2(num_c)
        block_p, num_warps = _config(c_pad)
        with _tu.launch_guard(logits):
            _path_argmax_kernel[(triton.cdiv(num_p, block_p),)](
                logits, parent, leaf_index, leaf,
                num_p, num_c, nh, nw, s_zb, logits.stride(1), s_zh, s_zw,
                DEPTH=depth, BLOCK_P=block_p, C_PAD=c_pad, FP64=logits.dtype == torch.float64, num_warps=num_warps,
            )
    return leaf


@path_argmax.register_fake
def _(logits, parent, leaf_index, depth):
    return logits.new_empty((logits.shape[0],) + tuple(logits.shape[2:]), dtype=torch.int64)


def hierarchical_argmax(logits: torch.Tensor, hierarchy: ClassHierarchy) -> torch.Tensor:
    """Leaf map (int64, pixel-shaped)."""
    tabs = hierarchy.tables(logits.device)
    return path_argmax(logits, tabs.parent, tabs.leaf_index, hierarchy.height)
