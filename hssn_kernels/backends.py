"""The backend registry: name -> module implementing the core ops, loaded lazily.

A backend module exposes (inputs already validated by :mod:`hssn_kernels.functional`):

* ``focal_tree_min_loss(logits, target, hierarchy, gamma, ignore_index, reduction, partial=False) -> Tensor``
  (``partial``: targets may be inner nodes, README "Partial labels")
* ``hierarchical_argmax(logits, hierarchy) -> Tensor`` (int64 leaf map)
* ``sample_triplets_padded(target, hierarchy, num_triplets, seed, ignore_index, mode) -> (Tensor, Tensor)``
* ``tree_triplet_loss(embeddings, target, hierarchy, num_triplets, margin_eps, margin_scale,
  hierarchy_margin, distance, seed, ignore_index, mode) -> Tensor``
* ``unavailable_reason(device: torch.device) -> str | None``: None when usable on that device.

A module may omit ops it does not implement; asking for them is a clear error.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
from pathlib import Path
from types import ModuleType

import torch

_MODULES: dict[str, str] = {
    "reference": "hssn_kernels._reference_backend",
    "triton": "hssn_kernels.triton_backend",
    "cuda": "hssn_kernels.native",
    "cpu": "hssn_kernels.native",
}

# The candidates "auto" tries for CUDA tensors, per op; ``GPU_TABLE`` ranks them per dtype and channel count
# (predicted or measured time), and this order breaks ties and ranks backends the table has no row for.
AUTO_CUDA_PREFERENCE: dict[str, tuple[str, ...]] = {
    "focal_tree_min_loss": ("triton", "cuda", "reference"),
    "hierarchical_argmax": ("triton", "cuda", "reference"),
    "sample_triplets_padded": ("cuda", "triton", "reference"),
    "tree_triplet_loss": ("cuda", "triton", "reference"),
}
AUTO_CPU_PREFERENCE: tuple[str, ...] = ("cpu", "reference")

GPU_TABLE = Path(__file__).with_name("gpu_table.json")
"""Time per megapixel of each (op, backend, dtype, channels) on a GPU: the static model's prediction
(``python tools/gpu_cost.py --gpu-table``) until ``bash benchmarks/run_gpu.sh`` replaces it with measured rows;
its ``source`` says which."""


@functools.cache
def gpu_table() -> dict:
    """The parsed ``GPU_TABLE`` ({"source", "gpu", "command", "rows"}), or an empty table when it is missing."""
    try:
        return json.loads(GPU_TABLE.read_text())
    except FileNotFoundError:
        return {"source": "none", "gpu": "", "command": "", "rows": []}


def _dtype_class(dtype: str) -> str:
    return "bf16" if dtype in ("bfloat16", "float16", "bf16", "fp16") else "fp32"


def table_time(op: str, backend: str, dtype: str, channels: int) -> dict | None:
    """The ``GPU_TABLE`` row for ``op`` on ``backend`` at the nearest channel count (log scale) in the same
    dtype class (16-bit floats | 32/64-bit floats), or None."""
    rows = [r for r in gpu_table()["rows"] if r["op"] == op and r["backend"] == backend
            and r["dtype"] == _dtype_class(dtype)]
    if not rows or channels <= 0:
        return None
    return min(rows, key=lambda r: abs(math.log(r["channels"] / channels)))


def cuda_order(op: str, dtype: str | None = None, channels: int | None = None) -> tuple[str, ...]:
    """The order "auto" tries backends for ``op`` on CUDA tensors of ``dtype`` / ``channels``: fastest row of
    ``GPU_TABLE`` first, backends without a row after them in ``AUTO_CUDA_PREFERENCE`` order."""
    order = AUTO_CUDA_PREFERENCE.get(op, ("reference",))
    if dtype is None or channels is None:
        return order

    def key(name: str) -> float:
        row = table_time(op, name, dtype, channels)
        return row["ms_per_mpix"] if row else math.inf

    return tuple(sorted(order, key=key))  # stable: ties and missing rows keep the preference order


def names() -> tuple[str, ...]:
    return tuple(_MODULES) + ("auto",)


_LOADED: dict[str, tuple[ModuleType | None, str | None]] = {}


def _load(name: str) -> tuple[ModuleType | None, str | None]:
    """(module, None) or (None, why it failed to import); imported once and cached."""
    hit = _LOADED.get(name)
    if hit is None:
        try:
            hit = importlib.import_module(_MODULES[name]), None
        except Exception as err:  # an optional dependency or the extension may be missing
            hit = None, f"{type(err).__name__}: {err}"
        _LOADED[name] = hit
    return hit


def preload() -> None:
    """Import every backend module now, so later lookups are plain dict reads (``torch.compile``-safe)."""
    for name in _MODULES:
        _load(name)


def unavailable_reason(name: str, device: torch.device, op: str | None = None) -> str | None:
    """None when backend ``name`` can run ``op`` on ``device``; otherwise why not."""
    if name not in _MODULES:
        return f"unknown backend {name!r}; choose from {names()}"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available (no GPU or a CPU-only torch build)"
    module, err = _load(name)
    if module is None:
        return f"backend {name!r} failed to load ({err})"
    if name == "cpu" and device.type != "cpu":
        return f"backend 'cpu' runs CPU tensors only, got {device.type} tensors"
    if name == "cuda" and device.type != "cuda":
        return f"backend 'cuda' runs CUDA tensors only, got {device.type} tensors"
    reason = module.unavailable_reason(device)
    if reason is not None:
        return f"backend {name!r} is unavailable on {device}: {reason}"
    if op is not None and not hasattr(module, op):
        return f"backend {name!r} does not implement {op}"
    return None


@torch.compiler.assume_constant_result
def _choose(name: str, device_type: str, device_index: int, op: str, dtype: str, channels: int) -> str:
    """The backend name that runs ``op`` on the device; a constant for ``torch.compile``."""
    device = torch.device(device_type, device_index) if device_index >= 0 else torch.device(device_type)
    if name == "auto":
        order = AUTO_CPU_PREFERENCE if device.type == "cpu" else cuda_order(op, dtype or None, channels or None)
        for candidate in order:
            if unavailable_reason(candidate, device, op) is None:
                return candidate
        name = "reference"
    reason = unavailable_reason(name, device, op)
    if reason is not None:
        raise RuntimeError(reason)
    return name


def resolve_name(name: str, device: torch.device, op: str, x: torch.Tensor | None = None) -> str:
    """The backend name that runs ``op`` for tensors on ``device``; ``"auto"`` picks per the tables above, for
    CUDA tensors by ``x``'s dtype and channel count (dim 1) when given."""
    dtype, channels = (str(x.dtype).removeprefix("torch."), int(x.shape[1])) if x is not None and x.dim() > 1 \
        else ("", 0)
    return _choose(name, device.type, -1 if device.index is None else device.index, op, dtype, channels)


def resolve(name: str, device: torch.device, op: str, x: torch.Tensor | None = None) -> ModuleType:
    """The module that runs ``op`` for tensors on ``device`` (see :func:`resolve_name`)."""
    return _LOADED[resolve_name(name, device, op, x)][0]


def available(device: torch.device | str) -> dict[str, str | None]:
    """{backend: None if usable on ``device`` else the reason}."""
    device = torch.device(device)
    return {name: unavailable_reason(name, device) for name in _MODULES}
