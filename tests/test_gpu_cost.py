"""The static GPU cost model (tools/gpu_cost.py): its committed PREDICTED table is reproducible from the code,
the redesigned kernels have the properties the table claims, and ``backend="auto"`` ranks by the table.

The model compiles real sm_90 kernels, so it runs in a subprocess WITHOUT TRITON_INTERPRET (this session has
it set); no GPU is needed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hssn_kernels as hk

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results" / "gpu-cost-predicted-h100-sxm" / "predicted.json"

_PROBE = r"""
import json, sys
sys.path.insert(0, "tools")
import gpu_cost as g
gpu = g.GPUS["h100-sxm"]
rows = [g.predict(gpu, k, d, "cityscapes", 2, 512, 1024) for k in g.KERNELS for d in ("bf16", "fp32")]
rows += [g.predict(gpu, "ftm fwd+grad (mean)", "bf16", "channels-150", 8, 512, 1024)]
ks = g.cuda_kernels() if g.EXTENSION.exists() else {}
cuda = []
if any(g._CUDA_NAMES[("path_argmax", "fp32")] in k for k in ks):
    cuda = [g.predict_cuda(gpu, k, d, "cityscapes", 2, 512, 1024, ks) for k in g.OPS for d in ("bf16", "fp32")]
print(json.dumps([rows, cuda, g.triton.__version__, g.nvcc_release()]))
"""


@pytest.fixture(scope="module")
def probe():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_rows(probe):
    return probe[0]


@pytest.fixture(scope="module")
def cuda_rows(probe):
    if not probe[1]:
        pytest.skip("the extension has no sm_90 CUDA code (built without nvcc)")
    return probe[1]


def _same_compiler(name: str, here: str | None) -> None:
    """Skip unless this machine's compiler is the one the committed table was made with (its counts are exact
    for that compiler only: another Triton or nvcc emits other SASS)."""
    committed = json.loads(COMMITTED.read_text()).get(name)
    if committed != here:
        pytest.skip(f"the committed table was made with {name} {committed!r}, this machine has {here!r}")


def test_committed_table_is_reproducible(fresh_rows, probe):
    _same_compiler("triton", probe[2])
    committed = {(r["kernel"], r["dtype"], r["shape"]): r for r in json.loads(COMMITTED.read_text())["rows"]}
    for row in fresh_rows:
        old = committed[(row["kernel"], row["dtype"], row["shape"])]
        for key in ("regs", "warps_per_sm", "warp_instr_per_px", "mufu_per_px", "predicted_ms", "x_floor"):
            assert row[key] == pytest.approx(old[key], rel=1e-9), (row["kernel"], key)
    print((COMMITTED.parent / "predicted.md").read_text())


def test_cuda_rows_reproduce_and_show_the_walk_occupancy(cuda_rows, probe):
    _same_compiler("nvcc", probe[3])
    committed = {(r["kernel"], r["dtype"], r["shape"]): r for r in json.loads(COMMITTED.read_text())["rows"]}
    for row in cuda_rows:
        old = committed[(row["kernel"], row["dtype"], row["shape"])]
        for key in ("regs", "warps_per_sm", "warp_instr_per_px", "predicted_ms"):
            assert row[key] == pytest.approx(old[key], rel=1e-9), (row["kernel"], key)
        # no shared-memory tile: registers alone set the occupancy (several pixels per thread: at least 0.3),
        # and enough loads stay in flight that the Little's-law time is below the predicted bound
        assert row["occupancy"] >= 0.3, row
        assert row["t_latency_ms"] < row["predicted_ms"], row
        assert row["shfl_per_px"] == 0


def test_redesigned_kernels_read_rows_coalesced_without_shuffles(fresh_rows):
    for row in fresh_rows:
        assert row["shfl_per_px"] < 0.1, row  # only the program's final loss sum shuffles
        # one vector per thread per channel row: 4 pixels x 2 B (bf16) or 4 B (fp32)
        assert ("LDG.E.64" if row["dtype"] == "bf16" else "LDG.E.128") in row["row_access"], row
        assert row["predicted_ms"] >= row["t_dram_ms"] > 0
        assert row["x_floor"] == pytest.approx(row["predicted_ms"] / row["t_dram_ms"])
        assert row["occupancy"] >= 0.3, row
    mapillary = fresh_rows[-1]  # 8 x 150 x 512 x 1024 bf16: the shape, ~150 ms before the redesign
    assert mapillary["predicted_ms"] < 3.0


def test_auto_ranks_cuda_backends_by_the_table(monkeypatch):
    table = {"source": "measured", "gpu": "test", "command": "", "rows": [
        {"op": "focal_tree_min_loss", "backend": "triton", "dtype": "bf16", "channels": 150, "ms_per_mpix": 2.0},
        {"op": "focal_tree_min_loss", "backend": "cuda", "dtype": "bf16", "channels": 150, "ms_per_mpix": 1.0},
        {"op": "focal_tree_min_loss", "backend": "triton", "dtype": "bf16", "channels": 26, "ms_per_mpix": 0.1},
        {"op": "focal_tree_min_loss", "backend": "cuda", "dtype": "bf16", "channels": 26, "ms_per_mpix": 0.3}]}
    monkeypatch.setattr(hk.backends, "gpu_table", lambda: table)
    order = hk.backends.cuda_order
    assert order("focal_tree_min_loss", "bfloat16", 150)[:2] == ("cuda", "triton")
    assert order("focal_tree_min_loss", "float16", 177)[:2] == ("cuda", "triton")  # nearest C, 16-bit class
    assert order("focal_tree_min_loss", "bfloat16", 19)[:2] == ("triton", "cuda")
    assert order("focal_tree_min_loss", "float32", 150) == hk.backends.AUTO_CUDA_DEFAULT
    assert order("tree_triplet_loss", "float32", 150) == hk.backends.AUTO_CUDA_PREFERENCE["tree_triplet_loss"]


def test_auto_passes_over_backends_that_refuse_the_dtype():
    """fp64 CUDA tensors never go to the native CUDA kernels (fp32 / bf16 / fp16 only); other dtypes keep them."""
    order = hk.backends.auto_order
    for op in hk.backends.ranked_ops():
        assert "cuda" not in order(op, "cuda", "float64", 26) and order(op, "cuda", "float64", 26)[-1] == "reference"
    assert order("tree_triplet_loss", "cuda", "float32", 256)[0] == "cuda"
    assert order("focal_tree_min_loss", "cpu", "float64", 26) == hk.backends.AUTO_CPU_PREFERENCE


def test_shipped_table_is_the_predicted_one():
    shipped = json.loads(hk.backends.GPU_TABLE.read_text())
    if shipped["source"] == "measured":
        pytest.skip(f"a measured table ({shipped['gpu']}) is shipped: nothing predicted to compare")
    assert shipped["source"] == "predicted" and shipped["rows"]
    per_mpix = {}
    for r in json.loads(COMMITTED.read_text())["rows"]:
        b, _, h, w = (int(v) for v in r["shape"].split("x"))
        per_mpix[(r["kernel"], r["dtype"], r["channels"])] = r["predicted_ms"] / (b * h * w / 1e6)
    kernel = {"focal_tree_min_loss": "ftm fwd+grad (mean)", "hierarchical_argmax": "path_argmax"}
    for r in shipped["rows"]:
        key = (f"{r['backend']} {kernel[r['op']]}", r["dtype"], r["channels"])
        assert r["ms_per_mpix"] == pytest.approx(per_mpix[key], rel=1e-12)
    assert len(shipped["rows"]) == 2 * 2 * 2 * 4  # triton + cuda x 2 ops x 2 dtypes x 4 shapes
    # auto tries the backend the table predicts faster first; a tie keeps the preference order (Triton first)
    ms = {(r["op"], r["backend"], r["dtype"], r["channels"]): r["ms_per_mpix"] for r in shipped["rows"]}
    for op in kernel:
        for dtype, short in (("bfloat16", "bf16"), ("float32", "fp32")):
            for channels in (26, 150, 177, 1000):
                t, c = ms[(op, "triton", short, channels)], ms[(op, "cuda", short, channels)]
                assert hk.backends.cuda_order(op, dtype, channels)[0] == ("cuda" if c < t else "triton")
    # today's model: Triton for the loss everywhere and for the argmax where they tie (fp32, at the DRAM
    # floor) or at 26 channels; the native argmax (8 pixels per thread) for bf16 from 150 channels
    assert hk.backends.cuda_order("focal_tree_min_loss", "bfloat16", 177)[0] == "triton"
    assert hk.backends.cuda_order("hierarchical_argmax", "float32", 177)[0] == "triton"
    assert hk.backends.cuda_order("hierarchical_argmax", "bfloat16", 177)[0] == "cuda"


def test_measured_vs_predicted_and_the_measured_table(tmp_path):
    """The step run_gpu.sh runs after a GPU benchmark, on a results.json of the suite's format."""
    def row(op, mode, backend, dtype, ms):
        return {"op": op, "mode": mode, "backend": backend, "shape": "cityscapes", "tree": "cityscapes",
                "dtype": dtype, "batch": 2, "channels": 26, "height": 512, "width": 1024, "pixels": 2 * 512 * 1024,
                "ms_median": ms, "status": "ok"}
    results = {"meta": {"device": "NVIDIA H200"}, "results": [
        row("ftm", "full", "triton", "bf16", 0.2), row("ftm", "full", "cuda", "bf16", 0.1),
        row("argmax", "no_grad", "triton", "fp32", 0.05), row("ftm", "forward", "triton", "bf16", 0.1),
        row("triplet", "full", "cuda", "fp32", 1.0)]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    table = tmp_path / "gpu_table.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "tools/gpu_cost.py", "--gpu", "h200", "--measured",
                           str(tmp_path / "results.json"), "--gpu-table", str(table)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "measured_vs_predicted.md").read_text()
    assert "Measured vs PREDICTED (h200 model), NVIDIA H200" in text
    assert "| ftm | triton | bf16 | 2x26x512x1024 | 0.2 |" in text and "| argmax | triton | fp32 |" in text
    written = json.loads(table.read_text())
    assert written["source"] == "measured" and written["gpu"] == "h200"
    got = {(r["op"], r["backend"], r["dtype"]): r["ms_per_mpix"] for r in written["rows"]}
    assert got == {("focal_tree_min_loss", "triton", "bf16"): pytest.approx(0.2 / 1.048576),
                   ("focal_tree_min_loss", "cuda", "bf16"): pytest.approx(0.1 / 1.048576),
                   ("hierarchical_argmax", "triton", "fp32"): pytest.approx(0.05 / 1.048576)}
    if any(r["kernel"].startswith("cuda") for r in json.loads(COMMITTED.read_text())["rows"]):
        assert "| ftm | cuda | bf16 |" in text
