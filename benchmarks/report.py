"""Writes a run's results: ``results.json`` (every number), ``results.md`` (tables), PNG plots."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .ops import RATIO_BASE, TRAIN_OPS

MB = 2**20
PLOTS = ("time_paper.png", "memory_paper.png", "scaling_pixels.png", "scaling_channels.png")
HEADLINE = ("ftm", "full")


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def _reference_rows(rows) -> dict[tuple, dict]:
    return {(r["op"], r["mode"], r["shape"], r["dtype"]): r for r in _ok(rows) if r["backend"] == "reference"}


def with_ratios(rows: list[dict]) -> list[dict]:
    """Adds ``speedup_vs_reference`` (reference median / median) and ``memory_vs_reference``
    (peak above inputs / the reference's) to every measured row that has a measured reference (for the
    ops of ``RATIO_BASE``, the reference row of their base op)."""
    refs = _reference_rows(rows)
    for r in _ok(rows):
        ref = refs.get((RATIO_BASE.get(r["op"], r["op"]), r["mode"], r["shape"], r["dtype"]))
        if ref is not None:
            r["speedup_vs_reference"] = ref["ms_median"] / r["ms_median"]
            r["memory_vs_reference"] = (r["peak_above_inputs_bytes"] / ref["peak_above_inputs_bytes"]
                                        if ref["peak_above_inputs_bytes"] else None)
    return rows


def write_json(data: dict, out: Path) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- markdown
def _fmt(value, spec: str = ".3g", scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def _load(avg) -> str:
    return "-" if not avg else f"{avg[0]:.2f}"


def _err(r: dict) -> str:
    if "argmax_mismatch" in r:
        return f"{r['argmax_mismatch']:.1e} px"
    if r.get("loss_rel_err") is None:
        return r.get("error_status", "-")
    return f"{r['loss_rel_err']:.1e} / {_fmt(r.get('grad_rel_err'), '.1e')}"


COLUMNS = ("shape (BxCxHxW)", "mode", "dtype", "backend", "median ms [p20, p80]", "x ref", "peak MB",
           "above inputs MB", "mem / ref", "floor MB", "GB/s", "% copy", "err loss / grad")


def _row(r: dict) -> list[str]:
    shape = f"{r['shape']} ({r['batch']}x{r['channels']}x{r['height']}x{r['width']})"
    head = [shape, r["mode"], r["dtype"], r["backend"]]
    if r.get("status") != "ok":
        return head + [r.get("status", "?")[:120]] + ["-"] * (len(COLUMNS) - 5)
    return head + [
        f"{r['ms_median']:.3g} [{r['ms_p20']:.3g}, {r['ms_p80']:.3g}]",
        _fmt(r.get("speedup_vs_reference"), ".2f"),
        _fmt(r["peak_bytes"], ".1f", MB),
        _fmt(r["peak_above_inputs_bytes"], ".1f", MB),
        _fmt(r.get("memory_vs_reference"), ".3f"),
        _fmt(r["floor_bytes"], ".2f", MB),
        _fmt(r["achieved_Bps"], ".3g", 1e9),
        _fmt(r["copy_fraction"], ".1f", 0.01),
        _err(r),
    ]


def _table(rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in rows]
    return lines


def headline_table(data: dict) -> list[str]:
    """Table lines of the focal tree-min loss, forward + backward, at the paper shapes."""
    rows = with_ratios(data["results"])
    return _table([r for r in rows if (r["op"], r["mode"]) == HEADLINE and r["group"] == "paper"])


def markdown(data: dict) -> str:
    """The run as Markdown: metadata, the headline (FTM forward+backward) table, then every op."""
    meta, rows = data["meta"], with_ratios(data["results"])
    bw = data["copy_bandwidth_Bps"] / 1e9
    lines = [
        f"# HSSN kernel benchmarks: {meta['device']}",
        "",
        f"- date {meta['date']}, commit `{meta['git_commit']}`{' (dirty)' if meta['git_dirty'] else ''}",
        f"- torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, python {meta['python']}",
        f"- {meta['cpu_count']} CPUs, {meta['torch_threads']} torch threads, 1-min load average "
        f"{_load(meta.get('load_average_start'))} at the start, {_load(meta.get('load_average_end'))} at the end",
        f"- pixel sides divided by {meta['cpu_side_scale']} (CPU scaling){' - quick run' if meta['quick'] else ''}",
        f"- device-to-device copy: {bw:.1f} GB/s (read + write)",
        f"- timing: {meta['timing']}; memory: {meta['memory']}",
        "- backends: " + ", ".join(f"{k}: {'yes' if v is None else 'no'}" for k, v in meta["backends"].items()),
        "",
        "`x ref`: reference median / median. `above inputs MB`: peak memory minus the inputs (for mode "
        "backward, the forward's saved tensors count). `mem / ref`: that peak over the reference's. "
        "`floor MB`: fewest bytes the op must move; `GB/s` = floor / median; `% copy`: of the copy bandwidth. "
        "Errors against the float64 reference: |loss - ref| / |ref| and max |grad - ref| / max |ref|; argmax: "
        "fraction of pixels with another leaf.",
        "",
        "## Headline: focal tree-min loss, forward + backward",
        "",
    ]
    lines += headline_table(data)
    lines += cpu_goal_table(data)
    lines += training_step_table(data)
    by_op = defaultdict(list)
    for r in rows:
        by_op[r["op"]].append(r)
    for op, op_rows in by_op.items():
        lines += ["", f"## {op}", ""] + _table(op_rows)
    return "\n".join(lines) + "\n"


def cpu_goal_table(data: dict) -> list[str]:
    """The CPU goal shapes: each backend's time, its ratio to the floor measured in the same run (focal
    tree-min: one exp + one log per logit; path argmax: one sigmoid per logit) and the cpu backend's speed-up
    over the others."""
    rows = [r for r in _ok(data["results"]) if r["group"] == "cpu"]
    if not rows:
        return []
    by = {(r["op"], r["shape"], r["backend"]): r for r in rows}
    lines = ["", "## CPU kernels against their floors", "",
             "2 images of 128x256 pixels, fp32. `x floor`: median over the median of one `torch.exp` + one "
             "`torch.log` (focal tree-min, forward + backward) or one `torch.sigmoid` (path argmax) over the same "
             "number of logits, measured in the same run. `cpu faster`: the other backend's median over the cpu "
             "backend's.", "",
             "| op | shape (BxCxHxW) | backend | median ms [p20, p80] | x floor | cpu faster |",
             "|---|---|---|---|---|---|"]
    for (op, shape, backend), r in sorted(by.items()):
        floor = r.get("exp_log_floor_ms") or r.get("sigmoid_floor_ms")
        cpu = by.get((op, shape, "cpu"))
        faster = "-" if cpu is None or backend == "cpu" else f"{r['ms_median'] / cpu['ms_median']:.1f}x"
        lines.append(f"| {op} | {shape.removeprefix('cpu-')} ({r['batch']}x{r['channels']}x{r['height']}x{r['width']}) | "
                     f"{backend} | {r['ms_median']:.3g} [{r['ms_p20']:.3g}, {r['ms_p80']:.3g}] | "
                     f"{'-' if not floor else format(r['ms_median'] / floor, '.2f')} | {faster} |")
    return lines


def training_step_table(data: dict) -> list[str]:
    """Per shape and fast backend: F.interpolate + loss vs the fused upsampling, time and memory side by side."""
    rows = {(r["op"], r["backend"], r["shape"], r["dtype"]): r for r in _ok(data["results"]) if r["op"] in TRAIN_OPS}
    if not rows:
        return []
    lines = ["", "## Training-step loss: logits at 1/4 of the labels", "",
             "`interp + X`: `F.interpolate` to the label size, then the loss on backend X; `upsample X`: "
             "`upsample=\"bilinear\"` on backend X. Memory: peak above the inputs, forward + backward. "
             "`x floor`: median over one exp + one log over the full-resolution logits (same run).", "",
             "| op | shape | dtype | backend | interp + reference ms / MB | interp + backend ms / MB | "
             "upsample ms / MB | mem vs interp + backend | mem vs interp + reference | x floor |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (op, backend, shape, dtype), r in sorted(rows.items()):
        if op not in RATIO_BASE:
            continue
        base = RATIO_BASE[op]
        ref, fused = rows.get((base, "reference", shape, dtype)), rows.get((base, backend, shape, dtype))

        def cell(x):
            return "-" if x is None else f"{x['ms_median']:.4g} / {x['peak_above_inputs_bytes'] / MB:.1f}"

        def ratio(x):
            return "-" if x is None or not x["peak_above_inputs_bytes"] else \
                f"1/{x['peak_above_inputs_bytes'] / max(r['peak_above_inputs_bytes'], 1):.0f}"

        floor = r.get("exp_log_floor_ms")
        lines.append(f"| {base.replace('_interp', '')} | {shape} ({r['batch']}x{r['channels']}x{r['height']}x"
                     f"{r['width']}) | {dtype} | {backend} | {cell(ref)} | {cell(fused)} | {cell(r)} | {ratio(fused)} | "
                     f"{ratio(ref)} | {'-' if not floor else format(r['ms_median'] / floor, '.1f')} |")
    return lines


def write_markdown(data: dict, out: Path) -> Path:
    path = out / "results.md"
    path.write_text(markdown(data))
    return path


# ----------------------------------------------------------------------------- plots
def _series_key(r: dict, dtypes: set[str]) -> str:
    return r["backend"] if len(dtypes) == 1 else f"{r['backend']} {r['dtype']}"


def _bar_grid(rows: list[dict], value, ylabel: str, title: str, path: Path) -> None:
    """One panel per (op, mode): bars per backend over the paper shapes; 20-80% whiskers for time."""
    panels = sorted({(r["op"], r["mode"]) for r in rows})
    ncols = min(4, max(1, len(panels)))
    nrows = max(1, -(-len(panels) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.6 * nrows), squeeze=False)
    dtypes = {r["dtype"] for r in rows}
    for ax, (op, mode) in zip(axes.flat, panels):
        sub = [r for r in rows if (r["op"], r["mode"]) == (op, mode)]
        shapes = list(dict.fromkeys(r["shape"] for r in sub))
        series = list(dict.fromkeys(_series_key(r, dtypes) for r in sub))
        width = 0.8 / max(1, len(series))
        for i, key in enumerate(series):
            xs, ys, lo, hi = [], [], [], []
            for j, shape in enumerate(shapes):
                for r in sub:
                    if r["shape"] == shape and _series_key(r, dtypes) == key:
                        y, err = value(r)
                        xs.append(j + (i - (len(series) - 1) / 2) * width)
                        ys.append(y)
                        lo.append(err[0] if err else 0)
                        hi.append(err[1] if err else 0)
            ax.bar(xs, ys, width, label=key, yerr=[lo, hi] if any(lo) or any(hi) else None, capsize=2)
        ax.set_xticks(range(len(shapes)), shapes, rotation=20, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"{op} {mode}", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _time(r):
    return r["ms_median"], (r["ms_median"] - r["ms_p20"], r["ms_p80"] - r["ms_median"])


def _memory(r):
    return max(r["peak_above_inputs_bytes"], 1) / MB, None


def _scaling(rows: list[dict], x_key: str, xlabel: str, title: str, path: Path) -> None:
    """Time (top) and peak memory above inputs (bottom) against ``x_key``, one line per backend, per (op, mode)."""
    panels = sorted({(r["op"], r["mode"]) for r in rows})
    fig, axes = plt.subplots(2, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 7), squeeze=False)
    dtypes = {r["dtype"] for r in rows}
    for col, (op, mode) in enumerate(panels):
        sub = [r for r in rows if (r["op"], r["mode"]) == (op, mode)]
        for key in dict.fromkeys(_series_key(r, dtypes) for r in sub):
            pts = sorted((r[x_key], r) for r in sub if _series_key(r, dtypes) == key)
            xs = [x for x, _ in pts]
            axes[0, col].errorbar(xs, [r["ms_median"] for _, r in pts], capsize=2, marker="o", label=key,
                                  yerr=[[r["ms_median"] - r["ms_p20"] for _, r in pts],
                                        [r["ms_p80"] - r["ms_median"] for _, r in pts]])
            axes[1, col].plot(xs, [max(r["peak_above_inputs_bytes"], 1) / MB for _, r in pts], marker="o", label=key)
        for row, ylabel in ((0, "median ms"), (1, "peak MB above inputs")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(f"{op} {mode}", fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(data: dict, out: Path) -> list[Path]:
    """The PNGs of :data:`PLOTS` for the groups that have measured rows."""
    rows = _ok(data["results"])
    device = data["meta"]["device"]
    written = []
    paper = [r for r in rows if r["group"] == "paper"]
    if paper:
        _bar_grid(paper, _time, "median ms", f"time per backend per shape ({device})", out / PLOTS[0])
        _bar_grid(paper, _memory, "peak MB above inputs", f"memory per backend per shape ({device})", out / PLOTS[1])
        written += [out / PLOTS[0], out / PLOTS[1]]
    for group, x_key, xlabel, name in (("pixels", "pixels", "pixels", PLOTS[2]),
                                       ("channels", "channels", "channels", PLOTS[3])):
        sub = [r for r in rows if r["group"] == group]
        if sub:
            _scaling(sub, x_key, xlabel, f"scaling over {group} ({device})", out / name)
            written.append(out / name)
    return written


def write_all(data: dict, out: Path) -> dict[str, Path | list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    with_ratios(data["results"])
    return {"json": write_json(data, out), "markdown": write_markdown(data, out), "plots": write_plots(data, out)}
