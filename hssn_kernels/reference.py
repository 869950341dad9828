"""Pure-PyTorch reference ops: the readable specification every fast backend is tested against.

Each op's function here is private (``_focal_tree_min_loss``, ...) and registered as the ``"reference"`` backend:
call it as ``hssn_kernels.focal_tree_min_loss(..., backend="reference")``, which validates the inputs first. Its
signature is the op's backend interface (what every backend's function takes, inputs already validated).

Shapes: logits ``(B, C, H, W)`` or ``(N, C)`` over all C tree nodes; targets ``(B, H, W)`` / ``(N,)``
of *leaf channel ids* or ``ignore_index`` (with ``partial_labels=True``: any node's channel id). Half-precision inputs are computed in float32; float64 stays
float64. Losses come back in the input's dtype.

Conventions (README "Conventions"):

* ``reduction="mean"``: sum over nodes, mean over non-ignored pixels (0, with zero gradient, when every
  pixel is ignored); ``"sum"``; ``"none"``: per-pixel map, 0 at ignored pixels.
* Tree-min: the gradient of each node's term goes only to its arg-min (over ancestors) or arg-max
  (over descendants) node, the lowest channel on ties.
* NaN: a non-ignored pixel with a NaN logit has a NaN loss. Ignored pixels are never read.
* Triplets are drawn with a counter-based 32-bit hash (:func:`hash32`), so every backend reproduces
  the same triplets from the same seed (see :func:`_sample_triplets_padded`).
* Partial labels (``partial_labels=True``): a target may be any node ``t``. Nodes on the path root -> t
  get their positive term, nodes that are neither ancestors nor descendants of t their negative term,
  and the strict descendants of t (unknown) **no term** (and no gradient). For a leaf t this is the
  leaf-label loss exactly. Cross-entropy over the leaves uses the probability of the label's subtree,
  ``-log sum_{leaves l under t} softmax(z)_l``. The triplet losses leave inner-node pixels out.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks
from .backends import register
from .hierarchy import ClassHierarchy

__all__ = ["hash32", "triplet_rand", "COSINE_EPS", "ATTEMPTS_PER_TRIPLET"]

COSINE_EPS = 1e-8
"""cos(x, y) = x.y / max(|x| |y|, COSINE_EPS)."""
ATTEMPTS_PER_TRIPLET = 16
"""Triplet sampling draws at most ``ATTEMPTS_PER_TRIPLET * num_triplets`` candidates."""

_MASK32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------- layout helpers
def _flatten(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) or (N, C) -> (P, C) in pixel raster order, computed in >= float32."""
    z = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def _reduce(per_pixel: torch.Tensor, valid: torch.Tensor, reduction: str, like: torch.Tensor) -> torch.Tensor:
    if reduction == "none":
        return per_pixel.reshape(_checks.pixel_shape(like)).to(like.dtype)
    total = per_pixel.sum()
    if reduction == "mean":
        total = total / valid.sum().clamp(min=1)
    return total.to(like.dtype)


