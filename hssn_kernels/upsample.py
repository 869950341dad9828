"""Bilinear upsampling fused into the focal tree-min loss and path inference (no full-resolution logits).

``F.interpolate(x, size=(H, W), mode="bilinear")`` is separable: output row ``y`` mixes two low-res rows
``(r0[y], r1[y])`` with weights ``(1 - l[y], l[y])``, and likewise for columns. The output rows that share
one row pair form a *band* (about ``H / h`` rows). Per band we form the upsampled logits of those rows only
(``(B, C, rows, W)``, fp32 math; fp64 for fp64 logits), run the backend's fused forward+gradient kernel on
them, and fold the band's gradient back onto its two low-res rows: a weighted sum over the band's rows into
a full-width row sum per low-res row, folded onto the low-res columns once that row gets no more bands
(``index_add_`` on CPU, sequential; a fixed-length gather over each low-res column's sources elsewhere).
Bands run in a fixed order and nothing is accumulated with atomics, so the gradient is deterministic. Memory: one band (at
most ``BAND_ELEMENTS`` upsampled values; larger bands are split by rows) plus the low-res gradient.

The interpolation weights follow PyTorch's ``upsample_bilinear2d`` (source index ``scale * (dst + 0.5) -
0.5`` clamped at 0, or ``dst * (in - 1) / (out - 1)`` with ``align_corners``), with columns mixed first,
so results agree with ``F.interpolate`` to rounding.

Custom ops: ``hssn::upsampled_ftm`` (loss, and the low-res gradient when asked) and
``hssn::upsampled_ftm_backward`` (per-pixel weights -> low-res gradient, for ``reduction="none"``).
A backend that runs them implements the ``ftm_kernel`` and ``ftm_kernel_backward`` rows of ``backends.OPS``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from . import backends
from ._autograd import fake_fused_loss, register_fused_loss, valid_count
from .hierarchy import ClassHierarchy

INDEX_ADD_DEVICES = ("cpu",)
"""Devices whose ``index_add_`` is sequential (deterministic); elsewhere the gradient folds by a gather."""
BAND_ELEMENTS = 1 << 20
"""Most upsampled values (B x C x rows x W) held at once; a band with more is split by rows."""


# ----------------------------------------------------------------------------- interpolation taps
@functools.lru_cache(maxsize=64)
def _taps(out_len: int, in_len: int, align_corners: bool, fp64: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, lam) of length ``out_len``: output i = (1 - lam) * x[i0] + lam * x[i1] (PyTorch's rule)."""
    ft = np.float64 if fp64 else np.float32
    dst = np.arange(out_len, dtype=ft)
    if align_corners:
        scale = ft(in_len - 1) / ft(out_len - 1) if out_len > 1 else ft(0)
        src = scale * dst
    else:
        scale = ft(in_len) / ft(out_len)
        src = np.maximum(scale * (dst + ft(0.5)) - ft(0.5), ft(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    lam = np.clip(src - i0.astype(ft), ft(0), ft(1)).astype(ft)
    i1 = i0 + (i0 < in_len - 1)
    return i0, i1, lam


@functools.lru_cache(maxsize=64)
def _transpose_taps(out_len: int, in_len: int, align_corners: bool, fp64: bool) -> tuple[np.ndarray, np.ndarray]:
    """(idx, wt), both (in_len, K): input j receives sum_k g[idx[j, k]] * wt[j, k] (the adjoint of the taps).

    Padding entries repeat a real entry of the same row with weight 0, so they add no new NaN.
    """
    i0, i1, lam = _taps(out_len, in_len, align_corners, fp64)
    one = lam.dtype.type(1)
    lists: list[list[tuple[int, float]]] = [[] for _ in range(in_len)]
    for i in range(out_len):
        lists[i0[i]].append((i, one - lam[i]))  # 1 - lam formed in the compute dtype, as PyTorch does
        lists[i1[i]].append((i, lam[i]))
    k = max(len(entries) for entries in lists)
    idx = np.zeros((in_len, k), dtype=np.int64)
    wt = np.zeros((in_len, k), dtype=lam.dtype)
    for j, entries in enumerate(lists):
        entries = entries or [(0, 0.0)]
        for n in range(k):
            idx[j, n], wt[j, n] = entries[n] if n < len(entries) else (entries[0][0], 0.0)
    return idx, wt


def _bands(i0: np.ndarray, i1: np.ndarray, rows_max: int) -> list[tuple[int, int, int, int]]:
    """[(y_start, y_stop, r0, r1)]: runs of output rows sharing one low-res row pair, at most ``rows_max`` rows."""
    out, start = [], 0
    n = len(i0)
    for y in range(1, n + 1):
        if y == n or i0[y] != i0[start] or i1[y] != i1[start]:
            for a in range(start, y, rows_max):
                out.append((a, min(a + rows_max, y), int(i0[start]), int(i1[start])))
            start = y
    return out


@functools.lru_cache(maxsize=32)
def _cached_plan(shape: tuple[int, int, int, int], size: tuple[int, int], align_corners: bool, fp64: bool,
                 device: torch.device, budget: int) -> "_Plan":
    return _Plan(shape, size, align_corners, fp64, device, budget)


def _plan(logits: torch.Tensor, size: tuple[int, int], align_corners: bool) -> "_Plan":
    """The (cached: no host-to-device copy after the first step) plan of resizing ``logits`` to ``size``."""
    return _cached_plan(tuple(logits.shape), tuple(size), align_corners, logits.dtype == torch.float64,
                        logits.device, BAND_ELEMENTS)


class _Plan:
    """Device copies of the taps for one (B, C, h, w) -> (H, W) resize, and its bands."""

    def __init__(self, shape, size, align_corners: bool, fp64: bool, dev: torch.device, budget: int):
        nb, nc, h, w = shape
        self.fp64 = fp64
        self.dtype = torch.float64 if self.fp64 else torch.float32
        H, W = size
        i0h, i1h, lamh = _taps(H, h, align_corners, self.fp64)
        i0w, i1w, lamw = _taps(W, w, align_corners, self.fp64)
        self.spans = _bands(i0h, i1h, max(1, budget // max(nb * nc * W, 1)))
        self.h0 = torch.from_numpy(1 - lamh).to(dev)  # 1 - lam in the compute dtype (numpy keeps float32)
        self.h1 = torch.from_numpy(lamh).to(dev)
        self.c0 = torch.from_numpy(i0w).to(dev)
        self.c1 = torch.from_numpy(i1w).to(dev)
        self.w0 = torch.from_numpy(1 - lamw).to(dev)
        self.w1 = torch.from_numpy(lamw).to(dev)
        idx, wt = _transpose_taps(W, w, align_corners, self.fp64)
        self.t_idx = torch.from_numpy(idx.reshape(-1)).to(dev)
        self.t_wt = torch.from_numpy(wt).to(dev)
        self.w_low = w

    def row(self, logits: torch.Tensor, r: int) -> torch.Tensor:
        """(B, C, W) low-res row r upsampled along the columns, in the compute dtype."""
        nb, nc, _, w = logits.shape
        x = logits[:, :, r].to(self.dtype).reshape(nb * nc, w)
        mixed = x.gather(1, self.c0.expand(nb * nc, -1)) * self.w0 + x.gather(1, self.c1.expand(nb * nc, -1)) * self.w1
        return mixed.view(nb, nc, -1)

    def bands(self, logits: torch.Tensor):
        """Yields (y0, y1, r0, r1, up): up (B, C, y1 - y0, W) = the upsampled logits of output rows [y0, y1),
        mixed from low-res rows r0 and r1 (each column-mixed row is formed once)."""
        rows: dict[int, torch.Tensor] = {}
        for y0, y1, r0, r1 in self.spans:
            rows = {r: rows[r] if r in rows else self.row(logits, r) for r in (r0, r1)}
            up = rows[r0][:, :, None] * self.h0[y0:y1, None] + rows[r1][:, :, None] * self.h1[y0:y1, None]
            yield y0, y1, r0, r1, up
            del up  # the consumer holds the only reference: one band alive at a time

    def fold_columns(self, g: torch.Tensor) -> torch.Tensor:
        """(B, C, W) -> (B, C, w): the adjoint of the column mixing, without float atomics: index_add_ on CPU
        (sequential), a fixed-order gather over each low-res column's sources elsewhere."""
        nb, nc, W = g.shape
        if g.device.type in INDEX_ADD_DEVICES:
            out = g.new_zeros((nb, nc, self.w_low))
            return out.index_add_(-1, self.c0, g * self.w0).index_add_(-1, self.c1, g * self.w1)
        taken = g.reshape(nb * nc, W).index_select(1, self.t_idx).unflatten(-1, self.t_wt.shape)
        return (taken * self.t_wt).sum(-1).view(nb, nc, self.w_low)


class _RowSums:
    """Full-width gradient row sums of the low-res rows still receiving bands; folded once per row."""

    def __init__(self, plan: _Plan, grad: torch.Tensor):
        self.plan, self.grad, self.rows = plan, grad, {}

    def add(self, r: int, g: torch.Tensor, weights: torch.Tensor) -> None:
        part = (g * weights[:, None]).sum(2)  # (B, C, W): sum over the band's rows
        self.rows[r] = part if r not in self.rows else self.rows[r].add_(part)

    def flush(self, below: int | None = None) -> None:
        """Fold every pending row < ``below`` (all when None) into the low-res gradient, in row order."""
        for r in sorted(r for r in self.rows if below is None or r < below):
            self.grad[:, :, r] += self.plan.fold_columns(self.rows.pop(r))


# ----------------------------------------------------------------------------- drivers
@functools.lru_cache(maxsize=16)
def _hierarchy(parents: tuple[int, ...]) -> ClassHierarchy:
    return ClassHierarchy.from_parents(parents)


def _run_bands(logits, target, hierarchy, impl, gamma, ignore_index, reduction, align_corners, want_grad, partial,
               weights=None):
    """The band loop. Returns (per-pixel loss map or summed loss or None, low-res gradient or None).

    ``reduction``: 0 none (loss map), 1 sum; ``weights`` (B, H, W): per-pixel weights of the backward of
    a per-pixel loss map (then only the gradient is computed).
    """
    nb, nc, h, w = logits.shape
    size = tuple(target.shape[-2:])
    plan = _plan(logits, size, align_corners)
    grad = logits.new_zeros((nb, nc, h, w), dtype=plan.dtype) if want_grad else None
    loss_map = target.new_empty(target.shape, dtype=plan.dtype) if (reduction == 0 and weights is None) else None
    total = logits.new_zeros((), dtype=plan.dtype) if (reduction == 1 and weights is None) else None
    sums = _RowSums(plan, grad) if want_grad else None
    for y0, y1, r0, r1, up in plan.bands(logits):
        t = target[:, y0:y1]
        if weights is not None:
            g = impl.ftm_kernel_backward(weights[:, y0:y1].contiguous(), up, t, hierarchy, gamma, ignore_index, partial)
        else:
            loss, g = impl.ftm_kernel(up, t, hierarchy, gamma, ignore_index, reduction, want_grad, partial)
            if loss_map is not None:
                loss_map[:, y0:y1] = loss
            else:
                total += loss.to(plan.dtype)
        del up
        if want_grad:
            g = g.to(plan.dtype)
            sums.flush(below=r0)  # rows above this band get nothing more
            sums.add(r0, g, plan.h0[y0:y1])
            sums.add(r1, g, plan.h1[y0:y1])
    if want_grad:
        sums.flush()
    return (loss_map if loss_map is not None else total), grad


def _impl(backend: str, device: torch.device):
    return backends.resolve(backend, device, "ftm_kernel")  # a fast backend (the reference computes the expression)


def fused(backend: str, device: torch.device) -> bool:
    """Whether the one-pass Triton kernels (:mod:`hssn_kernels.upsample_triton`) run a call of the resolved
    ``backend`` on ``device``: CUDA tensors on every fast backend ("cuda" calls the same Triton design; the
    band loop only where Triton is unavailable), CPU tensors only with ``backend="triton"`` (its interpreter);
    the "cpu" backend keeps the band loop."""
    if device.type == "cuda":
        return backend in ("triton", "cuda") and backends.unavailable_reason("triton", device) is None
    return backend == "triton"


@torch.library.custom_op("hssn::upsampled_ftm", mutates_args=())
def upsampled_ftm(logits: torch.Tensor, target: torch.Tensor, parents: list[int], align_corners: bool, backend: str,
                  gamma: float, ignore_index: int, reduction: int, compute_grad: bool, partial: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal tree-min loss of bilinearly upsampled logits (B, C, h, w) against target (B, H, W) (``partial``:
    targets may be inner nodes, README "Partial labels").

    Returns the loss (() for sum / mean, (B, H, W) for none; fp32, fp64 for fp64 logits) and, when
    ``compute_grad`` and reduction is sum / mean, d loss / d logits (B, C, h, w) in the logits' dtype.
    """
    hierarchy = _hierarchy(tuple(parents))
    with_grad = compute_grad and reduction != 0
    if fused(backend, logits.device):
        from . import upsample_triton
        loss, grad = upsample_triton.upsampled_ftm(logits, target, hierarchy, align_corners, gamma, ignore_index,
                                                   reduction, with_grad, partial)
        return loss, (grad if with_grad else logits.new_empty(0))
    impl = _impl(backend, logits.device)
    loss, grad = _run_bands(logits, target, hierarchy, impl, gamma, ignore_index, min(reduction, 1), align_corners,
                            with_grad, partial)
    if reduction == 2:
        count = valid_count(target, ignore_index)
        loss = loss / count
        if with_grad:
            grad.div_(count)  # in place: the band loop's own tensor; a copy would double the peak
    grad = grad.to(logits.dtype) if with_grad else logits.new_empty(0)
    return loss, grad


@upsampled_ftm.register_fake
def _(logits, target, parents, align_corners, backend, gamma, ignore_index, reduction, compute_grad, partial=False):
    torch._check(logits.dim() == 4 and target.dim() == 3, lambda: "upsampled_ftm takes (B, C, h, w) and (B, H, W)")
    torch._check(logits.shape[0] == target.shape[0], lambda: "logits and target batch sizes differ")
    return fake_fused_loss(logits, tuple(target.shape), reduction, compute_grad)


@torch.library.custom_op("hssn::upsampled_ftm_backward", mutates_args=())
def upsampled_ftm_backward(weights: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, parents: list[int],
                           align_corners: bool, backend: str, gamma: float, ignore_index: int, partial: bool = False
                           ) -> torch.Tensor:
    """d (sum of weights * per-pixel loss) / d logits, (B, C, h, w) in the logits' dtype; weights (B, H, W)."""
    hierarchy = _hierarchy(tuple(parents))
    if fused(backend, logits.device):
        from . import upsample_triton
        _, grad = upsample_triton.upsampled_ftm(logits, target, hierarchy, align_corners, gamma, ignore_index, 0,
                                                True, partial, weights)
        return grad
    impl = _impl(backend, logits.device)
    _, grad = _run_bands(logits, target, hierarchy, impl, gamma, ignore_index, 0, align_corners, True, partial,
                         weights)
    return grad.to(logits.dtype)


@upsampled_ftm_backward.register_fake
def _(weights, logits, target, parents, align_corners, backend, gamma, ignore_index, partial=False):
    return logits.new_empty(logits.shape)


upsampled_ftm_autograd = register_fused_loss("hssn::upsampled_ftm", upsampled_ftm_backward)
"""hssn::upsampled_ftm's eager entry (:func:`hssn_kernels._autograd.eager_autograd`)."""


# ----------------------------------------------------------------------------- path inference
def tree_violations(x: torch.Tensor, hierarchy: ClassHierarchy, threshold: float = 0.0) -> torch.Tensor:
    """(B, H, W) bool: pixels where some node's value is > threshold while its parent's is <= threshold.

    x: (B, C, H, W) logits (threshold 0) or sigmoid scores (threshold 0.5): the same rule either way.
    """
    parents = hierarchy.tables(x.device).parent.long()
    child = torch.nonzero(parents >= 0).flatten()
    if len(child) == 0:
        return torch.zeros(x.shape[:1] + x.shape[2:], dtype=torch.bool, device=x.device)
    return ((x[:, child] > threshold) & (x[:, parents[child]] <= threshold)).any(dim=1)


def upsampled_argmax(logits: torch.Tensor, hierarchy: ClassHierarchy, size: tuple[int, int], align_corners: bool,
                     backend: str, with_violations: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, H, W) int64 leaf map of the bilinearly upsampled logits (B, C, h, w) and with ``with_violations``
    the (B, H, W) bool :func:`tree_violations` map of the upsampled logits: one Triton pass where
    :func:`fused`, else band by band with the resolved ``backend``'s argmax."""
    if fused(backend, logits.device):
        from . import upsample_triton
        return upsample_triton.upsampled_argmax(logits, hierarchy, size, align_corners, with_violations)
    impl = backends.resolve(backend, logits.device, "hierarchical_argmax")
    nb = logits.shape[0]
    plan = _plan(logits, size, align_corners)
    leaf = torch.empty((nb,) + tuple(size), dtype=torch.int64, device=logits.device)
    viol = torch.empty((nb,) + tuple(size), dtype=torch.bool, device=logits.device) if with_violations else None
    with torch.no_grad():
        for y0, y1, _, _, up in plan.bands(logits):
            leaf[:, y0:y1] = impl.hierarchical_argmax(up, hierarchy)
            if with_violations:
                viol[:, y0:y1] = tree_violations(up, hierarchy)
    return leaf, viol
