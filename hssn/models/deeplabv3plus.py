"""DeepLabV3+ head: ASPP on the coarsest feature, fused with the 1/4 low-level feature."""
from __future__ import annotations

import torch
import torch.nn as nn

from .head_base import SegHead, check_features, check_positive
from .layers import Classifier, ConvBNReLU, FCNBlock, SeparableConvBNReLU, resize


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: image pooling, 1x1 and three dilated separable 3x3 branches,
    concatenated and fused by a 3x3 conv. ``(B, in_ch, h, w) -> (B, channels, h, w)``.

    The pooling branch has no BatchNorm (its map is 1x1, so BN would fail at batch size 1).
    """

    def __init__(self, in_ch: int, channels: int, rates: tuple[int, ...]):
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, channels, 1), nn.ReLU(inplace=True))
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_ch, channels, 1)] + [SeparableConvBNReLU(in_ch, channels, r) for r in rates]
        )
        self.fuse = ConvBNReLU(channels * (len(rates) + 2), channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.fuse(torch.cat([pooled] + [b(x) for b in self.branches], dim=1))


class DeepLabV3PlusHead(SegHead):
    """DeepLabV3+ (Chen et al. 2018) with separable convs, as in mmsegmentation's config.

    * ASPP on the last feature with rates ``aspp_rates`` (12/24/36) given for output stride 8 and
      scaled by ``8 / stride`` (6/12/18 at OS16, 3/6/9 at OS32).
    * Decoder: the finest feature (stride 4) reduced to ``low_level_channels`` (48), concatenated with
      the upsampled ASPP output, two separable 3x3 convs -> ``"feature"`` (``head_channels``, 1/4).
    * Optional auxiliary FCN head on the second-to-last feature (ResNet stage 3), training only.
    """

    def __init__(
        self,
        in_channels: list[int],
        reductions: list[int],
        num_channels: int,
        head_channels: int = 512,
        low_level_channels: int = 48,
        aspp_rates: tuple[int, ...] = (12, 24, 36),
        aux_head: bool = True,
        aux_channels: int | None = None,
    ):
        super().__init__()
        in_channels, reductions = check_features(in_channels, reductions, minimum=2)
        if reductions[0] >= reductions[-1]:
            raise ValueError(f"DeepLabV3+ needs a finer low-level feature than the last one, got {reductions}")
        aux_channels = max(head_channels // 2, 1) if aux_channels is None else aux_channels
        check_positive(num_channels=num_channels, head_channels=head_channels,
                       low_level_channels=low_level_channels, aux_channels=aux_channels)
        stride = reductions[-1]
        self.rates = tuple(max(1, round(r * 8 / stride)) for r in aspp_rates)
        self.num_channels, self.feature_channels = num_channels, head_channels
        self.output_stride = reductions[0]
        self.aspp = ASPP(in_channels[-1], head_channels, self.rates)
        self.low_level = ConvBNReLU(in_channels[0], low_level_channels, 1)
        self.decoder = nn.Sequential(
            SeparableConvBNReLU(head_channels + low_level_channels, head_channels),
            SeparableConvBNReLU(head_channels, head_channels),
        )
        self.classifier = Classifier(head_channels, num_channels)
        self.aux = FCNBlock(in_channels[-2], aux_channels, num_channels) if aux_head else None

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        low = self.low_level(features[0])
        high = resize(self.aspp(features[-1]), tuple(low.shape[-2:]))
        feat = self.decoder(torch.cat([high, low], dim=1))
        out = {"feature": feat, "logits": self.classifier(feat)}
        if self.aux is not None and self.training:
            out["aux_logits"] = self.aux(features[-2])
        return out
