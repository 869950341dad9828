"""Tree-triplet loss in Triton: device-side triplet sampling and a deterministic fused loss + gradient.

Ops (``hssn::`` namespace):

* ``triton_sample_triplets``: one program walks the ``ATTEMPTS_PER_TRIPLET * num_triplets`` attempts
  in blocks. Candidate ``j`` of attempt ``k`` is ``V[(triplet_rand(seed, 3k + j) * |V|) >> 32]``
  (the reference's counter-based RNG, in uint32); ``V[r]`` is found without compaction by a binary
  search of the device prefix sum of the valid mask. Accepted attempts get their slot from a block
  ``cumsum`` plus a running total: the reference's triplets bit for bit, no host sync.
* ``triton_triplet_forward``: one program per triplet slot computes the distances, hinge and the
  per-triplet gradient rows (fp32 partials ``(3T, E)``); a second kernel sums the partials of each
  pixel in a fixed order (pixels sorted on the device, stable), so the gradient is deterministic
  without float atomics.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _triton_utils as _tu
from . import _checks
from ._autograd import fake_triplet_loss, register_triplet_loss, triplet_loss
from .backends import register
from .hierarchy import ClassHierarchy
from .reference import ATTEMPTS_PER_TRIPLET, COSINE_EPS



# ----------------------------------------------------------------------------- sampling
@triton.jit
def _hash32(x):
    """lowbias32 on uint32 (wrapping multiplies)."""
    x = x ^ (x >> 16)
    x = x * tl.full([], 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full([], 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _draw(counter, key, csum_ptr, num_valid, P, search_steps):
    """Flat pixel index of the valid pixel picked by random number ``counter`` (int64 counters)."""
    r = _hash32(_hash32((counter & 0xFFFFFFFF).to(tl.uint32) ^ key) + key)
    rank = (r.to(tl.int64) * num_valid) >> 32
    lo = tl.zeros_like(counter)
    hi = tl.zeros_like(counter) + (P - 1)
    for _ in range(search_steps):  # first i with csum[i] > rank
        mid = (lo + hi) // 2
        go_right = tl.load(csum_ptr + mid).to(tl.int64) <= rank
        lo = tl.where(go_right, mid + 1, lo)
        hi = tl.where(go_right, hi, mid)
    return lo


SAMPLE_BLOCK, SAMPLE_WARPS = 256, 8
"""Attempts per round of the one-program sampler and its warps: one attempt per thread (at 4 warps, two per
thread, the ptxas of Triton 3.6 spills 16 bytes on sm_90; tools/triton_resources.py)."""


@triton.jit
def _sample_kernel(
    t_ptr, csum_ptr, leaf_index_ptr, dist_ptr, out_ptr, count_ptr,
    P, L, C, num_triplets, attempts, seed, search_steps,
    MODE: tl.constexpr, BLOCK: tl.constexpr,
):
    key = _hash32((seed + tl.zeros([], dtype=tl.int64)).to(tl.uint32))
    num_valid = tl.load(csum_ptr + P - 1).to(tl.int64)
    total = tl.zeros([], dtype=tl.int64)
    start = tl.zeros([], dtype=tl.int64)
    while (start < attempts) & (total < num_triplets) & (num_valid > 0):  # stops once it has num_triplets
        k = start + tl.arange(0, BLOCK).to(tl.int64)
        live = (k < attempts) & (num_valid > 0)
        a = _draw(3 * k, key, csum_ptr, num_valid, P, search_steps)
        x = _draw(3 * k + 1, key, csum_ptr, num_valid, P, search_steps)
        y = _draw(3 * k + 2, key, csum_ptr, num_valid, P, search_steps)
        la = _leaf_of(t_ptr, leaf_index_ptr, a, C, live)
        lx = _leaf_of(t_ptr, leaf_index_ptr, x, C, live)
        ly = _leaf_of(t_ptr, leaf_index_ptr, y, C, live)
        leaves_ok = live & (la >= 0) & (lx >= 0) & (ly >= 0)  # a label that is no leaf: attempt rejected
        dx = tl.load(dist_ptr + la * L + lx, mask=leaves_ok, other=0)
        dy = tl.load(dist_ptr + la * L + ly, mask=leaves_ok, other=0)
        ok = leaves_ok & (a != x) & (a != y) & (x != y)
        if MODE == 0:
            ok = ok & (dx != dy)
        else:
            ok = ok & ((dx == 0) != (dy == 0))
        x_pos = dx < dy
        pos = tl.where(x_pos, x, y)
        neg = tl.where(x_pos, y, x)
        oki = ok.to(tl.int64)
        slot = total + tl.cumsum(oki, 0) - 1
        keep = ok & (slot < num_triplets)
        tl.store(out_ptr + 3 * slot, a, mask=keep)
        tl.store(out_ptr + 3 * slot + 1, pos, mask=keep)
        tl.store(out_ptr + 3 * slot + 2, neg, mask=keep)
        total += tl.sum(oki, 0)
        start += BLOCK
    tl.store(count_ptr, tl.minimum(total, num_triplets))


@torch.library.custom_op("hssn::triton_sample_triplets", mutates_args=())
def sample_triplets(target: torch.Tensor, leaf_index: torch.Tensor, tree_distance: torch.Tensor,
                    num_triplets: int, seed: int, ignore_index: int, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((num_triplets, 3) int64 flat pixel indices padded with -1, 0-d int64 count); mode 0 tree, 1 vanilla.

    leaf_index (C,) int32 channel -> leaf position; tree_distance (L, L) int32.
    """
    dev = target.device
    out = torch.full((num_triplets, 3), -1, dtype=torch.int64, device=dev)
    count = torch.zeros((), dtype=torch.int64, device=dev)
    flat = target.reshape(-1)
    num_p = flat.numel()
    if num_p == 0 or num_triplets == 0:
        return out, count
    idx_dtype = torch.int32 if num_p < 2**31 else torch.int64
    csum = torch.cumsum((flat != ignore_index).to(idx_dtype), 0, dtype=idx_dtype)
    with _tu.launch_guard(target):
        _sample_kernel[(1,)](
            flat, csum, leaf_index, tree_distance, out, count,
            num_p, tree_distance.shape[0], leaf_index.shape[0], num_triplets, ATTEMPTS_PER_TRIPLET * num_triplets,
            seed, max(1, num_p.bit_length()), MODE=mode, BLOCK=SAMPLE_BLOCK, num_warps=SAMPLE_WARPS,
        )
    return out, count


