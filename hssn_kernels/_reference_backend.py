"""The reference ops behind the backend interface of :mod:`hssn_kernels.backends` (validation done upstream)."""
from __future__ import annotations

import torch

from . import reference as _ref


def unavailable_reason(device: torch.device) -> str | None:
    return None


def focal_tree_min_loss(logits, target, hierarchy, gamma, ignore_index, reduction, partial_labels=False):
    return _ref.focal_tree_min_loss(logits, target, hierarchy, gamma, ignore_index, reduction, validate=False,
                                    partial_labels=partial_labels)


def hierarchical_argmax(logits, hierarchy):
    return _ref.hierarchical_argmax(logits, hierarchy)


sample_triplets_padded = _ref.sample_triplets_padded


def tree_triplet_loss(embeddings, target, hierarchy, num_triplets, margin_eps, margin_scale, hierarchy_margin,
                      distance, seed, ignore_index, mode):
    return _ref._triplet_loss(embeddings, target, hierarchy, num_triplets, margin_eps, margin_scale,
                              hierarchy_margin, distance, seed, ignore_index, mode, False)
