"""Inference: multi-scale + flip test-time augmentation, sliding windows, and path inference.

Scores of all passes are averaged as sigmoid probabilities at the input size, then path inference
(:func:`hssn_kernels.hierarchical_argmax`, Eq. 3) picks each pixel's leaf. A flipped pass is flipped
back and the channels of each left/right leaf pair (``flip_pairs``) are exchanged, so "left arm" scores
computed on the mirrored image land on the "right arm" channel.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

import hssn_kernels as hk
from hssn_kernels import ClassHierarchy
from hssn_kernels.upsample import tree_violations

LogitsFn = Callable[[torch.Tensor], torch.Tensor]
"""``images (B, 3, H, W) in [0, 1] -> logits (B, C, h, w)`` at any resolution."""


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] -> (x - mean) / std per channel (a new tensor)."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def model_logits_fn(model: torch.nn.Module, mean: Sequence[float], std: Sequence[float], amp: bool = False) -> LogitsFn:
    """A :data:`LogitsFn` running ``model`` (eval mode is the caller's job) on normalised images,
    under bf16 autocast on CUDA when ``amp``; logits returned as float32."""
    def run(images: torch.Tensor) -> torch.Tensor:
        use_amp = amp and images.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            out = model(normalize(images, mean, std))
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


def tta_scores(fn: LogitsFn, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
               flip_pairs: Sequence[Sequence[int]] = (), out_size: Sequence[int] | None = None,
               mode: str = "whole", crop_size: Sequence[int] = (512, 1024),
               stride: Sequence[int] = (341, 683)) -> torch.Tensor:
    """(B, C, H', W') float32 sigmoid scores averaged over ``scales`` x (identity, flip) passes.

    images: (B, 3, H, W) in [0, 1]; each pass resizes them by the scale (bilinear), runs ``fn`` whole
    or in sliding windows (``mode="slide"``), and resizes the logits to ``out_size`` (default (H, W)).
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if not scales:
        raise ValueError("scales must not be empty")
    h, w = images.shape[-2:]
    out_size = (h, w) if out_size is None else (int(out_size[0]), int(out_size[1]))
    perm = None
    total = None
    passes = 0
    for scale in scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        scaled = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in ((False, True) if flip else (False,)):
            x = scaled.flip(-1) if flipped else scaled
            logits = slide_logits(fn, x, crop_size, stride) if mode == "slide" else fn(x)
            probs = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False).sigmoid_()
            if flipped:
                if perm is None:
                    perm = flip_permutation(probs.shape[1], flip_pairs).to(probs.device)
                probs = probs.flip(-1)[:, perm]
            total = probs if total is None else total.add_(probs)  # one accumulator, whatever the passes
            del probs
            passes += 1
    return total.div_(passes)


def predict_leaves(fn: LogitsFn, images: torch.Tensor, hierarchy: ClassHierarchy, backend: str = "auto",
                   scales: Sequence[float] = (1.0,), flip: bool = False, flip_pairs: Sequence[Sequence[int]] = (),
                   out_size: Sequence[int] | None = None, mode: str = "whole", crop_size: Sequence[int] = (512, 1024),
                   stride: Sequence[int] = (341, 683)) -> tuple[torch.Tensor, torch.Tensor]:
    """(leaf map (B, H', W') int64, tree-violation map (B, H', W') bool) of ``images`` at ``out_size``.

    One whole-image pass at scale 1 (no flip) runs path inference on the low-res logits with the
    upsampling fused (``hierarchical_argmax(size=...)``: no full-resolution scores); otherwise the
    :func:`tta_scores` average (one full-resolution accumulator) goes through :func:`path_inference`.
    """
    out_size = tuple(images.shape[-2:]) if out_size is None else (int(out_size[0]), int(out_size[1]))
    if list(scales) == [1.0] and not flip and mode == "whole":
        return hk.hierarchical_argmax(fn(images), hierarchy, backend=backend, size=out_size, violations=True)
    scores = tta_scores(fn, images, scales, flip, flip_pairs, out_size, mode, crop_size, stride)
    leaf, _ = path_inference(scores, hierarchy, backend)
    return leaf, tree_violations(scores, hierarchy, threshold=0.5)


def path_inference(scores: torch.Tensor, hierarchy: ClassHierarchy, backend: str = "auto") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Path inference on sigmoid ``scores`` (B, C, H, W): (leaf map (B, H, W) int64, [map at tree level
    1, ..., D])."""
    logits = torch.logit(scores.float(), eps=1e-7)  # sigmoid(logit(p)) = p: Eq. 3 on the averaged scores
    return hk.hierarchical_argmax(logits, hierarchy, backend=backend, levels=True)
