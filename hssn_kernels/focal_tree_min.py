"""Fused focal tree-min loss (forward + gradient) in Triton, as the ``hssn::triton_ftm_*`` custom ops.

Design (pixels along the lanes; one program = ``BLOCK_P`` consecutive pixels of one image,
``_triton_utils.PIXELS_PER_THREAD`` per thread):

* The program walks the channels once in DFS pre-order (``perm[j]`` = channel at position ``j``, so ``Dsc(v)``
  is the position range ``[j, j + size[j])``). Each step loads one channel row of ``BLOCK_P`` pixels:
  adjacent lanes read adjacent pixels (coalesced, one vector per thread when the pixel plane is contiguous).
* ``M_v`` (max over ``Dsc(v)``, lowest channel on ties) of a leaf is its logit; an inner node scans its
  subtree rows (re-reads from L1/L2, no DRAM traffic in the model).
* After the walk, the target's path (at most ``DEPTH`` nodes): running min root first with its winner, the
  positive terms and their gradients per path node.
* Gradients, top-down in the same walk: a negative term's derivative is carried from a node into its child
  while the winner is unchanged; the carry of the open ancestors lives in an ``[S_PAD, BLOCK_P]`` stack (one
  slot per inner depth, per thread), so every channel's gradient is known when it is visited and written
  once, in the same coalesced rows; the walk's store skips each pixel's path channels, which the path stage
  writes after the walk (a negative term never lands on a path node): no address is written twice, so no
  order between differently laid-out stores is needed.

No warp shuffles, no replicated warps, registers independent of ``C``. Math in fp32 (fp64 for fp64
logits); the gradient is stored in the logits' dtype. Any logits / target strides are read in place; the
vectorised path needs a contiguous pixel plane (``PLANE``), else pixels are addressed through (h, w).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _checks
from . import _triton_utils as _tu
from ._autograd import fake_fused_loss, fused_loss, loss_dtype, register_fused_loss, valid_count
from .backends import register
from .hierarchy import ClassHierarchy


# ----------------------------------------------------------------------------- kernel
@triton.jit
def _log_sigmoid(m, FP64: tl.constexpr):
    """(log p, log(1 - p), p, 1 - p) of p = sigmoid(m), from one exp, one log and one reciprocal.

    fp32: e = exp(-|m|) and log2(1 + e) are one MUFU op each on the GPU (``_triton_utils.fast_exp`` /
    ``fast_log2``); log1p(e) is its Taylor series below e = 1/64 (4 terms, relative error < 2**-26) and
    log2(1 + e) * ln 2 above it (relative error < 2**-17), so no division and no software log.
    fp64 keeps exp, log and the exact log1p correction."""
    if FP64:
        e = tl.exp(-tl.abs(m))
        u = 1.0 + e
        l1p = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
    else:
        e = _tu.fast_exp(-tl.abs(m))
        u = 1.0 + e
        series = e * (1.0 - e * (0.5 - e * (0.3333333333 - e * 0.25)))
        l1p = tl.where(e < 0.015625, series, _tu.fast_log2(u) * 0.6931471805599453)
    lp = tl.minimum(m, 0.0) - l1p
    lq = tl.minimum(-m, 0.0) - l1p  # log(1 - p), not lp - m: finite limits at m = -inf / +inf
    if FP64:
        r = 1.0 / u
    else:
        r = _tu.fast_div(1.0, u)  # u in [1, 2]
    er = e * r
    pos = m >= 0.0
    return lp, lq, tl.where(pos, r, er), tl.where(pos, er, r)


@triton.jit
def _focal_weight(lp, p, gamma, GAMMA2: tl.constexpr):
    """p ** gamma (1 at gamma = 0); ``GAMMA2`` (gamma == 2, the paper's) is one multiply."""
    if GAMMA2:
        return p * p
    else:
        return tl.where(gamma == 0.0, 1.0, tl.exp(gamma * lp))


@triton.jit
def _better_max(av, ai, bv, bi):
    """(av, ai) beats (bv, bi) for a max with the lowest channel winning ties."""
    return (av > bv) | ((av == bv) & (ai < bi))


@triton.jit
def _logit(base, off, mask, o01, o10, o11, w0, w1, h0, h1, ftype: tl.constexpr, UPS: tl.constexpr):
    """One channel's logits at the tile's pixels: ``base + off`` loaded in place, or with ``UPS`` the bilinear
    mix of the four low-res taps ``base + off (+ o01 | o10 | o11)`` as ``upsample_bilinear2d`` forms it:
    h0 * (w0 * z00 + w1 * z01) + h1 * (w0 * z10 + w1 * z11)."""
    z = tl.load(base + off, mask=mask, other=0.0).to(ftype)
    if UPS:
        z01 = tl.load(base + off + o01, mask=mask, other=0.0).to(ftype)
        z10 = tl.load(base + off + o10, mask=mask, other=0.0).to(ftype)
        z11 = tl.load(base + off + o11, mask=mask, other=0.0).to(ftype)
        z = h0 * (w0 * z + w1 * z01) + h1 * (w0 * z10 + w1 * z11)
    return z


@triton.jit
def _labels(t, pmask, ignore_index, C, path_ptr, size_ptr, DEPTH: tl.constexpr, PARTIAL: tl.constexpr):
    """(valid, bad_label, y, y_pos, below_n) of the pixels' labels ``t`` (int64).

    A label that is neither ignore_index nor a leaf (nor a node, with PARTIAL; validation skipped) is a bad
    label (NaN loss) and no table is read at it (the path table's last column flags the leaves). ``y_pos``:
    the label's DFS position (the path's last node), far outside [0, C) at unlabelled pixels so that the
    on-path test fails there; ``below_n`` (PARTIAL): |Dsc(y)| - 1 as unsigned, the strictly-below test."""
    labelled = pmask & (t != ignore_index)
    in_tree = labelled & (t >= 0) & (t < C)
    if PARTIAL:
        valid = in_tree
    else:
        valid = in_tree & (tl.load(path_ptr + tl.where(in_tree, t, 0) * (DEPTH + 1) + DEPTH, mask=in_tree,
                                   other=0) > 0)
    bad_label = labelled & (valid == 0)
    y = tl.where(valid, t, 0)
    y_pos = tl.zeros_like(t).to(tl.int32) - (1 << 30)
    for lvl in tl.static_range(DEPTH):
        pp = tl.load(path_ptr + y * (DEPTH + 1) + lvl, mask=valid, other=-1)
        y_pos = tl.where(pp >= 0, pp, y_pos)
    below_n = y_pos.to(tl.uint32)
    if PARTIAL:  # strictly below the label: j - y_pos - 1 < size - 1 as unsigned, one compare
        below_n = (tl.load(size_ptr + y_pos, mask=valid, other=1) - 1).to(tl.uint32)
    return valid, bad_label, y, y_pos, below_n


@triton.jit
def _path_terms(base, o01, o10, o11, w0, w1, h0, h1, s_zc, valid, y, zero, lv, perm_ptr, path_ptr, gamma,
                DEPTH: tl.constexpr, GAMMA2: tl.constexpr, FP64: tl.constexpr, UPS: tl.constexpr):
    """The positive terms along the target's path, root first: running min with its winner (lowest channel on
    ties). Returns (their loss, ``[D_PAD, ...]`` d loss / d z of the path node at each depth): each level's
    derivative goes to its running winner."""
    big = tl.zeros_like(y).to(tl.int32) + 2147483647
    pos_loss = zero
    run_v = zero + float("inf")
    run_i = big
    run_d = tl.zeros_like(big)  # the running winner's depth
    gp = zero * lv  # [D_PAD, ...] (lv: the depth index, [D_PAD, 1, ...])
    for lvl in tl.static_range(DEPTH):
        pp = tl.load(path_ptr + y * (DEPTH + 1) + lvl, mask=valid, other=-1)
        ok = pp >= 0
        cl = tl.load(perm_ptr + tl.where(ok, pp, 0), mask=ok, other=0)
        zl = _logit(base, cl.to(tl.int64) * s_zc, ok, o01, o10, o11, w0, w1, h0, h1, zero.dtype, UPS)
        take = ok & ((zl < run_v) | ((zl == run_v) & (cl < run_i)))
        run_v = tl.where(take, zl, run_v)
        run_i = tl.where(take, cl, run_i)
        run_d = tl.where(take, lvl, run_d)
        ls_p, ls_q, p_p, p_q = _log_sigmoid(run_v, FP64)
        wq = _focal_weight(ls_q, p_q, gamma, GAMMA2)
        pos_loss += tl.where(ok, -wq * ls_p, 0.0)
        gp += tl.where(lv == run_d, tl.where(ok, wq * (gamma * p_p * ls_p - p_q), 0.0), 0.0)
    return pos_loss, gp


@triton.jit
def _walk(base, o01, o10, o11, w0, w1, h0, h1, s_zc, pmask, valid, y_pos, below_n, zero, gp, lv, sv, scale,
          perm_ptr, size_ptr, depth_ptr, C, gamma, sink, sink_k, sink_c, sink_down, sink_mask, later,
          GAMMA2: tl.constexpr, COMPUTE_LOSS: tl.constexpr, COMPUTE_GRAD: tl.constexpr, FP64: tl.constexpr,
          PARTIAL: tl.constexpr, UPS: tl.constexpr):
    """The channels once in DFS pre-order: ``M_v`` (max over ``Dsc(v)``, lowest channel on ties; a leaf's is
    its logit, an inner node re-reads its subtree rows from L1/L2), the negative terms, and every channel's
    gradient: a negative term's derivative is carried into the child while the winner is unchanged (the
    open ancestors' carry in an ``[S_PAD, ...]`` stack), the path nodes take their ``gp`` row (a negative
    term never lands on a path node). Each channel's gradient is written once: at the pixels (``sink + c *
    sink_c``) when it is visited, except at the pixels' path nodes (written after the walk from ``gp``, which
    is then unused here), or with ``UPS`` (path nodes included) folded onto the tile's low-res anchors: the
    column-tap partial sums (dc = 0, 1 at ``+ dc * sink_k``) at the rows the taps land on: the anchor's row
    (``sink + c * sink_c``) and the next (``+ sink_down``; 0 at the clamped last row, where the lower taps
    are added to what the upper ones just stored); added to the stored ones when ``later`` > 0 (the
    anchor's later chunks, same thread, or a later launch). Returns (negative loss, NaN-propagating max of the logits)."""
    big = tl.zeros_like(y_pos) + 2147483647
    st_w = tl.zeros_like(zero * sv).to(tl.int32) - 1  # the open inner ancestors' winner (-1: nothing carried)
    st_o = zero * sv  # and the sum they owe it
    neg_loss = zero
    nan_seen = zero  # NaN once any logit of the pixel is NaN (a NaN-propagating max: no predicate carried)
    for j in range(0, C):
        c = tl.load(perm_ptr + j)
        sz = tl.load(size_ptr + j)
        d = tl.load(depth_ptr + j)
        zj = _logit(base, c.to(tl.int64) * s_zc, pmask, o01, o10, o11, w0, w1, h0, h1, zero.dtype, UPS)
        nan_seen = tl.maximum(nan_seen, zj, propagate_nan=tl.PropagateNan.ALL)
        m = tl.where(zj == zj, zj, float("-inf"))
        win = tl.where(zj == zj, c, big)
        for k in range(j + 1, j + sz):  # an inner node: max over the rest of its subtree
            ck = tl.load(perm_ptr + k)
            zk = _logit(base, ck.to(tl.int64) * s_zc, pmask, o01, o10, o11, w0, w1, h0, h1, zero.dtype, UPS)
            better = _better_max(zk, ck, m, win)
            m = tl.where(better, zk, m)
            win = tl.where(better, ck, win)
        on_path = (y_pos - j).to(tl.uint32) < sz.to(tl.uint32)  # j <= y_pos < j + size: c is y or above it
        neg = valid & (on_path == 0)
        if PARTIAL:
            neg = neg & ((j - y_pos - 1).to(tl.uint32) >= below_n)
        lp, lq, p, pq = _log_sigmoid(m, FP64)
        wp = _focal_weight(lp, p, gamma, GAMMA2)
        if COMPUTE_LOSS:
            neg_loss += tl.where(neg, -wp * lq, 0.0)
        if COMPUTE_GRAD:
            base_g = tl.where(neg, wp * (p - gamma * pq * lq), 0.0)
            par = sv == d - 1
            par_w = tl.max(tl.where(par, st_w, -1), axis=0, keep_dims=True)
            par_o = tl.sum(tl.where(par, st_o, 0.0), axis=0, keep_dims=True)
            owed = base_g + tl.where(neg & (par_w == win), par_o, 0.0)
            slot = (sv == d) & (sz > 1)  # an inner node opens the slot of its depth
            st_w = tl.where(slot, tl.where(neg, win, -1), st_w)
            st_o = tl.where(slot, owed, st_o)
            g = tl.where(win == c, owed, 0.0)
            if UPS:  # the path nodes' own terms, so that each channel's partial sums are complete here
                g += tl.where(valid & on_path, tl.sum(tl.where(lv == d, gp, 0.0), axis=0, keep_dims=True), 0.0)
            g = g * scale
            if UPS:  # the anchor's (row, column) taps 00, 01, 10, 11: h (one output row per chunk) times the
                # sum over the thread's pixels of the anchor (axis 1, in the thread), by the rows they land on
                cell = sink + c.to(tl.int64) * sink_c
                s0 = tl.sum(g * w0, axis=1, keep_dims=True)
                s1 = tl.sum(g * w1, axis=1, keep_dims=True)
                p00 = h0 * s0
                p01 = h0 * s1
                if later > 0:
                    p00 += tl.load(cell, mask=sink_mask, other=0.0)
                    p01 += tl.load(cell + sink_k, mask=sink_mask, other=0.0)
                tl.store(cell, p00.to(sink.dtype.element_ty), mask=sink_mask)
                tl.store(cell + sink_k, p01.to(sink.dtype.element_ty), mask=sink_mask)
                reread = sink_mask & ((later > 0) | (sink_down == 0))  # at the clamped row: what was just stored
                p10 = h1 * s0 + tl.load(cell + sink_down, mask=reread, other=0.0)
                p11 = h1 * s1 + tl.load(cell + sink_k + sink_down, mask=reread, other=0.0)
                tl.store(cell + sink_down, p10.to(sink.dtype.element_ty), mask=sink_mask)
                tl.store(cell + sink_k + sink_down, p11.to(sink.dtype.element_ty), mask=sink_mask)
            else:  # path nodes are written after the walk (no address is written twice)
                tl.store(sink + c.to(tl.int64) * sink_c, g.to(sink.dtype.element_ty),
                         mask=sink_mask & ((valid & on_path) == 0))
    return neg_loss, nan_seen


@triton.jit
def _ftm_kernel(
    z_ptr, t_ptr, gout_ptr, loss_ptr, grad_ptr, count_ptr,
    perm_ptr, size_ptr, depth_ptr, path_ptr,
    HW, C, W,
    s_zb, s_zc, s_zh, s_zw,
    s_tb, s_th, s_tw,
    s_ob, s_oh, s_ow,
    s_gb, s_gc, s_gh, s_gw,
    gamma, ignore_index,
    DEPTH: tl.constexpr, D_PAD: tl.constexpr, S_PAD: tl.constexpr, BLOCK_P: tl.constexpr, PLANE: tl.constexpr,
    GAMMA2: tl.constexpr, REDUCTION: tl.constexpr, COMPUTE_LOSS: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    GRAD_PER_PIXEL: tl.constexpr, FP64: tl.constexpr, PARTIAL: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    q = pid * BLOCK_P + tl.arange(0, BLOCK_P)[None, :]  # [1, BLOCK_P]: pixel in the image's H x W plane
    pmask = q < HW
    if PLANE:  # the plane is contiguous in every operand: offsets are q (lets the compiler vectorise)
        qz = q
        qt = q
        qo = q
        qg = q
    else:
        h = q // W
        w = q - h * W
        qz = h.to(tl.int64) * s_zh + w.to(tl.int64) * s_zw
        qt = h.to(tl.int64) * s_th + w.to(tl.int64) * s_tw
        qo = h.to(tl.int64) * s_oh + w.to(tl.int64) * s_ow
        qg = h.to(tl.int64) * s_gh + w.to(tl.int64) * s_gw
    zrow = z_ptr + b * s_zb + qz

    t = tl.load(t_ptr + b * s_tb + qt, mask=pmask, other=0).to(tl.int64)
    valid, bad_label, y, y_pos, below_n = _labels(t, pmask, ignore_index, C, path_ptr, size_ptr, DEPTH, PARTIAL)
    if FP64:
        zero = tl.zeros([1, BLOCK_P], dtype=tl.float64)
    else:
        zero = tl.zeros([1, BLOCK_P], dtype=tl.float32)
    # every per-pixel value is a [1, BLOCK_P] row and the per-depth values [D_PAD | S_PAD, BLOCK_P] tiles of the
    # same layout (a thread owns its pixels' whole columns): no layout conversion, no shared memory
    lv = tl.arange(0, D_PAD)[:, None]
    sv = tl.arange(0, S_PAD)[:, None]  # stack slots of the inner depths 0 .. DEPTH - 2
    scale = zero + 1.0
    if COMPUTE_GRAD:
        if GRAD_PER_PIXEL:
            scale = tl.load(gout_ptr + b * s_ob + qo, mask=valid, other=0.0).to(zero.dtype)
        elif REDUCTION == 2:
            scale = zero + 1.0 / tl.maximum(tl.load(count_ptr).to(zero.dtype), 1.0)
    grow = grad_ptr + b * s_gb + qg
    neg_loss, nan_seen = _walk(zrow, 0, 0, 0, zero, zero, zero, zero, s_zc, pmask, valid, y_pos, below_n, zero, zero,
                               lv, sv, scale, perm_ptr, size_ptr, depth_ptr, C, gamma, grow, 0, s_gc, 0, pmask, 0,
                               GAMMA2, COMPUTE_LOSS, COMPUTE_GRAD, FP64, PARTIAL, False)
    # the path after the walk (nothing of it held through the walk): its terms, and its nodes' gradient
    pos_loss, gp = _path_terms(zrow, 0, 0, 0, zero, zero, zero, zero, s_zc, valid, y, zero, lv, perm_ptr, path_ptr,
                               gamma, DEPTH, GAMMA2, FP64, False)
    if COMPUTE_GRAD:
        for lvl in tl.static_range(DEPTH):
            pp = tl.load(path_ptr + y * (DEPTH + 1) + lvl, mask=valid, other=-1)
            ok = pp >= 0
            cl = tl.load(perm_ptr + tl.where(ok, pp, 0), mask=ok, other=0)
            g = tl.sum(tl.where(lv == lvl, gp, 0.0), axis=0, keep_dims=True) * scale
            tl.store(grow + cl.to(tl.int64) * s_gc, g.to(grad_ptr.dtype.element_ty), mask=ok)

    if COMPUTE_LOSS:
        loss = tl.where(valid, neg_loss + pos_loss, 0.0)
        loss = tl.where(bad_label | (valid & (nan_seen != nan_seen)), float("nan"), loss)
        if REDUCTION == 0:
            tl.store(loss_ptr + b * HW + q, loss.to(loss_ptr.dtype.element_ty), mask=pmask)
        else:
            tl.store(loss_ptr + b * tl.num_programs(0) + pid, tl.sum(loss).to(loss_ptr.dtype.element_ty))


# ----------------------------------------------------------------------------- tables
def ftm_tables(hierarchy: ClassHierarchy, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """(perm, size, depth, path_pos) int32: the DFS tables of ``hierarchy.tables(device)`` (cached there;
    see :class:`hssn_kernels.HierarchyTables` ``dfs_*``)."""
    t = hierarchy.tables(device)
    return t.dfs_perm, t.dfs_size, t.dfs_depth, t.dfs_path


# ----------------------------------------------------------------------------- launcher
def _launch(logits, target, tables, gamma, ignore_index, reduction, compute_loss, compute_grad, grad_out, partial):
    perm, size, depth_pos, path = tables
    num_c = logits.shape[1]
    depth = path.shape[1] - 1  # the last column is the leaf flag
    nb, nh, nw, s_zb, s_zh, s_zw = _tu.pixel_strides(logits, True)
    _, _, _, s_tb, s_th, s_tw = _tu.pixel_strides(target, False)
    hw = nh * nw
    block_p, options = _tu.pixel_config(hw, depth)
    grid = (triton.cdiv(hw, block_p), nb)
    dev = logits.device
    count = valid_count(target, ignore_index)
    if reduction == 0:
        loss = _tu.empty(nb * hw, dtype=loss_dtype(logits), device=dev)
    else:
        loss = torch.zeros(max(grid[0] * grid[1], 1), dtype=loss_dtype(logits), device=dev)
    grad = _tu.empty(logits.shape, dtype=logits.dtype, device=dev) if compute_grad else loss
    per_pixel = grad_out is not None
    if per_pixel:
        _, _, _, s_ob, s_oh, s_ow = _tu.pixel_strides(grad_out, False)
    else:
        grad_out, s_ob, s_oh, s_ow = loss, 0, nw, 1
    s_g = _tu.pixel_strides(grad, True) if compute_grad else (0, 0, 0, 0, nw, 1)
    plane = all(_tu.plane_contiguous(nh, nw, sh, sw) for sh, sw in ((s_zh, s_zw), (s_th, s_tw), (s_oh, s_ow),
                                                                    (s_g[4], s_g[5])))
    if nb * hw > 0:
        with _tu.launch_guard(logits):
            _ftm_kernel[grid](
                logits, target, grad_out, loss, grad, count,
                perm, size, depth_pos, path,
                hw, num_c, nw,
                s_zb, logits.stride(1), s_zh, s_zw,
                s_tb, s_th, s_tw,
                s_ob, s_oh, s_ow,
                s_g[3], grad.stride(1) if compute_grad else 0, s_g[4], s_g[5],
                float(gamma), int(ignore_index),
                DEPTH=depth, D_PAD=triton.next_power_of_2(depth), S_PAD=triton.next_power_of_2(max(depth - 1, 1)),
                BLOCK_P=block_p, PLANE=plane, GAMMA2=gamma == 2.0,
                REDUCTION=reduction, COMPUTE_LOSS=compute_loss, COMPUTE_GRAD=compute_grad,
                GRAD_PER_PIXEL=per_pixel, FP64=logits.dtype == torch.float64, PARTIAL=bool(partial),
                **options,
            )
    return loss, grad, count


# ----------------------------------------------------------------------------- custom ops
@torch.library.custom_op("hssn::triton_ftm_forward", mutates_args=())
def ftm_forward(logits: torch.Tensor, target: torch.Tensor, perm: torch.Tensor, size: torch.Tensor,
                depth_pos: torch.Tensor, path_pos: torch.Tensor, gamma: float, ignore_index: int,
                reduction: int, compute_grad: bool, partial: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (fp32, fp64 for fp64 logits: () for sum/mean, pixel-shaped for none) and, when ``compute_grad`` and reduction is
    sum/mean, d loss / d logits in the logits' dtype (already divided by the valid count for mean). ``partial``:
    targets may be inner nodes (no term for their strict descendants)."""
    with_grad = compute_grad and reduction != 0
    loss, grad, count = _launch(logits, target, (perm, size, depth_pos, path_pos), gamma, ignore_index,
                                reduction, True, with_grad, None, partial)
    if reduction == 0:
        loss = loss.reshape(_checks.pixel_shape(logits))
    else:
        loss = loss.sum()
        if reduction == 2:
            loss = loss / count
    if not with_grad:
        grad = logits.new_empty(0)
    return loss, grad


@ftm_forward.register_fake
def _(logits, target, perm, size, depth_pos, path_pos, gamma, ignore_index, reduction, compute_grad, partial=False):
    return fake_fused_loss(logits, _checks.pixel_shape(logits), reduction, compute_grad)


@torch.library.custom_op("hssn::triton_ftm_backward", mutates_args=())
def ftm_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, perm: torch.Tensor,
                 size: torch.Tensor, depth_pos: torch.Tensor, path_pos: torch.Tensor, gamma: float,
                 ignore_index: int, partial: bool = False) -> torch.Tensor:
    """d (sum of grad_loss * per-pixel loss) / d logits; grad_loss is pixel-shaped."""
    _, grad, _ = _launch(logits, target, (perm, size, depth_pos, path_pos), gamma, ignore_index, 0,
                         False, True, grad_loss, partial)
    return grad


@ftm_backward.register_fake
def _(grad_loss, logits, target, perm, size, depth_pos, path_pos, gamma, ignore_index, partial=False):
    return logits.new_empty(logits.shape)


_ftm_forward = register_fused_loss("hssn::triton_ftm_forward", ftm_backward)


@register("ftm_kernel", "triton")
def ftm_kernel(logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy, gamma: float, ignore_index: int,
               reduction: int, compute_grad: bool, partial: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw forward kernel (no autograd): (loss, d loss / d logits or empty); reduction 0 none, 1 sum, 2 mean."""
    return _ftm_forward(logits, target, *ftm_tables(hierarchy, logits.device), float(gamma), int(ignore_index),
                       int(reduction), bool(compute_grad), bool(partial))


@register("ftm_kernel_backward", "triton")
def ftm_kernel_backward(weights: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy,
                        gamma: float, ignore_index: int, partial: bool = False) -> torch.Tensor:
    """The raw backward kernel: d (sum of weights * per-pixel loss) / d logits; weights pixel-shaped."""
    return ftm_backward(weights, logits, target, *ftm_tables(hierarchy, logits.device), float(gamma),
                        int(ignore_index), bool(partial))


focal_tree_min_loss = register("focal_tree_min_loss", "triton")(functools.partial(fused_loss, ftm_kernel))
"""Focal tree-min loss with the Triton kernel (:func:`hssn_kernels._autograd.fused_loss`)."""
