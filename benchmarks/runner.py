"""Measures every case: time (median, 20th/80th percentile), peak memory, bytes/s against the floor,
and the error against a float64 reference computed in the same run.

GPU: ``triton.testing.do_bench`` (CUDA events, L2 flushed between calls) and the CUDA caching
allocator's peak (``max_memory_allocated`` after ``reset_peak_memory_stats``).
CPU: wall-clock medians of repeated calls, and the peak of the bytes the torch CPU allocator holds,
read from ``torch.profiler``'s allocation events (see :class:`CPUAllocations`).
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

import hssn_kernels as hk
from hssn_kernels import native as native_backend

from . import ops
from .cases import CPU_SIDE_SCALE, Case, get_tree, tree_source

QUANTILES = (0.5, 0.2, 0.8)
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- timing
def time_gpu(call: Callable, grad_to_none: list[torch.Tensor], quick: bool) -> tuple[list[float], int | None]:
    """[median, p20, p80] in ms by ``triton.testing.do_bench`` (its warm-up/rep arguments are ms)."""
    from triton.testing import do_bench

    warmup, rep = (5, 20) if quick else (25, 200)
    ms = do_bench(call, warmup=warmup, rep=rep, grad_to_none=grad_to_none or None, quantiles=list(QUANTILES))
    return [float(v) for v in ms], None


def time_cpu(call: Callable, grad_to_none: list[torch.Tensor], quick: bool) -> tuple[list[float], int]:
    """[median, p20, p80] in ms of wall-clock time over at least 5 calls (2 with ``quick``), up to 2 s."""
    min_reps, budget_s, max_reps = (2, 0.1, 5) if quick else (5, 2.0, 50)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < max_reps):
        for t in grad_to_none:
            t.grad = None
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return [float(np.percentile(times, 100 * q)) for q in QUANTILES], len(times)


# ----------------------------------------------------------------------------- memory
@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to /dev/null (the profiler's C++ start/stop log lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _walk(events):
    for e in events:
        yield e
        yield from _walk(e.children)


class CPUAllocations:
    """Context manager: ``peak`` and ``final`` net bytes allocated by the torch CPU allocator inside it.

    ``torch.profiler`` with ``profile_memory=True`` records every CPU tensor allocation and free with
    its size; the running sum in time order gives the live bytes above the state at entry. Memory
    that kernels take outside the torch allocator (e.g. ``std::vector`` scratch) is not seen.
    """

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _quiet_stderr():
            self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        with _quiet_stderr():
            self._prof.__exit__(*exc)
        alloc = torch._C._profiler._EventType.Allocation
        events = [(e.start_time_ns, e.extra_fields.alloc_size)
                  for e in _walk(self._prof.profiler.kineto_results.experimental_event_tree()) if e.tag == alloc]
        events.sort(key=lambda ev: (ev[0], -ev[1]))  # same instant: count the allocation before the free
        live = np.cumsum([size for _, size in events]) if events else np.zeros(1, dtype=np.int64)
        self.peak, self.final = int(max(live.max(), 0)), int(live[-1])
        return False


def memory_cpu(prepare: Callable) -> tuple[int, None]:
    """Peak bytes above the inputs: what the setup (the forward, for mode backward) left alive + the call's peak."""
    with CPUAllocations() as setup:
        call, leaves = prepare()
    for t in leaves:
        t.grad = None
    with CPUAllocations() as run:
        call()
    return setup.final + run.peak, None


def memory_gpu(prepare: Callable) -> tuple[int, int]:
    """(peak above the inputs, absolute peak) in bytes from the CUDA caching allocator."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    call, leaves = prepare()
    for t in leaves:
        t.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak - base, peak


# ----------------------------------------------------------------------------- modes
def mode_runner(fn: Callable, inputs: dict, mode: str) -> Callable[[], tuple[Callable, list[torch.Tensor]]]:
    """``prepare() -> (call, grad leaves)`` for ``mode``; for "backward" prepare runs the forward."""

    def prepare():
        if mode == "no_grad":
            def call():
                with torch.no_grad():
                    return fn(inputs)
            return call, []
        x = {k: v.detach().requires_grad_(True) if v.is_floating_point() else v for k, v in inputs.items()}
        leaves = [v for v in x.values() if v.requires_grad]
        if mode == "forward":
            return (lambda: fn(x)), leaves
        if mode == "full":
            return (lambda: fn(x).backward()), leaves
        out = fn(x)
        return (lambda: out.backward(retain_graph=True)), leaves

    return prepare


# ----------------------------------------------------------------------------- errors
def evaluate(fn: Callable, inputs: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The output and the gradients of every float input (none for integer outputs)."""
    x = {k: v.detach().requires_grad_(True) if v.is_floating_point() else v for k, v in inputs.items()}
    out = fn(x)
    if not out.is_floating_point():
        return out, {}
    out.backward()
    return out.detach(), {k: v.grad for k, v in x.items() if v.is_floating_point()}


