"""``hssn demo``: train a small model on the synthetic dataset on CPU, evaluate, draw a figure.

Writes into the output folder (default ``runs/demo``): one run folder per trained variant (checkpoint,
logs, config), ``metrics.json`` (reports, majority reference, run times), ``per_class_iou.md`` (IoU of
every class at every level) and ``figure.png`` (input, ground truth and prediction at every tree level
with a legend per level, and where the prediction is wrong or the scores violate the tree).

``--ablation`` (the long mode) trains every segmentation loss and triplet variant of the paper's
ablation on the same data and schedule with 3 seeds and writes ``ablation.md`` and ``ablation.png``;
``--ablation coarse`` runs the labels-at-any-depth experiment instead (:data:`COARSE_EXPERIMENT`).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from . import builders
from .calibration import draw_reliability
from .config import apply_overrides, load_config
from .distributed import DistInfo, pick_device
from .evaluator import evaluate
from .inference import InferenceSettings, model_logits_fn, predict
from .metrics import format_report, majority_baseline, to_json_ready
from .trainer import Trainer

VARIANTS = {
    "ftm_tt": ("FTM + tree-triplet (HSSN)", []),
    "bce": ("BCE baseline", ["loss.segmentation=bce", "loss.triplet=null"]),
}
ABLATION = {
    "bce": ("BCE", ["loss.segmentation=bce", "loss.triplet=null"]),
    "cce": ("CCE (leaves only)", ["loss.segmentation=cce", "loss.triplet=null"]),
    "tm": ("tree-min", ["loss.segmentation=tm", "loss.triplet=null"]),
    "ftm": ("focal tree-min", ["loss.segmentation=ftm", "loss.triplet=null"]),
    "ftm_tt": ("FTM + tree-triplet (hierarchy margin)", ["loss.segmentation=ftm", "loss.triplet=hierarchy"]),
    "ftm_const": ("FTM + tree-triplet (constant margin)", ["loss.segmentation=ftm", "loss.triplet=constant"]),
    "ftm_vanilla": ("FTM + vanilla triplet", ["loss.segmentation=ftm", "loss.triplet=vanilla"]),
}
"""The paper's loss ablation (Tables 6 and 8) as config overrides."""
COARSE_FINE_SCENES, COARSE_EXTRA_SCENES, COARSE_LEVEL = 500, 500, 2
"""The coarse-label experiment: N fine scenes alone vs the same N plus M other scenes labelled only up to
tree level ``COARSE_LEVEL`` (shape / texture family: "round", "stripes", ...), FTM + tree-triplet; the mix
once on the same schedule (fewer fine images per step) and once on a schedule (N + M) / N times longer,
which shows the fine scenes as often as the fine-only run does; the control trains the fine scenes alone on
that longer schedule (the extra steps spent on fine scenes again instead of coarse ones)."""


def coarse_experiment(base: dict) -> dict[str, tuple[str, list[str]]]:
    """The experiment's variants as overrides of the synthetic config ``base`` (its scene settings)."""
    scene = {k: v for k, v in base["data"]["kwargs"].items() if k != "seed"}

    def part(length, seed, **extra):
        kw = ", ".join(f"{k}: {v}" for k, v in {**scene, "length": length, "seed": seed, **extra}.items())
        return f"{{name: synthetic, kwargs: {{{kw}}}}}"

    fine, val = part(COARSE_FINE_SCENES, 0), part(base["data"]["val_kwargs"].get("length", 100), 0)
    coarse = part(COARSE_EXTRA_SCENES, 1, coarse_fraction=1.0, coarse_level=COARSE_LEVEL)
    common = ["data.name=mixed", "data.train_kwargs={}", f"data.val_kwargs={{parts: [{val}]}}"]
    mixed = common + [f"data.kwargs={{parts: [{fine}, {coarse}]}}", "data.partial_labels=true"]
    iters = COARSE_ITERS * (COARSE_FINE_SCENES + COARSE_EXTRA_SCENES) // COARSE_FINE_SCENES
    label = f"{COARSE_FINE_SCENES} fine + {COARSE_EXTRA_SCENES} coarse (level {COARSE_LEVEL})"
    return {
        "fine": (f"{COARSE_FINE_SCENES} fine scenes", common + [f"data.kwargs={{parts: [{fine}]}}"]),
        "fine_coarse": (f"{label}, same schedule", mixed),
        "fine_coarse_long": (f"{label}, {iters} steps (same fine visits)", mixed + [f"train.iters={iters}"]),
        "fine_long": (f"{COARSE_FINE_SCENES} fine scenes, {iters} steps (control: more fine visits instead)",
                      common + [f"data.kwargs={{parts: [{fine}]}}", f"train.iters={iters}"]),
    }


