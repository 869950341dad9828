"""One real training step of a config's model at its crop size: images/s and peak memory, with the loss on
logits upsampled inside it (the trainer's ``upsample="bilinear"``) against ``F.interpolate`` first.

    python -m benchmarks.train_step deeplabv3plus_r101_cityscapes --batch 2 --size 512 1024 --out DIR

Random weights and inputs (no download); bf16 autocast on CUDA as the trainer runs it, fp32 on CPU. Writes
``train_step.json`` (and prints a table): per mode, median ms per step over ``--steps`` timed steps after
``--warmup``, images/s, and the peak memory the step allocates above the model, its optimizer state and the
batch (CUDA: ``torch.cuda.max_memory_allocated``; CPU: not measured).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hssn.engine.builders import build_dataset, build_loss, build_model, build_optimizer
from hssn.engine.config import load_config
from hssn import hierarchies

MODES = ("fused", "interpolate")
"""fused: the loss upsamples the head's logits itself; interpolate: ``F.interpolate`` to the label size first."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: str, batch: int, size: tuple[int, int], device: torch.device, steps: int, warmup: int,
            mode: str) -> dict:
    """Median step time and peak memory of ``mode`` (see MODES) for ``config``'s model."""
    cfg = load_config(config, ["model.pretrained=false"])
    name = cfg.data.name  # the dataset's tree: a shipped one without reading the data, else the dataset's
    hierarchy = hierarchies.get(name) if name in hierarchies.available() else build_dataset(cfg, "train").hierarchy
    model = build_model(cfg, hierarchy).to(device).train()
    loss_fn = build_loss(cfg, hierarchy, 255)
    if mode == "interpolate":  # every segmentation term (main and auxiliary) on F.interpolate'd fp32 logits
        loss_fn.up = {"upsample": None, "align_corners": False}
        same_size = loss_fn.segmentation_loss
        loss_fn.segmentation_loss = lambda z, t: same_size(
            F.interpolate(z.float(), size=tuple(t.shape[-2:]), mode="bilinear", align_corners=False), t)
    opt = build_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=gen).to(device)
    target = torch.tensor(hierarchy.leaves)[torch.randint(hierarchy.num_leaves, (batch, *size), generator=gen)]
    target = target.to(device)
    amp = device.type == "cuda"

    def step(i: int) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(images)
        emb = out.get("embeddings")
        parts = loss_fn(out["logits"], target, None if emb is None else emb.float(), step=i)
        aux = model.auxiliary_losses(out, target, loss_fn.segmentation_loss, 255)
        total = parts["loss"] + sum(aux.values()) if aux else parts["loss"]
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    _sync(device)
    base = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for i in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        step(warmup + i)
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) - base if base is not None else None
    return {"config": config, "mode": mode, "batch": batch, "size": list(size), "device": str(device),
            "amp_bf16": amp, "ms_median": ms, "ms_min": min(times), "images_per_s": batch * 1e3 / ms,
            "peak_above_model_bytes": peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.splitlines()[0])
    p.add_argument("config", help="a config name or YAML path (hssn configs)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {MODES}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="folder for train_step.json")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES) or min(args.batch, args.steps, *args.size) < 1 or args.warmup < 0:
        print(f"error: --modes from {MODES}, --batch / --steps / --size >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    rows = []
    for mode in modes:
        row = measure(args.config, args.batch, tuple(args.size), device, args.steps, args.warmup, mode)
        rows.append(row)
        peak = "-" if row["peak_above_model_bytes"] is None else f"{row['peak_above_model_bytes'] / 2**20:.0f} MiB"
        print(f"{args.config} {mode:12s} {row['ms_median']:9.1f} ms/step {row['images_per_s']:7.2f} images/s "
              f"peak above model {peak}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_step.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
