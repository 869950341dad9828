"""``hssn demo``: train a small model on the synthetic dataset on CPU, evaluate, draw a figure.

Writes into the output folder (default ``runs/demo``): one run folder per trained variant (checkpoint,
logs, config), ``metrics.json`` (reports, majority reference, run times), ``per_class_iou.md`` (IoU of
every class at every level) and ``figure.png`` (input, ground truth and prediction at every tree level
with a legend per level, and where the prediction is wrong or the scores violate the tree).
The long experiments (``--ablation``) are :mod:`hssn.experiments.ablation`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from hssn.engine.config import load_config
from hssn.engine.inference import InferenceSettings, model_logits_fn, predict
from hssn.engine.metrics import format_report, majority_baseline, to_json_ready
from hssn.engine.trainer import Trainer

from .ablation import ABLATION, train_variant

VARIANTS = {key: ABLATION[key] for key in ("ftm_tt", "bce")}
"""The demo's run (FTM + tree-triplet) and, with ``--compare-bce``, the BCE baseline: rows of the ablation."""
ERROR_COLORS = {
    "correct": (235, 235, 235),
    "wrong leaf, right family": (250, 200, 60),
    "wrong family, right top class": (240, 120, 30),
    "wrong top class": (200, 20, 20),
    "scores violate the tree": (150, 0, 200),
}
"""The error panel's colours, finest mistake first; a violating pixel is marked whatever its error."""


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


def per_class_markdown(report: dict) -> str:
    """Per-class IoU (percent) at every level: one Markdown table per level."""
    lines = []
    for lv in report["levels"]:
        lines += [f"### mIoU^{lv['k']} = {100 * lv['miou']:.2f} % (tree level {lv['tree_level']})", "",
                  "| class | IoU % |", "|---|---|"]
        lines += [f"| {name} | {100 * v:.2f} |" for name, v in lv["iou"].items()]
        lines.append("")
    return "\n".join(lines)


def error_map(leaf: torch.Tensor, label: torch.Tensor, violations: torch.Tensor, hierarchy, ignore_index: int
              ) -> torch.Tensor:
    """(H, W, 3) uint8: each pixel coloured by its coarsest wrong level (:data:`ERROR_COLORS`)."""
    colors = list(ERROR_COLORS.values())
    out = torch.empty((*leaf.shape, 3), dtype=torch.uint8)
    out[:] = torch.tensor(colors[0], dtype=torch.uint8)
    valid = label != ignore_index
    depth = hierarchy.height
    for level in range(depth, 0, -1):  # finest first, so a coarser mistake paints over a finer one
        table = hierarchy.leaf_to_level(level)
        wrong = valid & (table[leaf] != table[label.clamp(min=0).where(valid, leaf)])
        out[wrong] = torch.tensor(colors[1 + depth - level], dtype=torch.uint8)
    out[violations & valid] = torch.tensor(colors[-1], dtype=torch.uint8)
    return out


