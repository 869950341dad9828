"""Inference: multi-scale + flip test-time augmentation, sliding windows, and the level rule.

Node probabilities of all passes are averaged at the output size. The ``path`` rule (the paper) runs path
inference (:func:`hssn_kernels.hierarchical_argmax`, Eq. 3) on the averaged sigmoid scores: the leaf decides
every level. The ``sum`` rule (inferred parents) scores each node by the sum of its leaves' probabilities and
predicts every level by its own argmax. A flipped pass is flipped back and the channels of each left/right
leaf pair (``flip_pairs``) are exchanged, so "left arm" scores computed on the mirrored image land on the
"right arm" channel.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

import hssn_kernels as hk
from hssn_kernels import ClassHierarchy
from hssn_kernels.upsample import tree_violations

from .config import EVAL_MODES, PARENT_SCORES, Config
from .metrics import level_classes

LogitsFn = Callable[[torch.Tensor], torch.Tensor]
"""``images (B, 3, H, W) in [0, 1] -> logits (B, C, h, w)`` at any resolution."""


def model_logits_fn(model: torch.nn.Module, amp: bool = False) -> LogitsFn:
    """A :data:`LogitsFn` running ``model`` (eval mode is the caller's job; it normalises the images with its
    own buffers) under bf16 autocast on CUDA when ``amp``; logits returned as float32."""
    def run(images: torch.Tensor) -> torch.Tensor:
        use_amp = amp and images.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            out = model(images)
        return out["logits"].float()

    return run


def flip_permutation(num_channels: int, flip_pairs: Sequence[Sequence[int]]) -> torch.Tensor:
    """(C,) int64 channel permutation exchanging each pair (a, b)."""
    perm = torch.arange(num_channels)
    for a, b in flip_pairs:
        if not (0 <= a < num_channels and 0 <= b < num_channels):
            raise ValueError(f"flip pair ({a}, {b}) out of range for {num_channels} channels")
        perm[a], perm[b] = b, a
    return perm


def slide_logits(fn: LogitsFn, images: torch.Tensor, crop_size: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Logits (B, C, H, W) at the input size from overlapping ``crop_size`` windows (averaged logits).

    Inputs smaller than a window are zero-padded right / bottom first.
    """
    ch, cw = int(crop_size[0]), int(crop_size[1])
    sh, sw = int(stride[0]), int(stride[1])
    h, w = images.shape[-2:]
    padded = F.pad(images, (0, max(cw - w, 0), 0, max(ch - h, 0)))
    ph, pw = padded.shape[-2:]
    rows = max(math.ceil((ph - ch) / sh), 0) + 1
    cols = max(math.ceil((pw - cw) / sw), 0) + 1
    total = count = None
    for r in range(rows):
        for c in range(cols):
            y, x = min(r * sh, ph - ch), min(c * sw, pw - cw)
            logits = fn(padded[..., y:y + ch, x:x + cw])
            logits = F.interpolate(logits, size=(ch, cw), mode="bilinear", align_corners=False)
            if total is None:
                total = logits.new_zeros((images.shape[0], logits.shape[1], ph, pw))
                count = logits.new_zeros((1, 1, ph, pw))
            total[..., y:y + ch, x:x + cw] += logits
            count[..., y:y + ch, x:x + cw] += 1
    return (total / count)[..., :h, :w]