ABLATION_SEEDS = (0, 1, 2)
ABLATION_ITERS = 350
ABLATION_SCHEDULE = [f"train.iters={ABLATION_ITERS}"]
"""The loss ablation's schedule: the demo's config (scenes, validation set, model, batch, learning rate) with
:data:`ABLATION_ITERS` steps instead of its own, so 7 variants x 3 seeds fit in 30 minutes."""
COARSE_ITERS = 300
COARSE_SCHEDULE = [f"train.iters={COARSE_ITERS}", "train.batch_size=16", "optim.lr=2.0e-3",
                   "model.kwargs.head_channels=64", "model.kwargs.aspp_rates=[12, 24, 36]",
                   "data.kwargs.gradient_contrast=0.6", "data.kwargs.shape_scale=1.3", "data.kwargs.overlap=true",
                   "data.val_kwargs.length=100"]
"""The coarse-label experiment's schedule: the scenes (overlapping shapes and boxes, 100 validation scenes),
batch, learning rate, head width and ASPP rates its committed table (docs/demo-coarse-labels.md) was measured
with (the demo has since moved on: ``hssn/configs/synthetic.yaml``)."""
HIERARCHY_EXPERIMENT = {
    "hssn": ("FTM + tree-triplet, path inference (HSSN)",
             ["loss.segmentation=ftm", "loss.triplet=hierarchy", "eval.parent_scores=path"]),
    "flat": ("flat CCE, inferred parents", ["loss.segmentation=cce", "loss.triplet=null", "eval.parent_scores=sum"]),
    "bce": ("BCE, path inference", ["loss.segmentation=bce", "loss.triplet=null", "eval.parent_scores=path"]),
}
"""``--ablation hierarchy``: does the hierarchy help? HSSN against a flat softmax network whose parents are
inferred (summed leaf probabilities, each level its own argmax) and against per-node BCE."""
SHIFT = ["data.val_kwargs.noise=0.08", "data.val_kwargs.pattern_scale=1.5", "data.val_kwargs.shape_scale=1.2",
         "data.val_kwargs.overlap=true"]
"""The hierarchy experiment's synthetic domain shift: the same validation scenes (seed, count) rendered with
more noise, finer textures, smaller shapes and shapes / boxes that may cover each other."""
HIERARCHY_SCHEDULE = ABLATION_SCHEDULE + ["eval.calibration=true", "eval.temperature=null"]
"""The hierarchy experiment runs on the loss ablation's schedule, calibration counted at T = 1."""
SCHEDULES = {"losses": ABLATION_SCHEDULE, "coarse": COARSE_SCHEDULE, "hierarchy": HIERARCHY_SCHEDULE}
"""``--ablation`` experiment -> the overrides of the synthetic config it runs on."""
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
    fn = model_logits_fn(trainer.model.eval(), cfg["model"]["mean"], cfg["model"]["std"])
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


def _train(cfg: dict, info: DistInfo) -> tuple[Trainer, dict, float]:
    start = time.perf_counter()
    trainer = Trainer(cfg, info)
    result = trainer.fit()
    return trainer, result, time.perf_counter() - start


