"""Environment report: ``python -m hssn_kernels.info``.

Prints the Python / torch / CUDA / Triton versions and whether they lie in the range CI tests
(``tested_stacks.json``), the native extension's build (torch it was built against,
CUDA architectures), which backends run on which devices, with the reason when one does not, and the order
in which ``backend="auto"`` tries them per op (for CUDA tensors per dtype and channel count, with the
predicted or measured times it ranks by).
"""
from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from pathlib import Path

from packaging.version import Version
import torch

from . import backends, native


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


STACKS_FILE = Path(__file__).with_name("tested_stacks.json")


def tested_range() -> dict[str, tuple[str, str]]:
    """{package: (oldest, newest)} over the stacks CI tests, for python, torch, torchvision and triton."""
    stacks = json.loads(STACKS_FILE.read_text())["stacks"]
    return {k: (min((s[k] for s in stacks), key=Version), max((s[k] for s in stacks), key=Version))
            for k in ("python", "torch", "torchvision", "triton")}


def untested() -> list[str]:
    """One line per installed package whose version lies outside :func:`tested_range` (compared to the
    stacks' precision: python by major.minor, the others by full release)."""
    here = {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _version("torchvision"), "triton": _version("triton")}
    out = []
    for name, (lo, hi) in tested_range().items():
        if here[name] == "not installed":
            continue
        v = Version(here[name]).release[:len(Version(lo).release)]
        if not Version(lo).release <= v <= Version(hi).release:
            out.append(f"{name} {here[name]} is outside the tested range {lo} .. {hi}")
    return out


def devices() -> list[torch.device]:
    """CPU, every visible CUDA device, and ``cuda`` itself when torch has CUDA but no GPU is visible."""
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    elif torch.version.cuda:
        out.append(torch.device("cuda"))
    return out


def report() -> str:
    lines = [
        f"python      {platform.python_version()} ({platform.machine()})",
        f"torch       {torch.__version__} (CUDA {torch.version.cuda or 'none'}, "
        f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s) visible)",
        f"triton      {_version('triton')}",
        f"hssn        {_version('hssn')}",
        "tested      " + ", ".join(f"{k} {lo} .. {hi}" for k, (lo, hi) in tested_range().items())
        + f" ({STACKS_FILE.name})",
    ]
    lines += [f"WARNING     {w}: untested; report problems with this line" for w in untested()]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        major, minor = torch.cuda.get_device_capability(i)
        lines.append(f"cuda:{i}      {torch.cuda.get_device_name(i)} (sm_{major}{minor})")
    info = native.build_info()
    if info["loaded"]:
        archs = ", ".join(f"sm_{a.replace('.', '').replace('+PTX', '')}" for a in info["cuda_archs"]) or "none"
        kernels = [k for k in ("CPU", "CUDA") if native.has_kernel("ftm_forward", k)]
        lines += [
            f"extension   {info['path']}",
            f"            built against torch {info['torch_version']}, CUDA {info['cuda_version'] or 'none'}; "
            f"kernels: {', '.join(kernels)}; CUDA architectures: {archs}",
        ]
    else:
        lines.append(f"extension   not loaded: {info['error']}")
    lines.append("backends:")
    for dev in devices():
        for name, reason in backends.available(dev).items():
            lines.append(f"  {str(dev):8s} {name:10s} {'available' if reason is None else 'unavailable: ' + reason}")
    lines.append('backend="auto" (first available wins):')
    lines.append(f"  cpu tensors   every op: {', '.join(backends.AUTO_CPU_PREFERENCE)} (the native kernels, measured "
                 f"faster than the reference: benchmarks/results/)")
    table = backends.gpu_table()
    lines.append(f"  cuda tensors  ranked per op, dtype and channel count by {backends.GPU_TABLE.name} "
                 f"({table['source']} times on {table['gpu'] or 'no GPU'}; written by `{table['command']}`)")
    for op in backends.ranked_ops():
        preference = backends.cuda_order(op)
        keys = sorted({(r["dtype"], r["channels"]) for r in table["rows"] if r["op"] == op})
        if not keys:
            lines.append(f"  cuda tensors  {op}: {', '.join(preference)} (no table row: the fixed preference)")
        for dtype, channels in keys:
            why = []
            for name in preference:
                row = backends.table_time(op, name, dtype, channels)
                why.append(f"{name} {row['ms_per_mpix']:.3g} ms/Mpx" + (f" ({row['x_floor']:.2f}x floor)"
                                                                       if row.get("x_floor") else "")
                           if row else f"{name} no row")
            lines.append(f"  cuda tensors  {op} {dtype} C={channels}: "
                         f"{', '.join(backends.cuda_order(op, dtype, channels))}  [{'; '.join(why)}]")
    if table["source"] == "predicted":
        lines.append("                (predicted: a static model of the compiled code, not a measurement; "
                     "bash benchmarks/run_gpu.sh replaces it with measured times)")
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(report() + "\n")  # one write: `python -m hssn_kernels.info | head` reads it whole


if __name__ == "__main__":
    main()
