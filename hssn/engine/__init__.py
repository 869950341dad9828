"""Training, evaluation and prediction for HSSN models, driven by YAML configs (see docs/engine.md)."""
from .config import DEFAULTS, available as available_configs, load_config
from .metrics import ConfusionMatrix, HierarchicalMetrics, format_report, iou, mistake_severity, per_level_iou, violation_mask
from .inference import path_inference, tta_scores

__all__ = [
    "DEFAULTS", "available_configs", "load_config",
    "ConfusionMatrix", "HierarchicalMetrics", "format_report", "iou", "mistake_severity", "per_level_iou",
    "violation_mask", "path_inference", "tta_scores",
]
