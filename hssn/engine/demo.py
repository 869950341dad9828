"""``hssn demo``: train a small model on the synthetic dataset on CPU, evaluate, draw a figure.

Writes into the output folder: one run folder per trained variant (checkpoint, logs, config),
``metrics.json`` (reports, chance reference, run times) and ``figure.png`` (inputs, ground truth and
predictions at every level).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from .config import load_config
from .distributed import DistInfo, pick_device
from .inference import model_logits_fn, path_inference, tta_scores
from .metrics import format_report, majority_baseline, to_json_ready
from .trainer import Trainer

VARIANTS = {
    "ftm_tt": ("FTM + tree-triplet (HSSN)", []),
    "bce": ("BCE baseline", ["loss.segmentation=bce", "loss.triplet=null"]),
}


def comparison_table(reports: dict[str, dict], chance: list[float]) -> str:
    """mIoU^k (percent) of each run side by side, with the majority-class reference."""
    depth = len(chance)
    names = list(reports)
    head = f"{'':<10}" + "".join(f"{n:>12}" for n in names) + f"{'majority':>12}"
    rows = [head]
    for k in range(1, depth + 1):
        cells = "".join(f"{100 * reports[n]['levels'][k - 1]['miou']:>12.2f}" for n in names)
        rows.append(f"{'mIoU^' + str(k):<10}{cells}{100 * chance[k - 1]:>12.2f}")
    rows.append(f"{'severity':<10}" + "".join(f"{reports[n]['mistake_severity']:>12.3f}" for n in names))
    rows.append(f"{'violate %':<10}" + "".join(f"{100 * reports[n]['violation_rate']:>12.2f}" for n in names))
    return "\n".join(rows)


def draw_figure(trainer: Trainer, path: Path, num_images: int = 4) -> None:
    """Rows of (input, ground truth per tree level, prediction per tree level) for val images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hssn.data.palettes import colorize_level

    ds = trainer.val_set
    h, cfg = ds.hierarchy, trainer.cfg
    fn = model_logits_fn(trainer.model.eval(), cfg["model"]["mean"], cfg["model"]["std"])
    depth = h.height
    fig, axes = plt.subplots(num_images, 1 + 2 * depth, figsize=(2 * (1 + 2 * depth), 2 * num_images), squeeze=False)
    for row in range(num_images):
        item = ds[row]
        with torch.no_grad():
            scores = tta_scores(fn, item["image"][None].to(trainer.device), cfg["eval"]["scales"],
                                cfg["eval"]["flip"], ds.flip_pairs)
            leaf = path_inference(scores, h, cfg["loss"]["backend"])[0][0].cpu()
        panels = [("input", item["image"].permute(1, 2, 0).numpy())]
        for lvl in range(1, depth + 1):
            panels.append((f"GT level {lvl}", colorize_level(item["label"], h, ds.palette, lvl, ds.ignore_index)))
        for lvl in range(1, depth + 1):
            panels.append((f"pred level {lvl}", colorize_level(leaf, h, ds.palette, lvl, ds.ignore_index)))
        for col, (title, img) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle("HSSN demo: tree level 1 = coarsest (mIoU^3), level 3 = leaves (mIoU^1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(out_dir: str | Path = "runs/demo", overrides: Sequence[str] = (), compare_bce: bool = False) -> dict:
    """Train + evaluate the synthetic config (and the BCE baseline with ``compare_bce``); returns the
    ``metrics.json`` content."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = DistInfo(0, 1, 0, pick_device("cpu"))
    reports, seconds, chance, figure = {}, {}, None, None
    for key in ["ftm_tt", "bce"] if compare_bce else ["ftm_tt"]:
        title, extra = VARIANTS[key]
        cfg = load_config("synthetic", [*overrides, *extra, f"train.output_dir={out / key}", f"name=demo_{key}",
                                        "train.eval_at_end=true"])
        print(f"== {title}: {cfg['model']['name']}, {cfg['train']['iters']} steps x {cfg['train']['batch_size']} "
              f"images on {info.device}")
        run_start = time.perf_counter()
        trainer = Trainer(cfg, info)
        result = trainer.fit()
        report = result["report"]
        seconds[key] = time.perf_counter() - run_start
        reports[key] = report
        if chance is None:
            chance = majority_baseline(torch.tensor(report["confusion"]), trainer.hierarchy)
        print(format_report(report))
        print(f"({seconds[key]:.0f} s, {result['images_per_s']:.1f} training images/s)")
        if figure is None:
            figure = out / "figure.png"
            draw_figure(trainer, figure)
    total = time.perf_counter() - start
    print("\nper-level mIoU % (mIoU^1 = leaves, mIoU^3 = coarsest); majority = constant most-frequent class")
    print(comparison_table(reports, chance))
    summary = {"reports": reports, "majority_baseline_miou": chance, "seconds": seconds, "total_seconds": total,
               "figure": str(figure)}
    (out / "metrics.json").write_text(json.dumps(to_json_ready(summary), indent=1) + "\n")
    print(f"\nfigure: {figure}\nmetrics: {out / 'metrics.json'}\ntotal time: {total:.0f} s")
    return summary