@dataclass(frozen=True)
class InferenceSettings:
    """How logits become predictions: test-time augmentation (``scales``, ``flip`` with the left/right leaf
    pairs ``flip_pairs``, ``mode`` whole | slide with ``crop_size`` / ``stride`` (h, w) windows), the kernel
    ``backend``, the level rule ``parent_scores`` (:data:`PARENT_SCORES`), ``leaf_softmax`` (leaf probabilities
    by a softmax over the leaf logits, as a model trained with ``loss.segmentation=cce`` reads; otherwise the
    leaf sigmoids normalised to sum 1), the logit ``temperature`` and ``probabilities`` (keep the
    (B, C, H, W) node probabilities at the output size, as calibration needs)."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    flip_pairs: tuple[tuple[int, int], ...] = ()
    mode: str = "whole"
    crop_size: tuple[int, int] = (512, 1024)
    stride: tuple[int, int] = (341, 683)
    backend: str = "auto"
    parent_scores: str = "path"
    leaf_softmax: bool = False
    temperature: float = 1.0
    probabilities: bool = False

    def __post_init__(self):
        if self.mode not in EVAL_MODES:
            raise ValueError(f"mode must be one of {EVAL_MODES}, got {self.mode!r}")
        if not self.scales:
            raise ValueError("scales must not be empty")
        if self.parent_scores not in PARENT_SCORES:
            raise ValueError(f"parent_scores must be one of {PARENT_SCORES}, got {self.parent_scores!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ValueError(f"temperature must be a positive finite number, got {self.temperature!r}")

    @classmethod
    def from_config(cls, cfg: Config, flip_pairs: Sequence[Sequence[int]] = (), **changes) -> "InferenceSettings":
        """The settings of a full config (its ``eval`` section, ``loss.backend``; ``leaf_softmax`` when the model
        was trained with ``loss.segmentation=cce``; a numeric ``eval.temperature``), with ``changes`` applied."""
        ev = cfg.eval
        values = dict(scales=tuple(float(s) for s in ev.scales), flip=ev.flip,
                      flip_pairs=tuple((int(a), int(b)) for a, b in flip_pairs), mode=ev.mode,
                      crop_size=ev.crop_size, stride=ev.stride, backend=cfg.loss.backend,
                      parent_scores=ev.parent_scores, leaf_softmax=cfg.loss.segmentation == "cce",
                      temperature=float(ev.temperature) if isinstance(ev.temperature, (int, float)) else 1.0)
        return cls(**{**values, **changes})


class Prediction(NamedTuple):
    """``leaf`` (B, H, W) int64 leaf channel ids; ``levels``: [(B, H, W) int64 channel ids at tree level 1, ...,
    D] when each level has its own argmax (``parent_scores="sum"``), else None (the leaf's ancestors);
    ``violations`` (B, H, W) bool (:func:`hssn_kernels.upsample.tree_violations` of the scores);
    ``probs`` (B, C, H, W) float32 node probabilities when the settings keep them, else None."""

    leaf: torch.Tensor
    levels: list[torch.Tensor] | None
    violations: torch.Tensor
    probs: torch.Tensor | None


def node_probabilities(logits: torch.Tensor, hierarchy: ClassHierarchy, settings: InferenceSettings,
                       inplace: bool = False) -> torch.Tensor:
    """(B, C, H, W) float32 probability of every node from logits (B, C, H, W), at ``settings.temperature``:
    the sigmoids (``path``), or each node's summed leaf probabilities (``sum``). ``inplace``: ``logits`` is a
    temporary the caller gives up; the path rule computes in it (no second full-size tensor)."""
    if settings.parent_scores == "path":
        z = logits.float()
        if z is logits and not inplace:
            z = z.clone()
        return z.div_(settings.temperature).sigmoid_()
    z = logits.float() / settings.temperature
    leaves = list(hierarchy.leaves)
    if settings.leaf_softmax:
        p = z[:, leaves].softmax(1)
    else:
        p = z[:, leaves].sigmoid()
        p = p / p.sum(1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    below = hierarchy.tables(p.device).is_ancestor[leaves].to(p.dtype)  # (L, C): node c is on leaf j's path
    return torch.einsum("blhw,lc->bchw", p, below)


def tta_scores(fn: LogitsFn, images: torch.Tensor, settings: InferenceSettings = InferenceSettings(),
               out_size: Sequence[int] | None = None, probs_fn: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid
               ) -> torch.Tensor:
    """(B, C, H', W') float32 ``probs_fn`` probabilities averaged over ``settings.scales`` x (identity, flip)
    passes.

    images: (B, 3, H, W) in [0, 1]; each pass resizes them by the scale (bilinear), runs ``fn`` whole or in
    sliding windows, and resizes the logits to ``out_size`` (default (H, W)) before ``probs_fn``, which may
    compute in that resized tensor (it is the pass's own).
    """
    h, w = images.shape[-2:]
    out_size = (h, w) if out_size is None else (int(out_size[0]), int(out_size[1]))
    perm = None
    total = None
    passes = 0
    for scale in settings.scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        scaled = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in ((False, True) if settings.flip else (False,)):
            x = scaled.flip(-1) if flipped else scaled
            logits = slide_logits(fn, x, settings.crop_size, settings.stride) if settings.mode == "slide" else fn(x)
            probs = probs_fn(F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False))
            if flipped:
                if perm is None:
                    perm = flip_permutation(probs.shape[1], settings.flip_pairs).to(probs.device)
                probs = probs.flip(-1)[:, perm]
            total = probs if total is None else total.add_(probs)  # one accumulator, whatever the passes
            del probs
            passes += 1
    return total.div_(passes)


@functools.lru_cache(maxsize=16)
def _level_channels(hierarchy: ClassHierarchy, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The channels of each tree level's classes (:func:`level_classes`) on ``device``, built once per tree."""
    return tuple(torch.tensor(level_classes(hierarchy, tl)[0], device=device) for tl in range(1, hierarchy.height + 1))


def level_argmax(probs: torch.Tensor, hierarchy: ClassHierarchy) -> list[torch.Tensor]:
    """[(B, H, W) int64 channel ids at tree level 1, ..., D]: each level's own argmax over its classes (the
    nodes at that level and the shallower leaves) of the (B, C, H, W) node probabilities; lowest id on ties."""
    return [classes[probs.index_select(1, classes).argmax(1)] for classes in _level_channels(hierarchy, probs.device)]


def predict(fn: LogitsFn, images: torch.Tensor, hierarchy: ClassHierarchy,
            settings: InferenceSettings = InferenceSettings(), out_size: Sequence[int] | None = None) -> Prediction:
    """The :class:`Prediction` of ``images`` (B, 3, H, W) at ``out_size`` (default (H, W)).

    Path rule, one whole-image pass at scale 1 without flip, no probabilities kept: path inference on the
    low-res logits with the upsampling fused (``hierarchical_argmax(size=...)``, no full-resolution scores).
    Otherwise the :func:`tta_scores` average of :func:`node_probabilities` (one full-resolution accumulator)
    goes through :func:`path_inference` (``path``) or :func:`level_argmax` (``sum``).
    """
    out_size = tuple(images.shape[-2:]) if out_size is None else (int(out_size[0]), int(out_size[1]))
    s = settings
    if (s.parent_scores == "path" and list(s.scales) == [1.0] and not s.flip and s.mode == "whole"
            and not s.probabilities):
        logits = fn(images) / s.temperature
        leaf, violations = hk.hierarchical_argmax(logits, hierarchy, backend=s.backend, size=out_size,
                                                  violations=True)
        return Prediction(leaf, None, violations, None)
    probs = tta_scores(fn, images, s, out_size, lambda z: node_probabilities(z, hierarchy, s, inplace=True))
    if s.parent_scores == "path":
        leaf, _ = path_inference(probs, hierarchy, s.backend)
        levels, violations = None, tree_violations(probs, hierarchy, threshold=0.5)
    else:  # a parent's summed probability is at least its child's: no violation is possible
        levels = level_argmax(probs, hierarchy)
        leaf = levels[-1]  # the finest level's classes are all the leaves
        violations = torch.zeros_like(leaf, dtype=torch.bool)
    return Prediction(leaf, levels, violations, probs if s.probabilities else None)


def path_inference(scores: torch.Tensor, hierarchy: ClassHierarchy, backend: str = "auto") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Path inference on sigmoid ``scores`` (B, C, H, W): (leaf map (B, H, W) int64, [map at tree level
    1, ..., D])."""
    logits = torch.logit(scores.float(), eps=1e-7)  # sigmoid(logit(p)) = p: Eq. 3 on the averaged scores
    return hk.hierarchical_argmax(logits, hierarchy, backend=backend, levels=True)
