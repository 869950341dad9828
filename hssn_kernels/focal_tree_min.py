"""Fused focal tree-min loss (forward + gradient) in Triton, as the ``hssn::triton_ftm_*`` custom ops.

Design (one program = ``BLOCK_P`` pixels x all ``C`` channels as a ``[BLOCK_P, C_PAD]`` register tile):

* Channels sit in DFS pre-order positions (``perm[j]`` = channel at position ``j``), so ``Dsc(v)`` is the
  position range ``[j, j + size[j])``. The bottom-up max over descendants of every node is a range-max
  query answered with a sparse table built in ``log2(C)`` doubling steps (``tl.gather`` along the
  channel axis), tracking the winning channel (lowest channel on ties).
* The target's path (at most ``DEPTH`` nodes) is walked root first: running min and its winner.
* Gradients: a path term's derivative goes to its arg-min channel; a negative term's derivative is
  carried top-down into the winning child while the winner is unchanged (``DEPTH - 1`` gather
  steps), so every node's gradient is formed in registers and written exactly once.

Logits ``(B, C, H, W)`` or ``(N, C)`` are read in place through their strides (no copy). Math in fp32
(fp64 for fp64 logits); the gradient is stored in the logits' dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _checks
from . import _triton_utils as _tu
from ._autograd import loss_dtype, register_fused_loss, valid_count
from .hierarchy import ClassHierarchy


# ----------------------------------------------------------------------------- kernel
@triton.jit
def _log1p_exp_neg_abs(z):
    """log(1 + exp(-|z|)) with the log1p correction (exact for tiny exp(-|z|))."""
    e = tl.exp(-tl.abs(z))
    u = 1.0 + e
    return tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))


@triton.jit
def _better_max(av, ai, bv, bi):
    """(av, ai) beats (bv, bi) for a max with the lowest channel winning ties."""
    return (av > bv) | ((av == bv) & (ai < bi))


@triton.jit
def _ftm_kernel(
    z_ptr, t_ptr, gout_ptr, loss_ptr, grad_ptr, count_ptr,
    perm_ptr, size_ptr, ppos_ptr, path_ptr,
    P, C, H, W,
    s_zb, s_zc, s_zh, s_zw,
    s_tb, s_th, s_tw,
    s_ob, s_oh, s_ow,
    s_gb, s_gc, s_gh, s_gw,
    gamma, ignore_index,
    DEPTH: tl.constexpr, LOG_C: tl.constexpr, BLOCK_P: tl.constexpr, C_PAD: tl.constexpr,
    REDUCTION: tl.constexpr, COMPUTE_LOSS: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    GRAD_PER_PIXEL: tl.constexpr, FP64: tl.constexpr, PARTIAL: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    pix = pid * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    pmask = pix < P
    hw = H * W
    b = pix // hw
    rem = pix - b * hw
    h = rem // W
    w = rem - h * W

    t = tl.load(t_ptr + b * s_tb + h * s_th + w * s_tw, mask=pmask, other=0).to(tl.int64)
    cols = tl.arange(0, C_PAD)
    cmask = cols < C
    chan = tl.load(perm_ptr + cols, mask=cmask, other=0)
    size = tl.load(size_ptr + cols, mask=cmask, other=0)
    ppos = tl.load(ppos_ptr + cols, mask=cmask, other=-1)
    # a label that is neither ignore_index nor a leaf (nor a node, with PARTIAL; validation skipped) gets a
    # NaN loss, and no table is read at it (the path table's last column flags the leaves)
    labelled = pmask & (t != ignore_index)
    in_tree = labelled & (t >= 0) & (t < C)
    if PARTIAL:
        valid = in_tree
    else:
        valid = in_tree & (tl.load(path_ptr + tl.where(in_tree, t, 0) * (DEPTH + 1) + DEPTH, mask=in_tree,
                                   other=0) > 0)
    bad_label = labelled & (valid == 0)
    y = tl.where(valid, t, 0)
    m2 = valid[:, None] & cmask[None, :]
    zoff = b * s_zb + h * s_zh + w * s_zw
    z = tl.load(z_ptr + zoff[:, None] + chan.to(tl.int64)[None, :] * s_zc, mask=m2, other=0.0)
    if FP64:
        z = z.to(tl.float64)
    else:
        z = z.to(tl.float32)
    has_nan = (tl.max(((z != z) & m2).to(tl.int32), axis=1) > 0) | bad_label  # both give a NaN loss

    zero = tl.zeros([BLOCK_P, C_PAD], dtype=z.dtype)
    ninf = zero - float("inf")
    cols2 = cols[None, :] + tl.zeros([BLOCK_P, C_PAD], dtype=tl.int32)
    chan2 = chan[None, :] + tl.zeros([BLOCK_P, C_PAD], dtype=tl.int32)
    size2 = size[None, :] + tl.zeros([BLOCK_P, C_PAD], dtype=tl.int32)
    big = tl.full([BLOCK_P, C_PAD], C_PAD + C, tl.int32)

    # ---- max over Dsc(v) = positions [j, j + size_j): sparse table, ascending bits of size_j
    sv = tl.where(m2, z, ninf)
    si = tl.where(m2, chan2, big)
    rv = ninf
    ri = big
    cur = cols2
    for k in tl.static_range(LOG_C):
        bit = (size2 >> k) & 1
        gi = tl.minimum(cur, C_PAD - 1)
        gv = tl.gather(sv, gi, 1)
        gx = tl.gather(si, gi, 1)
        take = (bit != 0) & _better_max(gv, gx, rv, ri)
        rv = tl.where(take, gv, rv)
        ri = tl.where(take, gx, ri)
        cur = cur + bit * (1 << k)
        if k + 1 < LOG_C:
            sh = tl.minimum(cols2 + (1 << k), C_PAD - 1)
            nv = tl.gather(sv, sh, 1)
            nx = tl.gather(si, sh, 1)
            upd = _better_max(nv, nx, sv, si)
            sv = tl.where(upd, nv, sv)
            si = tl.where(upd, nx, si)

    # ---- the target's path, root first: running min with its winner
    on_path = cols2 < 0
    gpos = zero
    pos_loss = tl.zeros([BLOCK_P], dtype=z.dtype)
    run_v = tl.zeros([BLOCK_P], dtype=z.dtype) + float("inf")
    run_i = tl.full([BLOCK_P], C_PAD + C, tl.int32)
    y_pos = tl.zeros([BLOCK_P], dtype=tl.int32)  # the label's DFS position (the path's last node)
    for lvl in tl.static_range(DEPTH):
        pp = tl.load(path_ptr + y * (DEPTH + 1) + lvl, mask=valid, other=-1)
        ok = pp >= 0
        y_pos = tl.where(ok, pp, y_pos)
        ppc = tl.where(ok, pp, 0)
        zl = tl.sum(tl.where(cols2 == ppc[:, None], z, zero), axis=1)
        cl = tl.load(perm_ptr + ppc, mask=ok, other=0)
        take = ok & ((zl < run_v) | ((zl == run_v) & (cl < run_i)))
        run_v = tl.where(take, zl, run_v)
        run_i = tl.where(take, cl, run_i)
        on_path = on_path | ((cols2 == pp[:, None]) & ok[:, None])
        ls_p = tl.minimum(run_v, 0.0) - _log1p_exp_neg_abs(run_v)
        ls_q = tl.where(run_v == float("-inf"), 0.0, ls_p - run_v)  # log(1 - p): its limit 0 at z = -inf
        wq = tl.where(gamma == 0.0, 1.0, tl.exp(gamma * ls_q))
        if COMPUTE_LOSS:
            pos_loss += tl.where(ok, -wq * ls_p, 0.0)
        if COMPUTE_GRAD:
            d_pos = wq * (gamma * tl.exp(ls_p) * ls_p - tl.exp(ls_q))
            gpos += tl.where((chan2 == run_i[:, None]) & ok[:, None], d_pos[:, None], zero)

    # PARTIAL: the label's strict descendants (positions y_pos < j < y_pos + size) get no term either; they
    # join the path mask, whose gradient (gpos) is zero there: no argmin of the path lies below the label
    if PARTIAL:  # strictly below: j - y_pos - 1 < size - 1 as unsigned, one compare
        below_n = (tl.load(size_ptr + y_pos, mask=valid, other=1) - 1).to(tl.uint32)
        on_path = on_path | ((cols2 - y_pos[:, None] - 1).to(tl.uint32) < below_n[:, None])

    # ---- negative terms f-(M_v) for nodes off the path
    neg = m2 & (on_path == 0)
    lp = tl.minimum(rv, 0.0) - _log1p_exp_neg_abs(rv)
    lq = tl.where(rv == float("-inf"), 0.0, lp - rv)
    wp = tl.where(gamma == 0.0, 1.0, tl.exp(gamma * lp))
    if COMPUTE_LOSS:
        loss = tl.sum(tl.where(neg, -wp * lq, zero), axis=1) + pos_loss
        loss = tl.where(valid, loss, 0.0)
        loss = tl.where(has_nan, float("nan"), loss)
        if REDUCTION == 0:
            tl.store(loss_ptr + pix, loss.to(loss_ptr.dtype.element_ty), mask=pmask)
        else:
            tl.store(loss_ptr + pid, tl.sum(loss, axis=0).to(loss_ptr.dtype.element_ty))

    if COMPUTE_GRAD:
        base = tl.where(neg, wp * (tl.exp(lp) - gamma * tl.exp(lq) * lq), zero)
        pc = tl.where(ppos >= 0, ppos, 0)[None, :] + tl.zeros([BLOCK_P, C_PAD], dtype=tl.int32)
        par_ok = (ppos >= 0)[None, :] & (tl.gather(on_path.to(tl.int32), pc, 1) == 0)
        carry = neg & par_ok & (tl.gather(ri, pc, 1) == ri)
        owed = base
        for _ in tl.static_range(DEPTH - 1):
            owed = base + tl.where(carry, tl.gather(owed, pc, 1), zero)
        g = tl.where(on_path, gpos, tl.where(ri == chan2, owed, zero))
        if GRAD_PER_PIXEL:
            go = tl.load(gout_ptr + b * s_ob + h * s_oh + w * s_ow, mask=valid, other=0.0).to(z.dtype)
            g = g * go[:, None]
        elif REDUCTION == 2:
            g = g / tl.maximum(tl.load(count_ptr).to(z.dtype), 1.0)
        g = tl.where(m2, g, zero)
        goff = b * s_gb + h * s_gh + w * s_gw
        gptr = grad_ptr + goff[:, None] + chan.to(tl.int64)[None, :] * s_gc
        tl.store(gptr, g.to(grad_ptr.dtype.element_ty), mask=pmask[:, None] & cmask[None, :])


# ----------------------------------------------------------------------------- tables
def ftm_tables(hierarchy: ClassHierarchy, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """(perm, size, parent_pos, path_pos) int32: the DFS tables of ``hierarchy.tables(device)`` (cached there;
    see :class:`hssn_kernels.HierarchyTables` ``dfs_*``)."""
    t = hierarchy.tables(device)
    return t.dfs_perm, t.dfs_size, t.dfs_parent, t.dfs_path


# ----------------------------------------------------------------------------- launcher
def _config(c_pad: int) -> tuple[int, int]:
    """(BLOCK_P, num_warps): a 512-element tile, 2 elements per thread (spill-free for C <= 256 on
    sm_80/sm_90, measured with tools/triton_resources.py; wider trees spill but stay correct)."""
    block_p = max(1, min(64, 512 // c_pad))
    return block_p, max(1, min(8, block_p * c_pad // 64))


def _launch(logits, target, tables, gamma, ignore_index, reduction, compute_loss, compute_grad, grad_out, partial):
    perm, size, ppos, path = tables
    num_c = logits.shape[1]
    depth = path.shape[1] - 1  # the last column is the leaf flag
    nb, nh, nw, s_zb, s_zh, s_zw = _tu.pixel_strides(logits, True)
    _, _, _, s_tb, s_th, s_tw = _tu.pixel_strides(target, False)
    num_p = nb * nh * nw
    c_pad = triton.next_power_of_2(num_c)
    block_p, num_warps = _config(c_pad)
    grid = triton.cdiv(num_p, block_p)
    dev = logits.device
    count = valid_count(target, ignore_index)
    if reduction == 0:
        loss = _tu.empty(num_p, dtype=loss_dtype(logits), device=dev)
    else:
        loss = torch.zeros(max(grid, 1), dtype=loss_dtype(logits), device=dev)
    grad = _tu.empty(logits.shape, dtype=logits.dtype, device=dev) if compute_grad else loss
    per_pixel = grad_out is not None
    if per_pixel:
        _, _, _, s_ob, s_oh, s_ow = _tu.pixel_strides(grad_out, False)
    else:
        grad_out, s_ob, s_oh, s_ow = loss, 0, 0, 0
    s_g = _tu.pixel_strides(grad, True) if compute_grad else (0,) * 6
    if num_p > 0:
        with _tu.launch_guard(logits):
            _ftm_kernel[(grid,)](
                logits, target, grad_out, loss, grad, count,
                perm, size, ppos, path,
                num_p, num_c, nh, nw,
                s_zb, logits.stride(1), s_zh, s_zw,
                s_tb, s_th, s_tw,
                s_ob, s_oh, s_ow,
                s_g[3], grad.stride(1) if compute_grad else 0, s_g[4], s_g[5],
                float(gamma), int(ignore_index),
                DEPTH=depth, LOG_C=max(1, num_c.bit_length()), BLOCK_P=block_p, C_PAD=c_pad,
                REDUCTION=reduction, COMPUTE_LOSS=compute_loss, COMPUTE_GRAD=compute_grad,
                GRAD_PER_PIXEL=per_pixel, FP64=logits.dtype == torch.float64, PARTIAL=bool(partial),
                num_warps=num_warps,
            )
    return loss, grad, count


# ----------------------------------------------------------------------------- custom ops
def _pixel_shape(logits: torch.Tensor) -> tuple[int, ...]:
    return (logits.shape[0],) + tuple(logits.shape[2:])


@torch.library.custom_op("hssn::triton_ftm_forward", mutates_args=())
def ftm_forward(logits: torch.Tensor, target: torch.Tensor, perm: torch.Tensor, size: torch.Tensor,
                parent_pos: torch.Tensor, path_pos: torch.Tensor, gamma: float, ignore_index: int,
                reduction: int, compute_grad: bool, partial: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (fp32, fp64 for fp64 logits: () for sum/mean, pixel-shaped for none) and, when ``compute_grad`` and reduction is
    sum/mean, d loss / d logits in the logits' dtype (already divided by the valid count for mean). ``partial``:
    targets may be inner nodes (no term for their strict descendants)."""
    with_grad = compute_grad and reduction != 0
    loss, grad, count = _launch(logits, target, (perm, size, parent_pos, path_pos), gamma, ignore_index,
                                reduction, True, with_grad, None, partial)
    if reduction == 0:
        loss = loss.reshape(_pixel_shape(logits))
    else:
        loss = loss.sum()
        if reduction == 2:
            loss = loss / count
    if not with_grad:
        grad = logits.new_empty(0)
    return loss, grad


