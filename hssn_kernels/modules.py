"""``nn.Module`` wrappers of the HSSN losses, drop-in replacements of the functional ops."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from . import functional as Fn
from .hierarchy import ClassHierarchy

SEGMENTATION_LOSSES = {
    "ftm": lambda z, t, h, gamma, ii, backend, up, checks: Fn.focal_tree_min_loss(
        z, t, h, gamma, ii, "mean", backend, **checks, **up),
    "tm": lambda z, t, h, gamma, ii, backend, up, checks: Fn.focal_tree_min_loss(
        z, t, h, 0.0, ii, "mean", backend, **checks, **up),
    "bce": lambda z, t, h, gamma, ii, backend, up, checks: Fn.bce_loss(z, t, h, ii, "mean", **checks, **up),
    "focal": lambda z, t, h, gamma, ii, backend, up, checks: Fn.focal_bce_loss(z, t, h, gamma, ii, "mean", **checks, **up),
    "cce": lambda z, t, h, gamma, ii, backend, up, checks: Fn.leaf_cross_entropy(z, t, h, ii, "mean", **checks, **up),
    "released": lambda z, t, h, gamma, ii, backend, up, checks: Fn.released_hiera_loss(z, t, h, ii, **checks, **up),
}
"""Table 6 of the paper: focal tree-min, tree-min, BCE, focal BCE, leaf cross-entropy; and ``released``, the
objective of the authors' released code (:func:`hssn_kernels.released_hiera_loss`). The ablation losses (all but
ftm / tm) have only the reference backend: they run it whatever ``backend`` the tree-min and triplet losses use.
``up`` = ``{"upsample", "align_corners"}``, ``checks`` = ``{"validate", "nan_policy", "partial_labels"}``."""

TRIPLET_VARIANTS = {
    "hierarchy": dict(mode="tree", hierarchy_margin=True),
    "constant": dict(mode="tree", hierarchy_margin=False),
    "vanilla": dict(mode="vanilla", hierarchy_margin=False),
}
"""Table 8 of the paper: tree-triplet with hierarchy margin, with constant margin, vanilla triplet."""


class FocalTreeMinLoss(nn.Module):
    """Focal tree-min loss (Eq. 6) as a module; ``forward(logits, target)``. ``upsample="bilinear"``: logits
    at any resolution, upsampled inside the loss (see :func:`hssn_kernels.focal_tree_min_loss`)."""

    def __init__(self, hierarchy: ClassHierarchy, gamma: float = 2.0, ignore_index: int = 255,
                 reduction: str = "mean", backend: str = "auto", upsample: str | None = None,
                 align_corners: bool = False, partial_labels: bool = False):
        super().__init__()
        self.hierarchy, self.gamma, self.ignore_index = hierarchy, gamma, ignore_index
        self.reduction, self.backend = reduction, backend
        self.upsample, self.align_corners, self.partial_labels = upsample, align_corners, partial_labels

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return Fn.focal_tree_min_loss(logits, target, self.hierarchy, self.gamma, self.ignore_index,
                                      self.reduction, self.backend, upsample=self.upsample,
                                      align_corners=self.align_corners, partial_labels=self.partial_labels)


def nearest_resize(target: torch.Tensor, size) -> torch.Tensor:
    """(B, H, W) integer labels resized to ``size`` = (h, w) by the pixels ``F.interpolate(mode="nearest")``
    picks, gathered in the labels' own dtype (through float32, ids above 2**24 would change)."""
    def picks(n_in: int, n_out: int) -> torch.Tensor:
        grid = torch.arange(n_in, dtype=torch.float32, device=target.device)[None, None]
        return F.interpolate(grid, size=n_out, mode="nearest")[0, 0].long()  # exact: n_in < 2**24 pixels
    return target[:, picks(target.shape[-2], size[0])][:, :, picks(target.shape[-1], size[1])]


