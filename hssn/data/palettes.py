"""Colours for label maps: per-dataset leaf palettes and derived colours for inner nodes.

Leaf palettes (uint8 (L, 3)) come from the tree data files (Cityscapes official colours, LIP's
visualisation palette, the PASCAL VOC colour map for PASCAL-Person-Part) or, for Mapillary, from the
dataset's ``config_v2.0.json``. An inner node's colour is the rounded mean of its descendant leaves'
colours, so one-child chains keep their leaf's colour and sibling groups stay distinguishable.
"""
from __future__ import annotations

import torch

from hssn.errors import UserError
from hssn.hierarchies.files import voc_colormap  # noqa: F401  (re-exported: the dependency runs data -> hierarchies)
from hssn_kernels import ClassHierarchy


def leaf_palette(name: str) -> torch.Tensor:
    """(L, 3) uint8 leaf colours of a shipped dataset tree (see :mod:`hssn.hierarchies`)."""
    from hssn import hierarchies

    return torch.tensor(hierarchies.metadata(name)["leaf_colors"], dtype=torch.uint8)


def node_palette(hierarchy: ClassHierarchy, leaf_colors: torch.Tensor) -> torch.Tensor:
    """(C, 3) uint8 colours of every channel: leaves keep ``leaf_colors`` (L, 3), inner nodes take the
    rounded mean of their descendant leaves."""
    leaf_colors = torch.as_tensor(leaf_colors)
    if leaf_colors.shape != (hierarchy.num_leaves, 3):
        raise UserError(f"leaf_colors must be ({hierarchy.num_leaves}, 3), got {tuple(leaf_colors.shape)}")
    position = {c: i for i, c in enumerate(hierarchy.leaves)}
    out = torch.empty((hierarchy.num_channels, 3), dtype=torch.uint8)
    for c in range(hierarchy.num_channels):
        rows = [position[d] for d in hierarchy.descendants(c) if d in position]
        out[c] = leaf_colors[rows].double().mean(0).round().to(torch.uint8)
    return out


def colorize(label: torch.Tensor, colors: torch.Tensor, ignore_index: int = 255,
             ignore_color: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """(H, W) int channel ids -> (H, W, 3) uint8 image; ``ignore_index`` pixels get ``ignore_color``."""
    label = torch.as_tensor(label).long()
    valid = label != ignore_index
    if valid.any() and (label[valid].min() < 0 or label[valid].max() >= len(colors)):
        raise UserError(f"label ids outside [0, {len(colors) - 1}] and not ignore_index={ignore_index}")
    out = torch.empty((*label.shape, 3), dtype=torch.uint8)
    out[:] = torch.tensor(ignore_color, dtype=torch.uint8)
    out[valid] = torch.as_tensor(colors, dtype=torch.uint8)[label[valid]]
    return out


def colorize_level(label: torch.Tensor, hierarchy: ClassHierarchy, leaf_colors: torch.Tensor, level: int,
                   ignore_index: int = 255) -> torch.Tensor:
    """(H, W) leaf ids -> (H, W, 3) uint8 colours of their ancestors at ``level`` (1 = coarsest)."""
    label = torch.as_tensor(label).long()
    to_level = hierarchy.leaf_to_level(level)
    valid = label != ignore_index
    mapped = torch.full_like(label, ignore_index)
    mapped[valid] = to_level[label[valid]]
    return colorize(mapped, node_palette(hierarchy, leaf_colors), ignore_index)
