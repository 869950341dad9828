"""Small building blocks shared by the heads (NCHW tensors throughout)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBNReLU(nn.Sequential):
    """``k x k`` conv (no bias) -> BatchNorm -> ReLU; ``padding`` keeps the spatial size."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1, groups: int = 1):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise ``3 x 3`` (dilated) conv-BN-ReLU then pointwise conv-BN-ReLU (DeepLabV3+'s separable conv)."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__(ConvBNReLU(in_ch, in_ch, 3, dilation, groups=in_ch), ConvBNReLU(in_ch, out_ch, 1))


class Classifier(nn.Sequential):
    """Dropout2d then a ``1 x 1`` conv to ``num_channels`` logits (weights ~ N(0, 0.01), bias 0)."""

    def __init__(self, in_ch: int, num_channels: int, dropout: float = 0.1):
        conv = nn.Conv2d(in_ch, num_channels, 1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
        super().__init__(nn.Dropout2d(dropout), conv)


class FCNBlock(nn.Module):
    """``num_convs`` 3x3 conv-BN-ReLU layers then a :class:`Classifier`; used as auxiliary head.

    forward: ``(B, in_ch, h, w)`` -> ``(B, num_channels, h, w)`` logits.
    """

    def __init__(self, in_ch: int, channels: int, num_channels: int, num_convs: int = 1, kernel_size: int = 3):
        super().__init__()
        layers = [ConvBNReLU(in_ch if i == 0 else channels, channels, kernel_size) for i in range(num_convs)]
        self.convs = nn.Sequential(*layers)
        self.classifier = Classifier(channels, num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.convs(x))


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of an NCHW tensor; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def sine_position_encoding(x: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2-D sine position encoding for an NCHW map: ``(B, dim, h, w)`` in ``x``'s dtype/device."""
    if dim % 4:
        raise ValueError(f"position encoding dim must be a multiple of 4, got {dim}")
    b, _, h, w = x.shape
    quarter = dim // 4
    scale = 2 * math.pi
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h * scale
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w * scale
    freqs = temperature ** (torch.arange(quarter, device=x.device, dtype=torch.float32) / quarter)
    py = ys[:, None] / freqs  # (h, quarter)
    px = xs[:, None] / freqs  # (w, quarter)
    py = torch.cat([py.sin(), py.cos()], dim=1)[:, :, None].expand(h, 2 * quarter, w)
    px = torch.cat([px.sin(), px.cos()], dim=1).t()[None].expand(h, 2 * quarter, w)
    pos = torch.cat([py.permute(1, 0, 2), px.permute(1, 0, 2)], dim=0)  # (dim, h, w)
    return pos[None].expand(b, dim, h, w).to(x.dtype)
