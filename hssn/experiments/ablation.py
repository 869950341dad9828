"""``hssn demo --ablation [EXPERIMENT]``: experiments on the synthetic scenes, each variant x 3 seeds on one
schedule, written as ``ablation.md`` (mean +- std), ``ablation.png`` and ``ablation.json``:

* ``losses`` (default): the paper's loss ablation (Tables 6 and 8), :data:`ABLATION`;
* ``coarse``: fine labels alone vs fine + coarse labels (labels at any depth), :func:`coarse_experiment`;
* ``hierarchy``: does the hierarchy help? HSSN vs a flat softmax with inferred parents vs BCE, in-domain and
  under a synthetic domain shift, with calibration per level, :data:`HIERARCHY_EXPERIMENT`.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from hssn.engine import builders
from hssn.engine.calibration import draw_reliability
from hssn.engine.config import Config, load_config
from hssn.engine.evaluator import evaluate
from hssn.engine.metrics import to_json_ready
from hssn.engine.trainer import Trainer
from hssn.errors import UserError

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


def coarse_experiment(base: Config) -> dict[str, tuple[str, list[str]]]:
    """The experiment's variants as overrides of the synthetic config ``base`` (its scene settings)."""
    scene = {k: v for k, v in base.data.kwargs.items() if k != "seed"}

    def part(length, seed, **extra):
        kw = ", ".join(f"{k}: {v}" for k, v in {**scene, "length": length, "seed": seed, **extra}.items())
        return f"{{name: synthetic, kwargs: {{{kw}}}}}"

    fine, val = part(COARSE_FINE_SCENES, 0), part(base.data.val_kwargs.get("length", 100), 0)
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
:data:`ABLATION_ITERS` steps instead of its own."""
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
FIT_TEMPERATURE = ["eval.temperature=fit", "eval.temperature_split=test"]
"""Temperature scaling in the hierarchy experiment: T fitted on the synthetic test split (in-domain scenes the
model never saw), then used as is on the shifted scenes (no target-domain labels)."""
HIERARCHY_SCHEDULE = ABLATION_SCHEDULE + ["eval.calibration=true", "eval.temperature=null"]
"""The hierarchy experiment runs on the loss ablation's schedule, calibration counted at T = 1."""
SCHEDULES = {"losses": ABLATION_SCHEDULE, "coarse": COARSE_SCHEDULE, "hierarchy": HIERARCHY_SCHEDULE}
"""``--ablation`` experiment -> the overrides of the synthetic config it runs on."""

def train_variant(cfg: Config) -> tuple[Trainer, dict, float]:
    """(trainer, ``Trainer.fit`` result, seconds) of one run of ``cfg``."""
    start = time.perf_counter()
    trainer = Trainer(cfg)
    result = trainer.fit()
    return trainer, result, time.perf_counter() - start


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
    ("T", lambda r: r["temperature"]),
]
"""The hierarchy experiment's columns: mIoU and ECE per level, leaf class-wise ECE, the share of pixels whose
levels are not one path, the violation rate, the temperature."""


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
    "all" (the validation scenes), or for the hierarchy experiment "in-domain", "in-domain, T fitted"
    (:data:`FIT_TEMPERATURE`), "shifted" (:data:`SHIFT`) and "shifted, T from in-domain"."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if experiment not in EXPERIMENTS:
        raise UserError(f"unknown experiment {experiment!r}; choose from {EXPERIMENTS}")
    schedule = SCHEDULES[experiment]
    table_of = {"losses": ABLATION, "hierarchy": HIERARCHY_EXPERIMENT}.get(experiment) or coarse_experiment(
        load_config("synthetic", [*schedule, *overrides]))
    titles = {k: v[0] for k, v in table_of.items()}
    keys = list(variants or table_of)
    unknown = [k for k in keys if k not in table_of]
    if unknown:
        raise UserError(f"unknown ablation variants {unknown}; choose from {list(table_of)}")
    results: dict[str, list[dict]] = {k: [] for k in keys}
    more = ["in-domain, T fitted", "shifted", "shifted, T from in-domain"] if experiment == "hierarchy" else []
    extra: dict[str, dict[str, list[dict]]] = {row: {k: [] for k in keys} for row in more}
    runs = [(k, s) for k in keys for s in seeds]
    for i, (key, seed) in enumerate(runs, start=1):
        cfg = load_config("synthetic", [*schedule, *overrides, *table_of[key][1], f"train.seed={seed}",
                                        f"train.output_dir={out / f'{key}_seed{seed}'}", f"name=ablation_{key}",
                                        "train.eval_at_end=true", "train.progress=false"])
        trainer, result, sec = train_variant(cfg)
        results[key].append(result["report"])
        lv = result["report"]["levels"]
        line = f"[{i}/{len(runs)}] {titles[key]}, seed {seed}: mIoU^1/2/3 = " + " / ".join(
            f"{100 * x['miou']:.2f}" for x in lv)
        if experiment == "hierarchy":
            ctx = trainer.ctx
            t = evaluate(trainer.model, trainer.val_set, cfg.with_overrides(FIT_TEMPERATURE), ctx)
            moved = cfg.with_overrides(SHIFT)
            shifted = builders.build_dataset(moved, "val")
            reports = {"in-domain, T fitted": t, "shifted": evaluate(trainer.model, shifted, moved, ctx),
                       "shifted, T from in-domain": evaluate(
                           trainer.model, shifted, moved.with_overrides([f"eval.temperature={t['temperature']!r}"]),
                           ctx)}
            for row, report in reports.items():
                extra[row][key].append(report)
            line += ", shifted " + " / ".join(f"{100 * x['miou']:.2f}" for x in reports["shifted"]["levels"])
            line += f", T = {t['temperature']:.3f}"
        print(line + f" ({sec:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    command = "hssn demo --ablation" + ("" if experiment == "losses" else f" {experiment}") \
        + "".join(f" {o}" for o in overrides)
    what = {"losses": "loss ablation", "coarse": "fine vs fine + coarse labels",
            "hierarchy": "does the hierarchy help"}[experiment]
    if experiment == "hierarchy":
        rows = {"in-domain": results, **extra}
        table = "\n".join(f"## {name}\n\n" + ablation_markdown(r, command, seconds, titles, HIERARCHY_METRICS)
                          for name, r in rows.items())
        panels = (HIERARCHY_METRICS[0], HIERARCHY_METRICS[2], HIERARCHY_METRICS[3], HIERARCHY_METRICS[5],
                  HIERARCHY_METRICS[7])
    else:
        rows, table, panels = {"all": results}, ablation_markdown(results, command, seconds, titles), None
    (out / "ablation.md").write_text(f"# {what[0].upper() + what[1:]} on the synthetic scenes\n\n" + table)
    saved = {"results": results, "seconds": seconds, **extra}
    (out / "ablation.json").write_text(json.dumps(to_json_ready(saved), indent=1))
    draw_ablation(rows, out / "ablation.png", titles, what, *([panels] if panels else []))
    if experiment == "hierarchy":  # the first seed's reliability diagrams, per evaluation
        for row, reports in rows.items():
            for key in keys:
                name = row.replace(",", "").replace(" ", "_")
                draw_reliability(reports[key][0], out / f"reliability_{key}_{name}.png",
                                 f"{titles[key]}, seed {seeds[0]}, {row}")
    print("\n" + table + f"\nwritten: {out / 'ablation.md'}, {out / 'ablation.png'}")
    return rows
