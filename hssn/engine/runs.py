"""Whole commands built from a config: ``run_eval`` (``hssn eval``) and model loading from a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import builders, checkpoint as ckpt
from .distributed import cleanup, init_distributed
from .calibration import draw_reliability
from .evaluator import evaluate
from .metrics import format_report, to_json_ready


def load_trained_model(cfg: dict, checkpoint: dict, checkpoint_path: str | Path, hierarchy,
                       device: torch.device) -> torch.nn.Module:
    """The config's model with the weights of ``checkpoint`` (as :func:`checkpoint.load_checkpoint` read it
    from ``checkpoint_path``, which errors name), no pretrained download, in eval mode."""
    model = builders.build_model(cfg, hierarchy, pretrained=False)
    ckpt.load_model_weights(model, checkpoint, checkpoint_path)
    return model.to(device).eval()


def default_metrics_path(checkpoint_path: str | Path) -> Path:
    """``<run folder>/eval_<checkpoint stem>.json`` for a checkpoint in a run's ``checkpoints/`` folder,
    else ``<checkpoint stem>.metrics.json`` beside it."""
    path = Path(checkpoint_path)
    if path.parent.name == "checkpoints":
        return path.parent.parent / f"eval_{path.stem}.json"
    return path.with_name(f"{path.stem}.metrics.json")


def run_eval(cfg: dict, checkpoint_path: str | Path, out: str | Path | None = None, per_class: bool = False) -> dict:
    """Evaluate ``checkpoint_path`` on the config's val split (torchrun-aware); prints the table and writes
    the metrics JSON to ``out`` (default :func:`default_metrics_path`) and, with ``eval.calibration``, the
    reliability diagram beside it (``.reliability.png``). Returns the report."""
    info = init_distributed(cfg["train"]["device"])
    try:
        builders.check_choices(cfg, info.device)
        dataset = builders.build_dataset(cfg, "val")
        model = load_trained_model(cfg, ckpt.load_checkpoint(checkpoint_path), checkpoint_path, dataset.hierarchy,
                                   info.device)
        report = evaluate(model, dataset, cfg, info, cfg["train"]["progress"])
        if info.is_main:
            print(format_report(report, per_class=per_class))
            path = Path(out) if out else default_metrics_path(checkpoint_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(to_json_ready(report), indent=1) + "\n")
            print(f"metrics: {path}")
            if "ece" in report["levels"][0]:
                figure = path.with_suffix(".reliability.png")
                draw_reliability(report, figure, f"{cfg['name']}: {Path(checkpoint_path).name}, "
                                                 f"{report['parent_scores']} levels, T = {report['temperature']:.3g}")
                print(f"reliability diagram: {figure}")
        return report
    finally:
        cleanup()
