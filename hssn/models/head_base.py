"""The interface every segmentation head implements, and the shared auxiliary-loss rule."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from hssn_kernels import ClassHierarchy


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits (B, C, h, w) at any resolution, target (B, H, W)) -> scalar``: upsamples inside."""


class SegHead(nn.Module):
    """Base class of the heads.

    A head is built from the backbone's ``in_channels`` / ``reductions`` (lists, coarsest last) and
    ``num_channels`` = C (all hierarchy nodes). ``forward(features)`` returns a dict with

    * ``"feature"`` ``(B, feature_channels, h, w)``: the final feature map before the classifier (the
      HSSN projection head reads it with ``projection_from="decoder"``);
    * ``"logits"`` ``(B, C, h, w)`` at ``output_stride``;
    * optionally ``"aux_logits"`` (training only), ``"pred_logits"`` / ``"pred_masks"`` (MaskFormer).

    Subclasses set ``num_channels``, ``feature_channels`` and ``output_stride``.
    """

    num_channels: int
    feature_channels: int
    output_stride: int
    aux_weight: float = 0.4

    def auxiliary_losses(
        self,
        outputs: dict[str, torch.Tensor],
        target: torch.Tensor,
        loss_fn: LossFn,
        hierarchy: ClassHierarchy,
        ignore_index: int = 255,
    ) -> dict[str, torch.Tensor]:
        """``{"aux": aux_weight * loss_fn(aux_logits, target)}`` (the loss upsamples), or ``{}``."""
        aux = outputs.get("aux_logits")
        if aux is None:
            return {}
        return {"aux": self.aux_weight * loss_fn(aux, target)}


def check_features(in_channels, reductions, minimum: int = 1) -> tuple[list[int], list[int]]:
    """Validate the backbone description a head is built from."""
    in_channels, reductions = [int(c) for c in in_channels], [int(r) for r in reductions]
    if len(in_channels) != len(reductions) or len(in_channels) < minimum:
        raise ValueError(
            f"need >= {minimum} backbone features with matching channels/reductions, got "
            f"channels={in_channels} reductions={reductions}"
        )
    if reductions != sorted(reductions):
        raise ValueError(f"backbone reductions must be non-decreasing (coarsest last), got {reductions}")
    return in_channels, reductions


def check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
