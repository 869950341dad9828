"""MaskFormer head (Cheng et al. 2021) with sigmoid scores over all hierarchy nodes."""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn

from hssn_kernels import ClassHierarchy, leaf_labels_only

from .head_base import LossFn, SegHead, check_features, check_positive
from .layers import ConvBNReLU, resize, sine_position_encoding
from .mask_matching import MaskLossWeights, maskformer_losses

SCORE_EPS = 1e-6


def mask_weighted_scores(pred_logits: torch.Tensor, pred_masks: torch.Tensor, eps: float = SCORE_EPS) -> torch.Tensor:
    """Per-pixel node logits from query classes and masks, computed in float32.

    ``score[b, c, p] = sum_q sigmoid(cls[b, q, c]) * sigmoid(mask[b, q, p]) / sum_q sigmoid(mask[b, q, p])``
    (a convex combination of the query scores, so it lies in [0, 1]), returned as
    ``logit(clamp(score, eps, 1 - eps))``: pred_logits (B, Q, C), pred_masks (B, Q, h, w) ->
    (B, C, h, w) float32.
    """
    device = pred_masks.device.type
    no_autocast = torch.autocast(device, enabled=False) if device in ("cpu", "cuda") else nullcontext()
    with no_autocast:
        cls = pred_logits.float().sigmoid()
        masks = pred_masks.float().sigmoid()
        score = torch.einsum("bqc,bqhw->bchw", cls, masks) / masks.sum(1, keepdim=True).clamp_min(eps)
        return torch.logit(score.clamp(eps, 1 - eps))


