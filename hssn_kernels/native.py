"""The "cpu" and "cuda" backends: the compiled extension ``hssn_kernels._C`` (csrc/) behind the backend
interface of :mod:`hssn_kernels.backends`, plus the autograd formulas and fake (meta) kernels of its ops.

Ops (``torch.ops.hssn.*``, schemas in csrc/ops/*.cpp): ``ftm_forward``, ``ftm_backward``,
``path_argmax``, ``sample_triplets``, ``triplet_forward``. Tables come from ``hierarchy.tables(device)``.
Importing this module never fails: when the extension is missing or was built against another torch,
:func:`unavailable_reason` says why and how to rebuild.
"""
from __future__ import annotations

import functools

import torch

from . import _checks
from ._autograd import (fake_fused_loss, fake_triplet_loss, fused_loss, loss_dtype, register_fused_loss,
                        register_triplet_loss, triplet_loss)
from .backends import register
from .hierarchy import ClassHierarchy

REBUILD = 'rebuild it with: pip install --no-build-isolation -e ".[test]"'


def _load():
    """(module, None) or (None, why the extension cannot be used)."""
    try:
        from . import _C
    except ImportError as err:
        return None, (f"the native extension hssn_kernels._C is not built or does not load ({err}); "
                      f"with torch {torch.__version__} installed, {REBUILD}")
    if _C.torch_version != torch.__version__:
        return None, (f"hssn_kernels._C was built against torch {_C.torch_version} but torch "
                      f"{torch.__version__} is installed; {REBUILD}")
    if _C.cuda_version and torch.version.cuda and _C.cuda_version != torch.version.cuda:
        return None, (f"hssn_kernels._C was built for CUDA {_C.cuda_version} but torch uses CUDA "
                      f"{torch.version.cuda}; {REBUILD}")
    return _C, None


_C, _LOAD_ERROR = _load()


def build_info() -> dict:
    """Versions the extension was built with, its CUDA architectures, and the load error if any."""
    if _C is None:
        return {"loaded": False, "error": _LOAD_ERROR}
    archs = [a for a in _C.cuda_archs.split(";") if a]
    return {"loaded": True, "path": _C.__file__, "torch_version": _C.torch_version,
            "cuda_version": _C.cuda_version or None, "cuda_archs": archs, "error": None}


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``hssn::<op>`` has a kernel for ``dispatch_key`` ("CPU" / "CUDA")."""
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"hssn::{op}", dispatch_key)


def unavailable_reason(device: torch.device) -> str | None:
    """None when the native kernels can run on ``device``, else why not."""
    device = torch.device(device)
    if _C is None:
        return _LOAD_ERROR
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        return f"the native kernels run CPU and CUDA tensors, got {device.type} tensors"
    if not has_kernel("ftm_forward", "CUDA"):
        return ("hssn_kernels._C was built without CUDA kernels (CPU-only torch or no nvcc at build time); "
                f"install a CUDA toolkit and {REBUILD} (HSSN_FORCE_CUDA=1 forces the CUDA build)")
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, minor = torch.cuda.get_device_capability(device)
    archs = build_info()["cuda_archs"]
    if archs and not any(_runs_on(a, major, minor) for a in archs):
        return (f"hssn_kernels._C holds code for sm {archs} but {torch.cuda.get_device_name(device)} is "
                f"sm_{major}{minor}; {REBUILD} with TORCH_CUDA_ARCH_LIST='{major}.{minor}'")
    return None


def _runs_on(arch: str, major: int, minor: int) -> bool:
    """A cubin for ``arch`` ("8.0", "9.0+PTX") runs on compute capability major.minor (same major, >= minor)."""
    base = arch.split("+")[0]
    a_major, a_minor = (int(x) for x in base.split("."))
    if arch.endswith("+PTX"):
        return (major, minor) >= (a_major, a_minor)
    return major == a_major and minor >= a_minor


# ----------------------------------------------------------------------------- fake kernels and autograd
def _register() -> tuple:
    """Fakes and autograd of the ops; returns the eager entries of ftm_forward and triplet_forward."""
    lib = "hssn::"

    @torch.library.register_fake(lib + "ftm_forward")
    def _(logits, target, parent, bottom_up, ancestors, dfs, gamma, ignore_index, reduction, compute_grad, partial=False):
        return fake_fused_loss(logits, _checks.pixel_shape(logits), reduction, compute_grad)

    @torch.library.register_fake(lib + "ftm_backward")
    def _(grad_loss, logits, target, parent, bottom_up, ancestors, dfs, gamma, ignore_index, partial=False):
        return logits.new_empty(logits.shape)

    @torch.library.register_fake(lib + "path_argmax")
    def _(logits, dfs):
        return logits.new_empty(_checks.pixel_shape(logits), dtype=torch.int64)

    @torch.library.register_fake(lib + "sample_triplets")
    def _(target, leaf_index, tree_distance, num_triplets, seed, ignore_index, mode):
        return target.new_empty((num_triplets, 3), dtype=torch.int64), target.new_empty((), dtype=torch.int64)

    @torch.library.register_fake(lib + "triplet_forward")
    def _(embeddings, target, triplets, count, leaf_index, tree_distance, margin_eps, margin_scale, height,
          hierarchy_margin, distance, compute_grad):
        return fake_triplet_loss(embeddings, compute_grad)

    return (register_fused_loss(lib + "ftm_forward", torch.ops.hssn.ftm_backward),
            register_triplet_loss(lib + "triplet_forward", torch.ops.hssn.triplet_forward))


_ftm_forward, _triplet_forward = _register() if _C is not None else (None, None)


# ----------------------------------------------------------------------------- backend interface
@register("ftm_kernel", "native")
def ftm_kernel(logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy, gamma: float, ignore_index: int,
               reduction: int, compute_grad: bool, partial: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw forward kernel (no autograd): (loss, d loss / d logits or empty); reduction 0 none, 1 sum, 2 mean."""
    tabs = hierarchy.tables(logits.device)
    return _ftm_forward(logits, target, tabs.parent, tabs.bottom_up, tabs.ancestors, tabs.dfs,
                                      float(gamma), int(ignore_index), int(reduction), bool(compute_grad),
                                      bool(partial))


