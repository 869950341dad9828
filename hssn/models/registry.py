"""Build an :class:`HSSNModel` by name: a preset or ``"<head>:<timm backbone>"``."""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .backbones import TimmBackbone
from .deeplabv3plus import DeepLabV3PlusHead
from .fcn import FCNHead
from .head_base import SegHead
from .hssn_model import HSSNModel
from .maskformer import MaskFormerHead
from .ocrnet import OCRHead

HEADS: dict[str, type[SegHead]] = {
    "deeplabv3plus": DeepLabV3PlusHead,
    "ocrnet": OCRHead,
    "maskformer": MaskFormerHead,
    "fcn": FCNHead,
}


@dataclass(frozen=True)
class Preset:
    """A paper configuration: head, timm backbone and default kwargs (overridable by the caller)."""

    head: str
    backbone: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


PRESETS: dict[str, Preset] = {
    "deeplabv3plus_r101": Preset(
        "deeplabv3plus", "resnet101d.gluon_in1k", {"output_stride": 8, "head_channels": 512},
        "DeepLabV3+ on a dilated ResNet-101-D (deep 3x3 stem, avg-pool shortcuts; OS8), ASPP 12/24/36, auxiliary "
        "FCN on stage 3. The authors' config uses mmseg's ResNetV1d with GluonCV resnet101_v1d ImageNet-1K weights",
    ),
    "ocrnet_hrw48": Preset(
        "ocrnet", "hrnet_w48.ms_in1k", {"head_channels": 512, "ocr_channels": 256},
        "OCRNet on HRNetV2-W48 (branches 48/96/192/384 concatenated at 1/4), ImageNet-1K weights",
    ),
    "maskformer_swins": Preset(
        "maskformer", "swin_small_patch4_window7_224.ms_in1k",
        {"img_size": (512, 1024), "head_channels": 256, "num_queries": 100},
        "MaskFormer on Swin-Small (FPN pixel decoder, 6-layer transformer decoder, 100 queries), ImageNet-1K weights",
    ),
}
"""The paper's three architectures (Sec. 4.1: "all backbones are initialized using the weights pre-trained on
ImageNet-1K"). ``backbone=`` swaps the timm model and weights of a preset and keeps its head settings, e.g.
``resnet101c.gluon_in1k`` (V1c: deep stem only), ``resnet101.a1h_in1k`` (7x7 stem) or
``swin_small_patch4_window7_224.ms_in22k_ft_in1k`` (ImageNet-22K)."""

BACKBONE_KWARGS = ("output_stride", "img_size", "backbone_kwargs")


def available() -> dict[str, list[str]]:
    """``{"presets": [...], "heads": [...]}``; any timm backbone works as ``"<head>:<timm name>"``."""
    return {"presets": sorted(PRESETS), "heads": sorted(HEADS)}


def _resolve(name: str, backbone: str | None = None) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name in PRESETS:
        p = PRESETS[name]
        return p.head, backbone or p.backbone, dict(p.kwargs)
    head, sep, timm_name = name.partition(":")
    if backbone is not None:
        raise UserError(f"backbone= swaps the backbone of a preset {sorted(PRESETS)}; for {name!r} name it in "
                        f"the model name ('<head>:<timm backbone>')")
    if sep and head in HEADS and timm_name:
        return head, timm_name, {}
    raise UserError(
        f"unknown model {name!r}: use a preset {sorted(PRESETS)} or '<head>:<timm backbone>' with head in "
        f"{sorted(HEADS)} (e.g. 'deeplabv3plus:resnet18')"
    )


def build_model(
    name: str,
    hierarchy: ClassHierarchy,
    pretrained: bool | str | os.PathLike = False,
    **kwargs: Any,
) -> HSSNModel:
    """Build an :class:`HSSNModel` whose classifier covers ``hierarchy.num_channels`` nodes.

    Args:
        name: a preset (``available()["presets"]``) or ``"<head>:<timm backbone>"``.
        hierarchy: the class tree.
        pretrained: backbone weights: False, True (timm's ImageNet weights) or a local file with the
            full timm model's state dict.
        **kwargs: ``backbone`` (a timm name, optionally with a weights tag) replaces a preset's backbone;
            ``output_stride``, ``img_size``, ``backbone_kwargs`` (dict for timm) go to the
            backbone; ``embed_dim`` and ``projection_from`` ("backbone" | "decoder") to the projection
            head; ``mean`` / ``std`` (the input normalisation, default ImageNet's) to the model; everything else to the head class (e.g. ``head_channels``, ``aux_head``, ``num_queries``, ``dec_layers``, ``ocr_channels``).
            Caller kwargs override the preset's.
    """
    if not isinstance(hierarchy, ClassHierarchy):
        raise TypeError(f"hierarchy must be a hssn_kernels.ClassHierarchy, got {type(hierarchy).__name__}")
    head_name, backbone_name, merged = _resolve(name, kwargs.pop("backbone", None))
    merged.update(kwargs)
    norm = {k: merged.pop(k) for k in ("mean", "std") if k in merged}
    embed_dim = merged.pop("embed_dim", 256)
    projection_from = merged.pop("projection_from", "backbone")
    bb = {k: merged.pop(k) for k in BACKBONE_KWARGS if k in merged}
    head_cls = HEADS[head_name]
    accepted = [p for p in inspect.signature(head_cls).parameters if p not in ("in_channels", "reductions", "num_channels")]
    unknown = sorted(set(merged) - set(accepted))
    if unknown:
        raise TypeError(
            f"unknown argument(s) {unknown} for model {name!r}: the {head_name} head takes {accepted}, "
            f"the backbone takes {['backbone', *BACKBONE_KWARGS]}, 'embed_dim' / 'projection_from' set the projection head "
            "and 'mean' / 'std' the input normalisation"
        )
    backbone = TimmBackbone(
        backbone_name,
        pretrained=pretrained,
        output_stride=bb.get("output_stride"),
        img_size=bb.get("img_size"),
        **bb.get("backbone_kwargs", {}),
    )
    head = head_cls(backbone.channels, backbone.reductions, hierarchy.num_channels, **merged)
    model = HSSNModel(backbone, head, hierarchy, embed_dim=embed_dim, projection_from=projection_from, **norm)
    model.name = name
    return model
