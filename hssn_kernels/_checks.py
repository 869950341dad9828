"""Input validation shared by every backend: clear errors before any kernel runs.

Each rule is one function here, and one validator per op (``loss_inputs``, ``argmax_inputs``, ... at the end)
runs the rules of that op's public inputs for :mod:`hssn_kernels.functional`; every backend behind it (the
reference included) trusts it.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .hierarchy import ClassHierarchy

REDUCTIONS = ("none", "sum", "mean")
"""Loss reductions; the kernels take their index (0 none, 1 sum, 2 mean)."""
TRIPLET_MODES = ("tree", "vanilla")
"""Triplet sampling modes; the kernels take their index."""
DISTANCES = ("cosine", "euclidean")
"""Embedding distances of the triplet loss; the kernels take their index."""
NAN_POLICIES = ("raise", "propagate")
UPSAMPLE_MODES = (None, "bilinear")
"""The losses' ``upsample=`` choices (None: logits already at the target's size)."""
TARGET_DTYPES = (torch.int64, torch.int32, torch.uint8)
"""Label tensor dtypes every backend reads (the native kernels dispatch on exactly these)."""
MAX_TRIPLETS = 1 << 16
"""Most triplets one loss call may ask for (the paper uses 200; sampling tries 16 candidates each)."""


def _is_compiling() -> bool:
    return torch.compiler.is_compiling()


def check_int(value, name: str) -> int:
    """``value`` as an int: Python and numpy integers (a SymInt under torch.compile stays one); not bools,
    floats, strings or tensors."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool: Python and numpy bools."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__module__}.{type(value).__name__})")
    return bool(value)


def check_hierarchy(hierarchy) -> ClassHierarchy:
    if not isinstance(hierarchy, ClassHierarchy):
        raise TypeError(f"hierarchy must be a ClassHierarchy, got {type(hierarchy).__name__}")
    return hierarchy


def check_reduction(reduction: str) -> str:
    return check_choice(reduction, REDUCTIONS, "reduction")


def check_ignore_index(ignore_index: int, hierarchy: ClassHierarchy) -> int:
    """An int in int64's range that is no channel of ``hierarchy``."""
    ignore_index = check_int(ignore_index, "ignore_index")
    if not -2**63 <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
    if 0 <= ignore_index < hierarchy.num_channels:
        raise ValueError(
            f"ignore_index {ignore_index} is channel {ignore_index} of the hierarchy "
            f"({hierarchy.names[ignore_index]!r}); pass an ignore_index outside [0, {hierarchy.num_channels})"
        )
    return ignore_index


def check_target(target, like: torch.Tensor, name: str = "logits", channel_dim: bool = True, upsample=None) -> None:
    """``target`` must be an integer tensor shaped like ``like`` without its channel dim, on its device.

    With ``upsample`` set, ``like`` must be (B, C, h, w) and target (B, H, W) of any H, W > 0."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    check_target_dtype(target)
    expected = (like.shape[0],) + tuple(like.shape[2:]) if channel_dim else tuple(like.shape)
    if upsample is not None:
        if like.dim() != 4 or target.dim() != 3 or target.shape[0] != like.shape[0] or 0 in target.shape[1:] \
                or 0 in like.shape[2:]:
            raise ValueError(f"upsample={upsample!r} needs {name} (B, C, h, w) and target (B, H, W) with the same B "
                             f"and nonzero sizes, got {name} {tuple(like.shape)} and target {tuple(target.shape)}")
    elif tuple(target.shape) != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match {name} shape {tuple(like.shape)}: expected {expected}")
    if target.device != like.device:
        raise ValueError(f"target is on {target.device} but {name} are on {like.device}")


def check_target_dtype(target) -> None:
    """``target`` must be a tensor of one of :data:`TARGET_DTYPES`."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype not in TARGET_DTYPES:
        names = ", ".join(str(d).replace("torch.", "") for d in TARGET_DTYPES)
        raise TypeError(f"target must be an integer tensor of channel ids ({names}), got "
                        f"{str(target.dtype).replace('torch.', '')}")


