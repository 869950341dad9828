"""The CUDA kernels are compiled in and registered, and they do not spill registers at sm_90."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from hssn_kernels import native

OPS = ("ftm_forward", "ftm_backward", "path_argmax", "sample_triplets", "triplet_forward")
TOOLS = Path(__file__).resolve().parents[1] / "tools"

needs_cuda_torch = pytest.mark.skipif(torch.version.cuda is None, reason="torch is a CPU-only build: no CUDA kernels")


@needs_cuda_torch
@pytest.mark.parametrize("op", OPS)
def test_cuda_kernels_registered(op):
    assert native.build_info()["loaded"], native.build_info()["error"]
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"hssn::{op}", "CUDA"), (
        "the extension was built without CUDA kernels; rebuild with HSSN_FORCE_CUDA=1")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"hssn::{op}", "CPU")


@needs_cuda_torch
def test_compiled_architectures():
    archs = native.build_info()["cuda_archs"]
    assert archs, "no CUDA architectures recorded"
    for arch in archs:
        major, minor = arch.split("+")[0].split(".")
        assert major.isdigit() and minor.isdigit(), f"bad architecture entry {arch!r}"
    assert native._runs_on("9.0", 9, 0) and not native._runs_on("8.0", 9, 0) and native._runs_on("8.0+PTX", 9, 0)


def _ptxas_module():
    spec = importlib.util.spec_from_file_location("ptxas_report", TOOLS / "ptxas_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ptxas_report"] = module
    spec.loader.exec_module(module)
    return module


@needs_cuda_torch
def test_no_register_spills_at_sm90():
    ptxas = _ptxas_module()
    if ptxas.find_nvcc() is None:
        pytest.skip("nvcc not found")
    rows = ptxas.report(arch=90, timeout=300)
    print("\n" + ptxas.table(rows))
    kernels = {r["kernel"].split("<")[0].split("::")[-1] for r in rows}
    assert {"ftm_kernel", "path_argmax_kernel", "sample_kernel", "triplet_kernel", "triplet_grad_kernel"} <= kernels
    spilling = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    assert not spilling, f"kernels spill registers: {spilling}"


def test_ptxas_log_parser():
    ptxas = _ptxas_module()
    log = ("ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'\n"
           "ptxas info    : Function properties for _Z3fooPf\n"
           "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 400 bytes cmem[0]\n")
    (row,) = ptxas.parse(log)
    assert row["arch"] == "sm_90" and row["registers"] == 40 and row["spill_stores"] == 4 and row["static_smem"] == 1024
    assert row["kernel"] == "foo"
