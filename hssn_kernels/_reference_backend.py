"""The reference ops behind the backend interface of :mod:`hssn_kernels.backends` (the unchecked internals: validation done upstream)."""
from __future__ import annotations

import torch

from . import reference as _ref


def unavailable_reason(device: torch.device) -> str | None:
    return None


def focal_tree_min_loss(logits, target, hierarchy, gamma, ignore_index, reduction, partial_labels=False):
    return _ref._focal_tree_min_loss(logits, target, hierarchy, gamma, ignore_index, reduction,
                                     partial_labels=partial_labels)


hierarchical_argmax = _ref._hierarchical_argmax
sample_triplets_padded = _ref._sample_triplets_padded
tree_triplet_loss = _ref._triplet_loss
