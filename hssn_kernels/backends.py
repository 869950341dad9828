"""The backend registry: which function runs each op on each backend (timm-style: the registry is the list).

Each backend module marks its functions with :func:`register` (``@register("focal_tree_min_loss", "triton")``);
:func:`preload` imports every public module of the package once, so :data:`OPS` holds every function of every
family whose modules import (a module that cannot, e.g. without Triton, is recorded in :data:`IMPORT_ERRORS` and
its family reports it). An op's interface is the signature of its reference function in
:mod:`hssn_kernels.reference` (inputs already validated by :mod:`hssn_kernels.functional`); the fused
losses' raw kernels ``ftm_kernel`` / ``ftm_kernel_backward`` are the interface of :mod:`hssn_kernels.upsample`.

A backend is usable on a device when its :data:`FAMILIES` entry's ``unavailable_reason(device)`` is None
(and, for "cpu" / "cuda", the device type matches); asking for an op it does not implement is a clear error.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
import pkgutil
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

OPS: dict[str, dict[str, Callable]] = {}
"""Op -> {family: function}, filled by :func:`register` as :func:`preload` imports the backend modules."""
IMPORT_ERRORS: dict[str, str] = {}
"""Module -> why it failed to import (an optional dependency missing); filled by :func:`preload`."""


def register(op: str, family: str) -> Callable[[Callable], Callable]:
    """Decorator: the function implements ``op`` for ``family`` (a :data:`FAMILIES` key)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown backend family {family!r}; choose from {tuple(FAMILIES)}")

    def add(fn: Callable) -> Callable:
        OPS.setdefault(op, {})[family] = fn
        return fn

    return add


# The candidates "auto" tries for CUDA tensors, per op; ``GPU_TABLE`` ranks them per dtype and channel count
# (predicted or measured time), and this order breaks ties and ranks backends the table has no row for.
AUTO_CUDA_PREFERENCE: dict[str, tuple[str, ...]] = {
    "sample_triplets_padded": ("cuda", "triton", "reference"),
    "tree_triplet_loss": ("cuda", "triton", "reference"),
}
AUTO_CUDA_DEFAULT: tuple[str, ...] = ("triton", "cuda", "reference")
"""The order for an op :data:`AUTO_CUDA_PREFERENCE` does not list."""
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


def ranked_ops() -> list[str]:
    """The ops with a reference (their spec) and at least one fast backend: the ones ``auto`` ranks."""
    preload()
    return [op for op, impls in OPS.items() if "reference" in impls and len(impls) > 1]


def cuda_order(op: str, dtype: str | None = None, channels: int | None = None) -> tuple[str, ...]:
    """The order "auto" tries backends for ``op`` on CUDA tensors of ``dtype`` / ``channels``: fastest row of
    ``GPU_TABLE`` first, backends without a row after them in ``AUTO_CUDA_PREFERENCE`` order."""
    order = AUTO_CUDA_PREFERENCE.get(op, AUTO_CUDA_DEFAULT)
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
    """(namespace of the family's op functions and ``unavailable_reason``, None) or (None, why its availability
    check failed to import); built once after :func:`preload`."""
    hit = _LOADED.get(family)
    if hit is None:
        preload()
        try:
            check = FAMILIES[family]
            fns = {op: impls[family] for op, impls in OPS.items() if family in impls}
            fns["unavailable_reason"] = _import(check) if check else (lambda device: None)
            hit = SimpleNamespace(**fns), None
        except Exception as err:  # the extension's loader or Triton's check may be missing
            hit = None, f"{type(err).__name__}: {err}"
        _LOADED[family] = hit
    return hit


_PRELOADED: list[bool] = []
TOOLS = ("info",)
"""Modules that are command-line tools (``python -m hssn_kernels.info``), not backends: :func:`preload` skips
them (running one with ``-m`` must find it not imported yet)."""


def preload() -> None:
    """Import every public module of the package but the :data:`TOOLS` once (each registers its op functions), so
    later lookups are plain dict reads (``torch.compile``-safe); a module that fails to import is recorded in
    :data:`IMPORT_ERRORS`."""
    if _PRELOADED:
        return
    _PRELOADED.append(True)
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in TOOLS:
            continue
        name = f"{__package__}.{info.name}"
        try:
            importlib.import_module(name)
        except Exception as err:  # an optional dependency (Triton) missing or broken
            IMPORT_ERRORS[name] = f"{type(err).__name__}: {err}"
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
        failed = "".join(f"; {m} failed to import ({e})" for m, e in IMPORT_ERRORS.items())
        return f"backend {name!r} does not implement {op}{failed}"
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
    """The backend's op functions (attributes named as the ops of :data:`OPS`) that run ``op`` for tensors on
    ``device`` (see :func:`resolve_name`)."""
    return _LOADED[BACKENDS[resolve_name(name, device, op, dtype, channels)]][0]


def available(device: torch.device | str) -> dict[str, str | None]:
    """{backend: None if usable on ``device`` else the reason}."""
    device = torch.device(device)
    return {name: unavailable_reason(name, device) for name in BACKENDS}