@ftm_forward.register_fake
def _(logits, target, perm, size, parent_pos, path_pos, gamma, ignore_index, reduction, compute_grad, partial=False):
    shape = _pixel_shape(logits) if reduction == 0 else ()
    loss = logits.new_empty(shape, dtype=loss_dtype(logits))
    grad = logits.new_empty(logits.shape) if compute_grad and reduction != 0 else logits.new_empty(0)
    return loss, grad


@torch.library.custom_op("hssn::triton_ftm_backward", mutates_args=())
def ftm_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, perm: torch.Tensor,
                 size: torch.Tensor, parent_pos: torch.Tensor, path_pos: torch.Tensor, gamma: float,
                 ignore_index: int, partial: bool = False) -> torch.Tensor:
    """d (sum of grad_loss * per-pixel loss) / d logits; grad_loss is pixel-shaped."""
    _, grad, _ = _launch(logits, target, (perm, size, parent_pos, path_pos), gamma, ignore_index, 0,
                         False, True, grad_loss, partial)
    return grad


@ftm_backward.register_fake
def _(grad_loss, logits, target, perm, size, parent_pos, path_pos, gamma, ignore_index, partial=False):
    return logits.new_empty(logits.shape)


register_fused_loss("hssn::triton_ftm_forward", ftm_backward)


