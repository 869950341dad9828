"""The functional API: validated inputs, then the op of the chosen backend.

``backend``: "reference" | "triton" | "cuda" | "cpu" | "auto" (native CPU kernels for CPU tensors, the
fastest fast backend for CUDA tensors per ``hssn_kernels/gpu_table.json``, predicted or measured, the reference
as a fallback).
``validate=True`` checks label values (one host sync); ``nan_policy="raise"`` turns a NaN loss into a
``ValueError`` (one sync on the loss); both are skipped while ``torch.compile`` traces.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _autograd, _checks, backends
from . import upsample as _up
from .hierarchy import ClassHierarchy

__all__ = [
    "focal_tree_min_loss", "tree_min_loss", "focal_bce_loss", "bce_loss", "leaf_cross_entropy", "released_hiera_loss",
    "hierarchical_argmax", "project_to_level", "sample_triplets", "tree_triplet_loss", "vanilla_triplet_loss",
]


def _needs_upsampling(logits: torch.Tensor, target: torch.Tensor, upsample: str | None) -> bool:
    return upsample is not None and tuple(logits.shape[-2:]) != tuple(target.shape[-2:])


def _interpolated(logits: torch.Tensor, target: torch.Tensor, upsample: str | None, align_corners: bool) -> torch.Tensor:
    """What ``upsample=`` means: ``F.interpolate(logits, target's (H, W), mode=upsample)`` (the reference computes
    exactly this; the fast backends the same values band by band, :mod:`hssn_kernels.upsample`)."""
    if not _needs_upsampling(logits, target, upsample):
        return logits
    return F.interpolate(logits, size=tuple(target.shape[-2:]), mode=upsample, align_corners=bool(align_corners))


def focal_tree_min_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    hierarchy: ClassHierarchy,
    gamma: float = 2.0,
    ignore_index: int = 255,
    reduction: str = "mean",
    backend: str = "auto",
    validate: bool = True,
    nan_policy: str = "raise",
    upsample: str | None = None,
    align_corners: bool = False,
    partial_labels: bool = False,
) -> torch.Tensor:
    """Focal tree-min loss (Eq. 6). logits (B, C, H, W) | (N, C) float; target (B, H, W) | (N,) int leaf ids
    (``partial_labels=True``: any node id; no term for the strict descendants of an inner label).

    Returns a scalar (``"mean"``/``"sum"``) or the per-pixel map (``"none"``) in the logits' dtype.
    ``upsample="bilinear"``: logits (B, C, h, w) of any smaller (or larger) size are resized to the target's
    (H, W) as ``F.interpolate(logits, (H, W), mode="bilinear", align_corners=align_corners)`` would; the
    fast backends do it band by band inside the loss (:mod:`hssn_kernels.upsample`: no (B, C, H, W) tensor,
    gradient on the low-res logits), the reference computes that expression.
    """
    _checks.check_gamma(gamma)
    target = _checks.loss_inputs(logits, target, hierarchy, ignore_index, reduction, False, upsample,
                                 align_corners, partial_labels)
    _checks.check_nan_policy(nan_policy)
    partial = bool(partial_labels)
    name = backends.resolve_name(backend, logits.device, "focal_tree_min_loss", logits.dtype,
                                 hierarchy.num_channels)
    # The fast kernels give a label that is no leaf (no node with partial labels) a NaN loss: they check the
    # labels only when the loss is NaN, which saves several passes over the target on every call.
    check_after = bool(validate) and name != "reference"
    if validate and not check_after:
        _checks.check_labels(target, hierarchy, ignore_index, leaves_only=not partial)
    impl = backends.resolve(name, logits.device, "focal_tree_min_loss")
    if name != "reference" and _needs_upsampling(logits, target, upsample):  # fused, band by band
        def kernel(z, t, _, *args):
            return _up.upsampled_ftm_autograd(z, t, list(hierarchy.parents), bool(align_corners), name, *args)

        loss = _autograd.fused_loss(kernel, logits, target, hierarchy, gamma, ignore_index, reduction, partial)
    else:
        loss = impl.focal_tree_min_loss(_interpolated(logits, target, upsample, align_corners), target, hierarchy,
                                        float(gamma), int(ignore_index), reduction, partial)
    if (check_after or nan_policy == "raise") and _checks.has_nan(loss):
        if check_after:
            _checks.check_labels(target, hierarchy, ignore_index, leaves_only=not partial)
        if nan_policy == "raise":
            raise _checks.nan_error("focal tree-min loss")
    return loss


def tree_min_loss(logits, target, hierarchy, ignore_index=255, reduction="mean", backend="auto", validate=True,
                  nan_policy="raise", upsample=None, align_corners=False, partial_labels=False):
    """Tree-min loss (Eq. 5) = focal tree-min loss with gamma = 0."""
    return focal_tree_min_loss(logits, target, hierarchy, 0.0, ignore_index, reduction, backend, validate, nan_policy,
                               upsample, align_corners, partial_labels)


def hierarchical_argmax(
    logits: torch.Tensor,
    hierarchy: ClassHierarchy,
    backend: str = "auto",
    levels: bool = False,
    size: tuple[int, int] | None = None,
    align_corners: bool = False,
    violations: bool = False,
):
    """Path inference (Eq. 3): (B, H, W) | (N,) int64 leaf channel ids, lowest leaf on ties.

    ``size=(H, W)``: the leaf map of the bilinearly upsampled (B, C, h, w) logits at (H, W), band by band
    (no (B, C, H, W) tensor); equals path inference on ``F.interpolate(logits, (H, W), mode="bilinear",
    align_corners=align_corners)``. With ``levels=True`` also returns ``[map at level 1, ..., map at
    level D]`` (level D = the leaf map); with ``violations=True`` (needs ``size``) also the (B, H, W) bool
    map of :func:`hssn_kernels.upsample.tree_violations` of the upsampled logits. Extra results follow
    the leaf map in that order.
    """
    size = _checks.argmax_inputs(logits, hierarchy, size, align_corners)
    name = backends.resolve_name(backend, logits.device, "hierarchical_argmax", logits.dtype,
                                 hierarchy.num_channels)
    impl = backends.resolve(name, logits.device, "hierarchical_argmax")
    viol = None
    if size is not None:
        leaf, viol = _up.upsampled_argmax(logits, hierarchy, size, bool(align_corners), name, violations)
    elif violations:
        raise ValueError("violations=True needs size=(H, W)")
    else:
        leaf = impl.hierarchical_argmax(logits, hierarchy)
    extra = []
    if levels:
        table = hierarchy.tables(leaf.device).level_map
        extra.append([table[lvl][leaf] for lvl in range(hierarchy.height)])
    if violations:
        extra.append(viol)
    return (leaf, *extra) if extra else leaf


def project_to_level(leaf_map: torch.Tensor, hierarchy: ClassHierarchy, level: int, ignore_index: int = 255) -> torch.Tensor:
    """Channel ids -> their ancestor at ``level`` (1 = coarsest; shallower nodes stay); ignore_index kept."""
    _checks.level_inputs(leaf_map, hierarchy, level, ignore_index)
    return backends.resolve("reference", leaf_map.device, "project_to_level").project_to_level(
        leaf_map, hierarchy, int(level), int(ignore_index))


def sample_triplets(
    target: torch.Tensor,
    hierarchy: ClassHierarchy,
    num_triplets: int = 200,
    seed: int = 0,
    ignore_index: int = 255,
    mode: str = "tree",
    backend: str = "auto",
    validate: bool = True,
    partial_labels: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor, positive, negative) flat pixel indices, identical on every backend for the same seed;
    ``partial_labels``: inner-node pixels are left out."""
    target, num_triplets, seed = _checks.sampling_inputs(target, hierarchy, num_triplets, seed, ignore_index, mode,
                                                         validate, partial_labels)
    impl = backends.resolve(backend, target.device, "sample_triplets_padded")
    table, count = impl.sample_triplets_padded(target, hierarchy, num_triplets, seed, int(ignore_index), mode)
    table = table[: int(count)]
    return table[:, 0], table[:, 1], table[:, 2]


