"""hssn_kernels: the class hierarchy and the HSSN ops (reference, Triton, native CPU/CUDA).

``import hssn_kernels as hk``; ``hk.focal_tree_min_loss(logits, target, hierarchy, backend="auto")``.
``hssn_kernels.reference`` is the pure-PyTorch oracle.
"""
from . import backends, reference
from .functional import (
    bce_loss,
    focal_bce_loss,
    focal_tree_min_loss,
    hierarchical_argmax,
    leaf_cross_entropy,
    project_to_level,
    released_hiera_loss,
    sample_triplets,
    tree_min_loss,
    tree_triplet_loss,
    vanilla_triplet_loss,
)
from ._checks import leaf_labels_only
from .hierarchy import MAX_CHANNELS, MAX_DEPTH, ClassHierarchy, HierarchyTables
from .modules import FocalTreeMinLoss, HierarchicalLoss, TreeTripletLoss, cosine_beta

backends.preload()

__all__ = [
    "ClassHierarchy", "HierarchyTables", "MAX_CHANNELS", "MAX_DEPTH",
    "focal_tree_min_loss", "tree_min_loss", "bce_loss", "focal_bce_loss", "leaf_cross_entropy",
    "released_hiera_loss", "hierarchical_argmax", "project_to_level", "sample_triplets", "tree_triplet_loss", "vanilla_triplet_loss",
    "leaf_labels_only", "FocalTreeMinLoss", "TreeTripletLoss", "HierarchicalLoss", "cosine_beta", "backends", "reference",
]
