"""``hssn export``: a trained checkpoint to an ONNX / torch.export file with its metadata."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hssn.engine.config import Config
from hssn.errors import UserError

from .graph import ExportedSegmenter, export_model, metadata


@dataclass(frozen=True)
class ExportOptions:
    """``format``: onnx | torch; ``size`` (H, W) the input size, or the example of a dynamic size (None:
    ``eval.crop_size``); ``dynamic``: None, "batch" or "size" (:func:`hssn.export.graph.export_model`);
    ``levels``: also one map per tree level."""

    format: str = "onnx"
    size: tuple[int, int] | None = None
    dynamic: str | None = None
    levels: bool = False


def export_checkpoint(cfg: Config, checkpoint_path: str | Path, out: str | Path,
                      options: ExportOptions = ExportOptions()) -> Path:
    """Export the config's model with the checkpoint's weights to ``out`` as ``options`` say. Returns the
    written path."""
    from hssn.engine import checkpoint as ckpt
    from hssn.engine.predict import label_meta

    if cfg.eval.parent_scores != "path" or cfg.eval.temperature not in (None, 1, 1.0):
        raise UserError("hssn export builds path inference on the raw logits into the graph: eval.parent_scores must "
                        "be path and eval.temperature null (inferred parents and temperatures: hssn eval / predict)")
    size = tuple(int(v) for v in (options.size or cfg.eval.crop_size))
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--size must be two positive ints H W, got {size}")
    checkpoint = ckpt.load_checkpoint(checkpoint_path)
    meta = label_meta(cfg, checkpoint, checkpoint_path)
    model = ckpt.load_trained_model(cfg, checkpoint, checkpoint_path, meta["hierarchy"], torch.device("cpu"))
    graph = ExportedSegmenter(model, meta["hierarchy"], options.levels)
    return export_model(graph, options.format, out, size, options.dynamic,
                        metadata(model, meta["hierarchy"], meta, options.levels))