@sample_triplets.register_fake
def _(target, leaf_index, tree_distance, num_triplets, seed, ignore_index, mode):
    return (target.new_empty((num_triplets, 3), dtype=torch.int64), target.new_empty((), dtype=torch.int64))


# ----------------------------------------------------------------------------- loss
@triton.jit
def _leaf_of(t_ptr, leaf_index_ptr, q, C, live):
    """The leaf position of pixel q's label, -1 when the slot is unused or the label is not a leaf."""
    y = tl.load(t_ptr + q, mask=live, other=0).to(tl.int64)
    inside = live & (y >= 0) & (y < C)
    return tl.load(leaf_index_ptr + tl.where(inside, y, 0), mask=inside, other=-1).to(tl.int64)


@triton.jit
def _row_offset(q, H, W, s_b, s_h, s_w):
    hw = H * W
    b = q // hw
    rem = q - b * hw
    h = rem // W
    return b * s_b + h * s_h + (rem - h * W) * s_w


@triton.jit
def _triplet_kernel(
    e_ptr, t_ptr, trip_ptr, count_ptr, leaf_index_ptr, dist_ptr, hinge_ptr, part_ptr,
    E, H, W, L, C, s_b, s_e, s_h, s_w,
    margin_eps, margin_scale, inv_two_height, eps,
    HIER_MARGIN: tl.constexpr, DIST: tl.constexpr, COMPUTE_GRAD: tl.constexpr, BLOCK_E: tl.constexpr,
):
    k = tl.program_id(0).to(tl.int64)
    count = tl.load(count_ptr)
    live = k < count
    qa = tl.maximum(tl.load(trip_ptr + 3 * k), 0)
    qp = tl.maximum(tl.load(trip_ptr + 3 * k + 1), 0)
    qn = tl.maximum(tl.load(trip_ptr + 3 * k + 2), 0)
    oa = _row_offset(qa, H, W, s_b, s_h, s_w)
    op = _row_offset(qp, H, W, s_b, s_h, s_w)
    on = _row_offset(qn, H, W, s_b, s_h, s_w)
    cols = tl.arange(0, BLOCK_E).to(tl.int64)
    # row scales (kernels/common.h row_scales): rows are read as x * r, r = 1 / max |x| (1 below the smallest
    # normal); cosine rows each their own, euclidean rows one common r; the distances do not change
    max_a = tl.zeros([BLOCK_E], dtype=tl.float32)
    max_p = tl.zeros([BLOCK_E], dtype=tl.float32)
    max_n = tl.zeros([BLOCK_E], dtype=tl.float32)
    for e0 in range(0, E, BLOCK_E):
        m = ((e0 + cols) < E) & live
        max_a = tl.maximum(max_a, tl.abs(tl.load(e_ptr + oa + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32)))
        max_p = tl.maximum(max_p, tl.abs(tl.load(e_ptr + op + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32)))
        max_n = tl.maximum(max_n, tl.abs(tl.load(e_ptr + on + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32)))
    ma = tl.max(max_a, 0)
    mp = tl.max(max_p, 0)
    mn = tl.max(max_n, 0)
    if DIST != 0:
        ma = tl.maximum(tl.maximum(ma, mp), mn)
        mp = ma
        mn = ma
    tiny = 1.1754943508222875e-38
    ra = tl.where(ma > tiny, 1.0 / ma, 1.0)
    rp = tl.where(mp > tiny, 1.0 / mp, 1.0)
    rn = tl.where(mn > tiny, 1.0 / mn, 1.0)
    acc_ap = tl.zeros([BLOCK_E], dtype=tl.float32)
    acc_an = tl.zeros([BLOCK_E], dtype=tl.float32)
    acc_aa = tl.zeros([BLOCK_E], dtype=tl.float32)
    acc_pp = tl.zeros([BLOCK_E], dtype=tl.float32)
    acc_nn = tl.zeros([BLOCK_E], dtype=tl.float32)
    for e0 in range(0, E, BLOCK_E):
        m = ((e0 + cols) < E) & live
        va = tl.load(e_ptr + oa + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32) * ra
        vp = tl.load(e_ptr + op + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32) * rp
        vn = tl.load(e_ptr + on + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32) * rn
        if DIST == 0:
            acc_ap += va * vp
            acc_an += va * vn
            acc_aa += va * va
            acc_pp += vp * vp
            acc_nn += vn * vn
        else:
            acc_ap += (va - vp) * (va - vp)
            acc_an += (va - vn) * (va - vn)
    if DIST == 0:
        na = tl.sqrt(tl.sum(acc_aa, 0))
        npp = tl.sqrt(tl.sum(acc_pp, 0))
        nn = tl.sqrt(tl.sum(acc_nn, 0))
        dot_p = tl.sum(acc_ap, 0)
        dot_n = tl.sum(acc_an, 0)
        # kernels/common.h triplet_grad: not clamped (|a||p| >= eps) on the scaled rows; clamped a.p / eps
        ma = 1.0 / ra
        mp = 1.0 / rp
        mn = 1.0 / rn
        clamp_p = ((na * ma) * (npp * mp) >= eps) == 0
        clamp_n = ((na * ma) * (nn * mn) >= eps) == 0
        den_p = tl.where(clamp_p, 1.0, na * npp)
        den_n = tl.where(clamp_n, 1.0, na * nn)
        d_p = (1.0 - tl.where(clamp_p, dot_p * (ma * mp) / eps, dot_p / den_p)) / 2.0
        d_n = (1.0 - tl.where(clamp_n, dot_n * (ma * mn) / eps, dot_n / den_n)) / 2.0
        dist_gap = d_p - d_n
    else:
        d_p = tl.sqrt(tl.sum(acc_ap, 0))  # scaled distances: |a - p| = d_p / ra
        d_n = tl.sqrt(tl.sum(acc_an, 0))
        dist_gap = (d_p - d_n) / ra
    margin = margin_eps
    if HIER_MARGIN:  # every table read bounded: unused slots and labels outside the tree read nothing
        la = _leaf_of(t_ptr, leaf_index_ptr, qa, C, live)
        lp = _leaf_of(t_ptr, leaf_index_ptr, qp, C, live)
        ln = _leaf_of(t_ptr, leaf_index_ptr, qn, C, live)
        ok = live & (la >= 0) & (lp >= 0) & (ln >= 0)
        gap = tl.load(dist_ptr + la * L + ln, mask=ok, other=0) - tl.load(dist_ptr + la * L + lp, mask=ok, other=0)
        margin = margin_eps + margin_scale * gap.to(tl.float32) * inv_two_height
        margin = tl.where(ok | (live == 0), margin, float("nan"))  # a label that is no leaf: NaN loss
    hinge = dist_gap + margin
    hinge = tl.where(hinge != hinge, hinge, tl.maximum(hinge, 0.0))  # NaN stays NaN (NaN policy)
    tl.store(hinge_ptr + k, tl.where(live, hinge, 0.0))
    if COMPUTE_GRAD:
        scale = tl.where(live & (hinge > 0.0), 1.0 / tl.maximum(count.to(tl.float32), 1.0), 0.0)
        if DIST == 0:
            # d cos(a, p) / da = o_ap p' + self_ap a' on the scaled rows (kernels/common.h triplet_grad)
            o_ap = tl.where(clamp_p, mp / eps, ra / den_p)
            o_pa = tl.where(clamp_p, ma / eps, rp / den_p)
            o_an = tl.where(clamp_n, mn / eps, ra / den_n)
            o_na = tl.where(clamp_n, ma / eps, rn / den_n)
            inv_na = tl.where(na > 0.0, 1.0 / na, 0.0)
            inv_np = tl.where(npp > 0.0, 1.0 / npp, 0.0)
            inv_nn = tl.where(nn > 0.0, 1.0 / nn, 0.0)
            self_ap = tl.where(clamp_p, 0.0, -ra * dot_p * npp * inv_na / (den_p * den_p))
            self_an = tl.where(clamp_n, 0.0, -ra * dot_n * nn * inv_na / (den_n * den_n))
            self_pa = tl.where(clamp_p, 0.0, -rp * dot_p * na * inv_np / (den_p * den_p))
            self_na = tl.where(clamp_n, 0.0, -rn * dot_n * na * inv_nn / (den_n * den_n))
            # loss = -cos(a, p) / 2 + cos(a, n) / 2 + const
            half = 0.5 * scale
        else:
            inv_dp = tl.where(d_p > 0.0, 1.0 / d_p, 0.0) * scale
            inv_dn = tl.where(d_n > 0.0, 1.0 / d_n, 0.0) * scale
        row = part_ptr + 3 * k * E
        for e0 in range(0, E, BLOCK_E):
            m = ((e0 + cols) < E) & live
            va = tl.load(e_ptr + oa + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32) * ra
            vp = tl.load(e_ptr + op + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32) * rp
            vn = tl.load(e_ptr + on + (e0 + cols) * s_e, mask=m, other=0.0).to(tl.float32) * rn
            if DIST == 0:
                ga = half * (-(o_ap * vp + self_ap * va) + (o_an * vn + self_an * va))
                gp = -half * (o_pa * va + self_pa * vp)
                gn = half * (o_na * va + self_na * vn)
            else:
                ga = (va - vp) * inv_dp - (va - vn) * inv_dn
                gp = -(va - vp) * inv_dp
                gn = (va - vn) * inv_dn
            em = (e0 + cols) < E
            tl.store(row + e0 + cols, ga, mask=em)
            tl.store(row + E + e0 + cols, gp, mask=em)
            tl.store(row + 2 * E + e0 + cols, gn, mask=em)


