"""The exported graph (:class:`ExportedSegmenter`) and the writers of its two formats."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

DYNAMIC = ("batch", "size")
"""``dynamic`` choices: ``batch``, any batch size; ``size``, any batch size and image size (multiples of the
network's coarsest stride)."""
FORMATS = ("onnx", "torch")
"""``hssn export --format`` choices: ONNX (opset :data:`OPSET`) or a ``torch.export`` program (.pt2)."""
OPSET = 18
"""ONNX opset of the exported files (onnxruntime reads it since 1.14)."""
INPUT_CONVENTION = "image: (B, 3, H, W) float32 RGB in [0, 1]; mean/std applied inside"
MIN_BLOCKS = 2
"""A dynamic graph takes H and W in multiples of its size multiple, at least this many of them (torch.export
specialises a dimension of size 1)."""


class ExportedSegmenter(nn.Module):
    """Image -> leaf map (and level maps): normalisation, the network's logits, bilinear upsampling to the
    input size, and path inference (Eq. 3) in portable ops: ``S = sigmoid(z) @ P`` with ``P`` (C, L) the
    root-path indicator of each leaf (``S_l`` = sum of the sigmoids on the path to leaf l), argmax over
    leaves (the lowest leaf on ties), then a table lookup per level. Training-only outputs are dropped.

    forward(image (B, 3, H, W) float32 in [0, 1]) -> (leaf (B, H, W) int64, *levels (B, H, W) int64)
    """

    def __init__(self, model: nn.Module, hierarchy: ClassHierarchy, levels: bool = False):
        super().__init__()
        self.model = model.eval()
        tabs = hierarchy.tables("cpu")
        self.register_buffer("path", tabs.is_ancestor[tabs.leaves.long()].T.float())  # (C, L): v in A(leaf)
        self.register_buffer("leaves", tabs.leaves.long())
        self.register_buffer("level_map", tabs.level_map.clone())  # (D, C) int64
        self.levels = levels

    @property
    def size_multiple(self) -> int:
        """A dynamic graph's H and W are multiples of this: the backbone's coarsest stride (the network pads
        to it; at other sizes its traced padding and pooling would not hold)."""
        return self.model.backbone.size_divisor

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(image)["logits"].float()  # the model normalises with its own buffers
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        scores = torch.einsum("bchw,cl->bhwl", torch.sigmoid(logits), self.path)
        leaf = self.leaves[scores.argmax(-1)]
        if not self.levels:
            return (leaf,)
        return (leaf, *(self.level_map[k][leaf] for k in range(self.level_map.shape[0])))


def metadata(model: nn.Module, hierarchy: ClassHierarchy, meta: dict, levels: bool) -> dict[str, str]:
    """The strings stored in the exported file, so a consumer needs nothing else (the normalisation: the
    model's buffers, applied inside the graph; the input sizes a dynamic graph takes)."""
    mean, std = ([float(np.format_float_positional(v)) for v in getattr(model, name).reshape(-1).numpy()]
                 for name in ("pixel_mean", "pixel_std"))  # float32's shortest decimals: 0.485, not 0.48500001
    return {"hssn.hierarchy": json.dumps(hierarchy.to_dict()),
            "hssn.palette": json.dumps(torch.as_tensor(meta["palette"]).tolist()),
            "hssn.ignore_index": str(int(meta["ignore_index"])),
            "hssn.mean": json.dumps(list(map(float, mean))), "hssn.std": json.dumps(list(map(float, std))),
            "hssn.input": INPUT_CONVENTION,
            "hssn.size_multiple": str(model.backbone.size_divisor), "hssn.min_blocks": str(MIN_BLOCKS),
            "hssn.outputs": json.dumps(output_names(hierarchy.height, levels))}


def output_names(height: int, levels: bool) -> list[str]:
    """The graph's outputs: ``leaf``, then with ``levels`` ``level_1`` ... ``level_{height}``."""
    return ["leaf"] + [f"level_{k}" for k in range(1, height + 1)] * levels


def export_model(graph: ExportedSegmenter, fmt: str, out: str | Path, size: tuple[int, int], dynamic: str | None,
                 meta: dict[str, str]) -> Path:
    """Write ``graph`` as ``fmt`` ("onnx" / "torch") to ``out``: for (1, 3, H, W) images of ``size``; with
    ``dynamic="batch"`` any batch size; with ``dynamic="size"`` also any H, W that are multiples of
    ``graph.size_multiple`` (at least :data:`MIN_BLOCKS` of them; ``size`` the example, such a multiple). Returns
    the path."""
    if fmt not in FORMATS:
        raise UserError(f"export format must be one of {FORMATS}, got {fmt!r}")
    if dynamic not in (None, *DYNAMIC):
        raise UserError(f"dynamic must be None or one of {DYNAMIC}, got {dynamic!r}")
    out = Path(out)
    if not out.parent.exists():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    step, fixed = graph.size_multiple, graph.model.backbone.fixed_size
    if dynamic == "size" and fixed is not None:
        raise UserError(f"--dynamic: backbone {graph.model.backbone.name} is built for {fixed[0]} x {fixed[1]} images "
                        "(attention windows and position tables of that size): export that size with --dynamic-batch "
                        "(any batch size) or without")
    if dynamic == "size" and any(v % step or v < MIN_BLOCKS * step for v in size):
        near = [max(MIN_BLOCKS, round(v / step)) * step for v in size]
        raise UserError(f"--dynamic takes image sizes in multiples of {step} (the network's coarsest stride), at "
                        f"least {MIN_BLOCKS * step}: --size {size[0]} {size[1]} is not; use --size {near[0]} {near[1]}, "
                        "or export a fixed size without --dynamic")
    example = torch.rand(2 if dynamic else 1, 3, *size)  # a symbolic batch needs an example other than 1
    names = output_names(graph.level_map.shape[0], graph.levels)
    shapes = None if dynamic is None else {"image": {0: torch.export.Dim.AUTO}}
    if dynamic == "size":
        blocks = [torch.export.Dim(f"{axis}_blocks", min=MIN_BLOCKS) for axis in ("h", "w")]
        shapes["image"].update({2: step * blocks[0], 3: step * blocks[1]})
    with torch.no_grad():
        program = torch.export.export(graph, (example,), dynamic_shapes=shapes, strict=False)
    if fmt == "torch":
        torch.export.save(program, str(out), extra_files={"hssn.json": json.dumps(meta)})
        return out
    import onnx

    onnx_program = torch.onnx.export(program, (example,), input_names=["image"], output_names=names,
                                     opset_version=OPSET, dynamo=True, verbose=False)
    model = onnx_program.model_proto
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return out


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``hssn.*`` metadata of an exported file (ONNX or .pt2)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in model.metadata_props if p.key.startswith("hssn.")}
    extra = {"hssn.json": ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra["hssn.json"])