def run_demo(out_dir: str | Path = "runs/demo", overrides: Sequence[str] = (), compare_bce: bool = False) -> dict:
    """Train + evaluate the synthetic config (and the BCE baseline with ``compare_bce``); returns the
    ``metrics.json`` content."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = DistInfo(0, 1, 0, pick_device("cpu"))
    reports, seconds, rates, chance, figure = {}, {}, {}, None, None
    for key in ["ftm_tt", "bce"] if compare_bce else ["ftm_tt"]:
        title, extra = VARIANTS[key]
        cfg = load_config("synthetic", [*overrides, *extra, f"train.output_dir={out / key}", f"name=demo_{key}",
                                        "train.eval_at_end=true"])
        print(f"== {title}: {cfg['model']['name']}, {cfg['train']['iters']} steps x {cfg['train']['batch_size']} "
              f"images of {cfg['data']['kwargs']['size']} px on {info.device}, {torch.get_num_threads()} threads")
        trainer, result, seconds[key] = _train(cfg, info)
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


# ----------------------------------------------------------------------------- ablation
METRICS = [("mIoU^1", lambda r: 100 * r["levels"][0]["miou"]), ("mIoU^2", lambda r: 100 * r["levels"][1]["miou"]),
           ("mIoU^3", lambda r: 100 * r["levels"][2]["miou"]), ("pixel acc", lambda r: 100 * r["pixel_acc"]),
           ("severity", lambda r: r["mistake_severity"]), ("violation %", lambda r: 100 * r["violation_rate"])]
"""The ablation table's columns: (name, value of a report)."""


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


HIERARCHY_METRICS = [
    *METRICS[:3],
    *[(f"ECE^{k} %", lambda r, k=k: 100 * r["levels"][k - 1]["ece"]) for k in (1, 2, 3)],
    ("cw-ECE^1 %", lambda r: 100 * r["levels"][0]["classwise_ece"]),
    ("non-path %", lambda r: 100 * r["non_path_rate"]),
    METRICS[5],
]
"""The hierarchy experiment's columns: mIoU and ECE per level, leaf class-wise ECE, the share of pixels whose
levels are not one path, the violation rate."""


