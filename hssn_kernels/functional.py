"""The functional API: validated inputs, then the op of the chosen backend.

``backend``: "reference" | "triton" | "cuda" | "cpu" | "auto" (native CPU kernels for CPU tensors, the
fastest fast backend for CUDA tensors per ``hssn_kernels/gpu_table.json``, predicted or measured, the reference
as a fallback).
``validate=True`` checks label values (one host sync); ``nan_policy="raise"`` turns a NaN loss into a
``ValueError`` (one sync on the loss); both are skipped while ``torch.compile`` traces.
"""
from __future__ import annotations

import torch

from . import _checks, backends
from . import reference as _ref
from . import upsample as _up
from .hierarchy import ClassHierarchy


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
    target = _ref.loss_inputs(logits, target, hierarchy, ignore_index, reduction, False, upsample,
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
    if upsample is None or tuple(logits.shape[-2:]) == tuple(target.shape[-2:]):
        loss = impl.focal_tree_min_loss(logits, target, hierarchy, float(gamma), int(ignore_index), reduction, partial)
    elif name == "reference":
        loss = _ref._focal_tree_min_loss(logits, target, hierarchy, float(gamma), int(ignore_index), reduction,
                                         partial, upsample, align_corners)
    else:
        red = _checks.REDUCTIONS.index(reduction)
        compute_grad = torch.is_grad_enabled() and logits.requires_grad and red != 0
        loss, _ = _up.upsampled_ftm(logits, target, list(hierarchy.parents), bool(align_corners), name, float(gamma),
                                    int(ignore_index), red, compute_grad, partial)
        loss = loss.to(logits.dtype)
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
    size = _ref.argmax_inputs(logits, hierarchy, size, align_corners)
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
    return _ref.project_to_level(leaf_map, hierarchy, level, ignore_index)


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
    target, num_triplets, seed = _ref.sampling_inputs(target, hierarchy, num_triplets, seed, ignore_index, mode,
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
    """Tree-triplet loss (Eq. 7-8); see :func:`hssn_kernels.reference.tree_triplet_loss`. ``partial_labels``:
    pixels labelled at an inner node take part in no triplet (README "Partial labels").

    embeddings (B, E, h, w) | (N, E) float; target (B, h, w) | (N,) leaf ids at the embedding resolution.
    ``mode="vanilla"`` gives the hierarchy-agnostic triplet loss (same leaf = positive). A NaN in an
    embedding a sampled triplet uses makes the loss NaN; ``nan_policy`` as for the segmentation loss.
    """
    target, num_triplets, seed = _ref.triplet_inputs(embeddings, target, hierarchy, num_triplets, seed,
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


def _reference_only(fn):
    """An ablation loss with only the reference backend; ``upsample=`` computes the F.interpolate expression."""
    def wrapper(logits, target, hierarchy, *args, backend="auto", **kwargs):
        if backend not in ("auto", "reference"):
            raise RuntimeError(f"{fn.__name__} has only the 'reference' backend, got backend={backend!r}")
        return fn(logits, target, hierarchy, *args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


bce_loss = _reference_only(_ref.bce_loss)
focal_bce_loss = _reference_only(_ref.focal_bce_loss)
leaf_cross_entropy = _reference_only(_ref.leaf_cross_entropy)
released_hiera_loss = _reference_only(_ref.released_hiera_loss)