def ftm_kernel(logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy, gamma: float, ignore_index: int,
               reduction: int, compute_grad: bool, partial: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw forward kernel (no autograd): (loss, d loss / d logits or empty); reduction 0 none, 1 sum, 2 mean."""
    return ftm_forward(logits, target, *ftm_tables(hierarchy, logits.device), float(gamma), int(ignore_index),
                       int(reduction), bool(compute_grad), bool(partial))


def ftm_kernel_backward(weights: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy,
                        gamma: float, ignore_index: int, partial: bool = False) -> torch.Tensor:
    """The raw backward kernel: d (sum of weights * per-pixel loss) / d logits; weights pixel-shaped."""
    return ftm_backward(weights, logits, target, *ftm_tables(hierarchy, logits.device), float(gamma),
                        int(ignore_index), bool(partial))


def focal_tree_min_loss(logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy,
                        gamma: float = 2.0, ignore_index: int = 255, reduction: str = "mean",
                        partial: bool = False) -> torch.Tensor:
    """Focal tree-min loss with the Triton kernel; inputs validated upstream. Returns the logits' dtype."""
    tables = ftm_tables(hierarchy, logits.device)
    red = _checks.REDUCTIONS.index(reduction)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad and red != 0
    loss, _ = ftm_forward(logits, target, *tables, float(gamma), int(ignore_index), red, compute_grad, bool(partial))
    return loss.to(logits.dtype)