def tree_triplet_loss(
    embeddings: torch.Tensor,
    target: torch.Tensor,
    hierarchy: ClassHierarchy,
    num_triplets: int = 200,
    margin_eps: float = 0.1,
    margin_scale: float = 0.5,
    hierarchy_margin: bool = True,
    distance: str = "cosine",
    seed: int = 0,
    ignore_index: int = 255,
    backend: str = "auto",
    validate: bool = True,
    mode: str = "tree",
    nan_policy: str = "raise",
    partial_labels: bool = False,
) -> torch.Tensor:
    """Tree-triplet loss (Eq. 7-8): mean of ``max(d(a,p) - d(a,n) + m, 0)`` over sampled triplets (0 if none).
    ``partial_labels``: pixels labelled at an inner node take part in no triplet (README "Partial labels").

    embeddings (B, E, h, w) | (N, E) float; target (B, h, w) | (N,) leaf ids at the embedding resolution.
    ``d`` = cosine distance ``(1 - cos) / 2`` or the Euclidean distance ``|x - y|``;
    ``m = margin_eps + margin_scale * (psi(y_a,y_n) - psi(y_a,y_p)) / (2 D)``, or ``margin_eps`` with
    ``hierarchy_margin=False`` (the constant-margin ablation). ``mode="vanilla"`` gives the hierarchy-agnostic
    triplet loss (same leaf = positive). A NaN in an embedding a sampled triplet uses makes the loss NaN;
    ``nan_policy`` as for the segmentation loss. Triplets: :func:`sample_triplets`.
    """
    target, num_triplets, seed = _checks.triplet_inputs(embeddings, target, hierarchy, num_triplets, seed,
                                                        ignore_index, distance, mode, validate, partial_labels)
    _checks.check_nan_policy(nan_policy)
    margin_eps, margin_scale = _checks.check_margins(margin_eps, margin_scale)
    impl = backends.resolve(backend, embeddings.device, "tree_triplet_loss", embeddings.dtype)
    loss = impl.tree_triplet_loss(embeddings, target, hierarchy, num_triplets, margin_eps,
                                  margin_scale, bool(hierarchy_margin), distance, seed,
                                  int(ignore_index), mode)
    if nan_policy == "raise":
        _checks.raise_on_nan(loss, "tree-triplet loss")
    return loss


