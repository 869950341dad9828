"""What each benchmarked op runs: its inputs, the call per backend, its bytes-moved floor, its error.

Inputs are random but realistic: logits ``N(0, 3^2)``, leaf targets with 10% ignored pixels,
embeddings ``(B, 256, H/8, W/8)`` with the target taken at every 8th pixel (the tree-triplet loss
runs at 1/8 resolution with 200 triplets, as in the paper).

The training-step ops take the head's outputs as a DeepLabV3+ makes them: logits at 1/4 of the label
size (``LOGITS_STRIDE``), auxiliary logits and embeddings at 1/8. ``ftm_interp`` / ``train_loss_interp``
upsample with ``F.interpolate`` before the loss (the old training loop); ``ftm_upsample`` / ``train_loss``
pass ``upsample="bilinear"`` (fused on the fast backends; the reference computes the same expression).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import hssn_kernels as hk

from . import released
from .cases import DTYPES, Shape, get_tree

GAMMA = 2.0
EMBED_DIM = 256
EMBED_STRIDE = 8
NUM_TRIPLETS = 200
IGNORED_FRACTION = 0.1
TARGET_DTYPE = torch.int64
LOGITS_STRIDE = 4
AUX_STRIDE = 8
AUX_WEIGHT = 0.4
TRAIN_OPS = ("ftm_interp", "ftm_upsample", "train_loss_interp", "train_loss")
PARTIAL_OPS = ("ftm_partial_leaf", "ftm_partial")
"""The focal tree-min loss with ``partial_labels=True``: on leaf targets (the flag's cost when no label is
coarse) and with ``PARTIAL_FRACTION`` of the pixels labelled at a random inner node."""
PARTIAL_FRACTION = 0.5
EXP_LOG_OPS = ("ftm", "ftm_interp", "ftm_upsample", *PARTIAL_OPS)
"""Ops measured against the exp + log floor (one exp and one log per full-resolution logit)."""
SIGMOID_OPS = ("argmax",)
"""Ops measured against the sigmoid floor (one sigmoid per logit)."""
RATIO_BASE = {"ftm_upsample": "ftm_interp", "train_loss": "train_loss_interp"}
"""Ops whose ``x ref`` / ``mem / ref`` columns compare with another op's reference row (same shape)."""


# ----------------------------------------------------------------------------- inputs
def _target(shape: Shape, height: int, width: int, gen: torch.Generator, device) -> torch.Tensor:
    leaves = torch.tensor(shape.hierarchy.leaves, dtype=TARGET_DTYPE)
    t = leaves[torch.randint(len(leaves), (shape.batch, height, width), generator=gen)]
    ignored = torch.rand(t.shape, generator=gen) < IGNORED_FRACTION
    return t.masked_fill(ignored, shape.ignore_index).to(device)


