"""HSSN models: timm backbones, DeepLabV3+/OCRNet/MaskFormer/FCN heads over all hierarchy nodes,
and the training-only projection head for the tree-triplet loss (see docs/models.md)."""
from .backbones import TimmBackbone
from .deeplabv3plus import DeepLabV3PlusHead
from .fcn import FCNHead
from .head_base import SegHead
from .hssn_model import HSSNModel, ProjectionHead
from .mask_matching import MaskLossWeights, hungarian_match, maskformer_losses, segments_from_target
from .maskformer import MaskFormerHead, mask_weighted_scores
from .ocrnet import OCRHead
from .registry import HEADS, PRESETS, available, build_model
from .summary import count_flops, format_summary, summary

__all__ = [
    "DeepLabV3PlusHead",
    "FCNHead",
    "HEADS",
    "HSSNModel",
    "MaskFormerHead",
    "MaskLossWeights",
    "OCRHead",
    "PRESETS",
    "ProjectionHead",
    "SegHead",
    "TimmBackbone",
    "available",
    "build_model",
    "count_flops",
    "format_summary",
    "hungarian_match",
    "mask_weighted_scores",
    "maskformer_losses",
    "segments_from_target",
    "summary",
]