def _valid_pixels(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (P,) int64 target with ignored pixels replaced by a leaf, and the (P,) validity mask."""
    t = target.reshape(-1).long()
    valid = t != ignore_index
    return t, valid


# ----------------------------------------------------------------------------- focal terms
def _focal_terms(zstar: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-node focal BCE on pre-selected logits z*: -(1-p)^g log p if label else -p^g log(1-p)."""
    log_p = F.logsigmoid(zstar)
    log_q = F.logsigmoid(-zstar)

    def weight(log_x):  # x^gamma, exactly 1 for gamma = 0 (also at x = 0, where 0 * log 0 would be NaN)
        return torch.ones_like(log_x) if gamma == 0 else torch.exp(gamma * log_x)

    pos = -weight(log_q) * log_p
    neg = -weight(log_p) * log_q
    return torch.where(labels, pos, neg)


def _tree_extrema_indices(z: torch.Tensor, hierarchy: ClassHierarchy) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, C) int64 arg-min over A(v) and arg-max over Dsc(v) for every node v, lowest channel on ties.

    ``argmin``/``argmax`` return the first extremum; the candidate lists are ascending, so the first is
    the lowest channel. A NaN logit wins (torch treats NaN as the extremum), so it reaches the loss.
    """
    dev = z.device
    with torch.no_grad():
        min_idx = torch.empty(z.shape, dtype=torch.long, device=dev)
        max_idx = torch.empty(z.shape, dtype=torch.long, device=dev)
        for v in range(hierarchy.num_channels):
            anc = torch.tensor(sorted(hierarchy.ancestors(v)), device=dev)
            dsc = torch.tensor(hierarchy.descendants(v), device=dev)
            min_idx[:, v] = anc[z[:, anc].argmin(1)]
            max_idx[:, v] = dsc[z[:, dsc].argmax(1)]
    return min_idx, max_idx


def _node_labels(t: torch.Tensor, hierarchy: ClassHierarchy) -> torch.Tensor:
    """(P, C) bool: l_v = v in A(target); ``t`` as :func:`_prepare` returns it (a channel at every pixel)."""
    return hierarchy.tables(t.device).is_ancestor[t]


def _known(t: torch.Tensor, hierarchy: ClassHierarchy) -> torch.Tensor:
    """(P, C) bool: node v has a term for target t, i.e. v is not a strict descendant of t (all True for a
    leaf target; ``is_ancestor[v, t]`` = t in A(v))."""
    below = hierarchy.tables(t.device).is_ancestor.T[t]
    return ~below | (torch.arange(hierarchy.num_channels, device=t.device)[None, :] == t[:, None])


def _known_terms(terms: torch.Tensor, t: torch.Tensor, hierarchy: ClassHierarchy) -> torch.Tensor:
    """(P, C) node terms with those of the label's strict descendants zeroed (partial labels), except a NaN
    one: a NaN logit below the label still makes its pixel's loss NaN (the NaN rule above)."""
    return torch.where(_known(t, hierarchy) | terms.isnan(), terms, torch.zeros_like(terms))


def _prepare(logits, target, hierarchy, ignore_index, partial_labels=False):
    """(P, C) logits (zero at ignored pixels), (P,) channel per pixel, (P,) valid and (P,) bad-label masks."""
    t, valid = _valid_pixels(target, ignore_index)
    # with validation skipped, a label that is no leaf (no node with partial_labels) gives its pixel a NaN
    # loss (as the native kernels)
    num = hierarchy.num_channels
    leaf_ok = (t >= 0) & (t < num)
    if not partial_labels:
        leaf_ok = leaf_ok & hierarchy.tables(t.device).is_leaf[t.clamp(0, num - 1)]
    bad = valid & ~leaf_ok
    # every pixel that is ignored or bad reads the first leaf's rows (its terms are masked out later)
    t = torch.where(valid & ~bad, t, torch.full_like(t, hierarchy.leaves[0]))
    z = _flatten(logits)
    z = torch.where(valid[:, None], z, torch.zeros((), dtype=z.dtype, device=z.device))
    return z, t, valid, bad


