"""Bilinear upsampling fused per pixel into the Triton focal tree-min loss and path inference.

The band loop of :mod:`hssn_kernels.upsample` launches a few kernels per band of output rows (hundreds of
bands per call); these kernels take the whole (B, C, h, w) -> (H, W) resize in one launch each:

* **Anchors.** Output pixel (y, x) mixes the low-res taps ``(i0[y], i0[y] + 1) x (j0[x], j0[x] + 1)``
  (clamped at the last row / column) with ``upsample_bilinear2d``'s weights. The output rows with one
  ``i0`` (about ``H / h``; none when downsampling skips a row) belong to *anchor row* i0, the columns
  likewise; a low-res cell (a, j) is the anchor of the output pixels whose ``(i0, j0) = (a, j)``.
* **Loss** (``_upsampled_ftm_kernel``): one program = one anchor row x ``BJ`` anchor columns of one image,
  one anchor column per thread. It walks the anchor row's output rows and, per row, chunks of ``KX``
  columns per anchor (a thread's pixels; ``KX`` = the next power of two of the column ratio, at most
  ``pixels_per_thread``; the clamped first column at ``align_corners=False`` takes a second chunk). Per
  chunk and channel a thread loads its anchor's four taps (L1/L2 re-reads of the low-res logits only),
  interpolates them at its pixels, runs the focal tree-min walk of :mod:`hssn_kernels.focal_tree_min` (the
  same jit helpers) and reduces its pixels' gradient onto the anchor in registers, then adds it where the
  row taps land: per low-res value two partial sums (``part[b, c, row, col, dc]``, one per column tap dc;
  at the clamped last row both row taps land on the anchor's own row). Two launches: the even anchor rows
  first (they store every row: each row is some even anchor's upper or lower row), then the odd ones, which
  add to what is stored (no two anchors of one launch share a row); an anchor's later chunks add too, in
  the same thread. No float atomics, no shuffles.
* **Fold** (``_fold_kernel``): low-res cell (i, j) sums, in a fixed order, its column's tap-0 sum, the
  column before's tap-1 sum and, at the last column, its own tap-1 sum (the clamped tap), and writes the
  gradient in the logits' dtype.
* **Path inference** (``_upsampled_argmax_kernel``): per output pixel, the four taps gathered per channel,
  the path scores of :mod:`hssn_kernels.path_argmax`'s walk, and the hierarchy-violation flag (a node
  above 0 under a parent at or below 0) from a per-depth stack, in the same pass.

Memory above the inputs: the low-res gradient, the partial sums (2 x B x C x h x w in fp32: 2x the gradient
for fp32 logits, 4x for bf16 / fp16; fp64 for fp64 logits), the per-program loss partials, the taps
(O(H + W)). Deterministic: every sum has a fixed order (the launches run in order).
Math in fp32 (fp64 for fp64 logits), as the band loop; the same result up to rounding.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from . import _triton_utils as _tu
from ._autograd import loss_dtype, valid_count
from .focal_tree_min import _labels, _path_terms, _walk, ftm_tables
from .hierarchy import ClassHierarchy
from .path_argmax import _argmax_walk
from .upsample import _taps


def loss_config(depth: int, per_pixel: bool = False) -> dict:
    """Launch options of the loss kernel: ``LOSS_WARPS`` warps, at most 192 registers (10 one-warp programs
    per SM): a thread's anchor taps, weights and partial sums need more than the same-resolution kernel's 128
    to stay spill-free; 255 for trees deeper than 8 and for the backward of ``reduction="none"``
    (``per_pixel``: each pixel's incoming weight held through the walk too; not the training path), checked
    by tools/triton_resources.py at heights 3, 6, 16."""
    return {"num_warps": LOSS_WARPS, "maxnreg": 192 if depth <= 8 and not per_pixel else _tu.DEEP_MAX_REGISTERS}


LOSS_WARPS = 1
"""Warps per loss program: ``BJ = 32 * LOSS_WARPS`` anchor columns, one per thread (programs are many: an anchor
row of an image each, times ``ceil(w / BJ)``)."""
FOLD_BLOCK = 1024
"""Low-res cells per fold program."""


# ----------------------------------------------------------------------------- plan
class _Axis:
    """One axis of the resize: the taps (``lam``), and each anchor's first output index and count."""

    def __init__(self, out_len: int, in_len: int, align_corners: bool, fp64: bool):
        i0, _, lam = _taps(out_len, in_len, align_corners, fp64)
        self.i0, self.lam = i0, lam
        self.count = np.bincount(i0, minlength=in_len).astype(np.int32)
        self.start = (np.cumsum(self.count) - self.count).astype(np.int32)


@functools.lru_cache(maxsize=32)
def _cached_plan(h: int, w: int, H: int, W: int, align_corners: bool, fp64: bool, device: torch.device, kx: int):
    return _Plan(h, w, H, W, align_corners, fp64, device, kx)


class _Plan:
    """Device tables of one (h, w) -> (H, W) resize (cached: no host-to-device copy after the first call).

    ``kx``: output columns per anchor and chunk (a thread's pixels); ``col_chunks[jb]``: the chunks column block
    ``jb`` takes (its anchors' largest count / kx: 2 for the block of the clamped first column at
    ``align_corners=False``, else 1 when upsampling)."""

    def __init__(self, h, w, H, W, align_corners, fp64, dev, kx):
        ay, ax = _Axis(H, h, align_corners, fp64), _Axis(W, w, align_corners, fp64)
        self.kx, self.bj = kx, 32 * LOSS_WARPS
        self.blocks = triton.cdiv(w, self.bj)
        pad = self.blocks * self.bj - w
        chunks = -(-np.concatenate([ax.count, np.zeros(pad, np.int32)]) // kx)
        self.col_chunks = torch.from_numpy(np.maximum(chunks.reshape(self.blocks, self.bj).max(1), 1)
                                           .astype(np.int32)).to(dev)
        i32 = {"dtype": torch.int32, "device": dev}
        self.y_start, self.y_count = torch.tensor(ay.start, **i32), torch.tensor(ay.count, **i32)
        self.x_start, self.x_count = torch.tensor(ax.start, **i32), torch.tensor(ax.count, **i32)
        self.lam_y, self.lam_x = torch.from_numpy(ay.lam).to(dev), torch.from_numpy(ax.lam).to(dev)
        self.i0_y, self.i0_x = torch.tensor(ay.i0, **i32), torch.tensor(ax.i0, **i32)


def columns_per_thread(W: int, w: int, depth: int) -> int:
    """``kx``: the next power of two of ceil(W / w), at most ``_triton_utils.pixels_per_thread(depth)``."""
    return min(_tu.pixels_per_thread(depth), triton.next_power_of_2(max(1, -(-W // w))))


def _plan(logits: torch.Tensor, size: tuple[int, int], align_corners: bool, kx: int) -> _Plan:
    return _cached_plan(logits.shape[2], logits.shape[3], int(size[0]), int(size[1]), bool(align_corners),
                        logits.dtype == torch.float64, logits.device, kx)


# ----------------------------------------------------------------------------- kernels
@triton.jit(do_not_specialize=["parity"])  # one compilation for both launches
def _upsampled_ftm_kernel(
    z_ptr, t_ptr, gout_ptr, loss_ptr, part_ptr, count_ptr,
    perm_ptr, size_ptr, depth_ptr, path_ptr,
    y_start_ptr, y_count_ptr, x_start_ptr, x_count_ptr, col_chunks_ptr, lam_y_ptr, lam_x_ptr,
    C, h, w, H, W,
    s_zb, s_zc, s_zh, s_zw,
    s_tb, s_th, s_tw,
    s_ob, s_oh, s_ow,
    parity,
    gamma, ignore_index,
    DEPTH: tl.constexpr, D_PAD: tl.constexpr, S_PAD: tl.constexpr, BJ: tl.constexpr, KX: tl.constexpr,
    GAMMA2: tl.constexpr, REDUCTION: tl.constexpr, COMPUTE_LOSS: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    GRAD_PER_PIXEL: tl.constexpr, FP64: tl.constexpr, PARTIAL: tl.constexpr,
):
    a = 2 * tl.program_id(0) + parity  # the anchor row: this launch takes the rows of one parity
    jb = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    kx = tl.arange(0, KX)[None, :, None]  # [1, KX, 1]: the pixel of the anchor's chunk (in the thread)
    jj = jb * BJ + tl.arange(0, BJ)[None, None, :]  # [1, 1, BJ]: the anchor columns, one per thread
    jmask = jj < w
    y0 = tl.load(y_start_ptr + a)
    ny = tl.load(y_count_ptr + a)
    x0 = tl.load(x_start_ptr + jj, mask=jmask, other=0)
    nx = tl.load(x_count_ptr + jj, mask=jmask, other=0)
    # the taps: rows (a, a + 1), columns (j, j + 1), clamped at the last row / column
    o10 = tl.where(a < h - 1, s_zh, 0).to(tl.int64)
    o01 = tl.where(jj < w - 1, s_zw, 0).to(tl.int64)
    base = z_ptr + b * s_zb + a.to(tl.int64) * s_zh + jj.to(tl.int64) * s_zw
    if FP64:
        zero = tl.zeros([1, KX, BJ], dtype=tl.float64)
    else:
        zero = tl.zeros([1, KX, BJ], dtype=tl.float32)
    lv = tl.arange(0, D_PAD)[:, None, None]
    sv = tl.arange(0, S_PAD)[:, None, None]
    sink = part_ptr + 2 * ((b * C * h + a) * w + jj)  # part[b, c, row, col, dc]: + dc + 2 c h w (+ 2 w: next row)
    down = tl.where(a < h - 1, 2 * w, 0)
    total = tl.sum(tl.sum(zero, axis=2), axis=1)  # [1]: this program's loss sum
    n_cx = tl.load(col_chunks_ptr + jb)
    for ry in range(0, tl.maximum(ny, 1)):  # the anchor row's output rows (a row of zeros when it has none)
        yy = y0 + ry
        h1 = tl.load(lam_y_ptr + yy, mask=ry < ny, other=0.0).to(zero.dtype)
        h0 = 1.0 - h1
        for cx in range(0, n_cx):
            ci = cx * KX + kx
            pmask = jmask & (ry < ny) & (ci < nx)
            xx = x0 + ci
            w1 = tl.load(lam_x_ptr + xx, mask=pmask, other=0.0).to(zero.dtype)
            w0 = 1.0 - w1
            t = tl.load(t_ptr + b * s_tb + yy.to(tl.int64) * s_th + xx.to(tl.int64) * s_tw, mask=pmask,
                        other=0).to(tl.int64)
            valid, bad_label, y, y_pos, below_n = _labels(t, pmask, ignore_index, C, path_ptr, size_ptr, DEPTH,
                                                          PARTIAL)
            pos_loss, gp = _path_terms(base, o01, o10, o01 + o10, w0, w1, h0, h1, s_zc, valid, y, zero, lv, perm_ptr,
                                       path_ptr, gamma, DEPTH, GAMMA2, FP64, True)
            scale = zero + 1.0
            if COMPUTE_GRAD:
                if GRAD_PER_PIXEL:
                    scale = tl.load(gout_ptr + b * s_ob + yy.to(tl.int64) * s_oh + xx.to(tl.int64) * s_ow,
                                    mask=valid, other=0.0).to(zero.dtype)
                elif REDUCTION == 2:
                    scale = zero + 1.0 / tl.maximum(tl.load(count_ptr).to(zero.dtype), 1.0)
            neg_loss, nan_seen = _walk(base, o01, o10, o01 + o10, w0, w1, h0, h1, s_zc, jmask, valid, y_pos,
                                       below_n, zero, gp, lv, sv, scale, perm_ptr, size_ptr, depth_ptr, C, gamma,
                                       sink, 1, 2 * h * w, down, jmask, ry + cx + parity,
                                       GAMMA2, COMPUTE_LOSS, COMPUTE_GRAD, FP64, PARTIAL, True)
            if COMPUTE_LOSS:
                loss = tl.where(valid, neg_loss + pos_loss, 0.0)
                loss = tl.where(bad_label | (valid & (nan_seen != nan_seen)), float("nan"), loss)
                if REDUCTION == 0:
                    tl.store(loss_ptr + b * H * W + yy.to(tl.int64) * W + xx, loss.to(loss_ptr.dtype.element_ty),
                             mask=pmask)
                else:
                    total += tl.sum(tl.sum(loss, axis=2), axis=1)
    if COMPUTE_LOSS:
        if REDUCTION != 0:
            prog = (b * tl.num_programs(1) + jb) * h + a
            tl.store(loss_ptr + prog + tl.arange(0, 1), total.to(loss_ptr.dtype.element_ty))


@triton.jit
def _fold_kernel(part_ptr, grad_ptr, n, w, BLOCK: tl.constexpr):
    """grad (B, C, h, w) contiguous: each cell's sum of the partial sums whose column tap lands on it, in a fixed
    order: its own column's tap-0 sum, then the tap-1 sum of the column before (c >= 1), then its own tap-1
    sum at the last column (the clamped tap lands on the anchor itself). The row taps were added where they
    land by the loss kernel (``part[b, c, row, col, dc]``)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    c = i % w
    acc = tl.load(part_ptr + 2 * i, mask=mask, other=0.0)
    acc += tl.load(part_ptr + 2 * i - 1, mask=mask & (c >= 1), other=0.0)
    acc += tl.load(part_ptr + 2 * i + 1, mask=mask & (c == w - 1), other=0.0)
    tl.store(grad_ptr + i, acc.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _upsampled_argmax_kernel(
    z_ptr, perm_ptr, size_ptr, depth_ptr, leaf_ptr, viol_ptr, i0_y_ptr, i0_x_ptr, lam_y_ptr, lam_x_ptr,
    C, h, w, HW, W,
    s_zb, s_zc, s_zh, s_zw,
    S_PAD: tl.constexpr, BLOCK_P: tl.constexpr, FP64: tl.constexpr, VIOL: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    q = pid * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]  # [1, BLOCK_P]: output pixel in the H x W plane
    pmask = q < HW
    yy = q // W
    xx = q - yy * W
    r0 = tl.load(i0_y_ptr + yy, mask=pmask, other=0)
    c0 = tl.load(i0_x_ptr + xx, mask=pmask, other=0)
    if FP64:
        zero = tl.zeros([1, BLOCK_P], dtype=tl.float64)
    else:
        zero = tl.zeros([1, BLOCK_P], dtype=tl.float32)
    h1 = tl.load(lam_y_ptr + yy, mask=pmask, other=0.0).to(zero.dtype)
    w1 = tl.load(lam_x_ptr + xx, mask=pmask, other=0.0).to(zero.dtype)
    o10 = tl.where(r0 < h - 1, s_zh, 0).to(tl.int64)
    o01 = tl.where(c0 < w - 1, s_zw, 0).to(tl.int64)
    base = z_ptr + b * s_zb + r0.to(tl.int64) * s_zh + c0.to(tl.int64) * s_zw
    best_c, bad = _argmax_walk(base, pmask, o01, o10, o01 + o10, 1.0 - w1, w1, 1.0 - h1, h1, s_zc, zero,
                               tl.arange(0, S_PAD)[:, None], perm_ptr, size_ptr, depth_ptr, C, FP64, True, VIOL)
    tl.store(leaf_ptr + b * HW + q, best_c.to(tl.int64), mask=pmask)
    if VIOL:
        tl.store(viol_ptr + b * HW + q, bad.to(tl.int8), mask=pmask)


# ----------------------------------------------------------------------------- launchers
def upsampled_ftm(logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy, align_corners: bool,
                  gamma: float, ignore_index: int, reduction: int, compute_grad: bool, partial: bool,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss, low-res gradient or None) of the focal tree-min loss of the upsampled logits (B, C, h, w) against
    target (B, H, W); reduction 0 none ((B, H, W) map), 1 sum, 2 mean (() loss; the gradient already divided by
    the valid count); ``weights`` (B, H, W): the per-pixel weights of a per-pixel loss's backward (then only
    the gradient). Three launches (the loss and partial sums of the even anchor rows, of the odd ones, the fold)
    and a few aten calls, whatever H and W."""
    nb, nc, h, w = logits.shape
    H, W = (int(s) for s in target.shape[-2:])
    perm, size, depth_pos, path = ftm_tables(hierarchy, logits.device)
    depth = path.shape[1] - 1
    plan = _plan(logits, (H, W), align_corners, columns_per_thread(W, w, depth))
    ltype = loss_dtype(logits)
    dev = logits.device
    per_pixel = weights is not None
    want_grad = compute_grad and (reduction != 0 or per_pixel)
    compute_loss = not per_pixel
    count = valid_count(target, ignore_index) if reduction == 2 else None
    if reduction == 0 and compute_loss:
        loss = _tu.empty((nb, H, W), dtype=ltype, device=dev)
    else:
        loss = _tu.empty(max(h * plan.blocks * nb, 1), dtype=ltype, device=dev)
    part = _tu.empty((nb, nc, h, w, 2), dtype=ltype, device=dev) if want_grad else loss
    gout = weights if per_pixel else loss
    s_o = (gout.stride(0), gout.stride(1), gout.stride(2)) if per_pixel else (0, 0, 0)
    if nb * h * w > 0 and H * W > 0:
        for parity in (0, 1):  # even anchor rows write every row their taps land on, odd ones add to them
            if h - parity <= 0:
                continue
            with _tu.launch_guard(logits):
                _upsampled_ftm_kernel[((h - parity + 1) // 2, plan.blocks, nb)](
                    logits, target, gout, loss, part, count if count is not None else loss,
                    perm, size, depth_pos, path,
                    plan.y_start, plan.y_count, plan.x_start, plan.x_count, plan.col_chunks, plan.lam_y, plan.lam_x,
                    nc, h, w, H, W,
                    *logits.stride(), *target.stride(), *s_o,
                    parity,
                    float(gamma), int(ignore_index),
                    DEPTH=depth, D_PAD=triton.next_power_of_2(depth), S_PAD=triton.next_power_of_2(max(depth - 1, 1)),
                    BJ=plan.bj, KX=plan.kx, GAMMA2=gamma == 2.0, REDUCTION=reduction,
                    COMPUTE_LOSS=compute_loss, COMPUTE_GRAD=want_grad, GRAD_PER_PIXEL=per_pixel,
                    FP64=logits.dtype == torch.float64, PARTIAL=bool(partial), **loss_config(depth, per_pixel),
                )
    elif reduction != 0 or not compute_loss:
        loss.zero_()
        if want_grad:
            part.zero_()
    grad = None
    if want_grad:
        grad = _tu.empty(logits.shape, dtype=logits.dtype, device=dev)
        n = grad.numel()
        if n:
            with _tu.launch_guard(logits):
                _fold_kernel[(triton.cdiv(n, FOLD_BLOCK),)](part, grad, n, w, BLOCK=FOLD_BLOCK, num_warps=4)
    if compute_loss and reduction != 0:
        loss = loss.sum()
        if reduction == 2:
            loss = loss / count
    return (loss if compute_loss else None), grad


def upsampled_argmax(logits: torch.Tensor, hierarchy: ClassHierarchy, size: tuple[int, int], align_corners: bool,
                     with_violations: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, H, W) int64 leaf map of the upsampled logits (B, C, h, w) and, with ``with_violations``, the
    (B, H, W) bool hierarchy-violation map; one launch, no host sync."""
    nb, nc, h, w = logits.shape
    H, W = (int(s) for s in size)
    plan = _plan(logits, (H, W), align_corners, 1)
    tabs = hierarchy.tables(logits.device)
    leaf = _tu.empty((nb, H, W), dtype=torch.int64, device=logits.device)
    viol = _tu.empty((nb, H, W), dtype=torch.int8, device=logits.device) if with_violations else leaf
    hw = H * W
    if nb * hw > 0:
        block_p, options = _tu.pixel_config(hw, hierarchy.height, _tu.UPSAMPLED_MAX_REGISTERS)
        with _tu.launch_guard(logits):
            _upsampled_argmax_kernel[(triton.cdiv(hw, block_p), nb)](
                logits, tabs.dfs_perm, tabs.dfs_size, tabs.dfs_depth, leaf, viol,
                plan.i0_y, plan.i0_x, plan.lam_y, plan.lam_x,
                nc, h, w, hw, W, *logits.stride(),
                S_PAD=triton.next_power_of_2(max(hierarchy.height - 1, 1)), BLOCK_P=block_p,
                FP64=logits.dtype == torch.float64, VIOL=bool(with_violations), **options,
            )
    return leaf, (viol.view(torch.bool) if with_violations else None)
