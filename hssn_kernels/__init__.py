"""hssn_kernels: the class hierarchy and the HSSN ops (reference, Triton, native CPU/CUDA).

``import hssn_kernels as hk``; ``hk.focal_tree_min_loss(logits, target, hierarchy, backend="auto")``. The ops are
:mod:`hssn_kernels.functional` (one public function per op, ``backend=`` "reference" | "triton" | "cuda" | "cpu" |
"auto"); :mod:`hssn_kernels.reference` is the readable pure-PyTorch specification behind ``backend="reference"``.
"""
from . import backends, functional
from ._checks import leaf_labels_only
from .functional import *  # noqa: F401,F403  (the ops, functional.__all__: a new op is exported by being listed there)
from .hierarchy import MAX_CHANNELS, MAX_DEPTH, ClassHierarchy, HierarchyTables
from .modules import FocalTreeMinLoss, HierarchicalLoss, TreeTripletLoss, cosine_beta

backends.preload()

__all__ = [
    "ClassHierarchy", "HierarchyTables", "MAX_CHANNELS", "MAX_DEPTH", *functional.__all__, "leaf_labels_only",
    "FocalTreeMinLoss", "TreeTripletLoss", "HierarchicalLoss", "cosine_beta", "backends",
]