@triton.jit
def _gather_grad_kernel(
    part_ptr, key_ptr, order_ptr, run_end_ptr, grad_ptr,
    E, H, W, s_b, s_e, s_h, s_w,
    BLOCK_E: tl.constexpr,
):
    """Program (i, e-block): if sorted slot i starts a run of one pixel, sum the run's partial rows in
    sorted (stable) order and write that pixel's gradient row."""
    i = tl.program_id(0).to(tl.int64)
    eb = tl.program_id(1).to(tl.int64)
    key = tl.load(key_ptr + i)
    prev = tl.load(key_ptr + tl.maximum(i - 1, 0))
    first = (key >= 0) & ((i == 0) | (prev != key))
    end = tl.where(first, tl.load(run_end_ptr + i), i)
    cols = eb * BLOCK_E + tl.arange(0, BLOCK_E).to(tl.int64)
    em = cols < E
    acc = tl.zeros([BLOCK_E], dtype=tl.float32)
    for j in range(i, end):
        src = tl.load(order_ptr + j)
        acc += tl.load(part_ptr + src * E + cols, mask=em, other=0.0)
    q = tl.maximum(key, 0)
    off = _row_offset(q, H, W, s_b, s_h, s_w)
    tl.store(grad_ptr + off + cols * s_e, acc.to(grad_ptr.dtype.element_ty), mask=em & first)