def draw_figure(trainer: Trainer, path: Path, num_images: int = 4) -> None:
    """Rows of (input, ground truth per tree level, prediction per tree level, errors) for val images,
    with a legend per tree level (same palette for ground truth and prediction) and one for the errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from hssn.data.palettes import colorize_level, node_palette

    ds = trainer.val_set
    h, cfg = ds.hierarchy, trainer.cfg
    fn = model_logits_fn(trainer.model.eval())
    settings = InferenceSettings.from_config(cfg, ds.flip_pairs, scales=(1.0,), flip=False, temperature=1.0)
    depth = h.height
    cols = 2 + 2 * depth
    legend_in = 1.5  # inches under the images for the legends
    fig, axes = plt.subplots(num_images, cols, figsize=(1.9 * cols, 1.9 * num_images + legend_in), squeeze=False)
    for row in range(num_images):
        item = ds[row]
        with torch.no_grad():
            out = predict(fn, item["image"][None].to(trainer.device), h, settings)
        leaf, violations = out.leaf[0].cpu(), out.violations[0].cpu()
        level_maps = [leaf] * depth if out.levels is None else [lv[0].cpu() for lv in out.levels]
        panels = [("input", item["image"].permute(1, 2, 0).numpy())]
        for lvl in range(1, depth + 1):  # coarsest first; titled with k as in mIoU^k
            panels.append((f"truth, k={depth + 1 - lvl}", colorize_level(item["label"], h, ds.palette, lvl,
                                                                          ds.ignore_index)))
        for lvl in range(1, depth + 1):
            panels.append((f"prediction, k={depth + 1 - lvl}", colorize_level(level_maps[lvl - 1], h, ds.palette,
                                                                               lvl, ds.ignore_index)))
        panels.append(("errors", error_map(leaf, item["label"], violations, h, ds.ignore_index)))
        for col, (title, img) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    colors = node_palette(h, ds.palette).float() / 255
    legends = []
    for lvl in range(1, depth + 1):
        nodes = [c for c in range(h.num_channels) if h.level(c) == lvl]
        legends.append((f"k={depth + 1 - lvl}" + (" (leaves)" if lvl == depth else " (coarsest)" if lvl == 1 else ""),
                        [Patch(color=colors[c].tolist(), label=h.names[c]) for c in nodes]))
    legends.append(("errors", [Patch(color=[v / 255 for v in rgb], label=name) for name, rgb in ERROR_COLORS.items()]))
    for i, (title, handles) in enumerate(legends):
        fig.legend(handles=handles, title=title, loc="lower left", bbox_to_anchor=(0.01 + i / len(legends), 0.0),
                   fontsize=7, title_fontsize=8, ncol=1 if len(handles) <= 6 else 2, frameon=False)
    fig.suptitle(f"HSSN demo on validation scenes: level k as in mIoU^k (k=1 leaves, k={depth} coarsest)",
                 fontsize=10)
    fig.tight_layout(rect=(0, legend_in / (1.9 * num_images + legend_in), 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(out_dir: str | Path = "runs/demo", overrides: Sequence[str] = (), compare_bce: bool = False) -> dict:
    """Train + evaluate the synthetic config (and the BCE baseline with ``compare_bce``); returns the
    ``metrics.json`` content."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reports, seconds, rates, chance, figure = {}, {}, {}, None, None
    for key in ["ftm_tt", "bce"] if compare_bce else ["ftm_tt"]:
        title, extra = VARIANTS[key]
        cfg = load_config("synthetic", [*overrides, *extra, f"train.output_dir={out / key}", f"name=demo_{key}",
                                        "train.eval_at_end=true"])
        print(f"== {title}: {cfg.model.name}, {cfg.train.iters} steps x {cfg.train.batch_size} "
              f"images of {cfg.data.kwargs['size']} px on {cfg.train.device}, {torch.get_num_threads()} threads")
        trainer, result, seconds[key] = train_variant(cfg)
        report = result["report"]
        reports[key], rates[key] = report, result["images_per_s"]
        if chance is None:
            chance = majority_baseline(torch.tensor(report["confusion"]), trainer.hierarchy)
        print(format_report(report, per_class=True))
        print(f"({seconds[key]:.0f} s, {result['images_per_s']:.1f} training images/s)")
        if figure is None:
            figure = out / "figure.png"
            draw_figure(trainer, figure)
            (out / "per_class_iou.md").write_text(f"# Per-class IoU: {title}\n\n" + per_class_markdown(report))
    total = time.perf_counter() - start
    print("\nper-level mIoU % (mIoU^1 = leaves, mIoU^3 = coarsest); majority = constant most-frequent class")
    print(comparison_table(reports, chance))
    summary = {"reports": reports, "majority_baseline_miou": chance, "seconds": seconds, "total_seconds": total,
               "training_images_per_s": rates, "threads": torch.get_num_threads(), "figure": str(figure)}
    (out / "metrics.json").write_text(json.dumps(to_json_ready(summary), indent=1) + "\n")
    print(f"\nfigure: {figure}\nper-class IoU: {out / 'per_class_iou.md'}\nmetrics: {out / 'metrics.json'}")
    print(f"total time: {total:.0f} s ({', '.join(f'{k}: {v:.1f} training images/s' for k, v in rates.items())}, "
          f"{torch.get_num_threads()} threads)")
    return summary
