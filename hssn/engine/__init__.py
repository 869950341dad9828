"""Training, evaluation and prediction for HSSN models, driven by YAML configs (see docs/engine.md).

Names are imported on first use, so that ``hssn configs`` (configs only) does not import torch.
"""
import importlib

_EXPORTS = {
    "DEFAULTS": "config", "available_configs": "config", "load_config": "config",
    "ConfusionMatrix": "metrics", "HierarchicalMetrics": "metrics", "format_report": "metrics", "iou": "metrics",
    "mistake_severity": "metrics", "per_level_iou": "metrics", "violation_mask": "metrics",
    "path_inference": "inference", "tta_scores": "inference",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hssn.engine' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    return getattr(module, "available" if name == "available_configs" else name)