def oracle(op: str, shape, inputs: dict) -> tuple[tuple, str]:
    """The reference's output and gradients on the inputs upcast to float64 (float32 if that runs out of memory)."""
    fn = ops.make_callable(op, "reference", shape)
    for dtype in (torch.float64, torch.float32):
        try:
            up = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
            return evaluate(fn, up), str(dtype).replace("torch.", "")
        except torch.OutOfMemoryError:
            _free()
    raise torch.OutOfMemoryError("the reference oracle does not fit in memory")


def errors(result: tuple, truth: tuple) -> dict[str, float | None]:
    """loss_rel_err = |loss - ref| / |ref|; grad_rel_err = max |g - g_ref| / max |g_ref| over every
    float input; argmax_mismatch = fraction of pixels whose leaf differs from the reference's."""
    out, grads = result
    ref, ref_grads = truth
    if not ref.is_floating_point():
        return {"argmax_mismatch": float((out != ref).double().mean())}
    err = {"loss_rel_err": float((out.double() - ref.double()).abs() / ref.double().abs().clamp_min(1e-30))}
    gerr = [float((grads[k].double() - g.double()).abs().max() / g.double().abs().max().clamp_min(1e-30))
            for k, g in ref_grads.items()]
    err["grad_rel_err"] = max(gerr) if gerr else None
    return err


# ----------------------------------------------------------------------------- environment
def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sigmoid_floor_ms(n: int, device: torch.device) -> float:
    """Median ms of one ``torch.sigmoid`` over ``n`` fp32 elements (into a preallocated output): the least
    work path inference can do over n logits, measured in this run."""
    x = torch.randn(n, device=device)
    out = torch.empty_like(x)
    (ms, _, _), _ = (time_gpu if device.type == "cuda" else time_cpu)(lambda: torch.sigmoid(x, out=out), [],
                                                                       quick=False)
    return ms


