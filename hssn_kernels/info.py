"""Environment report: ``python -m hssn_kernels.info``.

Prints the torch / CUDA / Triton versions, the native extension's build (torch it was built against,
CUDA architectures), which backends run on which devices, with the reason when one does not, and the order
in which ``backend="auto"`` tries them per op, with why.
"""
from __future__ import annotations

import importlib.metadata
import platform

import torch

from . import backends, native


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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
    ]
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
    for op, order in backends.AUTO_CUDA_PREFERENCE.items():
        lines.append(f"  cuda tensors  {op}: {', '.join(order)}")
    lines.append("                (provisional: no GPU benchmark has run; the order will follow the measured GPU "
                 "table when one exists)")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