class PixelDecoder(nn.Module):
    """A small FPN: 1x1 laterals, top-down sum, 3x3 output convs; then a 3x3 conv to the mask features.

    ``forward(features) -> (B, channels, h0, w0)`` at the finest backbone stride.
    """

    def __init__(self, in_channels: list[int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList([ConvBNReLU(c, channels, 1) for c in in_channels])
        self.output = nn.ModuleList([ConvBNReLU(channels, channels, 3) for _ in in_channels])
        self.mask_features = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        y = self.output[-1](self.lateral[-1](features[-1]))
        for i in range(len(features) - 2, -1, -1):
            lat = self.lateral[i](features[i])
            y = self.output[i](lat + resize(y, tuple(lat.shape[-2:])))
        return self.mask_features(y)


class MaskFormerHead(SegHead):
    """Pixel decoder + transformer decoder with ``num_queries`` learned queries.

    * Memory: the coarsest backbone feature, 1x1-projected to ``head_channels``, plus a sine position
      encoding; ``dec_layers`` pre-norm ``nn.TransformerDecoderLayer`` (8 heads, FFN 8x, no dropout).
    * ``pred_logits`` (B, Q, C): per-query node logits (sigmoid, not softmax: no null class).
    * ``pred_masks`` (B, Q, h, w): ``mask_embed(query) . mask_features`` at the finest stride (1/4).
    * ``logits``: :func:`mask_weighted_scores`; ``"feature"`` = the pixel decoder's mask features.
    * ``deep_supervision`` (MaskFormer's default): in training, the class and mask predictions of
      every earlier decoder layer (after the shared final LayerNorm) come back as
      ``"aux_pred_logits"`` (B, L-1, Q, C) and ``"aux_pred_masks"`` (B, L-1, Q, h, w), and their set
      losses are added to the final layer's (each layer matched on its own).
    """

    def __init__(
        self,
        in_channels: list[int],
        reductions: list[int],
        num_channels: int,
        head_channels: int = 256,
        num_queries: int = 100,
        dec_layers: int = 6,
        num_heads: int = 8,
        loss_weights: MaskLossWeights = MaskLossWeights(),
        deep_supervision: bool = True,
    ):
        super().__init__()
        in_channels, reductions = check_features(in_channels, reductions)
        check_positive(num_channels=num_channels, head_channels=head_channels, num_queries=num_queries,
                       dec_layers=dec_layers, num_heads=num_heads)
        if head_channels % num_heads or head_channels % 4:
            raise ValueError(f"head_channels ({head_channels}) must be divisible by num_heads ({num_heads}) and 4")
        if not isinstance(loss_weights, MaskLossWeights):
            raise TypeError(f"loss_weights must be a MaskLossWeights, got {type(loss_weights).__name__}")
        self.num_channels, self.feature_channels = num_channels, head_channels
        self.output_stride = reductions[0]
        self.num_queries, self.loss_weights = num_queries, loss_weights
        self.deep_supervision = bool(deep_supervision)
        self.pixel_decoder = PixelDecoder(in_channels, head_channels)
        self.memory_proj = nn.Conv2d(in_channels[-1], head_channels, 1)
        self.query_embed = nn.Embedding(num_queries, head_channels)
        self.decoder = nn.ModuleList(
            nn.TransformerDecoderLayer(
                head_channels, num_heads, 8 * head_channels, dropout=0.0, batch_first=True, norm_first=True
            )
            for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(head_channels)
        self.class_embed = nn.Linear(head_channels, num_channels)
        self.mask_embed = nn.Sequential(
            nn.Linear(head_channels, head_channels), nn.ReLU(inplace=True),
            nn.Linear(head_channels, head_channels), nn.ReLU(inplace=True),
            nn.Linear(head_channels, head_channels),
        )

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        mask_features = self.pixel_decoder(features)
        mem = self.memory_proj(features[-1])
        mem = (mem + sine_position_encoding(mem, mem.shape[1])).flatten(2).transpose(1, 2)  # (B, hw, d)
        x = self.query_embed.weight[None].expand(mem.shape[0], -1, -1)
        supervised = []
        for i, layer in enumerate(self.decoder):
            x = layer(x, mem)  # (B, Q, d)
            if i == len(self.decoder) - 1 or (self.training and self.deep_supervision):
                supervised.append(self.decoder_norm(x))
        hs = torch.stack(supervised, dim=1)  # (B, L', Q, d)
        all_logits = self.class_embed(hs)
        all_masks = torch.einsum("blqd,bdhw->blqhw", self.mask_embed(hs), mask_features)
        pred_logits, pred_masks = all_logits[:, -1], all_masks[:, -1]
        out = {
            "feature": mask_features,
            "logits": mask_weighted_scores(pred_logits, pred_masks),
            "pred_logits": pred_logits,
            "pred_masks": pred_masks,
        }
        if hs.shape[1] > 1:
            out["aux_pred_logits"], out["aux_pred_masks"] = all_logits[:, :-1], all_masks[:, :-1]
        return out

    def auxiliary_losses(
        self,
        outputs: dict[str, torch.Tensor],
        target: torch.Tensor,
        loss_fn: LossFn,
        hierarchy: ClassHierarchy,
        ignore_index: int = 255,
    ) -> dict[str, torch.Tensor]:
        """The matched set losses ``{"mask_dice", "mask_focal", "query_cls"}``, each summed over the
        final and (deep supervision) earlier decoder layers. ``loss_fn`` is the engine's per-pixel loss,
        which the engine applies to ``"logits"``; it is not used here. Pixels labelled at an inner node
        (partial labels) take no part in the set losses: their segments' classes would be unknown below
        the label (the per-pixel HSSN loss trains them)."""
        target = leaf_labels_only(target, hierarchy, ignore_index)
        layers = [(outputs["pred_logits"], outputs["pred_masks"])]
        if "aux_pred_logits" in outputs:
            layers += list(zip(outputs["aux_pred_logits"].unbind(1), outputs["aux_pred_masks"].unbind(1)))
        total: dict[str, torch.Tensor] = {}
        for logits, masks in layers:
            for key, value in maskformer_losses(logits, masks, target, hierarchy, self.loss_weights, ignore_index).items():
                total[key] = total[key] + value if key in total else value
        return total
