"""The demo: figure, per-class table and metrics files; the ablation mode's table; the error map."""
import json

import torch

from hssn.data.synthetic import HIERARCHY, LEAF
from hssn.engine import demo

TINY = ["train.iters=3", "train.batch_size=4", "data.kwargs={size: 32, seed: 0}", "data.val_kwargs={length: 4}",
        "eval.batch_size=4", "train.progress=false", "loss.num_triplets=20",
        "model.kwargs={head_channels: 8, aux_head: false, embed_dim: 8}"]


def test_demo_writes_the_figure_table_and_metrics(tmp_path):
    summary = demo.run_demo(tmp_path, TINY)
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    text = (tmp_path / "per_class_iou.md").read_text()
    assert "| circle |" in text and "mIoU^3" in text
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["threads"] == torch.get_num_threads() and saved["training_images_per_s"]["ftm_tt"] > 0
    assert set(summary["reports"]) == {"ftm_tt"}


def test_ablation_mode_writes_mean_and_std_per_variant(tmp_path):
    results = demo.run_ablation(tmp_path, TINY, variants=["bce", "ftm_tt"], seeds=(0, 1))
    assert [len(v) for v in results.values()] == [2, 2]
    table = (tmp_path / "ablation.md").read_text()
    assert "| BCE |" in table and "+-" in table and "hssn demo --ablation" in table
    assert (tmp_path / "ablation.png").stat().st_size > 10_000


def test_error_map_colours_the_coarsest_wrong_level():
    label = torch.tensor([[LEAF["circle"], LEAF["circle"], LEAF["circle"], LEAF["circle"]]])
    leaf = torch.tensor([[LEAF["circle"], LEAF["ellipse"], LEAF["square"], LEAF["checker"]]])
    viol = torch.tensor([[False, False, False, True]])
    out = demo.error_map(leaf, label, viol, HIERARCHY, 255)
    colors = [torch.tensor(c, dtype=torch.uint8) for c in demo.ERROR_COLORS.values()]
    for i, expected in enumerate([colors[0], colors[1], colors[2], colors[4]]):
        assert torch.equal(out[0, i], expected)
    out = demo.error_map(leaf, label, torch.zeros_like(viol), HIERARCHY, 255)
    assert torch.equal(out[0, 3], colors[3])