def ablation_markdown(results: dict[str, list[dict]], command: str, seconds: float,
                      titles: dict[str, str] | None = None, metrics=METRICS) -> str:
    """The ablation as a Markdown table: mean +- std over seeds of every metric, one row per variant."""
    titles = titles or {k: v[0] for k, v in ABLATION.items()}
    lines = ["| variant | " + " | ".join(name for name, _ in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for key, reports in results.items():
        cells = []
        for _, get in metrics:
            mean, std = _mean_std([get(r) for r in reports])
            cells.append(f"{mean:.2f} +- {std:.2f}")
        lines.append(f"| {titles[key]} | " + " | ".join(cells) + " |")
    head = [f"Seeds {list(ABLATION_SEEDS)} (mean +- standard deviation); command `{command}`; "
            f"{seconds / 60:.1f} minutes, {torch.get_num_threads()} torch threads.", ""]
    return "\n".join(head + lines) + "\n"


def draw_ablation(rows: dict[str, dict[str, list[dict]]], path: Path, titles: dict[str, str] | None = None,
                  what: str = "loss ablation", panels=(METRICS[0], METRICS[1], METRICS[2], METRICS[4])) -> None:
    """Bars (mean, std whiskers) of each of ``panels`` (name, value of a report) for every variant; one row of
    panels per entry of ``rows`` (row title -> {variant: [report per seed]})."""
    titles = titles or {k: v[0] for k, v in ABLATION.items()}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(4 * len(panels), 3.4 * len(rows) + 0.6), squeeze=False)
    for row, (row_title, results) in zip(axes, rows.items()):
        for ax, (name, get) in zip(row, panels):
            stats = [_mean_std([get(r) for r in results[k]]) for k in keys]
            ax.bar(range(len(keys)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3,
                   color=[f"C{i}" for i in range(len(keys))])
            ax.set_xticks(range(len(keys)), keys, rotation=35, ha="right", fontsize=8)
            lower = name == "severity" or "ECE" in name or "%" in name and name.startswith(("non", "viol"))
            ax.set_title(f"{row_title}: {name}" if len(rows) > 1 else name, fontsize=9)
            ax.set_ylabel("lower is better" if lower else "%" if name.startswith("mIoU") else "", fontsize=8)
            finite = [m for m, _ in stats if not math.isnan(m)]
            if finite and name.startswith("mIoU"):
                ax.set_ylim(max(0.0, min(finite) - 10), min(100.0, max(finite) + 5))
    handles = [plt.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(len(keys))]
    fig.legend(handles, [titles[k] for k in keys], loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{what} on the synthetic scenes, {len(ABLATION_SEEDS)} seeds (mean, std)", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / (3.4 * len(rows) + 0.6) + 0.04, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


EXPERIMENTS = tuple(SCHEDULES)
"""``hssn demo --ablation [EXPERIMENT]``: the paper's loss ablation, the coarse-label experiment, or the
hierarchy experiment (:data:`HIERARCHY_EXPERIMENT`)."""


def run_ablation(out_dir: str | Path = "runs/demo_ablation", overrides: Sequence[str] = (),
                 variants: Sequence[str] | None = None, seeds: Sequence[int] = ABLATION_SEEDS,
                 experiment: str = "losses") -> dict:
    """Every variant of ``experiment`` (:data:`ABLATION`, :func:`coarse_experiment` or
    :data:`HIERARCHY_EXPERIMENT`) x seed on the same schedule; writes ``ablation.md``, ``ablation.png`` and
    ``ablation.json`` into ``out_dir``; returns ``{evaluation: {variant: [report per seed]}}``, the evaluation
    "all" (the validation scenes), or for the hierarchy experiment "in-domain" and "shifted" (:data:`SHIFT`)."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = DistInfo(0, 1, 0, pick_device("cpu"))
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose from {EXPERIMENTS}")
    schedule = SCHEDULES[experiment]
    table_of = {"losses": ABLATION, "hierarchy": HIERARCHY_EXPERIMENT}.get(experiment) or coarse_experiment(
        load_config("synthetic", [*schedule, *overrides]))
    titles = {k: v[0] for k, v in table_of.items()}
    keys = list(variants or table_of)
    unknown = [k for k in keys if k not in table_of]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; choose from {list(table_of)}")
    results: dict[str, list[dict]] = {k: [] for k in keys}
    shifted: dict[str, list[dict]] = {k: [] for k in keys}
    runs = [(k, s) for k in keys for s in seeds]
    for i, (key, seed) in enumerate(runs, start=1):
        cfg = load_config("synthetic", [*schedule, *overrides, *table_of[key][1], f"train.seed={seed}",
                                        f"train.output_dir={out / f'{key}_seed{seed}'}", f"name=ablation_{key}",
                                        "train.eval_at_end=true", "train.progress=false"])
        trainer, result, sec = _train(cfg, info)
        results[key].append(result["report"])
        lv = result["report"]["levels"]
        line = f"[{i}/{len(runs)}] {titles[key]}, seed {seed}: mIoU^1/2/3 = " + " / ".join(
            f"{100 * x['miou']:.2f}" for x in lv)
        if experiment == "hierarchy":
            moved = apply_overrides(cfg, SHIFT)
            shifted[key].append(evaluate(trainer.model, builders.build_dataset(moved, "val"), moved, info))
            line += ", shifted " + " / ".join(f"{100 * x['miou']:.2f}" for x in shifted[key][-1]["levels"])
        print(line + f" ({sec:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    command = "hssn demo --ablation" + ("" if experiment == "losses" else f" {experiment}") \
        + "".join(f" {o}" for o in overrides)
    what = {"losses": "loss ablation", "coarse": "fine vs fine + coarse labels",
            "hierarchy": "does the hierarchy help"}[experiment]
    if experiment == "hierarchy":
        rows = {"in-domain": results, "shifted": shifted}
        table = "\n".join(f"## {name}\n\n" + ablation_markdown(r, command, seconds, titles, HIERARCHY_METRICS)
                          for name, r in rows.items())
        panels = (HIERARCHY_METRICS[0], HIERARCHY_METRICS[2], HIERARCHY_METRICS[3], HIERARCHY_METRICS[5],
                  HIERARCHY_METRICS[7])
    else:
        rows, table, panels = {"all": results}, ablation_markdown(results, command, seconds, titles), None
    (out / "ablation.md").write_text(f"# {what[0].upper() + what[1:]} on the synthetic scenes\n\n" + table)
    saved = {"results": results, "seconds": seconds, **({"shifted": shifted} if experiment == "hierarchy" else {})}
    (out / "ablation.json").write_text(json.dumps(to_json_ready(saved), indent=1))
    draw_ablation(rows, out / "ablation.png", titles, what, *([panels] if panels else []))
    if experiment == "hierarchy":  # the first seed's reliability diagrams, in-domain and shifted
        for row, reports in rows.items():
            for key in keys:
                draw_reliability(reports[key][0], out / f"reliability_{key}_{row}.png",
                                 f"{titles[key]}, seed {seeds[0]}, {row}")
    print("\n" + table + f"\nwritten: {out / 'ablation.md'}, {out / 'ablation.png'}")
    return rows