def exp_log_floor_ms(n: int, device: torch.device) -> float:
    """Median ms of one ``torch.exp`` plus one ``torch.log`` over ``n`` fp32 elements (into a preallocated
    output): the least work a focal tree-min forward+backward can do over n logits, measured in this run."""
    x = torch.rand(n, device=device) + 0.5
    out = torch.empty_like(x)
    timer = time_gpu if device.type == "cuda" else time_cpu

    def call():
        torch.exp(x, out=out)
        torch.log(x, out=out)

    (ms, _, _), _ = timer(call, [], quick=False)
    return ms


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written per second)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 24)  # 1 GiB / 64 MiB of float32
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    if device.type == "cuda":
        (ms, _, _), _ = time_gpu(lambda: dst.copy_(src), [], quick=False)
    else:
        dst.copy_(src)
        (ms, _, _), _ = time_cpu(lambda: dst.copy_(src), [], quick=False)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, quick: bool, shapes, full_size: bool = False) -> dict:
    """Device, versions, date, git commit, thread counts, methods: the metadata of a results file."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    native = native_backend.build_info()
    trees = {s.tree for s in shapes}
    return {
        "device": device_name(device),
        "device_type": device.type,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "hssn_kernels", "csrc", "benchmarks",
                                ":!benchmarks/results")),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "quick": quick,
        "cpu_side_scale": CPU_SIDE_SCALE if device.type == "cpu" and not (quick or full_size) else 1,
        "backends": hk.backends.available(device),
        "native_build": {k: v for k, v in native.items() if k != "path"},
        "trees": {t: {"channels": get_tree(t).num_channels, "leaves": get_tree(t).num_leaves,
                      "height": get_tree(t).height, "source": tree_source(t)} for t in sorted(trees)},
        "timing": ("triton.testing.do_bench, quantiles 0.5/0.2/0.8" if device.type == "cuda"
                   else "wall clock (time.perf_counter), >= 5 calls and up to 2 s per case"),
        "memory": ("torch.cuda.max_memory_allocated after reset_peak_memory_stats" if device.type == "cuda"
                   else "torch.profiler(profile_memory=True) allocation events: peak of live CPU tensor bytes"),
    }


# ----------------------------------------------------------------------------- the run
def _configure_compile() -> None:
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 256))


def _status(err: BaseException) -> str:
    if isinstance(err, torch.OutOfMemoryError):
        return "oom"
    return f"error: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"


def _measure(case: Case, fn: Callable, inputs: dict, device: torch.device, quick: bool) -> dict:
    prepare = mode_runner(fn, inputs, case.mode)
    call, leaves = prepare()
    t0 = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize()
    first_call_s = time.perf_counter() - t0
    del call, leaves
    above, absolute = (memory_gpu if device.type == "cuda" else memory_cpu)(prepare)
    call, leaves = prepare()
    (med, p20, p80), reps = (time_gpu if device.type == "cuda" else time_cpu)(call, leaves, quick)
    del call, leaves
    inputs_bytes = sum(v.numel() * v.element_size() for v in inputs.values())
    return {"ms_median": med, "ms_p20": p20, "ms_p80": p80, "reps": reps, "first_call_s": first_call_s,
            "peak_above_inputs_bytes": above, "inputs_bytes": inputs_bytes,
            "peak_bytes": absolute if absolute is not None else inputs_bytes + above}


def run(cases: list[Case], device: torch.device | str, quick: bool = False, check_errors: bool = True,
        progress: bool = True, full_size: bool = False, on_row: Callable[[str, dict], None] | None = None) -> dict:
    """Measure ``cases`` on ``device``; returns ``{"meta": ..., "copy_bandwidth_Bps": ..., "results": [...]}``;
    ``on_row(case id, row)`` is called as each case finishes (a resumable run appends it to a file)."""
    device = torch.device(device)
    if any(c.backend == "compiled" for c in cases):
        _configure_compile()
    groups: dict[tuple, list[Case]] = defaultdict(list)
    for c in cases:
        groups[(c.op, c.shape, c.dtype)].append(c)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    copy_bw = copy_bandwidth(device)
    results = []
    bar = tqdm(total=len(cases), disable=not progress, unit="case", dynamic_ncols=True)
    floors: dict[int, float] = {}
    for (op, shape, dtype), group in groups.items():
        inputs = ops.make_inputs(op, shape, dtype, device)
        floor_ms = sigmoid_ms = None
        n = shape.pixels * shape.channels
        if op in ops.EXP_LOG_OPS:
            floor_ms = floors[n] if n in floors else floors.setdefault(n, exp_log_floor_ms(n, device))
        if op in ops.SIGMOID_OPS:
            sigmoid_ms = sigmoid_floor_ms(n, device)
        truth, oracle_dtype, oracle_status = None, None, None
        if check_errors:
            try:
                truth, oracle_dtype = oracle(op, shape, inputs)
            except Exception as err:  # recorded; the timings still run
                oracle_status = _status(err)
        err_cache: dict[str, dict] = {}
        for case in group:
            bar.set_postfix_str(case.id, refresh=False)
            row = {"op": op, "mode": case.mode, "backend": case.backend, "shape": shape.name,
                   "group": shape.group, "tree": shape.tree, "dtype": dtype, "batch": shape.batch,
                   "channels": shape.channels, "height": shape.height, "width": shape.width,
                   "pixels": shape.pixels, "ignore_index": shape.ignore_index,
                   "floor_bytes": ops.floor_bytes(op, case.mode, shape, dtype), "oracle_dtype": oracle_dtype,
                   "exp_log_floor_ms": floor_ms, "sigmoid_floor_ms": sigmoid_ms}
            why = ops.unsupported_reason(op, case.backend, device, shape)
            if why is not None:
                row["status"] = f"unsupported: {why}"
            else:
                try:
                    fn = ops.make_callable(op, case.backend, shape)
                    if check_errors and case.backend == "released":  # other semantics: timed, not compared
                        row["error_status"] = "not compared: the released loss has other semantics"
                    elif check_errors and case.backend not in err_cache:
                        t0 = time.perf_counter()
                        result = evaluate(fn, inputs)
                        err_cache[case.backend] = {"check_call_s": time.perf_counter() - t0}
                        err_cache[case.backend].update(errors(result, truth) if truth is not None
                                                       else {"error_status": oracle_status})
                        del result
                    row.update(err_cache.get(case.backend, {}))
                    row.update(_measure(case, fn, inputs, device, quick))
                    row["achieved_Bps"] = row["floor_bytes"] / (row["ms_median"] * 1e-3)
                    row["copy_fraction"] = row["achieved_Bps"] / copy_bw
                    row["status"] = "ok"
                except Exception as err:  # one failing backend must not stop the suite
                    row["status"] = _status(err)
            results.append(row)
            if on_row is not None:
                on_row(case.id, row)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            bar.update()
        del inputs, truth
        _free()
    bar.close()
    meta = environment(device, quick, [c.shape for c in cases], full_size)
    meta["load_average_start"] = load_start
    return {"meta": meta, "copy_bandwidth_Bps": copy_bw, "results": results}
