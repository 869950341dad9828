"""The benchmark suite end to end (``python -m benchmarks --quick``) and its case/floor definitions.

No timing assertions: only that every output exists and carries the expected fields and sane values.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROW_FIELDS = {"op", "mode", "backend", "shape", "group", "dtype", "batch", "channels", "height", "width", "pixels",
              "status", "ms_median", "ms_p20", "ms_p80", "peak_bytes", "peak_above_inputs_bytes", "inputs_bytes",
              "floor_bytes", "achieved_Bps", "copy_fraction"}
META_FIELDS = {"device", "date", "git_commit", "torch", "triton", "cuda", "backends", "timing", "memory", "trees"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--device", "cpu", "--out", str(out),
                           "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text())


def test_quick_json(quick_run):
    _, data = quick_run
    assert META_FIELDS <= set(data["meta"])
    assert data["meta"]["quick"] is True and data["copy_bandwidth_Bps"] > 0
    rows = data["results"]
    assert {r["op"] for r in rows} == {"ftm", "argmax", "triplet", "hssn_loss", "ftm_interp", "ftm_upsample",
                                       "train_loss_interp", "train_loss", "ftm_partial_leaf", "ftm_partial"}
    assert {r["group"] for r in rows} == {"paper", "pixels", "channels"}
    assert {"reference", "cpu"} <= {r["backend"] for r in rows}
    skipped = [r for r in rows if r["status"].startswith("unsupported")]
    assert {(r["op"], r["backend"]) for r in skipped} == {("ftm_upsample", "reference"), ("train_loss", "reference")}
    rows = [r for r in rows if r not in skipped]
    for r in rows:
        assert r["status"] == "ok", r
        assert ROW_FIELDS <= set(r), sorted(ROW_FIELDS - set(r))
        assert r["ms_p20"] <= r["ms_median"] <= r["ms_p80"]
        assert r["peak_bytes"] >= r["peak_above_inputs_bytes"] >= 0
        assert r["floor_bytes"] > 0
        if r["op"] == "argmax":
            assert r["argmax_mismatch"] == 0.0
        else:
            assert r["loss_rel_err"] < 1e-4 and r["grad_rel_err"] < 1e-4, r
    ftm_ref = [r for r in rows if (r["op"], r["mode"], r["backend"]) == ("ftm", "full", "reference")]
    assert all(r["peak_above_inputs_bytes"] > 0 for r in ftm_ref)  # the reference allocates: memory is measured
    assert all(r["speedup_vs_reference"] == 1.0 for r in ftm_ref)


def test_quick_markdown_and_plots(quick_run):
    out, data = quick_run
    md = (out / "results.md").read_text()
    assert "## Headline: focal tree-min loss, forward + backward" in md
    assert data["meta"]["device"] in md
    for op in ("ftm", "argmax", "triplet", "hssn_loss", "ftm_interp", "ftm_upsample"):
        assert f"\n## {op}\n" in md
    assert "## Training-step loss: logits at 1/4 of the labels" in md
    for name in ("time_paper.png", "memory_paper.png", "scaling_pixels.png", "scaling_channels.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_cli_rejects_unknown_names():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--ops", "nope", "--list"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown ops ['nope']" in proc.stderr


def test_cases_and_floor():
    import torch

    from benchmarks import cases, ops

    cpu = cases.build_cases("cpu", ops=["ftm"], shapes=["paper"], backends=["reference"])
    assert {c.mode for c in cpu} == set(cases.MODES)
    city = next(c.shape for c in cpu if c.shape.name == "cityscapes")
    assert (city.height, city.width) == (512 // cases.CPU_SIDE_SCALE, 1024 // cases.CPU_SIDE_SCALE)
    gpu_shapes = {s.name: s for s in cases.shapes_for(torch.device("cuda"))}
    assert gpu_shapes["mapillary_v2"].pixels == 2 * 512 * 1024
    assert gpu_shapes["channels-1000"].channels == 1000 and gpu_shapes["channels-1000"].ignore_index == -1
    n, c = city.pixels, city.channels
    assert ops.floor_bytes("ftm", "full", city, "fp32") == 2 * n * c * 4 + n * 8
    assert ops.floor_bytes("ftm", "no_grad", city, "bf16") == n * c * 2 + n * 8
    assert ops.floor_bytes("argmax", "no_grad", city, "fp16") == n * c * 2 + n * 8
    with pytest.raises(ValueError, match="unknown shapes"):
        cases.build_cases("cpu", shapes=["nope"])