def make_inputs(op: str, shape: Shape, dtype: str, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh inputs of ``op`` at ``shape``: float tensors in ``dtype`` (no grad), int64 targets."""
    gen = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    out = {}
    if op in ("ftm", "argmax", "hssn_loss") or op in PARTIAL_OPS:
        out["logits"] = (3 * torch.randn(shape.batch, shape.channels, shape.height, shape.width, generator=gen)
                         ).to(device=device, dtype=dt)
        out["target"] = _target(shape, shape.height, shape.width, gen, device)
    if op == "ftm_partial":
        h = shape.hierarchy
        inner = torch.tensor([c for c in range(h.num_channels) if not h.is_leaf(c)], dtype=TARGET_DTYPE)
        t = out["target"].cpu()
        pick = inner[torch.randint(len(inner), t.shape, generator=gen)]
        coarse = (torch.rand(t.shape, generator=gen) < PARTIAL_FRACTION) & (t != shape.ignore_index)
        out["target"] = torch.where(coarse, pick, t).to(device)
    if op in TRAIN_OPS:
        for key, stride in (("logits", LOGITS_STRIDE), ("aux_logits", AUX_STRIDE)):
            if key == "aux_logits" and not op.startswith("train_loss"):
                continue
            h, w = max(1, shape.height // stride), max(1, shape.width // stride)
            out[key] = (3 * torch.randn(shape.batch, shape.channels, h, w, generator=gen)).to(device=device, dtype=dt)
        out["target"] = _target(shape, shape.height, shape.width, gen, device)
    if op in ("triplet", "hssn_loss") or op.startswith("train_loss"):
        h, w = shape.height // EMBED_STRIDE, shape.width // EMBED_STRIDE
        out["embeddings"] = torch.randn(shape.batch, EMBED_DIM, h, w, generator=gen).to(device=device, dtype=dt)
        if op == "triplet":
            out["target"] = _target(shape, h, w, gen, device)
    if op == "argmax":
        del out["target"]
    return out


# ----------------------------------------------------------------------------- calls
def _ftm(backend, shape, partial_labels=False):
    h, ii = shape.hierarchy, shape.ignore_index
    return lambda x: hk.focal_tree_min_loss(x["logits"], x["target"], h, GAMMA, ii, "mean", backend=backend,
                                            validate=False, nan_policy="propagate", partial_labels=partial_labels)


def _argmax(backend, shape):
    h = shape.hierarchy
    return lambda x: hk.hierarchical_argmax(x["logits"], h, backend=backend)


def _triplet(backend, shape):
    h, ii = shape.hierarchy, shape.ignore_index
    return lambda x: hk.tree_triplet_loss(x["embeddings"], x["target"], h, NUM_TRIPLETS, ignore_index=ii,
                                          backend=backend, validate=False)


def _hssn_module(backend, h, ii):
    return hk.HierarchicalLoss(h, "ftm", GAMMA, "hierarchy", NUM_TRIPLETS, ignore_index=ii, backend=backend)


def _hssn_loss(backend, shape):
    module = _hssn_module(backend, shape.hierarchy, shape.ignore_index)
    return lambda x: module(x["logits"], x["target"], x["embeddings"], step=0)["loss"]


def _interp(z, size):
    return F.interpolate(z, size=size, mode="bilinear", align_corners=False)


def _ftm_interp(backend, shape):
    h, ii = shape.hierarchy, shape.ignore_index
    return lambda x: hk.focal_tree_min_loss(_interp(x["logits"], x["target"].shape[-2:]), x["target"], h, GAMMA, ii,
                                            backend=backend, validate=False, nan_policy="propagate")


def _ftm_upsample(backend, shape):
    h, ii = shape.hierarchy, shape.ignore_index
    return lambda x: hk.focal_tree_min_loss(x["logits"], x["target"], h, GAMMA, ii, backend=backend, validate=False,
                                            nan_policy="propagate", upsample="bilinear")


def _train_module(backend, h, ii, upsample):
    return hk.HierarchicalLoss(h, "ftm", GAMMA, "hierarchy", NUM_TRIPLETS, ignore_index=ii, backend=backend,
                               upsample=upsample, validate=False, nan_policy="propagate")


def _train_loss_call(module, interp):
    """The trainer's loss: main + beta * triplet + AUX_WEIGHT * the auxiliary head's loss (beta at its max)."""
    def fn(x):
        size = x["target"].shape[-2:]
        main, aux = (_interp(x["logits"], size), _interp(x["aux_logits"], size)) if interp else (x["logits"],
                                                                                               x["aux_logits"])
        parts = module(main, x["target"], x["embeddings"], step=module.beta_steps)
        return parts["loss"] + AUX_WEIGHT * module.segmentation_loss(aux, x["target"])
    return fn


def _train_loss(backend, shape):
    return _train_loss_call(_train_module(backend, shape.hierarchy, shape.ignore_index, "bilinear"), False)


def _train_loss_interp(backend, shape):
    return _train_loss_call(_train_module(backend, shape.hierarchy, shape.ignore_index, None), True)


_REFERENCE = {"backend": "reference", "validate": False, "nan_policy": "propagate"}
"""The torch.compile'd reference: the public op on the reference backend without its host syncs."""


def _compiled_ftm_interp(h, ii):
    fn = torch.compile(lambda z, t: hk.focal_tree_min_loss(_interp(z, t.shape[-2:]), t, h, GAMMA, ii, "mean",
                                                           **_REFERENCE))
    return lambda x: fn(x["logits"], x["target"])


def _not_compiled(h, ii):
    raise RuntimeError("this op has no torch.compile form")


def _compiled_ftm(h, ii):
    fn = torch.compile(lambda z, t: hk.focal_tree_min_loss(z, t, h, GAMMA, ii, "mean", **_REFERENCE))
    return lambda x: fn(x["logits"], x["target"])


def _compiled_argmax(h, ii):
    fn = torch.compile(lambda z: hk.hierarchical_argmax(z, h, backend="reference"))
    return lambda x: fn(x["logits"])


def _compiled_triplet(h, ii):
    fn = torch.compile(lambda e, t: hk.tree_triplet_loss(e, t, h, NUM_TRIPLETS, ignore_index=ii, **_REFERENCE))
    return lambda x: fn(x["embeddings"], x["target"])


def _compiled_hssn_loss(h, ii):
    module = torch.compile(_hssn_module("reference", h, ii))
    return lambda x: module(x["logits"], x["target"], x["embeddings"], step=0)["loss"]


@dataclass(frozen=True)
class OpSpec:
    """``call(backend, shape)`` -> ``fn(inputs) -> Tensor``; ``compiled(hierarchy, ignore_index)`` the same
    with the torch.compile'd reference."""

    call: Callable
    compiled: Callable
    backend_ops: tuple[str, ...]
    """The backend-interface functions (:mod:`hssn_kernels.backends`) the op needs."""


OPS: dict[str, OpSpec] = {
    "ftm": OpSpec(_ftm, _compiled_ftm, ("focal_tree_min_loss",)),
    "argmax": OpSpec(_argmax, _compiled_argmax, ("hierarchical_argmax",)),
    "triplet": OpSpec(_triplet, _compiled_triplet, ("tree_triplet_loss",)),
    "hssn_loss": OpSpec(_hssn_loss, _compiled_hssn_loss, ("focal_tree_min_loss", "tree_triplet_loss")),
    "ftm_interp": OpSpec(_ftm_interp, _compiled_ftm_interp, ("focal_tree_min_loss",)),
    "ftm_upsample": OpSpec(_ftm_upsample, _not_compiled, ("ftm_kernel",)),
    "ftm_partial_leaf": OpSpec(functools.partial(_ftm, partial_labels=True), _not_compiled, ("focal_tree_min_loss",)),
    "ftm_partial": OpSpec(functools.partial(_ftm, partial_labels=True), _not_compiled, ("focal_tree_min_loss",)),
    "train_loss_interp": OpSpec(_train_loss_interp, _not_compiled, ("focal_tree_min_loss", "tree_triplet_loss")),
    "train_loss": OpSpec(_train_loss, _not_compiled, ("focal_tree_min_loss", "tree_triplet_loss")),
}


@functools.lru_cache(maxsize=None)
def _compiled(op: str, tree: str, ignore_index: int) -> Callable:
    # One compiled callable per (op, tree): new pixel sizes and modes recompile it, not rebuild it.
    return OPS[op].compiled(get_tree(tree), ignore_index)


def _released(shape):
    groups = released.groups_of(shape.hierarchy)
    return lambda x: released.released_focal_tree_min(x["logits"], x["target"], groups, GAMMA, shape.ignore_index)


def unsupported_reason(op: str, backend: str, device: torch.device, shape: Shape | None = None) -> str | None:
    """None when ``backend`` runs every part of ``op`` (at ``shape``, when given) on ``device``, else why not."""
    if backend == "released":
        if op != "ftm":
            return "the released code has the focal tree-min loss only"
        return None if shape is None or released.groups_of(shape.hierarchy) else "the released loss is two-level only"
    if backend == "compiled":
        return None if OPS[op].compiled is not _not_compiled else "no torch.compile form of this op"
    if op in RATIO_BASE and backend == "reference":
        return f"the reference computes F.interpolate + loss: the reference row of {RATIO_BASE[op]}"
    for name in OPS[op].backend_ops:
        why = hk.backends.unavailable_reason(backend, device, name)
        if why is not None:
            return why
    return None


def make_callable(op: str, backend: str, shape: Shape) -> Callable[[dict], torch.Tensor]:
    """``fn(inputs) -> output`` running ``op`` on ``backend`` (``compiled`` = torch.compile(reference))."""
    if backend == "compiled":
        return _compiled(op, shape.tree, shape.ignore_index)
    if backend == "released":
        return _released(shape)
    return OPS[op].call(backend, shape)


# ----------------------------------------------------------------------------- bytes-moved floor
def floor_bytes(op: str, mode: str, shape: Shape, dtype: str) -> int:
    """Fewest bytes ``op`` must move in ``mode``: each input read once, each output written once.

    With N pixels, C channels, b bytes per float, 8 bytes per int64 label, n = N/64 embedding pixels,
    E = 256, T = 200: FTM reads N*C*b + N*8 (forward, no-grad) and also writes the N*C*b gradient
    (backward, full); argmax reads N*C*b and writes N*8; the triplet loss reads n*8 labels and
    min(3T, n)*E*b embedding values and writes the n*E*b gradient (backward, full);
    HierarchicalLoss = FTM + triplet.
    """
    b = DTYPES[dtype].itemsize
    lab = torch.tensor([], dtype=TARGET_DTYPE).element_size()
    if op in TRAIN_OPS:  # the low-res logits read once (and their gradient written), the labels read once
        low = sum(shape.batch * shape.channels * max(1, shape.height // s) * max(1, shape.width // s)
                  for s in ((LOGITS_STRIDE, AUX_STRIDE) if op.startswith("train_loss") else (LOGITS_STRIDE,)))
        return low * b * (2 if mode in ("backward", "full") else 1) + shape.pixels * lab
    n_pix = shape.pixels
    grad = mode in ("backward", "full")
    n_emb = shape.batch * (shape.height // EMBED_STRIDE) * (shape.width // EMBED_STRIDE)
    ftm = n_pix * shape.channels * b * (2 if grad else 1) + n_pix * lab
    trip = n_emb * lab + min(3 * NUM_TRIPLETS, n_emb) * EMBED_DIM * b + (n_emb * EMBED_DIM * b if grad else 0)
    return {"ftm": ftm, "argmax": n_pix * shape.channels * b + n_pix * 8, "triplet": trip,
            "hssn_loss": ftm + trip, "ftm_partial_leaf": ftm, "ftm_partial": ftm}[op]