def widen_target(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``target`` in a dtype that holds ``ignore_index`` (int32, else int64) when its own does not, so every
    backend compares labels and ``ignore_index`` as ints (torch would wrap it: -1 to 255 for uint8,
    2**32 + 1 to 1 for int32); otherwise unchanged."""
    info = torch.iinfo(target.dtype)
    if info.min <= ignore_index <= info.max:
        return target
    return target.to(torch.int32 if -2**31 <= ignore_index < 2**31 else torch.int64)


def check_num_triplets(num_triplets) -> int:
    """An int in ``[0, MAX_TRIPLETS]``."""
    num_triplets = check_int(num_triplets, "num_triplets")
    if not 0 <= num_triplets <= MAX_TRIPLETS:
        raise ValueError(f"num_triplets must be in [0, {MAX_TRIPLETS}], got {num_triplets}")
    return int(num_triplets)


def check_scores(x, hierarchy: ClassHierarchy, name: str = "logits") -> None:
    """``x`` must be a floating (B, C, H, W) or (N, C) tensor with C = hierarchy.num_channels."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.device.type == "meta":
        raise ValueError(f"meta tensors are not supported: the ops need real {name}")
    if x.dim() not in (2, 4):
        raise ValueError(f"{name} must be (B, C, H, W) or (N, C), got shape {tuple(x.shape)}")
    if x.shape[1] != hierarchy.num_channels:
        raise ValueError(
            f"{name} have {x.shape[1]} channels but the hierarchy has {hierarchy.num_channels} "
            f"(one per tree node, leaves and inner nodes)"
        )


def check_labels(target: torch.Tensor, hierarchy: ClassHierarchy, ignore_index: int, leaves_only: bool = True) -> None:
    """Every value of ``target`` must be a leaf channel (or any channel if not ``leaves_only``) or ignore_index.

    Costs one device-to-host sync; skipped while ``torch.compile`` traces.
    """
    if _is_compiling() or target.numel() == 0:
        return
    t = target.long()
    num = hierarchy.num_channels
    in_range = (t >= 0) & (t < num)
    ok = t == ignore_index
    if leaves_only:
        is_leaf = hierarchy.tables(t.device).is_leaf
        ok = ok | (in_range & is_leaf[t.clamp(0, num - 1)])
    else:
        ok = ok | in_range
    if not bool(ok.all()):
        bad = torch.unique(t[~ok])[:8].tolist()
        what = "leaf channel ids" if leaves_only else "channel ids"
        raise ValueError(
            f"target holds values {bad} that are neither {what} of the hierarchy "
            f"(leaves: {list(hierarchy.leaves)[:12]}{'...' if hierarchy.num_leaves > 12 else ''}) "
            f"nor ignore_index={ignore_index}"
        )


def leaf_labels_only(target: torch.Tensor, hierarchy: ClassHierarchy, ignore_index: int) -> torch.Tensor:
    """``target`` with every inner-node id replaced by ``ignore_index`` (a new tensor): the partial-label rule
    of the triplet losses, which sample leaf-labelled pixels only. Out-of-range ids are left as they are."""
    t = target.long()
    num = hierarchy.num_channels
    inner = (t >= 0) & (t < num) & ~hierarchy.tables(t.device).is_leaf[t.clamp(0, num - 1)]
    return torch.where(inner, torch.full_like(target, ignore_index), target)


def triplet_labels(target: torch.Tensor, hierarchy: ClassHierarchy, ignore_index: int, validate: bool,
                   partial_labels: bool) -> torch.Tensor:
    """The labels triplet sampling reads: checked (``validate``: leaf ids, or any node's id with partial
    labels), widened where ignore_index needs it (:func:`widen_target`), and with partial labels :func:`leaf_labels_only`."""
    if validate:
        check_labels(target, hierarchy, ignore_index, leaves_only=not partial_labels)
    target = widen_target(target, ignore_index)
    return leaf_labels_only(target, hierarchy, ignore_index) if partial_labels else target


def check_nan_policy(nan_policy: str) -> str:
    return check_choice(nan_policy, NAN_POLICIES, "nan_policy")


def has_nan(loss: torch.Tensor) -> bool:
    """Whether ``loss`` holds a NaN: one sync on the (usually scalar) loss; False under torch.compile."""
    return not _is_compiling() and bool(torch.isnan(loss.detach()).any())


def nan_error(what: str) -> ValueError:
    """The 'raise' NaN policy's error."""
    return ValueError(
        f"{what} is NaN: the inputs contain NaN at non-ignored pixels, or (with validate=False) "
        f"labels that are neither leaves nor ignore_index "
        f"(pass nan_policy='propagate' to get the NaN instead of this error)"
    )


def raise_on_nan(loss: torch.Tensor, what: str) -> None:
    """The 'raise' NaN policy (:func:`has_nan`, :func:`nan_error`)."""
    if has_nan(loss):
        raise nan_error(what)


def check_seed(seed: int, name: str = "seed") -> int:
    seed = check_int(seed, name)
    if not 0 <= seed < 2**32:
        raise ValueError(f"{name} must be in [0, 2**32), got {seed}")
    return seed


def no_double_backward(op: str) -> None:
    """Called first in a fused op's backward: under ``create_graph=True`` (grad mode on in backward) raise,
    instead of returning a gradient with no graph behind it."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"{op} has no second derivative (double backward / create_graph=True is not supported)")


def check_upsample(upsample, align_corners) -> None:
    """``upsample`` in :data:`UPSAMPLE_MODES`, ``align_corners`` a bool."""
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
    check_bool(align_corners, "align_corners")


def check_size(size) -> tuple[int, int]:
    """``size`` = (H, W) with positive ints (a tuple, list or torch.Size; not a string)."""
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise TypeError(f"size must be a pair (H, W) of positive ints, got {size!r}")
    H, W = (check_int(v, "size") for v in size)
    if H <= 0 or W <= 0:
        raise ValueError(f"size must be a pair (H, W) of positive ints, got {size!r}")
    return H, W


def check_margins(margin_eps, margin_scale) -> tuple[float, float]:
    """The triplet loss's ``margin_eps`` and ``margin_scale``: finite numbers."""
    for name, value in (("margin_eps", margin_eps), ("margin_scale", margin_scale)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        if not -math.inf < value < math.inf:
            raise ValueError(f"{name} must be finite, got {value}")
    return float(margin_eps), float(margin_scale)


def check_gamma(gamma) -> float:
    """A finite number >= 0 (a SymFloat under ``torch.compile(dynamic=True)`` too)."""
    if isinstance(gamma, bool) or not isinstance(gamma, (numbers.Real, torch.SymFloat, torch.SymInt)):
        raise TypeError(f"gamma must be a number, got {gamma!r} ({type(gamma).__name__})")
    if not 0 <= gamma < math.inf:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    return float(gamma)


def check_choice(value, choices: tuple, name: str):
    """``value`` one of ``choices`` (the list that names them, e.g. :data:`TRIPLET_MODES`)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_embeddings(embeddings) -> None:
    """A real floating (B, E, h, w) or (N, E) tensor with E >= 1."""
    if not isinstance(embeddings, torch.Tensor) or not embeddings.is_floating_point():
        raise TypeError("embeddings must be a floating-point tensor (B, E, h, w) or (N, E)")
    if embeddings.dim() not in (2, 4) or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings must be (B, E, h, w) or (N, E) with E >= 1, got shape {tuple(embeddings.shape)}")
    if embeddings.device.type == "meta":
        raise ValueError("meta tensors are not supported: the ops need real embeddings")


def pixel_shape(x: torch.Tensor) -> tuple[int, ...]:
    """The per-pixel shape of an (N, C, ...) tensor: (N, ...) without the channel dim."""
    return (x.shape[0],) + tuple(x.shape[2:])


# ----------------------------------------------------------------------------- one validator per op
def loss_inputs(logits, target, hierarchy, ignore_index, reduction, validate, upsample=None, align_corners=False,
                partial_labels=False) -> torch.Tensor:
    """Every rule of a segmentation loss's inputs (a focal loss also checks its ``gamma``); returns the target
    the kernels read (:func:`widen_target`)."""
    check_hierarchy(hierarchy)
    check_scores(logits, hierarchy)
    check_upsample(upsample, align_corners)
    check_target(target, logits, upsample=upsample)
    check_reduction(reduction)
    check_ignore_index(ignore_index, hierarchy)
    if validate:
        check_labels(target, hierarchy, ignore_index, leaves_only=not partial_labels)
    return widen_target(target, ignore_index)


def argmax_inputs(logits, hierarchy, size=None, align_corners=False) -> tuple[int, int] | None:
    """Every rule of path inference's inputs; returns ``size`` as (H, W) (or None)."""
    check_hierarchy(hierarchy)
    check_scores(logits, hierarchy)
    if size is None:
        return None
    size = check_size(size)
    check_upsample("bilinear", align_corners)
    if logits.dim() != 4:
        raise ValueError(f"size= needs logits (B, C, h, w), got shape {tuple(logits.shape)}")
    return size


def sampling_inputs(target, hierarchy, num_triplets, seed, ignore_index, mode, validate=True,
                    partial_labels=False) -> tuple[torch.Tensor, int, int]:
    """Every rule of triplet sampling's inputs; returns the labels sampling reads
    (:func:`triplet_labels`), num_triplets and seed as ints."""
    check_hierarchy(hierarchy)
    check_target_dtype(target)
    if target.device.type == "meta":
        raise ValueError("meta tensors are not supported: sampling needs real labels")
    check_ignore_index(ignore_index, hierarchy)
    seed = check_seed(seed)
    num_triplets = check_num_triplets(num_triplets)
    check_choice(mode, TRIPLET_MODES, "mode")
    return triplet_labels(target, hierarchy, ignore_index, validate, partial_labels), num_triplets, seed


def triplet_inputs(embeddings, target, hierarchy, num_triplets, seed, ignore_index, distance, mode, validate=True,
                   partial_labels=False) -> tuple[torch.Tensor, int, int]:
    """Every rule of a triplet loss's inputs: the embeddings', then :func:`sampling_inputs` (whose result it
    returns) on the labels."""
    check_hierarchy(hierarchy)
    check_embeddings(embeddings)
    check_target(target, embeddings, name="embeddings")
    check_choice(distance, DISTANCES, "distance")
    return sampling_inputs(target, hierarchy, num_triplets, seed, ignore_index, mode, validate, partial_labels)


def level_inputs(leaf_map, hierarchy, level, ignore_index) -> None:
    """Every rule of :func:`project_to_level`'s inputs."""
    check_hierarchy(hierarchy)
    if not isinstance(leaf_map, torch.Tensor) or leaf_map.is_floating_point() or leaf_map.dtype == torch.bool:
        raise TypeError("leaf_map must be an integer tensor of channel ids")
    level = check_int(level, "level")
    check_int(ignore_index, "ignore_index")
    if not 1 <= level <= hierarchy.height:
        raise ValueError(f"level {level} out of range [1, {hierarchy.height}]")
    check_labels(leaf_map, hierarchy, ignore_index, leaves_only=False)
