"""The demo: figure, per-class table and metrics files; the ablation mode's table; the error map."""
import json

import torch

from hssn.data.synthetic import HIERARCHY, LEAF
from hssn.experiments import ablation, demo

TINY = ["train.iters=3", "train.batch_size=4", "data.kwargs={size: 32, seed: 0}", "data.val_kwargs={length: 4}",
        "eval.batch_size=4", "train.progress=false", "loss.num_triplets=20",
        "model.kwargs={head_channels: 8, aux_head: false, embed_dim: 8}", "train.device=cpu"]


def test_demo_writes_the_figure_table_and_metrics(tmp_path):
    summary = demo.run_demo(tmp_path, TINY)
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    text = (tmp_path / "per_class_iou.md").read_text()
    assert "| circle |" in text and "mIoU^3" in text
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["threads"] == torch.get_num_threads() and saved["training_images_per_s"]["ftm_tt"] > 0
    assert set(summary["reports"]) == {"ftm_tt"}


def test_ablation_mode_writes_mean_and_std_per_variant(tmp_path):
    results = ablation.run_ablation(tmp_path, TINY, variants=["bce", "ftm_tt"], seeds=(0, 1))["all"]
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


def test_coarse_schedule_keeps_the_scenes_its_table_was_measured_on():
    """docs/demo-coarse-labels.md was measured on these scene settings; the demo's own config may move on,
    the coarse experiment's schedule pins them back."""
    from hssn.data.synthetic import SyntheticDataset
    from hssn.engine.builders import build_dataset
    from hssn.engine.config import load_config

    cfg = load_config("synthetic", ablation.COARSE_SCHEDULE)
    measured_on = SyntheticDataset("val", size=64, seed=0, pattern_scale=2.0, shape_scale=1.3, max_shapes=2,
                                   length=100)
    val = build_dataset(cfg, "val")
    assert len(val) == 100
    for i in (0, 7, 42):
        assert torch.equal(val[i]["image"], measured_on[i]["image"])
        assert torch.equal(val[i]["label"], measured_on[i]["label"])
    assert cfg.optim.lr == 2.0e-3 and cfg.train.batch_size == 16
    assert cfg.model.kwargs["head_channels"] == 64 and list(cfg.model.kwargs["aspp_rates"]) == [12, 24, 36]


def test_loss_ablation_runs_on_the_demos_config_with_fewer_steps():
    from hssn.engine.config import load_config

    demo_cfg, short = load_config("synthetic"), load_config("synthetic", ablation.ABLATION_SCHEDULE)
    assert short.train.iters == ablation.ABLATION_ITERS < demo_cfg.train.iters
    assert short.with_overrides([f"train.iters={demo_cfg.train.iters}"]) == demo_cfg


def test_hierarchy_experiment_pins_its_variants_and_its_shift(tmp_path):
    """``--ablation hierarchy``: HSSN with path inference, a flat softmax network with inferred parents, BCE; the
    shifted evaluation re-renders the same validation scenes (seed, count) with other noise, texture and shape
    scales and occlusion, and nothing else."""
    from hssn.engine.builders import build_dataset
    from hssn.engine.config import load_config

    cfgs = {k: load_config("synthetic", [*ablation.HIERARCHY_SCHEDULE, *v[1]]) for k, v in ablation.HIERARCHY_EXPERIMENT.items()}
    assert (cfgs["hssn"].loss.segmentation, cfgs["hssn"].loss.triplet) == ("ftm", "hierarchy")
    assert (cfgs["flat"].loss.segmentation, cfgs["flat"].loss.triplet) == ("cce", None)
    assert (cfgs["bce"].loss.segmentation, cfgs["bce"].loss.triplet) == ("bce", None)
    assert [c.eval.parent_scores for c in cfgs.values()] == ["path", "sum", "path"]
    assert all(c.eval.calibration and c.eval.temperature is None for c in cfgs.values())
    assert all(c.train.iters == ablation.ABLATION_ITERS for c in cfgs.values())
    base = cfgs["hssn"]
    moved = base.with_overrides(ablation.SHIFT)
    assert {k: v for k, v in moved.to_dict().items() if k != "data"} == {
        k: v for k, v in base.to_dict().items() if k != "data"}
    assert moved.data.train_kwargs == base.data.train_kwargs
    a, b = build_dataset(base, "val"), build_dataset(moved, "val")
    assert len(a) == len(b) and a.seed == b.seed
    assert (b.noise, b.pattern_scale, b.shape_scale, b.overlap) != (a.noise, a.pattern_scale, a.shape_scale, a.overlap)

    rows = ablation.run_ablation(tmp_path, TINY, variants=["hssn", "flat"], seeds=(0,), experiment="hierarchy")
    assert set(rows) == {"in-domain", "in-domain, T fitted", "shifted", "shifted, T from in-domain"}
    fitted = rows["in-domain, T fitted"]["flat"][0]["temperature"]
    assert fitted != 1.0 and rows["shifted, T from in-domain"]["flat"][0]["temperature"] == fitted
    assert rows["shifted"]["flat"][0]["temperature"] == 1.0
    flat = rows["shifted"]["flat"][0]
    assert flat["parent_scores"] == "sum" and 0 <= flat["non_path_rate"] <= 1 and "ece" in flat["levels"][0]
    table = (tmp_path / "ablation.md").read_text()
    assert "## shifted" in table and "| flat CCE, inferred parents |" in table and "ECE^1 %" in table
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    assert (tmp_path / "reliability_flat_shifted_T_from_in-domain.png").stat().st_size > 10_000
