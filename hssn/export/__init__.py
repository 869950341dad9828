"""Deploying a trained model: ``hssn export`` writes ONNX (onnxruntime, TensorRT) or ``torch.export`` (.pt2)
graphs from an RGB image to the leaf map (and one map per tree level) with path inference inside, and
``python -m hssn.export.run`` runs an ONNX file with onnxruntime, writing what ``hssn predict`` writes.

Input convention of every exported graph: ``image`` (B, 3, H, W) float32 RGB in [0, 1] (8-bit values
divided by 255); the model's mean / std are applied inside. Outputs: ``leaf`` (B, H, W) int64 leaf
channel ids; with levels, ``level_1`` ... ``level_D`` (B, H, W) int64 (level 1 = coarsest).
"""
from .graph import FORMATS, ExportedSegmenter, export_model, read_metadata

__all__ = ["FORMATS", "ExportedSegmenter", "export_model", "read_metadata"]
