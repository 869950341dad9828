"""Before a GPU stage: every module and program the stage needs is installed, named when not (the GPU machine
reaches no package index, so a missing one cannot be fetched there; carry it as a wheel).

    python -m benchmarks.preflight smoke|tests|bench      # exit 2 and one line per missing thing
"""
from __future__ import annotations

import importlib.util
import shutil
import sys

BUILD = ("torch", "setuptools")
"""The no-build-isolation, no-deps install: the build imports these from the machine's environment."""
PROGRAMS = {"smoke": ("nvcc",)}
"""Executables a stage runs (the smoke stage builds the CUDA kernels)."""
RUNTIME = ("torch", "triton", "numpy", "yaml", "tqdm")
"""hssn_kernels and the engine's core (install_requires)."""
STAGES = {
    "smoke": BUILD + RUNTIME + ("pytest", "hypothesis", "timm", "torchvision", "scipy", "matplotlib", "PIL"),
    "tests": BUILD + RUNTIME + ("pytest", "xdist", "hypothesis", "timm", "torchvision", "scipy", "matplotlib", "PIL",
                                "tensorboard"),
    "bench": RUNTIME + ("matplotlib",),
}
"""The modules (import names) each stage of benchmarks/run_gpu.sh needs."""
DISTRIBUTIONS = {"yaml": "pyyaml", "PIL": "pillow", "xdist": "pytest-xdist"}
"""pip names where they differ from the import name."""


def missing(stage: str) -> list[str]:
    """What ``stage`` needs and this machine lacks: 'module M (pip: name)' / 'program P (not on the PATH)'."""
    return ([f"module {m} (pip: {DISTRIBUTIONS.get(m, m)})" for m in STAGES[stage] if importlib.util.find_spec(m) is None]
            + [f"program {p} (not on the PATH)" for p in PROGRAMS.get(stage, ()) if shutil.which(p) is None])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in STAGES:
        print(f"usage: python -m benchmarks.preflight {'|'.join(STAGES)}", file=sys.stderr)
        return 2
    gone = missing(args[0])
    for m in gone:
        print(f"preflight {args[0]}: missing {m}; the GPU machine cannot download it", file=sys.stderr)
    if not gone:
        print(f"preflight {args[0]}: every module and program present")
    return 2 if gone else 0


if __name__ == "__main__":
    sys.exit(main())
