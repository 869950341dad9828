"""pytest-benchmark entry: ``pytest benchmarks --benchmark-only [--benchmark-json out.json]``.

The cases are :func:`benchmarks.cases.build_cases`, filtered with ``--bench-ops``, ``--bench-modes``,
``--bench-backends``, ``--bench-shapes``, ``--bench-dtypes`` (comma lists), ``--bench-quick`` for the
tiny shapes, ``--bench-device`` (default cuda when available). Plain ``pytest`` from the repository root
does not collect this folder (``testpaths = tests``).
"""
import torch

from benchmarks import cases


def pytest_addoption(parser):
    group = parser.getgroup("hssn benchmarks")
    group.addoption("--bench-quick", action="store_true", help="tiny shapes (the --quick cases)")
    group.addoption("--bench-device", default=None, help="cuda or cpu (default: cuda when available)")
    group.addoption("--bench-rounds", type=int, default=None, help="timed rounds per case (default 20 GPU / 3 CPU)")
    for name in ("ops", "modes", "backends", "shapes", "dtypes"):
        group.addoption(f"--bench-{name}", default=None, help=f"comma list of {name} (see python -m benchmarks -h)")


def _names(text):
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def bench_device(config) -> torch.device:
    name = config.getoption("--bench-device")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    opt = metafunc.config.getoption
    todo = cases.build_cases(bench_device(metafunc.config), _names(opt("--bench-ops")),
                             _names(opt("--bench-backends")), _names(opt("--bench-shapes")),
                             _names(opt("--bench-dtypes")), _names(opt("--bench-modes")),
                             quick=opt("--bench-quick"))
    metafunc.parametrize("case", todo, ids=[c.id for c in todo])
