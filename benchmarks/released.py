"""The HSSN authors' released focal tree-min loss on the Cityscapes tree, for timing beside ours.

Written here from the definition of ``losses_hiera_focal`` in the authors' code (HieraSeg, mmseg
``hiera_triplet_loss_cityscape.py``; no mmcv), in its plain-PyTorch form and cost: sigmoid of all logits,
one-hot targets, one slice-max per group and one min per leaf channel, focal terms over the dense
``(B, C, H, W)`` maps, each level's sum divided by its node count, times 5. A two-level tree only (the
leaves in contiguous channel ranges per group, the groups' channels after them in group order), as theirs.
The semantics differ from :func:`hssn_kernels.focal_tree_min_loss` (per-level means, ``eps`` in the logs,
the factor 5), so the benchmark reports its time, not its error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hssn_kernels import ClassHierarchy

EPS = 1e-8


def groups_of(h: ClassHierarchy) -> list[tuple[int, int]] | None:
    """The leaf channel range of each top-level node, in the node order the released code needs, or None
    when ``h`` is not such a two-level tree."""
    tops = [c for c in range(h.num_channels) if h.parents[c] < 0]
    num_leaves = h.num_channels - len(tops)
    if h.height != 2 or tops != list(range(num_leaves, h.num_channels)):
        return None
    groups, lo = [], 0
    for top in tops:
        hi = lo
        while hi < num_leaves and h.parents[hi] == top:
            hi += 1
        if hi == lo:
            return None
        groups.append((lo, hi))
        lo = hi
    return groups if lo == num_leaves else None


def released_focal_tree_min(logits: torch.Tensor, target: torch.Tensor, groups: list[tuple[int, int]],
                            gamma: float = 2.0, ignore_index: int = 255) -> torch.Tensor:
    """Scalar loss. logits (B, C, H, W) float; target (B, H, W) leaf ids or ignore_index (not modified)."""
    num_leaves, num_top = groups[-1][1], len(groups)
    s = torch.sigmoid(logits.float())
    void = target == ignore_index
    leaf_t = torch.where(void, torch.zeros_like(target), target)
    top_t = torch.zeros_like(leaf_t)
    for g, (lo, hi) in enumerate(groups):
        top_t[(leaf_t >= lo) & (leaf_t < hi)] = g
    one_leaf = F.one_hot(leaf_t, num_leaves).permute(0, 3, 1, 2)
    one_top = F.one_hot(top_t, num_top).permute(0, 3, 1, 2)
    leaf_max = s[:, :num_leaves]  # a leaf's subtree is itself
    top_max = torch.zeros_like(s[:, num_leaves:])
    for g, (lo, hi) in enumerate(groups):
        top_max[:, g:g + 1] = torch.cat([s[:, lo:hi], s[:, num_leaves + g:num_leaves + g + 1]], 1).max(1, True)[0]
    top_min = s[:, num_leaves:]  # a root's path is itself
    leaf_min = s[:, :num_leaves].clone()
    for g, (lo, hi) in enumerate(groups):
        for c in range(lo, hi):  # one min per leaf channel, as the released loop
            leaf_min[:, c:c + 1] = torch.cat([s[:, c:c + 1], top_min[:, g:g + 1]], 1).min(1, True)[0]
    valid = (~void).unsqueeze(1)
    num_valid = valid.sum()

    def level(one, low, high, nodes):
        return ((-one * (1 - low) ** gamma * torch.log(low + EPS) - (1 - one) * high ** gamma * torch.log(1 - high + EPS))
                * valid).sum() / num_valid / nodes

    return 5 * (level(one_leaf, leaf_min, leaf_max, num_leaves) + level(one_top, top_min, top_max, num_top))
