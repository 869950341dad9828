"""What each benchmarked op runs: its inputs, the call per backend, its bytes-moved floor, its error.

Inputs are random but realistic: logits ``N(0, 3^2)``, leaf targets with 10% ignored pixels,
embeddings ``(B, 256, H/8, W/8)`` with the target taken at every 8th pixel (the tree-triplet loss
runs at 1/8 resolution with 200 triplets, as in the paper).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

import hssn_kernels as hk
from hssn_kernels import reference

from .cases import DTYPES, Shape, get_tree

GAMMA = 2.0
EMBED_DIM = 256
EMBED_STRIDE = 8
NUM_TRIPLETS = 200
IGNORED_FRACTION = 0.1
TARGET_DTYPE = torch.int64


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
    if op in ("ftm", "argmax", "hssn_loss"):
        out["logits"] = (3 * torch.randn(shape.batch, shape.channels, shape.height, shape.width, generator=gen)
                         ).to(device=device, dtype=dt)
        out["target"] = _target(shape, shape.height, shape.width, gen, device)
    if op in ("triplet", "hssn_loss"):
        h, w = shape.height // EMBED_STRIDE, shape.width // EMBED_STRIDE
        out["embeddings"] = torch.randn(shape.batch, EMBED_DIM, h, w, generator=gen).to(device=device, dtype=dt)
        if op == "triplet":
            out["target"] = _target(shape, h, w, gen, device)
    if op == "argmax":
        del out["target"]
    return out


# ----------------------------------------------------------------------------- calls
def _ftm(backend, shape):
    h, ii = shape.hierarchy, shape.ignore_index
    return lambda x: hk.focal_tree_min_loss(x["logits"], x["target"], h, GAMMA, ii, "mean", backend=backend,
                                            validate=False, nan_policy="propagate")


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


def _compiled_ftm(h, ii):
    fn = torch.compile(lambda z, t: reference.focal_tree_min_loss(z, t, h, GAMMA, ii, "mean", validate=False))
    return lambda x: fn(x["logits"], x["target"])


def _compiled_argmax(h, ii):
    fn = torch.compile(lambda z: reference.hierarchical_argmax(z, h))
    return lambda x: fn(x["logits"])


def _compiled_triplet(h, ii):
    fn = torch.compile(lambda e, t: reference.tree_triplet_loss(e, t, h, NUM_TRIPLETS, ignore_index=ii,
                                                                validate=False))
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
}


@functools.lru_cache(maxsize=None)
def _compiled(op: str, tree: str, ignore_index: int) -> Callable:
    # One compiled callable per (op, tree): new pixel sizes and modes recompile it, not rebuild it.
    return OPS[op].compiled(get_tree(tree), ignore_index)


def unsupported_reason(op: str, backend: str, device: torch.device) -> str | None:
    """None when ``backend`` runs every part of ``op`` on ``device``, else why not."""
    if backend == "compiled":
        return None
    for name in OPS[op].backend_ops:
        why = hk.backends.unavailable_reason(backend, device, name)
        if why is not None:
            return why
    return None


def make_callable(op: str, backend: str, shape: Shape) -> Callable[[dict], torch.Tensor]:
    """``fn(inputs) -> output`` running ``op`` on ``backend`` (``compiled`` = torch.compile(reference))."""
    if backend == "compiled":
        return _compiled(op, shape.tree, shape.ignore_index)
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
    n_pix = shape.pixels
    grad = mode in ("backward", "full")
    n_emb = shape.batch * (shape.height // EMBED_STRIDE) * (shape.width // EMBED_STRIDE)
    ftm = n_pix * shape.channels * b * (2 if grad else 1) + n_pix * lab
    trip = n_emb * lab + min(3 * NUM_TRIPLETS, n_emb) * EMBED_DIM * b + (n_emb * EMBED_DIM * b if grad else 0)
    return {"ftm": ftm, "argmax": n_pix * shape.channels * b + n_pix * 8, "triplet": trip,
            "hssn_loss": ftm + trip}[op]
