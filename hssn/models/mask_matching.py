"""MaskFormer's set losses with hierarchical (sigmoid, all-node) query classes.

Ground truth: one segment per leaf class present in an image; its class vector is the leaf's per-node
labels ``l_v`` (1 on the leaf and its ancestors). Queries are matched to segments by the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``) on the cost
``cls_weight * BCE(class) + dice_weight * dice + focal_weight * focal``; matched queries get the
mask losses, every query gets the class BCE (target all-zero, weight ``no_object_weight``, when
unmatched). Mask terms are computed at the mask resolution: the target is resized to it by
nearest-neighbour sampling, ignored pixels are left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hssn_kernels import ClassHierarchy


@dataclass(frozen=True)
class MaskLossWeights:
    """Loss and matching-cost weights (MaskFormer's defaults: class 1, dice 1, focal 20, no-object 0.1)."""

    cls: float = 1.0
    dice: float = 1.0
    focal: float = 20.0
    no_object: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass(frozen=True)
class Segments:
    """Ground-truth segments of one image: ``leaf`` (G,) int64, ``classes`` (G, C) float 0/1,
    ``masks`` (G, P) float 0/1 over the P mask pixels, ``valid`` (P,) bool (not ignored)."""

    leaf: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor


def segments_from_target(target: torch.Tensor, hierarchy: ClassHierarchy, ignore_index: int = 255) -> Segments:
    """Split a ``(h, w)`` int64 leaf-id map into per-leaf segments."""
    flat = target.reshape(-1)
    valid = flat != ignore_index
    leaf = torch.unique(flat[valid])
    tables = hierarchy.tables(target.device)
    if leaf.numel() and (leaf.min() < 0 or leaf.max() >= hierarchy.num_channels or not tables.is_leaf[leaf].all()):
        bad = [int(v) for v in leaf if not (0 <= v < hierarchy.num_channels and hierarchy.is_leaf(int(v)))]
        raise ValueError(f"target holds ids {bad[:10]} that are not leaves of the hierarchy (ignore_index={ignore_index})")
    masks = (flat[None, :] == leaf[:, None]).float()
    classes = tables.is_ancestor[leaf].float()
    return Segments(leaf=leaf, classes=classes, masks=masks, valid=valid)


def _focal_terms(logits: torch.Tensor, w: MaskLossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element sigmoid focal loss against target 1 and against target 0 (RetinaNet's alpha form)."""
    p = logits.sigmoid()
    pos = w.focal_alpha * (1 - p) ** w.focal_gamma * F.softplus(-logits)
    neg = (1 - w.focal_alpha) * p**w.focal_gamma * F.softplus(logits)
    return pos, neg


def _pair_costs(cls_logits, mask_logits, seg: Segments, w: MaskLossWeights) -> tuple[torch.Tensor, ...]:
    """(Q, G) class BCE, dice and focal costs between every query and every segment."""
    c = cls_logits.shape[-1]
    cost_cls = -(F.logsigmoid(cls_logits) @ seg.classes.t() + F.logsigmoid(-cls_logits) @ (1 - seg.classes).t()) / c
    m = mask_logits[:, seg.valid]
    y = seg.masks[:, seg.valid]
    n = max(m.shape[1], 1)
    prob = m.sigmoid()
    dice = 1 - (2 * prob @ y.t() + 1) / (prob.sum(1)[:, None] + y.sum(1)[None, :] + 1)
    pos, neg = _focal_terms(m, w)
    focal = (pos @ y.t() + neg @ (1 - y).t()) / n
    return cost_cls, dice, focal


@torch.no_grad()
def hungarian_match(
    cls_logits: torch.Tensor, mask_logits: torch.Tensor, seg: Segments, weights: MaskLossWeights = MaskLossWeights()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal one-to-one query/segment assignment for one image.

    cls_logits (Q, C), mask_logits (Q, P). Returns ``(query_idx, segment_idx)``, int64 of length
    ``min(Q, G)`` on ``cls_logits.device``, minimising the summed weighted cost.
    """
    from scipy.optimize import linear_sum_assignment

    empty = torch.zeros(0, dtype=torch.long, device=cls_logits.device)
    if seg.leaf.numel() == 0:
        return empty, empty
    cost_cls, dice, focal = _pair_costs(cls_logits.float(), mask_logits.float(), seg, weights)
    cost = weights.cls * cost_cls + weights.dice * dice + weights.focal * focal
    if not torch.isfinite(cost).all():
        raise ValueError("MaskFormer predictions are not finite; cannot match queries to segments")
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    as_long = dict(dtype=torch.long, device=cls_logits.device)
    return torch.as_tensor(rows, **as_long), torch.as_tensor(cols, **as_long)


def maskformer_losses(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    target: torch.Tensor,
    hierarchy: ClassHierarchy,
    weights: MaskLossWeights = MaskLossWeights(),
    ignore_index: int = 255,
) -> dict[str, torch.Tensor]:
    """Weighted MaskFormer losses for a batch.

    pred_logits (B, Q, C), pred_masks (B, Q, h, w) logits; target (B, H, W) int64 leaf ids or
    ``ignore_index``. Returns ``{"mask_dice", "mask_focal", "query_cls"}`` (scalars, float32), each
    already multiplied by its weight; dice and focal are averaged over the matched segments of the
    batch, the class BCE over nodes and (weighted) queries.
    """
    b, q, c = pred_logits.shape
    h, w = pred_masks.shape[-2:]
    small = F.interpolate(target[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    cls_logits, mask_logits = pred_logits.float(), pred_masks.float().flatten(2)
    cls_target = torch.zeros_like(cls_logits)
    cls_weight = torch.full((b, q), weights.no_object, device=cls_logits.device)
    dice_sum = focal_sum = mask_logits.sum() * 0
    num_masks = 0
    for i in range(b):
        seg = segments_from_target(small[i], hierarchy, ignore_index)
        qi, gi = hungarian_match(cls_logits[i].detach(), mask_logits[i].detach(), seg, weights)
        if qi.numel() == 0:
            continue
        cls_target[i, qi] = seg.classes[gi]
        cls_weight[i, qi] = 1.0
        m = mask_logits[i, qi][:, seg.valid]
        y = seg.masks[gi][:, seg.valid]
        prob = m.sigmoid()
        dice_sum = dice_sum + (1 - (2 * (prob * y).sum(1) + 1) / (prob.sum(1) + y.sum(1) + 1)).sum()
        pos, neg = _focal_terms(m, weights)
        focal_sum = focal_sum + (pos * y + neg * (1 - y)).mean(1).sum()
        num_masks += qi.numel()
    bce = F.binary_cross_entropy_with_logits(cls_logits, cls_target, reduction="none").mean(-1)
    num_masks = max(num_masks, 1)
    return {
        "mask_dice": weights.dice * dice_sum / num_masks,
        "mask_focal": weights.focal * focal_sum / num_masks,
        "query_cls": weights.cls * (bce * cls_weight).sum() / cls_weight.sum(),
    }
