"""Path inference (Eq. 3) in Triton, as the ``hssn::triton_path_argmax`` custom op.

Pixels along the lanes (one program = ``BLOCK_P`` consecutive pixels of one image), channels walked once in
DFS pre-order, one coalesced row per channel: ``S_v = S_parent + sigmoid(z_v)`` is summed root first in fp32
(fp64 for fp64 logits), exactly the reference's summation order, with the open ancestors' sums in a
``[S_PAD, BLOCK_P]`` per-thread stack; the leaf with the largest ``S`` wins, the lowest leaf channel on ties;
a NaN logit scores 0. One read of the logits (in place, through their strides), one int64 leaf-map write
(level maps are a table lookup away: ``hssn_kernels.project_to_level``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _triton_utils as _tu
from .backends import register
from .focal_tree_min import _logit
from .hierarchy import ClassHierarchy


@triton.jit
def _argmax_walk(base, zmask, o01, o10, o11, w0, w1, h0, h1, s_zc, zero, lv, perm_ptr, size_ptr, depth_ptr, C,
                 FP64: tl.constexpr, UPS: tl.constexpr, VIOL: tl.constexpr):
    """The channels once in DFS pre-order (logits through :func:`focal_tree_min._logit`): (best leaf channel,
    violation flag). With ``VIOL``, a pixel violates the tree when some node's logit is > 0 while its
    parent's is <= 0 (a NaN is neither; the parents' flags kept in a per-depth stack), else the flag is 0."""
    stack = zero * lv  # S of the open inner node at each depth 0 .. DEPTH - 2
    low = (zero * lv).to(tl.int1)  # with VIOL: whether that node's logit is <= 0
    best = zero - float("inf")
    best_c = tl.zeros_like(zero).to(tl.int32) + 2147483647
    bad = tl.zeros_like(best_c).to(tl.int1)
    for j in range(0, C):
        c = tl.load(perm_ptr + j)
        d = tl.load(depth_ptr + j)
        zj = _logit(base, c.to(tl.int64) * s_zc, zmask, o01, o10, o11, w0, w1, h0, h1, zero.dtype, UPS)
        if FP64:
            s = tl.sigmoid(zj)
        else:
            s = _tu.fast_div(1.0, 1.0 + _tu.fast_exp(-zj))
        s = tl.where(zj != zj, 0.0, s)  # a NaN logit scores 0, as -inf would
        score = tl.sum(tl.where(lv == d - 1, stack, 0.0), axis=0, keep_dims=True) + s
        if VIOL:
            parent_low = tl.max(tl.where(lv == d - 1, low, 0).to(tl.int32), axis=0, keep_dims=True) > 0
            bad = bad | ((zj > 0.0) & (d > 0) & parent_low)
        if tl.load(size_ptr + j) == 1:  # a leaf
            take = (score > best) | ((score == best) & (c < best_c))
            best = tl.where(take, score, best)
            best_c = tl.where(take, c, best_c)
        else:
            stack = tl.where(lv == d, score, stack)
            if VIOL:
                low = tl.where(lv == d, zj <= 0.0, low)
    return best_c, bad


@triton.jit
def _path_argmax_kernel(
    z_ptr, perm_ptr, size_ptr, depth_ptr, leaf_out_ptr,
    HW, C, W,
    s_zb, s_zc, s_zh, s_zw,
    DEPTH: tl.constexpr, S_PAD: tl.constexpr, BLOCK_P: tl.constexpr, PLANE: tl.constexpr, FP64: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    q = pid * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]  # [1, BLOCK_P], the layout of the [S_PAD, BLOCK_P] stack
    pmask = q < HW
    if PLANE:
        qz = q
    else:
        h = q // W
        qz = h.to(tl.int64) * s_zh + (q - h * W).to(tl.int64) * s_zw
    if FP64:
        zero = tl.zeros([1, BLOCK_P], dtype=tl.float64)
    else:
        zero = tl.zeros([1, BLOCK_P], dtype=tl.float32)
    best_c, _ = _argmax_walk(z_ptr + b * s_zb + qz, pmask, 0, 0, 0, zero, zero, zero, zero, s_zc, zero,
                             tl.arange(0, S_PAD)[:, None], perm_ptr, size_ptr, depth_ptr, C, FP64, False, False)
    tl.store(leaf_out_ptr + b * HW + q, best_c.to(tl.int64), mask=pmask)


@torch.library.custom_op("hssn::triton_path_argmax", mutates_args=())
def path_argmax(logits: torch.Tensor, perm: torch.Tensor, size: torch.Tensor, depth_pos: torch.Tensor,
                depth: int) -> torch.Tensor:
    """Leaf map (B, H, W) | (N,) int64; perm, size, depth_pos (C,) int32: the DFS tables
    (``HierarchyTables.dfs_perm / dfs_size / dfs_depth``); depth = the tree's height."""
    num_c = logits.shape[1]
    nb, nh, nw, s_zb, s_zh, s_zw = _tu.pixel_strides(logits, True)
    pix_shape = (logits.shape[0],) + tuple(logits.shape[2:])
    hw = nh * nw
    leaf = _tu.empty(pix_shape, dtype=torch.int64, device=logits.device)
    if nb * hw > 0:
        block_p, options = _tu.pixel_config(hw, depth)
        with _tu.launch_guard(logits):
            _path_argmax_kernel[(triton.cdiv(hw, block_p), nb)](
                logits, perm, size, depth_pos, leaf,
                hw, num_c, nw, s_zb, logits.stride(1), s_zh, s_zw,
                DEPTH=depth, S_PAD=triton.next_power_of_2(max(depth - 1, 1)), BLOCK_P=block_p,
                PLANE=_tu.plane_contiguous(nh, nw, s_zh, s_zw), FP64=logits.dtype == torch.float64,
                **options,
            )
    return leaf


@path_argmax.register_fake
def _(logits, perm, size, depth_pos, depth):
    return logits.new_empty((logits.shape[0],) + tuple(logits.shape[2:]), dtype=torch.int64)


@register("hierarchical_argmax", "triton")
def hierarchical_argmax(logits: torch.Tensor, hierarchy: ClassHierarchy) -> torch.Tensor:
    """Leaf map (int64, pixel-shaped)."""
    tabs = hierarchy.tables(logits.device)
    return path_argmax(logits, tabs.dfs_perm, tabs.dfs_size, tabs.dfs_depth, hierarchy.height)
