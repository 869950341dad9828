"""Parameter counts and FLOPs of a model (``hssn models`` prints them)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .hssn_model import HSSNModel
from .registry import build_model


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(model: HSSNModel, input_size: tuple[int, int, int, int]) -> int:
    """FLOPs (2 x multiply-accumulates, as ``FlopCounterMode`` counts) of one inference forward.

    Runs a copy of ``model`` in eval mode on the ``meta`` device: shapes only, no arithmetic, so any
    input size is cheap. Counts convolutions, matmuls and attention; elementwise ops, norms and
    interpolation are not counted.
    """
    meta = copy.deepcopy(model).to("meta").eval().requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        meta(torch.empty(*input_size, device="meta"))
    return int(counter.get_total_flops())


def summary(
    name_or_model: str | HSSNModel,
    hierarchy: ClassHierarchy | None = None,
    input_size: tuple[int, int, int, int] = (1, 3, 512, 1024),
    **build_kwargs,
) -> dict:
    """Sizes of a model: ``{"name", "num_channels", "params_total", "params_backbone", "params_head",
    "params_projection", "params_inference", "flops", "input_size", "output_stride"}``.

    ``name_or_model``: a registry name (built with ``pretrained=False`` and ``build_kwargs``; needs
    ``hierarchy``) or a built :class:`HSSNModel`. ``flops``: see :func:`count_flops`.
    """
    if isinstance(name_or_model, str):
        if hierarchy is None:
            raise UserError("summary of a model name needs the hierarchy")
        model = build_model(name_or_model, hierarchy, pretrained=False, **build_kwargs)
        name = name_or_model
    elif isinstance(name_or_model, HSSNModel):
        model, name = name_or_model, getattr(name_or_model, "name", type(name_or_model.head).__name__)
    else:
        raise TypeError(f"expected a model name or an HSSNModel, got {type(name_or_model).__name__}")
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 4 or min(input_size) < 1:
        raise UserError(f"input_size must be (B, 3, H, W) of positive ints, got {input_size}")
    sizes = {
        "params_total": _count(model),
        "params_backbone": _count(model.backbone),
        "params_head": _count(model.head),
        "params_projection": _count(model.projection),
    }
    try:
        flops = count_flops(model, input_size)
    except RuntimeError as err:  # a convolution's kernel larger than its input, and the like
        raise UserError(f"input size {input_size[2]}x{input_size[3]} is too small for {name} "
                        f"({str(err).splitlines()[0][:160]})") from None
    return {
        "name": name,
        "num_channels": model.hierarchy.num_channels,
        **sizes,
        "params_inference": sizes["params_total"] - sizes["params_projection"],
        "flops": flops,
        "input_size": input_size,
        "output_stride": model.output_stride,
    }


def format_summary(summaries: dict | list[dict]) -> str:
    """A plain-text table of one or more :func:`summary` dicts (parameters in M, FLOPs in G)."""
    rows = [summaries] if isinstance(summaries, dict) else list(summaries)
    header = ("model", "C", "params M", "backbone M", "head M", "proj M", "GFLOPs", "input", "OS")
    lines = [
        (
            r["name"], str(r["num_channels"]), f"{r['params_total'] / 1e6:.2f}", f"{r['params_backbone'] / 1e6:.2f}",
            f"{r['params_head'] / 1e6:.2f}", f"{r['params_projection'] / 1e6:.3f}", f"{r['flops'] / 1e9:.1f}",
            "x".join(map(str, r["input_size"])), str(r["output_stride"]),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*line) for line in lines])