@register("ftm_kernel_backward", "native")
def ftm_kernel_backward(weights: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy,
                        gamma: float, ignore_index: int, partial: bool = False) -> torch.Tensor:
    """The raw backward kernel: d (sum of weights * per-pixel loss) / d logits; weights pixel-shaped."""
    tabs = hierarchy.tables(logits.device)
    return torch.ops.hssn.ftm_backward(weights.to(loss_dtype(logits)), logits, target, tabs.parent, tabs.bottom_up,
                                       tabs.ancestors, tabs.dfs, float(gamma), int(ignore_index), bool(partial))


focal_tree_min_loss = register("focal_tree_min_loss", "native")(functools.partial(fused_loss, ftm_kernel))
"""Focal tree-min loss with the native kernels (:func:`hssn_kernels._autograd.fused_loss`)."""


@register("hierarchical_argmax", "native")
def hierarchical_argmax(logits: torch.Tensor, hierarchy: ClassHierarchy) -> torch.Tensor:
    """(B, H, W) | (N,) int64 leaf map (path inference, Eq. 3)."""
    tabs = hierarchy.tables(logits.device)
    return torch.ops.hssn.path_argmax(logits, tabs.dfs)


@register("sample_triplets_padded", "native")
def sample_triplets_padded(target: torch.Tensor, hierarchy: ClassHierarchy, num_triplets: int = 200, seed: int = 0,
                           ignore_index: int = 255, mode: str = "tree") -> tuple[torch.Tensor, torch.Tensor]:
    """Same triplets as :func:`hssn_kernels.reference._sample_triplets_padded` for the same seed."""
    tabs = hierarchy.tables(target.device)
    return torch.ops.hssn.sample_triplets(target, tabs.leaf_index, tabs.tree_distance, int(num_triplets), int(seed),
                                          int(ignore_index), _checks.TRIPLET_MODES.index(mode))


@register("tree_triplet_loss", "native")
def tree_triplet_loss(embeddings: torch.Tensor, target: torch.Tensor, hierarchy: ClassHierarchy, *args) -> torch.Tensor:
    """Tree-triplet loss on the native sampler and ``hssn::triplet_forward`` (``_autograd.triplet_loss``;
    arguments as :func:`hssn_kernels.reference._triplet_loss`)."""
    return triplet_loss(sample_triplets_padded, _triplet_forward, embeddings, target, hierarchy, *args)