def _block_e(num_e: int) -> int:
    return min(256, triton.next_power_of_2(max(num_e, 1)))


@torch.library.custom_op("hssn::triton_triplet_forward", mutates_args=())
def triplet_forward(embeddings: torch.Tensor, target: torch.Tensor, triplets: torch.Tensor, count: torch.Tensor,
                    leaf_index: torch.Tensor, tree_distance: torch.Tensor, margin_eps: float, margin_scale: float,
                    height: int, hierarchy_margin: bool, distance: int,
                    compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 () mean hinge over ``count`` triplets (0 if none), d loss / d embeddings or empty).

    embeddings (B, E, h, w) | (N, E); triplets (T, 3) int64 flat pixel indices padded with -1.
    """
    dev = embeddings.device
    num_t = triplets.shape[0]
    num_e = embeddings.shape[1]
    nb, nh, nw, s_b, s_h, s_w = _tu.pixel_strides(embeddings, True)
    grad = torch.zeros(embeddings.shape, dtype=embeddings.dtype, device=dev) if compute_grad else embeddings.new_empty(0)
    if num_t == 0 or nb * nh * nw == 0:
        return torch.zeros((), dtype=torch.float32, device=dev), grad
    hinge = torch.empty(num_t, dtype=torch.float32, device=dev)
    part = torch.empty((3 * num_t, num_e) if compute_grad else (1,), dtype=torch.float32, device=dev)
    flat_t = target.reshape(-1)
    block_e = _block_e(num_e)
    with _tu.launch_guard(embeddings):
        _triplet_kernel[(num_t,)](
            embeddings, flat_t, triplets, count, leaf_index, tree_distance, hinge, part,
            num_e, nh, nw, tree_distance.shape[0], leaf_index.shape[0], s_b, embeddings.stride(1), s_h, s_w,
            float(margin_eps), float(margin_scale), 1.0 / (2 * height), COSINE_EPS,
            HIER_MARGIN=hierarchy_margin, DIST=distance, COMPUTE_GRAD=compute_grad, BLOCK_E=block_e,
        )
    loss = hinge.sum() / count.clamp(min=1)
    if compute_grad:
        slots = triplets.reshape(-1)
        keys, order = torch.sort(slots, stable=True)
        run_end = torch.searchsorted(keys, keys, right=True)
        _, _, _, g_b, g_h, g_w = _tu.pixel_strides(grad, True)
        with _tu.launch_guard(embeddings):
            _gather_grad_kernel[(3 * num_t, triton.cdiv(num_e, block_e))](
                part, keys, order, run_end, grad, num_e, nh, nw, g_b, grad.stride(1), g_h, g_w, BLOCK_E=block_e,
            )
    return loss, grad


@triplet_forward.register_fake
def _(embeddings, target, triplets, count, leaf_index, tree_distance, margin_eps, margin_scale, height,
      hierarchy_margin, distance, compute_grad):
    return fake_triplet_loss(embeddings, compute_grad)


_triplet_forward = register_triplet_loss("hssn::triton_triplet_forward", triplet_forward)


# ----------------------------------------------------------------------------- backend entry points
@register("sample_triplets_padded", "triton")
def sample_triplets_padded(target: torch.Tensor, hierarchy: ClassHierarchy, num_triplets: int = 200, seed: int = 0,
                           ignore_index: int = 255, mode: str = "tree") -> tuple[torch.Tensor, torch.Tensor]:
    """Same triplets as :func:`hssn_kernels.reference._sample_triplets_padded` for the same seed (inputs checked
    upstream)."""
    tabs = hierarchy.tables(target.device)
    return sample_triplets(target, tabs.leaf_index, tabs.tree_distance, int(num_triplets), int(seed),
                           int(ignore_index), _checks.TRIPLET_MODES.index(mode))


@register("tree_triplet_loss", "triton")
def tree_triplet_loss(embeddings: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy, *args) -> torch.Tensor:
    """Tree-triplet loss on the Triton sampler and ``hssn::triton_triplet_forward`` (``_autograd.triplet_loss``;
    arguments as :func:`hssn_kernels.reference._triplet_loss`)."""
    return triplet_loss(sample_triplets_padded, _triplet_forward, embeddings, target, hierarchy, *args)