def vanilla_triplet_loss(embeddings, target, hierarchy, num_triplets=200, margin=0.1, distance="cosine", seed=0,
                         ignore_index=255, backend="auto", validate=True, nan_policy="raise", partial_labels=False):
    """Hierarchy-agnostic triplet loss (same leaf = positive, constant margin)."""
    return tree_triplet_loss(embeddings, target, hierarchy, num_triplets, margin, 0.0, False, distance, seed,
                             ignore_index, backend, validate, mode="vanilla", nan_policy=nan_policy,
                             partial_labels=partial_labels)


def _reference_loss(op: str, logits, target, hierarchy, ignore_index, reduction, backend, validate, nan_policy,
                    upsample, align_corners, partial_labels, **extra) -> torch.Tensor:
    """An ablation loss (the reference backend only): its inputs validated, the backend's function, the NaN policy;
    ``reduction`` None: the op returns a scalar mean and takes no reduction."""
    target = _checks.loss_inputs(logits, target, hierarchy, ignore_index, reduction or "mean", validate, upsample,
                                 align_corners, partial_labels)
    if reduction is not None:
        extra["reduction"] = reduction
    _checks.check_nan_policy(nan_policy)
    impl = backends.resolve(backend, logits.device, op, logits.dtype, hierarchy.num_channels)
    loss = getattr(impl, op)(_interpolated(logits, target, upsample, align_corners), target, hierarchy,
                             ignore_index=int(ignore_index), partial_labels=bool(partial_labels), **extra)
    if nan_policy == "raise":
        _checks.raise_on_nan(loss, op.replace("_", " "))
    return loss


def focal_bce_loss(logits, target, hierarchy, gamma=2.0, ignore_index=255, reduction="mean", backend="auto",
                   validate=True, nan_policy="raise", upsample=None, align_corners=False, partial_labels=False):
    """Focal BCE over all nodes (no tree-min), labels l_v = v in A(target), summed over nodes; partial labels: no
    term for the strict descendants of the label. Reference backend only; arguments as
    :func:`focal_tree_min_loss`."""
    return _reference_loss("focal_bce_loss", logits, target, hierarchy, ignore_index, reduction, backend, validate,
                           nan_policy, upsample, align_corners, partial_labels, gamma=_checks.check_gamma(gamma))


def bce_loss(logits, target, hierarchy, ignore_index=255, reduction="mean", backend="auto", validate=True,
             nan_policy="raise", upsample=None, align_corners=False, partial_labels=False):
    """Binary cross-entropy over all nodes (Eq. 2): :func:`focal_bce_loss` with gamma = 0."""
    return focal_bce_loss(logits, target, hierarchy, 0.0, ignore_index, reduction, backend, validate, nan_policy,
                          upsample, align_corners, partial_labels)


def leaf_cross_entropy(logits, target, hierarchy, ignore_index=255, reduction="mean", backend="auto", validate=True,
                       nan_policy="raise", upsample=None, align_corners=False, partial_labels=False):
    """Categorical cross-entropy over the leaf channels only (Eq. 1, the flat baseline); partial labels: the
    probability of the label's subtree. Reference backend only."""
    return _reference_loss("leaf_cross_entropy", logits, target, hierarchy, ignore_index, reduction, backend,
                           validate, nan_policy, upsample, align_corners, partial_labels)


def released_hiera_loss(logits, target, hierarchy, ignore_index=255, backend="auto", validate=True,
                        nan_policy="raise", upsample=None, align_corners=False, partial_labels=False, tm_weight=5.0,
                        eps=1e-8, void_in_ce=False):
    """The segmentation objective of the authors' released code (HieraSeg ``HieraTripletLossCityscape``) for any
    tree, a scalar: see :func:`hssn_kernels.reference._released_hiera_loss` for the formula and ``void_in_ce``.
    Reference backend only."""
    return _reference_loss("released_hiera_loss", logits, target, hierarchy, ignore_index, None, backend,
                           validate, nan_policy, upsample, align_corners, partial_labels, tm_weight=float(tm_weight),
                           eps=float(eps), void_in_ce=bool(void_in_ce))