def _masked(per_pixel: torch.Tensor, valid: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """0 at ignored pixels, NaN at pixels whose label is no leaf (validation skipped)."""
    per_pixel = torch.where(valid, per_pixel, torch.zeros_like(per_pixel))
    return torch.where(bad, torch.full_like(per_pixel, float("nan")), per_pixel)


@register("focal_tree_min_loss", "reference")
def _focal_tree_min_loss(logits, target, hierarchy, gamma=2.0, ignore_index=255, reduction="mean",
                         partial_labels=False):
    """Focal tree-min loss (Eq. 6). logits (B, C, H, W) | (N, C); target (B, H, W) | (N,) leaf ids (any
    node ids with ``partial_labels``: no term for the strict descendants of the label).

    ``p_v = sigmoid(min_{A(v)} z)`` for nodes on the target's path, ``sigmoid(max_{Dsc(v)} z)`` elsewhere;
    per pixel ``sum_v -l_v (1-p_v)^g log p_v - (1-l_v) p_v^g log(1-p_v)``. Tree-min loss (Eq. 5) = gamma 0.
    """
    z, t, valid, bad = _prepare(logits, target, hierarchy, ignore_index, partial_labels)
    labels = _node_labels(t, hierarchy)
    min_idx, max_idx = _tree_extrema_indices(z.detach(), hierarchy)
    zstar = z.gather(1, torch.where(labels, min_idx, max_idx))
    terms = _focal_terms(zstar, labels, float(gamma))
    if partial_labels:
        terms = _known_terms(terms, t, hierarchy)
    per_pixel = _masked(terms.sum(1), valid, bad)
    return _reduce(per_pixel, valid, reduction, logits)


@register("focal_bce_loss", "reference")
def _focal_bce_loss(logits, target, hierarchy, gamma=2.0, ignore_index=255, reduction="mean", partial_labels=False):
    """Focal BCE over all nodes (no tree-min), labels l_v = v in A(target); sum over nodes. BCE (Eq. 2) = gamma 0.
    Partial labels: no term for the strict descendants of the label."""
    z, t, valid, bad = _prepare(logits, target, hierarchy, ignore_index, partial_labels)
    terms = _focal_terms(z, _node_labels(t, hierarchy), float(gamma))
    if partial_labels:
        terms = _known_terms(terms, t, hierarchy)
    per_pixel = _masked(terms.sum(1), valid, bad)
    return _reduce(per_pixel, valid, reduction, logits)


def _leaf_ce(z: torch.Tensor, t: torch.Tensor, hierarchy: ClassHierarchy, partial_labels: bool) -> torch.Tensor:
    """(P,) softmax cross-entropy over the leaf channels; for an inner label t (partial labels) the negative
    log of the summed probability of the leaves under t. ``t`` as :func:`_prepare` returns it."""
    tabs = hierarchy.tables(z.device)
    leaf_z = z[:, tabs.leaves.long()]
    is_leaf = tabs.is_leaf[t]
    per_pixel = F.cross_entropy(leaf_z, tabs.leaf_index[torch.where(is_leaf, t, hierarchy.leaves[0])].long(),
                                reduction="none")
    if not partial_labels:
        return per_pixel
    under = tabs.is_ancestor.T[t][:, tabs.leaves.long()]  # (P, L): leaf below (or equal to) the label
    subtree = torch.logsumexp(torch.where(under, leaf_z, torch.full_like(leaf_z, float("-inf"))), dim=1)
    return torch.where(is_leaf, per_pixel, torch.logsumexp(leaf_z, dim=1) - subtree)


@register("leaf_cross_entropy", "reference")
def _leaf_cross_entropy(logits, target, hierarchy, ignore_index=255, reduction="mean", partial_labels=False):
    """Categorical cross-entropy over the leaf channels only (Eq. 1, the flat baseline); partial labels: the
    probability of the label's subtree."""
    z, t, valid, bad = _prepare(logits, target, hierarchy, ignore_index, partial_labels)
    per_pixel = _masked(_leaf_ce(z, t, hierarchy, partial_labels), valid, bad)
    return _reduce(per_pixel, valid, reduction, logits)


@register("released_hiera_loss", "reference")
def _released_hiera_loss(logits, target, hierarchy, ignore_index=255, partial_labels=False, tm_weight=5.0, eps=1e-8,
                         void_in_ce=False):
    """The segmentation objective of the authors' released code (HieraSeg ``HieraTripletLossCityscape``), for
    any tree; a scalar (mean reduction only). With ``s = sigmoid(z)``, P valid pixels, N all pixels:

    ``tm_weight * sum_l sum_{p, v in level l} [-l_v log(min_{A(v)} s + eps) - (1 - l_v) log(1 - max_{Dsc(v)} s
    + eps)] / (P * n_l)`` (the tree-min loss, no focal factor, as a mean over each level's ``n_l`` nodes)
    ``+ CE_leaves + CE_top``: softmax cross-entropy over the leaf channels (target: the leaf) and over the
    level-1 nodes (target: the leaf's level-1 ancestor), each summed over valid pixels and divided by N
    (mmseg's ``CrossEntropyLoss`` of that code counts ignored pixels as zeros in its mean).

    ``void_in_ce=True`` reproduces a side effect of the released code: its tree-min loss sets the ignored
    labels to 0 in place before the cross-entropy terms run, so they train ignored pixels as the first leaf
    and the first level-1 node. Partial labels: no tree-min term for the label's strict descendants, the
    leaf cross-entropy of the label's subtree, the top-level cross-entropy of its level-1 ancestor.
    """
    z, t, valid, bad = _prepare(logits, target, hierarchy, ignore_index, partial_labels)
    labels = _node_labels(t, hierarchy)
    min_idx, max_idx = _tree_extrema_indices(z.detach(), hierarchy)
    s = torch.sigmoid(z)  # monotone: the min / max of s sit at the arg-min / arg-max of z
    terms = torch.where(labels, -torch.log(s.gather(1, min_idx) + eps), -torch.log(1 - s.gather(1, max_idx) + eps))
    keep = valid[:, None] & _known(t, hierarchy) if partial_labels else valid[:, None]
    terms = torch.where(keep, terms, torch.zeros_like(terms))
    tabs = hierarchy.tables(z.device)
    level = tabs.level.long()
    level_size = torch.bincount(level)[level].to(terms.dtype)  # n_l of each node's level
    num_valid = valid.sum().clamp(min=1)
    tm = (terms.sum(0) / level_size).sum() / num_valid

    # CE targets: the label (ignored pixels read the first leaf, as _prepare left them) and its level-1 node
    counted = torch.ones_like(valid) if void_in_ce else valid
    top = (level == 1).nonzero()[:, 0]  # the level-1 channels, ascending
    top_t = torch.searchsorted(top, tabs.level_map[0][t])
    zc = _flatten(logits) if void_in_ce else z  # z is zeroed at ignored pixels
    ce_leaf = _leaf_ce(zc, t, hierarchy, partial_labels)
    ce_top = F.cross_entropy(zc[:, top], top_t, reduction="none")
    ce = 0
    for per_pixel in (ce_leaf, ce_top):
        ce = ce + torch.where(counted, per_pixel, torch.zeros_like(per_pixel)).sum() / max(len(t), 1)
    total = tm_weight * tm + ce
    total = torch.where(bad.any(), torch.full_like(total, float("nan")), total)  # a non-leaf label: NaN, no sync
    return total.to(logits.dtype)


# ----------------------------------------------------------------------------- path inference
@register("hierarchical_argmax", "reference")
def _hierarchical_argmax(logits: torch.Tensor, hierarchy: ClassHierarchy) -> torch.Tensor:
    """Path inference (Eq. 3): (B, H, W) | (N,) int64 leaf channel of the largest root-path score sum.

    ``S_leaf = sigmoid(z_level1) + sigmoid(z_level2) + ... + sigmoid(z_leaf)`` summed root first in
    float32 (float64 for float64 logits); the lowest leaf channel wins ties. A NaN logit scores 0, as
    ``-inf`` would (so an all-NaN pixel gets the lowest leaf channel).
    """
    s = torch.nan_to_num(torch.sigmoid(_flatten(logits)), nan=0.0)
    tabs = hierarchy.tables(s.device)
    path = tabs.path[tabs.leaves.long()].long()  # (L, D) root first, -1 past the leaf
    score = torch.zeros(s.shape[0], hierarchy.num_leaves, dtype=s.dtype, device=s.device)
    for k in range(hierarchy.height):
        col = path[:, k]
        has = col >= 0
        score[:, has] = score[:, has] + s[:, col[has]]
    leaf = tabs.leaves.long()[score.argmax(1)]
    return leaf.reshape(_checks.pixel_shape(logits))


@register("project_to_level", "reference")
def _project_to_level(leaf_map: torch.Tensor, hierarchy: ClassHierarchy, level: int, ignore_index: int = 255) -> torch.Tensor:
    """Map channel ids to their ancestor at tree ``level`` (1 = coarsest); shallower nodes stay; ignore kept."""
    t = leaf_map.long()
    ignored = t == ignore_index
    table = hierarchy.tables(t.device).level_map[level - 1]
    out = table[torch.where(ignored, torch.zeros_like(t), t)]
    return torch.where(ignored, torch.full_like(out, ignore_index), out).to(leaf_map.dtype)


# ----------------------------------------------------------------------------- triplets
def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for uint32 values held in int64, without int64 overflow."""
    lo = (x & 0xFFFF) * c
    hi = (((x >> 16) * c) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """The 'lowbias32' integer hash on uint32 values held in an int64 tensor.

    ``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16`` (mod 2^32).
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


def triplet_rand(seed: int, counter: torch.Tensor) -> torch.Tensor:
    """Random uint32 (in int64) number ``counter`` of stream ``seed``: ``hash32(hash32(i ^ k) + k)``, k = hash32(seed)."""
    key = hash32(torch.tensor(seed, dtype=torch.int64, device=counter.device))
    return hash32((hash32(counter ^ key) + key) & _MASK32)


@register("sample_triplets_padded", "reference")
def _sample_triplets_padded(target, hierarchy, num_triplets=200, seed=0, ignore_index=255, mode="tree"):
    """Triplets as a ``(num_triplets, 3)`` int64 table of flat pixel indices padded with -1, and their count.

    The algorithm every backend reproduces bit for bit:

    1. ``V`` = non-ignored pixels of the flattened target, ascending flat index (raster order over B, H, W).
    2. For attempt ``k = 0 .. ATTEMPTS_PER_TRIPLET * num_triplets - 1`` and ``j = 0, 1, 2``:
       ``r = triplet_rand(seed, 3k + j)``, candidate ``j`` = ``V[(r * |V|) >> 32]``.
    3. Candidates ``(a, x, y)``. Reject if any two are the same pixel. ``dx = psi(y_a, y_x)``,
       ``dy = psi(y_a, y_y)``. Mode "tree": reject if ``dx == dy``; else the closer one is the positive.
       Mode "vanilla": accept only if exactly one of x, y has the anchor's leaf; it is the positive.
    4. The first ``num_triplets`` accepted attempts, in attempt order.

    The labels are not checked (they are the backend interface's, checked upstream): a value that is no leaf
    rejects its attempt.
    """
    dev = target.device
    t = target.reshape(-1).long()
    valid_idx = torch.nonzero(t != ignore_index).squeeze(1)
    num_valid = valid_idx.numel()
    if num_valid >= 2**31:
        raise ValueError(f"{num_valid} valid pixels; triplet sampling supports fewer than 2**31")
    out = torch.full((num_triplets, 3), -1, dtype=torch.long, device=dev)
    if num_valid == 0 or num_triplets == 0:
        return out, torch.zeros((), dtype=torch.long, device=dev)
    tabs = hierarchy.tables(dev)
    attempts = ATTEMPTS_PER_TRIPLET * num_triplets
    counter = torch.arange(3 * attempts, dtype=torch.long, device=dev)
    pos = (triplet_rand(seed, counter) * num_valid) >> 32
    cand = valid_idx[pos].reshape(attempts, 3)
    a, x, y = cand.unbind(1)
    labels = t[cand]
    inside = (labels >= 0) & (labels < hierarchy.num_channels)
    leaf = torch.where(inside, tabs.leaf_index.long()[labels.clamp(0, hierarchy.num_channels - 1)], -1)
    dist = tabs.tree_distance.long()
    dx = dist[leaf[:, 0].clamp(min=0), leaf[:, 1].clamp(min=0)]
    dy = dist[leaf[:, 0].clamp(min=0), leaf[:, 2].clamp(min=0)]
    # an attempt with a label that is no leaf (validation skipped) is rejected, as a repeated pixel is
    distinct = (a != x) & (a != y) & (x != y) & (leaf >= 0).all(1)
    if mode == "tree":
        ok = distinct & (dx != dy)
    else:
        ok = distinct & ((dx == 0) != (dy == 0))
    x_is_pos = dx < dy
    positive = torch.where(x_is_pos, x, y)
    negative = torch.where(x_is_pos, y, x)
    accepted = torch.stack([a, positive, negative], 1)[ok][:num_triplets]
    out[: accepted.shape[0]] = accepted
    return out, torch.tensor(accepted.shape[0], dtype=torch.long, device=dev)


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    """(N, 1) 1 / max |x| of each row of (N, E) ``x`` (1 where that is below the dtype's smallest normal), detached:
    distances are computed on rows scaled by it, which leaves their value and gradient unchanged and keeps the
    sums of squares finite (norms of 1e25 overflow float32 squared). An inf row gets 0 (its distances NaN)."""
    m = torch.nan_to_num(x.detach().abs(), nan=0.0, posinf=math.inf).amax(-1, keepdim=True)
    return torch.where(m > torch.finfo(x.dtype).tiny, 1.0 / m, torch.ones_like(m))


def _distance(u: torch.Tensor, v: torch.Tensor, distance: str) -> torch.Tensor:
    """(N,) distances of the (N, E) rows: cosine ``(1 - u.v / max(|u||v|, COSINE_EPS)) / 2`` or ``|u - v|``, both
    computed on scaled rows (:func:`_row_scale`: each row its own scale for the cosine, one per pair for the
    euclidean distance)."""
    if distance == "cosine":
        su, sv = _row_scale(u), _row_scale(v)
        us, vs = u * su, v * sv
        nu, nv = torch.linalg.vector_norm(us, dim=-1), torch.linalg.vector_norm(vs, dim=-1)
        clamped = ~((nu / su[:, 0]) * (nv / sv[:, 0]) >= COSINE_EPS)  # |u||v| < eps, from finite factors
        dot = (us * vs).sum(-1)
        # clamped: u.v / eps on the rows themselves; |u_i v_i| <= |u||v| < eps cannot overflow
        raw = torch.where(clamped[:, None], u, torch.zeros_like(u)) * v
        cos = torch.where(clamped, raw.sum(-1) / COSINE_EPS, dot / torch.where(clamped, torch.ones_like(dot), nu * nv))
        return (1.0 - cos) / 2.0
    s = torch.minimum(_row_scale(u), _row_scale(v))  # 1 / the larger of the two rows' max |value|
    return torch.linalg.vector_norm(u * s - v * s, dim=-1) / s[:, 0]


@register("tree_triplet_loss", "reference")
def _triplet_loss(embeddings, target, hierarchy, num_triplets=200, margin_eps=0.1, margin_scale=0.5,
                  hierarchy_margin=True, distance="cosine", seed=0, ignore_index=255, mode="tree"):
    """Tree-triplet loss (Eq. 7-8) on labels as :func:`hssn_kernels._checks.triplet_inputs` returns them: mean of
    ``max(d(a,p) - d(a,n) + m, 0)`` over the triplets of :func:`_sample_triplets_padded` (0 if none); see
    :func:`hssn_kernels.tree_triplet_loss`."""
    table, count = _sample_triplets_padded(target, hierarchy, num_triplets, seed, ignore_index, mode)
    table = table[: int(count)]
    e = _flatten(embeddings)
    if table.shape[0] == 0:
        return (e.sum() * 0.0).to(embeddings.dtype)
    ea, ep, en = e[table[:, 0]], e[table[:, 1]], e[table[:, 2]]
    margin = torch.full((table.shape[0],), float(margin_eps), dtype=e.dtype, device=e.device)
    if hierarchy_margin:
        tabs = hierarchy.tables(e.device)
        leaf = tabs.leaf_index.long()[target.reshape(-1).long()[table]]
        dist = tabs.tree_distance.long()
        gap = dist[leaf[:, 0], leaf[:, 2]] - dist[leaf[:, 0], leaf[:, 1]]
        margin = margin + float(margin_scale) * gap.to(e.dtype) / (2 * hierarchy.height)
    hinge = torch.relu(_distance(ea, ep, distance) - _distance(ea, en, distance) + margin)
    return hinge.mean().to(embeddings.dtype)
