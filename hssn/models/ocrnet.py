"""OCRNet head (Yuan et al. 2020): soft object regions -> object-contextual representations."""
from __future__ import annotations

import torch
import torch.nn as nn

from .head_base import SegHead, check_features, check_positive
from .layers import Classifier, ConvBNReLU, resize


class ObjectContext(nn.Module):
    """Object-contextual representations.

    ``forward(feats (B, ch, h, w), regions (B, K, h, w) logits) -> (B, ch, h, w)``:
    each region's representation is the feature average under its spatial softmax; every pixel
    attends over the K regions (key/value width ``key_channels``) and the context is fused with the
    pixel feature by a 1x1 conv.
    """

    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(ConvBNReLU(channels, key_channels, 1), ConvBNReLU(key_channels, key_channels, 1))
        self.f_object = nn.Sequential(ConvBNReLU(channels, key_channels, 1), ConvBNReLU(key_channels, key_channels, 1))
        self.f_down = ConvBNReLU(channels, key_channels, 1)
        self.f_up = ConvBNReLU(key_channels, channels, 1)
        self.fuse = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, feats: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = feats.shape
        probs = regions.flatten(2).float().softmax(dim=2).to(feats.dtype)  # (B, K, hw)
        context = torch.bmm(probs, feats.flatten(2).transpose(1, 2))  # (B, K, ch)
        context = context.transpose(1, 2).unsqueeze(-1)  # (B, ch, K, 1)
        query = self.f_pixel(feats).flatten(2).transpose(1, 2)  # (B, hw, kc)
        key = self.f_object(context).flatten(2)  # (B, kc, K)
        value = self.f_down(context).flatten(2).transpose(1, 2)  # (B, K, kc)
        sim = (torch.bmm(query, key) * self.key_channels**-0.5).softmax(dim=-1)  # (B, hw, K)
        ctx = torch.bmm(sim, value).transpose(1, 2).reshape(b, self.key_channels, h, w)
        return self.fuse(torch.cat([self.f_up(ctx), feats], dim=1))


class OCRHead(SegHead):
    """OCRNet: input transform -> soft object regions (C channels, auxiliary-supervised) and a 3x3
    bottleneck -> :class:`ObjectContext` -> ``"feature"`` (``head_channels``) -> classifier.

    ``in_features``: ``"concat"`` resizes every backbone feature to the finest one and concatenates
    them (HRNetV2: 48+96+192+384 = 720 channels at 1/4); ``"last"`` uses the coarsest feature only
    (a dilated ResNet at OS8); ``"auto"`` picks ``"concat"`` when all features have distinct strides
    (a pyramid) and ``"last"`` otherwise. The soft-region head (1x1 conv-BN-ReLU + classifier) reads
    the same input; its logits are the ``"aux_logits"`` (returned in training when ``aux_head``).
    """

    def __init__(
        self,
        in_channels: list[int],
        reductions: list[int],
        num_channels: int,
        head_channels: int = 512,
        ocr_channels: int = 256,
        in_features: str = "auto",
        aux_head: bool = True,
    ):
        super().__init__()
        in_channels, reductions = check_features(in_channels, reductions)
        check_positive(num_channels=num_channels, head_channels=head_channels, ocr_channels=ocr_channels)
        if in_features == "auto":
            in_features = "concat" if len(set(reductions)) == len(reductions) else "last"
        if in_features not in ("concat", "last"):
            raise ValueError(f"in_features must be 'auto', 'concat' or 'last', got {in_features!r}")
        self.in_features, self.aux_head = in_features, bool(aux_head)
        in_ch = sum(in_channels) if in_features == "concat" else in_channels[-1]
        self.num_channels, self.feature_channels = num_channels, head_channels
        self.output_stride = reductions[0] if in_features == "concat" else reductions[-1]
        self.soft_regions = nn.Sequential(ConvBNReLU(in_ch, head_channels, 1), Classifier(head_channels, num_channels))
        self.bottleneck = ConvBNReLU(in_ch, head_channels, 3)
        self.context = ObjectContext(head_channels, ocr_channels)
        self.classifier = Classifier(head_channels, num_channels)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.in_features == "concat":
            size = tuple(features[0].shape[-2:])
            x = torch.cat([resize(f, size) for f in features], dim=1)
        else:
            x = features[-1]
        regions = self.soft_regions(x)
        feat = self.context(self.bottleneck(x), regions)
        out = {"feature": feat, "logits": self.classifier(feat)}
        if self.aux_head and self.training:
            out["aux_logits"] = regions
        return out
