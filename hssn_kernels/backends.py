"""The backend registry: which function runs each op on each backend, loaded lazily.

:data:`OPS` is the list: op -> {backend family: "module:function"}, the function taking the op's
interface arguments (inputs already validated by :mod:`hssn_kernels.functional`):

* ``focal_tree_min_loss(logits, target, hierarchy, gamma, ignore_index, reduction, partial=False) -> Tensor``
  (``partial``: targets may be inner nodes, README "Partial labels")
* ``ftm_kernel(logits, target, hierarchy, gamma, ignore_index, reduction_index, compute_grad, partial)`` ->
  (loss, grad) and ``ftm_kernel_backward(weights, logits, target, hierarchy, gamma, ignore_index, partial)``:
  the raw fused kernels the band-by-band upsampling runs (:mod:`hssn_kernels.upsample`)
* ``hierarchical_argmax(logits, hierarchy) -> Tensor`` (int64 leaf map)
* ``sample_triplets_padded(target, hierarchy, num_triplets, seed, ignore_index, mode) -> (Tensor, Tensor)``
* ``tree_triplet_loss(embeddings, target, hierarchy, num_triplets, margin_eps, margin_scale,
  hierarchy_margin, distance, seed, ignore_index, mode) -> Tensor``

A backend is usable on a device when its :data:`FAMILIES` entry's ``unavailable_reason(device)`` is None
(and, for "cpu" / "cuda", the device type matches); asking for an op it does not implement is a clear error.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch

FAMILIES: dict[str, str | None] = {
    "reference": None,
    "triton": "hssn_kernels._triton_utils:unavailable_reason",
    "native": "hssn_kernels.native:unavailable_reason",
}
"""Implementation family -> its availability check ("module:function"; None: always available)."""
BACKENDS: dict[str, str] = {"reference": "reference", "triton": "triton", "cuda": "native", "cpu": "native"}
"""Backend name (``backend=``) -> the family that implements it ("cpu" and "cuda" are the extension's)."""

OPS: dict[str, dict[str, str]] = {
    "focal_tree_min_loss": {"reference": "hssn_kernels.reference:_focal_tree_min_loss",
                            "triton": "hssn_kernels.focal_tree_min:focal_tree_min_loss",
                            "native": "hssn_kernels.native:focal_tree_min_loss"},
    "ftm_kernel": {"triton": "hssn_kernels.focal_tree_min:ftm_kernel", "native": "hssn_kernels.native:ftm_kernel"},
    "ftm_kernel_backward": {"triton": "hssn_kernels.focal_tree_min:ftm_kernel_backward",
                            "native": "hssn_kernels.native:ftm_kernel_backward"},
    "hierarchical_argmax": {"reference": "hssn_kernels.reference:_hierarchical_argmax",
                            "triton": "hssn_kernels.path_argmax:hierarchical_argmax",
                            "native": "hssn_kernels.native:hierarchical_argmax"},
    "sample_triplets_padded": {"reference": "hssn_kernels.reference:_sample_triplets_padded",
                               "triton": "hssn_kernels.tree_triplet:sample_triplets_padded",
                               "native": "hssn_kernels.native:sample_triplets_padded"},
    "tree_triplet_loss": {"reference": "hssn_kernels.reference:_triplet_loss",
                          "triton": "hssn_kernels.tree_triplet:tree_triplet_loss",
                          "native": "hssn_kernels.native:tree_triplet_loss"},
}
"""Op -> {family: "module:function"}: the one table a new op adds its row to."""

# The candidates "auto" tries for CUDA tensors, per op; ``GPU_TABLE`` ranks them per dtype and channel count
# (predicted or measured time), and this order breaks ties and ranks backends the table has no row for.
AUTO_CUDA_PREFERENCE: dict[str, tuple[str, ...]] = {
    "focal_tree_min_loss": ("triton", "cuda", "reference"),
    "hierarchical_argmax": ("triton", "cuda", "reference"),
    "sample_triplets_padded": ("cuda", "triton", "reference"),
    "tree_triplet_loss": ("cuda", "triton", "reference"),
}
AUTO_CPU_PREFERENCE: tuple[str, ...] = ("cpu", "reference")
CUDA_REJECTS: dict[str, tuple[str, ...]] = {"cuda": ("float64",)}
"""Input dtypes a backend refuses on CUDA tensors (the native CUDA kernels take fp32 / bf16 / fp16): "auto" passes
over it for them."""

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
    return tuple(BACKENDS) + ("auto",)


def _import(target: str) -> Callable:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


_LOADED: dict[str, tuple[SimpleNamespace | None, str | None]] = {}


def _load(family: str) -> tuple[SimpleNamespace | None, str | None]:
    """(namespace of the family's op functions and ``unavailable_reason``, None) or (None, why it failed to
    import); imported once and cached."""
    hit = _LOADED.get(family)
    if hit is None:
        try:
            check = FAMILIES[family]
            fns = {op: _import(impls[family]) for op, impls in OPS.items() if family in impls}
            fns["unavailable_reason"] = _import(check) if check else (lambda device: None)
            hit = SimpleNamespace(**fns), None
        except Exception as err:  # an optional dependency or the extension may be missing
            hit = None, f"{type(err).__name__}: {err}"
        _LOADED[family] = hit
    return hit


def preload() -> None:
    """Import every backend now, so later lookups are plain dict reads (``torch.compile``-safe)."""
    for family in FAMILIES:
        _load(family)


def unavailable_reason(name: str, device: torch.device, op: str | None = None) -> str | None:
    """None when backend ``name`` can run ``op`` on ``device``; otherwise why not."""
    if name not in BACKENDS:
        return f"unknown backend {name!r}; choose from {names()}"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available (no GPU or a CPU-only torch build)"
    impl, err = _load(BACKENDS[name])
    if impl is None:
        return f"backend {name!r} failed to load ({err})"
    if name == "cpu" and device.type != "cpu":
        return f"backend 'cpu' runs CPU tensors only, got {device.type} tensors"
    if name == "cuda" and device.type != "cuda":
        return f"backend 'cuda' runs CUDA tensors only, got {device.type} tensors"
    reason = impl.unavailable_reason(device)
    if reason is not None:
        return f"backend {name!r} is unavailable on {device}: {reason}"
    if op is not None and not hasattr(impl, op):
        return f"backend {name!r} does not implement {op}"
    return None


def auto_order(op: str, device_type: str, dtype: str = "", channels: int = 0) -> tuple[str, ...]:
    """The backends "auto" tries, in order, for ``op`` on tensors of ``device_type`` / ``dtype`` / ``channels``."""
    if device_type == "cpu":
        return AUTO_CPU_PREFERENCE
    order = cuda_order(op, dtype or None, channels or None)
    return tuple(b for b in order if dtype not in CUDA_REJECTS.get(b, ()))


@torch.compiler.assume_constant_result
def _choose(name: str, device_type: str, device_index: int, op: str, dtype: str, channels: int) -> str:
    """The backend name that runs ``op`` on the device; a constant for ``torch.compile``."""
    device = torch.device(device_type, device_index) if device_index >= 0 else torch.device(device_type)
    if name == "auto":
        for candidate in auto_order(op, device.type, dtype, channels):
            if unavailable_reason(candidate, device, op) is None:
                return candidate
        name = "reference"
    reason = unavailable_reason(name, device, op)
    if reason is not None:
        raise RuntimeError(reason)
    return name


def resolve_name(name: str, device: torch.device, op: str, dtype: torch.dtype | None = None, channels: int = 0) -> str:
    """The backend name that runs ``op`` for tensors on ``device``; ``"auto"`` picks per the tables above, for
    CUDA tensors by ``dtype`` and ``channels`` (the hierarchy's channel count: a Python int even where
    ``torch.compile(dynamic=True)`` makes the tensor's dim symbolic) when given."""
    return _choose(name, device.type, -1 if device.index is None else device.index, op,
                   "" if dtype is None else str(dtype).removeprefix("torch."), int(channels))


def resolve(name: str, device: torch.device, op: str, dtype: torch.dtype | None = None,
            channels: int = 0) -> SimpleNamespace:
    """The backend's op functions (attributes named as in :data:`OPS`) that run ``op`` for tensors on
    ``device`` (see :func:`resolve_name`)."""
    return _LOADED[BACKENDS[resolve_name(name, device, op, dtype, channels)]][0]


def available(device: torch.device | str) -> dict[str, str | None]:
    """{backend: None if usable on ``device`` else the reason}."""
    device = torch.device(device)
    return {name: unavailable_reason(name, device) for name in BACKENDS}
