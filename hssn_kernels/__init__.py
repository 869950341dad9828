"""hssn_kernels: the class hierarchy and the HSSN ops (reference, Triton, native CPU/CUDA)."""
from .hierarchy import MAX_CHANNELS, MAX_DEPTH, ClassHierarchy, HierarchyTables

__all__ = ["ClassHierarchy", "HierarchyTables", "MAX_CHANNELS", "MAX_DEPTH"]
