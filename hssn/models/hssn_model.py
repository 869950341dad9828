"""The HSSN adaptation: a backbone, a head over all hierarchy nodes and a training-only projection head."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .backbones import TimmBackbone
from .head_base import LossFn, SegHead

PROJECTION_PREFIX = "projection."
PROJECTION_SOURCES = ("backbone", "decoder")
"""Where the projection head reads: ``"backbone"`` = the backbone's deepest feature (the paper's encoder
embedding; the authors' DeepLabV3+ code uses ResNet stage 4, 2048 channels at stride 8), ``"decoder"`` =
the head's final feature (``"feature"`` of the head classes)."""


class ProjectionHead(nn.Module):
    """The authors' projection: 1x1 conv ``in_ch -> in_ch``, BatchNorm, ReLU, 1x1 conv ``in_ch -> embed_dim``,
    then L2 normalisation over channels. ``(B, in_ch, h, w) -> (B, embed_dim, h, w)``, unit norm per pixel."""

    def __init__(self, in_ch: int, embed_dim: int = 256):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_ch, in_ch, 1), nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True),
                                  nn.Conv2d(in_ch, embed_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), p=2, dim=1)


class HSSNModel(nn.Module):
    """A flat segmentation network made hierarchical by its head.

    ``forward(images (B, 3, H, W) float in [0, 1])`` normalises them with the model's own ``pixel_mean`` /
    ``pixel_std`` buffers (in the state dict: a checkpoint carries its normalisation) and returns a dict:

    * ``"logits"`` ``(B, C, ceil(H/s), ceil(W/s))``, C = ``hierarchy.num_channels``, s = ``output_stride``
      (NOT upsampled: the caller resizes to the label size);
    * training mode only: ``"embeddings"`` ``(B, embed_dim, ...)`` (unit L2 norm per pixel) = projection of
      the backbone's deepest feature (``projection_from="backbone"``, the paper's default) or of the head's
      ``"feature"`` (``"decoder"``), and ``"aux_logits"`` where the head has one;
    * MaskFormer heads also: ``"pred_logits"`` (B, Q, C) and ``"pred_masks"`` (B, Q, h, w), and in
      training with deep supervision ``"aux_pred_logits"`` (B, L-1, Q, C) / ``"aux_pred_masks"``.

    Any input size works: images are zero-padded right/bottom to a multiple of the backbone's
    coarsest stride and every map is cropped back to ``ceil(H * h_padded_out / H_padded)``.
    """

    def __init__(self, backbone: TimmBackbone, head: SegHead, hierarchy: ClassHierarchy, embed_dim: int = 256,
                 projection_from: str = "backbone", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if not isinstance(hierarchy, ClassHierarchy):
            raise TypeError(f"hierarchy must be a hssn_kernels.ClassHierarchy, got {type(hierarchy).__name__}")
        if not isinstance(head, SegHead):
            raise TypeError(f"head must be a SegHead, got {type(head).__name__}")
        if head.num_channels != hierarchy.num_channels:
            raise UserError(
                f"head outputs {head.num_channels} channels but the hierarchy has {hierarchy.num_channels}"
            )
        if not isinstance(embed_dim, int) or isinstance(embed_dim, bool) or embed_dim <= 0:
            raise UserError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if projection_from not in PROJECTION_SOURCES:
            raise UserError(f"projection_from must be one of {PROJECTION_SOURCES}, got {projection_from!r}")
        self.backbone = backbone
        self.head = head
        self.projection_from = projection_from
        in_ch = backbone.channels[-1] if projection_from == "backbone" else head.feature_channels
        self.projection = ProjectionHead(in_ch, embed_dim)
        self.hierarchy = hierarchy
        self.embed_dim = embed_dim
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != backbone.in_chans or len(std) != backbone.in_chans or min(std) <= 0:
            raise UserError(f"mean and std must hold {backbone.in_chans} values (std > 0), got {mean} / {std}")
        mean_t, std_t = (torch.tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1) for v in (mean, std))
        # the input normalisation travels with the weights (a checkpoint holds it; every caller runs the same)
        self.register_buffer("pixel_mean", mean_t)
        self.register_buffer("pixel_std", std_t)

    @property
    def output_stride(self) -> int:
        """Stride of ``"logits"`` relative to the input image."""
        return self.head.output_stride

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {getattr(images, 'dtype', type(images))}")
        if images.dim() != 4 or images.shape[1] != self.backbone.in_chans:
            raise ValueError(f"images must be (B, {self.backbone.in_chans}, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        div = self.backbone.size_divisor
        hp, wp = -(-h // div) * div, -(-w // div) * div  # integer ceil: traceable with symbolic sizes (export)
        x = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        x = F.pad(x, (0, wp - w, 0, hp - h))  # unconditional: an export traces one graph for every size

        def crop(t: torch.Tensor) -> torch.Tensor:
            th, tw = t.shape[-2:]
            return t[..., : -(-(h * th) // hp), : -(-(w * tw) // wp)]

        feats = self.backbone(x)
        out = self.head(feats)
        result = {"logits": crop(out["logits"])}
        if self.training:
            source = feats[-1] if self.projection_from == "backbone" else out["feature"]
            result["embeddings"] = crop(self.projection(source))
        if "aux_logits" in out:
            result["aux_logits"] = crop(out["aux_logits"])
        for key in ("pred_logits", "aux_pred_logits"):
            if key in out:
                result[key] = out[key]
        for key in ("pred_masks", "aux_pred_masks"):
            if key in out:
                result[key] = crop(out[key])
        return result

    def auxiliary_losses(
        self, outputs: dict[str, torch.Tensor], target: torch.Tensor, loss_fn: LossFn, ignore_index: int = 255
    ) -> dict[str, torch.Tensor]:
        """The architecture's extra loss terms, already weighted (see the head's ``auxiliary_losses``).

        outputs: this model's training output; target (B, H, W) int64 leaf ids / ``ignore_index`` at
        label resolution; ``loss_fn(logits (B, C, h, w), target) -> scalar`` is the HSSN pixel loss (it upsamples).
        """
        if not isinstance(target, torch.Tensor) or target.dtype != torch.int64 or target.dim() != 3:
            raise TypeError(f"target must be a (B, H, W) int64 tensor, got {getattr(target, 'dtype', type(target))}"
                            f" {tuple(getattr(target, 'shape', ()))}")
        if target.shape[0] != outputs["logits"].shape[0]:
            raise ValueError(f"target batch {target.shape[0]} != logits batch {outputs['logits'].shape[0]}")
        return self.head.auxiliary_losses(outputs, target, loss_fn, self.hierarchy, ignore_index)

    def state_dict(self, *args, for_inference: bool = False, **kwargs):
        """``nn.Module.state_dict``; ``for_inference=True`` leaves out the projection head."""
        state = super().state_dict(*args, **kwargs)
        if for_inference:
            prefix = kwargs.get("prefix", "") + PROJECTION_PREFIX
            for key in [k for k in state if k.startswith(prefix)]:
                del state[key]
        return state

    def export(self) -> OrderedDict:
        """Inference-only state dict (no projection head); loads back with :meth:`load_state_dict`."""
        return self.state_dict(for_inference=True)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like ``nn.Module.load_state_dict``, but a dict without projection weights (an
        :meth:`export`) loads strictly into the other parameters and leaves the projection as is."""
        if not strict or any(k.startswith(PROJECTION_PREFIX) for k in state_dict):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(PROJECTION_PREFIX)]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"error loading state dict into HSSNModel: missing keys {missing[:10]}, "
                f"unexpected keys {result.unexpected_keys[:10]}"
            )
        return result
