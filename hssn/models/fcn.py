"""FCN head: a few 3x3 convs on the coarsest backbone feature (the plain baseline)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .head_base import SegHead, check_features, check_positive
from .layers import Classifier, ConvBNReLU, FCNBlock


class FCNHead(SegHead):
    """``num_convs`` 3x3 conv-BN-ReLU on the last feature, concatenated with the input and fused by a
    3x3 conv (mmseg's ``concat_input``); optional auxiliary FCN on the second-to-last feature.

    Output stride = the backbone's last reduction (8 for a dilated ResNet at OS8).
    """

    def __init__(
        self,
        in_channels: list[int],
        reductions: list[int],
        num_channels: int,
        head_channels: int = 512,
        num_convs: int = 2,
        aux_head: bool = False,
        aux_channels: int | None = None,
    ):
        super().__init__()
        in_channels, reductions = check_features(in_channels, reductions, minimum=2 if aux_head else 1)
        aux_channels = max(head_channels // 2, 1) if aux_channels is None else aux_channels
        check_positive(num_channels=num_channels, head_channels=head_channels, num_convs=num_convs,
                       aux_channels=aux_channels)
        self.num_channels, self.feature_channels = num_channels, head_channels
        self.output_stride = reductions[-1]
        self.convs = nn.Sequential(
            *[ConvBNReLU(in_channels[-1] if i == 0 else head_channels, head_channels) for i in range(num_convs)]
        )
        self.fuse = ConvBNReLU(in_channels[-1] + head_channels, head_channels)
        self.classifier = Classifier(head_channels, num_channels)
        self.aux = FCNBlock(in_channels[-2], aux_channels, num_channels) if aux_head else None

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = features[-1]
        feat = self.fuse(torch.cat([x, self.convs(x)], dim=1))
        out = {"feature": feat, "logits": self.classifier(feat)}
        if self.aux is not None and self.training:
            out["aux_logits"] = self.aux(features[-2])
        return out
