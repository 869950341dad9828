"""The tested software range is one fact (hssn_kernels/tested_stacks.json): setup.py's lower bounds, the README's
install line, CI's second leg and `python -m hssn_kernels.info` all follow it; the GPU stages check their imports
before they run and install offline."""
import importlib.metadata
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import preflight
from hssn_kernels import info

ROOT = Path(__file__).resolve().parents[1]
STACKS = {s["name"]: s for s in json.loads((ROOT / "hssn_kernels" / "tested_stacks.json").read_text())["stacks"]}


def test_setup_lower_bounds_are_the_oldest_tested_versions():
    requires = importlib.metadata.requires("hssn")
    oldest = info.tested_range()
    assert f"torch>={oldest['torch'][0]}" in requires
    assert any(r.startswith(f"triton>={oldest['triton'][0]}") and 'extra == "triton"' in r for r in requires)
    assert any(r.startswith(f"torchvision>={oldest['torchvision'][0]}") for r in requires)
    assert importlib.metadata.metadata("hssn")["Requires-Python"] == f">={oldest['python'][0]}"
    assert oldest["torch"][0] == "2.11.0" and oldest["triton"][0] == "3.6.0"  # the GPU machine's stack


def test_readme_install_pins_the_main_stack_and_states_the_range():
    readme = (ROOT / "README.md").read_text()
    install = readme.split("<!-- ci:install -->", 1)[1].split("```")[1]
    main = STACKS["main"]
    assert f"torch=={main['torch']}" in install and f"torchvision=={main['torchvision']}" in install
    lo, hi = info.tested_range()["torch"]
    assert f"torch {lo} to {hi}" in readme
    assert "Any torch >=" not in readme


def test_ci_runs_every_other_stack():
    ci = (ROOT / ".ci" / "run").read_text()
    others = set(STACKS) - {"main"}
    assert others and all(f"bash .ci/stack.sh {name}" in ci for name in others)


def test_info_warns_outside_the_tested_range(monkeypatch):
    assert "tested      python" in info.report()
    monkeypatch.setattr(torch, "__version__", "2.10.0+cpu")
    assert any(line.startswith("torch 2.10.0+cpu is outside the tested range 2.11.0") for line in info.untested())
    monkeypatch.setattr(torch, "__version__", "2.12.0")
    assert not any(line.startswith("torch") for line in info.untested())


def test_preflight_names_what_is_missing(monkeypatch, capsys):
    assert preflight.main(["smoke"]) in (0, 2)
    real = preflight.importlib.util.find_spec
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda m: None if m == "timm" else real(m))
    assert preflight.main(["tests"]) == 2
    assert "missing module timm (pip: timm)" in capsys.readouterr().err
    assert preflight.main(["nope"]) == 2


def test_gpu_stages_install_offline_against_the_machines_torch():
    for stage in ("smoke", "tests", "bench"):
        out = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_gpu.sh"), stage, "--dry-run"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        installs = [line for line in out.stdout.splitlines() if "pip install" in line]
        assert installs and all("--no-deps" in i and "--no-index" in i and "--no-build-isolation" in i
                                for i in installs), out.stdout
        assert int(re.search(r"total ~(\d+) s", out.stdout).group(1)) <= 480
    assert "python -m benchmarks.preflight" in (ROOT / "benchmarks" / "run_gpu.sh").read_text()


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the CPU interpreter's rule")
def test_an_interpreter_too_old_for_the_kernels_is_named(monkeypatch):
    """Triton 3.6's interpreter fails inside every kernel with a loop over an argument: the backend reports
    why instead, and the Triton suites skip with that reason (compiled kernels are unaffected)."""
    from hssn_kernels import _triton_utils

    monkeypatch.setattr(_triton_utils.triton, "__version__", "3.6.0")
    reason = _triton_utils.unavailable_reason(torch.device("cpu"))
    assert "Triton 3.6.0's interpreter cannot run a loop over a kernel argument" in reason
    assert _triton_utils.unavailable_reason(torch.device("cuda")) is None
    monkeypatch.setattr(_triton_utils.triton, "__version__", "3.8.0+git1")
    assert _triton_utils.unavailable_reason(torch.device("cpu")) is None