class TreeTripletLoss(nn.Module):
    """Tree-triplet loss (Eq. 7-8) as a module; ``forward(embeddings, target, seed=0)``.

    ``target`` may be at a higher resolution than the embeddings: it is resized with nearest.
    """

    def __init__(self, hierarchy: ClassHierarchy, num_triplets: int = 200, margin_eps: float = 0.1,
                 margin_scale: float = 0.5, variant: str = "hierarchy", distance: str = "cosine",
                 ignore_index: int = 255, backend: str = "auto", validate: bool = True, nan_policy: str = "raise",
                 partial_labels: bool = False):
        super().__init__()
        self.validate, self.nan_policy, self.partial_labels = validate, nan_policy, partial_labels
        if variant not in TRIPLET_VARIANTS:
            raise ValueError(f"triplet variant must be one of {tuple(TRIPLET_VARIANTS)}, got {variant!r}")
        self.hierarchy, self.num_triplets = hierarchy, num_triplets
        self.margin_eps, self.margin_scale, self.variant = margin_eps, margin_scale, variant
        self.distance, self.ignore_index, self.backend = distance, ignore_index, backend

    def forward(self, embeddings: torch.Tensor, target: torch.Tensor, seed: int = 0) -> torch.Tensor:
        if embeddings.dim() == 4 and target.shape[-2:] != embeddings.shape[-2:]:
            target = nearest_resize(target, embeddings.shape[-2:])
        opts = TRIPLET_VARIANTS[self.variant]
        return Fn.tree_triplet_loss(embeddings, target, self.hierarchy, self.num_triplets, self.margin_eps,
                                    self.margin_scale, opts["hierarchy_margin"], self.distance, seed,
                                    self.ignore_index, self.backend, self.validate, mode=opts["mode"],
                                    nan_policy=self.nan_policy, partial_labels=self.partial_labels)


def cosine_beta(step: int, total_steps: int, beta_max: float = 0.5) -> float:
    """beta rising from 0 to ``beta_max`` on a half cosine over ``total_steps`` (then constant)."""
    if total_steps <= 0:
        return beta_max
    frac = min(max(step, 0) / total_steps, 1.0)
    return beta_max * (1.0 - math.cos(math.pi * frac)) / 2.0


class HierarchicalLoss(nn.Module):
    """The HSSN objective ``L_seg + beta(step) * L_TT``.

    ``forward(logits, target, embeddings=None, step=0)`` returns a dict with ``"loss"`` (the total),
    ``"seg"``, ``"triplet"`` and ``"beta"``. ``logits`` (B, C, H, W) at the label resolution, or at any
    resolution with ``upsample="bilinear"`` (upsampled inside the loss, as the paper upsamples before it);
    ``embeddings`` (B, E, h, w) at any resolution. ``validate=False`` skips the label check and
    ``nan_policy="propagate"`` the NaN check (both host syncs; the trainer validates labels in the dataset).
    ``partial_labels=True``: targets may be inner nodes (every segmentation loss and the triplet loss follow the
    rules of README "Partial labels").
    ``segmentation``: "ftm" | "tm" | "bce" | "focal" | "cce" | "released"; ``triplet``: "hierarchy" | "constant" |
    "vanilla" | None; ``distance``: "cosine" | "euclidean".
    """

    def __init__(self, hierarchy: ClassHierarchy, segmentation: str = "ftm", gamma: float = 2.0,
                 triplet: str | None = "hierarchy", num_triplets: int = 200, margin_eps: float = 0.1,
                 margin_scale: float = 0.5, distance: str = "cosine", beta_max: float = 0.5,
                 beta_steps: int = 1, ignore_index: int = 255, backend: str = "auto", upsample: str | None = None,
                 align_corners: bool = False, validate: bool = True, nan_policy: str = "raise",
                 partial_labels: bool = False):
        super().__init__()
        self.up = {"upsample": upsample, "align_corners": align_corners}
        self.checks = {"validate": validate, "nan_policy": nan_policy, "partial_labels": bool(partial_labels)}
        if segmentation not in SEGMENTATION_LOSSES:
            raise ValueError(f"segmentation loss must be one of {tuple(SEGMENTATION_LOSSES)}, got {segmentation!r}")
        self.hierarchy, self.segmentation, self.gamma = hierarchy, segmentation, gamma
        self.ignore_index, self.backend = ignore_index, backend
        self.beta_max, self.beta_steps = beta_max, beta_steps
        self.triplet = None if triplet is None else TreeTripletLoss(
            hierarchy, num_triplets, margin_eps, margin_scale, triplet, distance, ignore_index, backend, validate,
            nan_policy, partial_labels)

    def segmentation_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return SEGMENTATION_LOSSES[self.segmentation](logits, target, self.hierarchy, self.gamma,
                                                      self.ignore_index, self.backend, self.up, self.checks)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, embeddings: torch.Tensor | None = None,
                step: int = 0) -> dict[str, torch.Tensor | float]:
        step = _checks.check_int(step, "step")
        seg = self.segmentation_loss(logits, target)
        beta = cosine_beta(step, self.beta_steps, self.beta_max)
        if self.triplet is None or embeddings is None:
            trip = seg.new_zeros(())
        else:
            trip = self.triplet(embeddings, target, seed=step % 2**32)
        return {"loss": seg + beta * trip, "seg": seg, "triplet": trip, "beta": beta}
