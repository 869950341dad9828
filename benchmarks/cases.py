"""The one definition of the benchmark cases: shapes (per device), ops, modes, backends, dtypes.

A case is ``(op, mode, backend, shape, dtype)``. Shapes are the paper's per-GPU training shapes plus
two scaling sweeps (pixels, channels). On CPU every shape's height and width are divided by
``CPU_SIDE_SCALE`` (pixel count by its square) so that the pure-PyTorch reference finishes in minutes.
``python -m benchmarks`` and ``pytest benchmarks --benchmark-only`` both enumerate :func:`build_cases`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch

from hssn_kernels import ClassHierarchy

CPU_SIDE_SCALE = 8
"""On CPU, H and W of every shape are divided by this (pixels by 64)."""

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("forward", "backward", "full", "no_grad")
"""forward: the loss with autograd recording; backward: ``loss.backward()`` alone; full: both; no_grad: inference."""
BACKENDS = ("reference", "compiled", "released", "triton", "cuda", "cpu")
"""``compiled`` is ``torch.compile`` of the reference; ``released`` the authors' released focal tree-min loss
(:mod:`benchmarks.released`, the focal tree-min op on the Cityscapes tree only); the others are names of
:mod:`hssn_kernels.backends`."""
OP_MODES: dict[str, tuple[str, ...]] = {
    "ftm": MODES,
    "argmax": ("no_grad",),
    "triplet": MODES,
    "hssn_loss": MODES,
    "ftm_interp": ("full",),
    "ftm_upsample": ("full",),
    "train_loss_interp": ("full",),
    "train_loss": ("full",),
    "ftm_partial_leaf": ("full",),
    "ftm_partial": ("full",),
}
"""Ops: focal tree-min loss, path argmax, tree-triplet loss, the whole ``HierarchicalLoss``; the training-step
family (benchmarks/ops.py): the loss from 1/4-resolution logits with F.interpolate first or fused upsampling,
alone and as the trainer's whole loss (main + auxiliary + triplet); the loss with partial labels, on leaf
targets and with half the pixels labelled at inner nodes."""
SWEEP_OPS = {"ftm": ("full", "no_grad"), "argmax": ("no_grad",)}
"""The scaling sweeps run only these ops and modes (the paper shapes run every op and mode)."""
CPU_GOAL_OPS = {"ftm": ("full",), "argmax": ("no_grad",)}
"""The CPU kernels' goal shapes run only these (the issue-28 ratios: against the floors, the released loss
and torch.compile(reference))."""
GROUPS = ("paper", "pixels", "channels", "cpu")


@dataclass(frozen=True)
class Shape:
    """A per-GPU training shape: labels and logits (batch, C, height, width) over the tree ``tree``."""

    name: str
    tree: str
    batch: int
    height: int
    width: int
    group: str = "paper"
    ignore_index: int = 255

    @property
    def pixels(self) -> int:
        return self.batch * self.height * self.width

    @property
    def hierarchy(self) -> ClassHierarchy:
        return get_tree(self.tree)

    @property
    def channels(self) -> int:
        return self.hierarchy.num_channels

    def scaled(self, side: int) -> "Shape":
        """The same shape with height and width divided by ``side`` (at least 8 each)."""
        return replace(self, height=max(8, self.height // side), width=max(8, self.width // side))


# ----------------------------------------------------------------------------- trees
def grouped_tree(leaves: int, groups: int, supergroups: int = 0) -> ClassHierarchy:
    """Leaves first, then ``groups`` parents of the leaves, then ``supergroups`` (coarsest last)."""
    parents = [leaves + i % groups for i in range(leaves)]
    if supergroups:
        parents += [leaves + groups + g % supergroups for g in range(groups)] + [-1] * supergroups
    else:
        parents += [-1] * groups
    return ClassHierarchy.from_parents(parents)


def sweep_tree(channels: int) -> ClassHierarchy:
    """A 3-level tree with exactly ``channels`` nodes (about 1/8 inner nodes), for the channel sweep."""
    supergroups = max(1, round(channels / 40))
    groups = max(supergroups + 1, round(channels / 8))
    return grouped_tree(channels - groups - supergroups, groups, supergroups)


FALLBACK_TREES = {
    "cityscapes": (19, 7, 0),
    "mapillary_v2": (124, 45, 8),
    "lip": (20, 3, 2),
    "pascal_person_part": (7, 3, 2),
}
"""Same-size stand-ins (leaves, groups, supergroups) used when ``hssn.hierarchies`` is not importable."""


@functools.lru_cache(maxsize=None)
def get_tree(name: str) -> ClassHierarchy:
    """The dataset tree ``name`` from ``hssn.hierarchies`` (or its same-size stand-in); ``channels-<C>``."""
    if name.startswith("channels-"):
        return sweep_tree(int(name.split("-", 1)[1]))
    if name not in FALLBACK_TREES:
        raise ValueError(f"unknown tree {name!r}; choose from {tuple(FALLBACK_TREES)} or 'channels-<C>'")
    try:
        from hssn import hierarchies
    except ImportError:
        return grouped_tree(*FALLBACK_TREES[name])
    return hierarchies.get(name)


def tree_source(name: str) -> str:
    """Where :func:`get_tree` takes ``name`` from (for the results' metadata)."""
    if name.startswith("channels-"):
        return "benchmarks.cases.sweep_tree"
    try:
        import hssn.hierarchies  # noqa: F401
    except ImportError:
        return "benchmarks.cases.grouped_tree (stand-in)"
    return "hssn.hierarchies"


# ----------------------------------------------------------------------------- shapes
PAPER_SHAPES = (
    Shape("cityscapes", "cityscapes", 2, 512, 1024),
    Shape("mapillary_v2", "mapillary_v2", 2, 512, 1024),
    Shape("pascal_person_part", "pascal_person_part", 4, 480, 480),
    Shape("lip", "lip", 4, 480, 480),
)
PIXEL_SWEEP = tuple(Shape(f"pixels-{h}x{w}", "cityscapes", 2, h, w, "pixels")
                    for h, w in ((128, 256), (256, 512), (512, 1024), (1024, 2048)))
CHANNEL_SWEEP = tuple(Shape(f"channels-{c}", f"channels-{c}", 1, 512, 1024, "channels", ignore_index=-1)
                      for c in (16, 64, 256, 1000))
"""Channels up to 1000: ignore_index must lie outside [0, C), so the sweep uses -1."""

CPU_GOAL_SHAPES = tuple(Shape(f"cpu-{tree}", tree, 2, 128, 256, "cpu")
                        for tree in ("cityscapes", "mapillary_v2", "pascal_person_part"))
"""CPU only, never scaled: 2 images of 128x256 pixels on the three trees the CPU kernels' goals name."""

QUICK_SHAPES = (
    Shape("cityscapes", "cityscapes", 1, 16, 32),
    Shape("pascal_person_part", "pascal_person_part", 1, 16, 16),
    Shape("pixels-16x32", "cityscapes", 1, 16, 32, "pixels"),
    Shape("pixels-32x64", "cityscapes", 1, 32, 64, "pixels"),
    Shape("channels-32", "channels-32", 1, 16, 32, "channels", ignore_index=-1),
    Shape("channels-300", "channels-300", 1, 16, 32, "channels", ignore_index=-1),
)


def shapes_for(device: torch.device, quick: bool = False, full_size: bool = False) -> tuple[Shape, ...]:
    """All shapes for ``device``: tiny ones with ``quick``; on CPU scaled down by ``CPU_SIDE_SCALE`` unless
    ``full_size`` (memory at the real shapes: bytes are the same on every device)."""
    if quick:
        return QUICK_SHAPES
    shapes = PAPER_SHAPES + PIXEL_SWEEP + CHANNEL_SWEEP
    if torch.device(device).type == "cpu" and not full_size:
        shapes = tuple(s.scaled(CPU_SIDE_SCALE) for s in shapes) + CPU_GOAL_SHAPES
    return shapes


def select_shapes(shapes: tuple[Shape, ...], names: list[str] | None) -> tuple[Shape, ...]:
    """Shapes whose name or group is in ``names`` (all when None); ValueError on an unknown name."""
    if not names:
        return shapes
    known = {s.name for s in shapes} | set(GROUPS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; choose from {sorted(known)}")
    return tuple(s for s in shapes if s.name in names or s.group in names)


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    op: str
    mode: str
    backend: str
    shape: Shape
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.op}-{self.mode}-{self.backend}-{self.shape.name}-{self.dtype}"


def default_dtypes(device: torch.device) -> tuple[str, ...]:
    """bf16 on GPU (the headline: mixed-precision training), fp32 on CPU."""
    return ("bf16",) if torch.device(device).type == "cuda" else ("fp32",)


def default_backends(device: torch.device) -> tuple[str, ...]:
    """Every backend usable on ``device``, found at run time through ``hssn_kernels.backends.available``.

    On CPU ``triton`` (the numpy interpreter) and ``compiled`` (minutes of Inductor compilation per shape
    on a small machine) are left out unless asked for with ``--backends``; ``released`` (one op, one tree)
    everywhere.
    """
    from hssn_kernels import backends

    device = torch.device(device)
    usable = [name for name, why in backends.available(device).items() if why is None]
    if device.type == "cpu":
        return tuple(b for b in BACKENDS if b in usable and b != "triton")
    return tuple(b for b in BACKENDS if b in usable or b == "compiled")


def check_names(kind: str, names: list[str] | None, allowed) -> None:
    if names:
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise ValueError(f"unknown {kind} {unknown}; choose from {list(allowed)}")


def build_cases(device: torch.device | str, ops=None, backends=None, shapes=None, dtypes=None, modes=None,
                quick: bool = False, full_size: bool = False) -> list[Case]:
    """Every case for ``device`` after the filters (lists of names; None = the defaults)."""
    device = torch.device(device)
    check_names("ops", ops, OP_MODES)
    check_names("backends", backends, BACKENDS)
    check_names("dtypes", dtypes, DTYPES)
    check_names("modes", modes, MODES)
    ops = ops or list(OP_MODES)
    backends = backends or list(default_backends(device))
    dtypes = dtypes or list(default_dtypes(device))
    cases = []
    for shape in select_shapes(shapes_for(device, quick, full_size), shapes):
        for op in ops:
            op_modes = (OP_MODES[op] if shape.group == "paper" else
                        (CPU_GOAL_OPS if shape.group == "cpu" else SWEEP_OPS).get(op, ()))
            for mode in op_modes:
                if modes and mode not in modes:
                    continue
                for dtype in dtypes:
                    for backend in backends:
                        cases.append(Case(op, mode, backend, shape, dtype))
    return cases
