"""Evaluation: the loop (TTA probabilities -> the level rule -> hierarchical metrics and calibration, sharded
over the processes), temperature fitting on a held-out split, and ``hssn eval`` (:func:`run_eval`)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hssn.errors import UserError

from . import builders, checkpoint as ckpt
from .calibration import draw_reliability, fit_temperature
from .config import Config, EvalConfig
from .distributed import RunContext, ShardSampler, cleanup, gather_objects, start_run
from .inference import InferenceSettings, LogitsFn, model_logits_fn, node_probabilities, predict
from .metrics import HierarchicalMetrics, format_report, to_json_ready

FIT_PIXELS_PER_IMAGE = 4096
"""Labelled pixels drawn (seeded, without replacement) from each held-out image to fit the temperature."""


def _loader(dataset: Dataset, ev: EvalConfig, ctx: RunContext) -> tuple[DataLoader, int]:
    """This process's shard of the first ``eval.max_images`` images, and that count."""
    length = len(dataset) if ev.max_images is None else min(len(dataset), ev.max_images)
    loader = DataLoader(dataset, batch_size=ev.batch_size, sampler=ShardSampler(length, ctx.world_size, ctx.rank),
                        num_workers=ev.num_workers, pin_memory=ctx.device.type == "cuda")
    return loader, length


def evaluate(model: torch.nn.Module, dataset: Dataset, cfg: Config, ctx: RunContext, full_tta: bool = True) -> dict:
    """The metrics report (:meth:`HierarchicalMetrics.compute`) of ``model`` on ``dataset`` under the config's
    ``eval`` section (and ``loss.segmentation``), run as ``ctx`` says (device, AMP, backend, progress).

    ``full_tta=False``: one scale, no flip, no calibration and no temperature fit (the trainer's periodic
    validation: under the path rule the fused single pass, no full-resolution probabilities). With ``scored_classes:
    dataset`` the report scores the dataset's ``scored_leaves`` (its official protocol, e.g. Mapillary's
    evaluated classes) where it has them; ``all`` scores every leaf. ``eval.temperature: fit`` first fits T on
    ``eval.temperature_split`` (:func:`fit_temperature_on`). Each process evaluates its shard; the counts are
    summed over the processes, so every rank returns the full report. The model is left in eval mode.
    """
    ev = cfg.eval
    fn = model_logits_fn(model, ctx.amp)
    model.eval()
    hierarchy = dataset.hierarchy
    changes = {} if full_tta else {"scales": (1.0,), "flip": False}
    settings = InferenceSettings.from_config(cfg, dataset.flip_pairs,
                                             probabilities=ev.calibration and full_tta, **changes)
    if ev.temperature == "fit" and full_tta:
        try:
            held_out = builders.build_dataset(cfg, "val", split_name=ev.temperature_split)
        except (ValueError, OSError) as err:
            raise UserError(f"eval.temperature_split={ev.temperature_split!r}: {err}") from None
        settings = replace(settings, temperature=fit_temperature_on(fn, held_out, replace(settings, temperature=1.0),
                                                                    ev, ctx))
    loader, length = _loader(dataset, ev, ctx)
    scored = getattr(dataset, "scored_leaves", None) if ev.scored_classes == "dataset" else None
    metrics = HierarchicalMetrics(hierarchy, dataset.ignore_index, ctx.device, scored_leaves=scored,
                                  partial_labels=getattr(dataset, "partial_labels", False),
                                  counts=[c for c, on in (("per_level", settings.parent_scores == "sum"),
                                                          ("calibration", settings.probabilities)) if on])
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", disable=not ctx.show_progress, leave=False):
            images = batch["image"].to(ctx.device, non_blocking=True)
            label = batch["label"].to(ctx.device, non_blocking=True)
            out = predict(fn, images, hierarchy, settings, tuple(label.shape[-2:]))
            metrics.update(out.leaf, label, violations=out.violations, levels=out.levels, probs=out.probs)
    metrics.all_reduce()
    report = metrics.compute()
    report.update(scales=list(settings.scales), flip=settings.flip, num_images=length,
                  parent_scores=settings.parent_scores, temperature=settings.temperature,
                  temperature_fit_on=ev.temperature_split if ev.temperature == "fit" and full_tta else None)
    return report


def fit_temperature_on(fn: LogitsFn, dataset: Dataset, settings: InferenceSettings, ev: EvalConfig,
                       ctx: RunContext) -> float:
    """The temperature T minimising the negative log-likelihood of up to :data:`FIT_PIXELS_PER_IMAGE` leaf-labelled
    pixels per image of ``dataset`` (the first ``eval.max_images`` of ``ev``), one whole pass at scale 1 per image,
    under the level rule of ``settings`` (at T = 1): path, the binary cross-entropy of every node's sigmoid against the pixel's path (the
    probabilities path calibration reads); sum, -log of the labelled leaf's probability. Every process
    draws from its shard; all fit on the union, so all get the same T."""
    hierarchy = dataset.hierarchy
    leaf_pos = hierarchy.tables("cpu").leaf_index.long()
    loader, _ = _loader(dataset, ev, ctx)
    rows, labels = [], []
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch in tqdm(loader, desc="fit temperature", disable=not ctx.show_progress, leave=False):
            label = batch["label"]
            logits = F.interpolate(fn(batch["image"].to(ctx.device)), size=tuple(label.shape[-2:]),
                                   mode="bilinear", align_corners=False).cpu()
            for z, y in zip(logits, label):
                y = y.reshape(-1).long()
                keep = (y != dataset.ignore_index) & (y >= 0) & (y < hierarchy.num_channels)
                keep &= leaf_pos[y.clamp(0, hierarchy.num_channels - 1)] >= 0
                idx = keep.nonzero()[:, 0]
                idx = idx[torch.randperm(len(idx), generator=gen)[:FIT_PIXELS_PER_IMAGE]]
                rows.append(z.reshape(z.shape[0], -1)[:, idx].T)
                labels.append(y[idx])
    parts = gather_objects((torch.cat(rows) if rows else torch.zeros(0, hierarchy.num_channels),
                            torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)))
    z = torch.cat([p[0] for p in parts]).double()
    y = torch.cat([p[1] for p in parts])
    if not len(y):
        raise UserError("eval.temperature=fit: the held-out split (eval.temperature_split) has no labelled leaf pixel")
    if settings.parent_scores == "path":
        on_path = hierarchy.tables("cpu").is_ancestor[y].double()  # (N, C): the pixel's per-node labels

        def nll(t: float) -> float:
            return float(F.binary_cross_entropy_with_logits(z / t, on_path))
    else:
        def nll(t: float) -> float:
            p = node_probabilities(z[:, :, None, None], hierarchy, replace(settings, temperature=t))
            return float(-p[:, :, 0, 0].gather(1, y[:, None]).clamp_min(1e-300).log().mean())
    return fit_temperature(nll)


def default_metrics_path(checkpoint_path: str | Path) -> Path:
    """``<run folder>/eval_<checkpoint stem>.json`` for a checkpoint in a run's ``checkpoints/`` folder,
    else ``<checkpoint stem>.metrics.json`` beside it."""
    path = Path(checkpoint_path)
    if path.parent.name == "checkpoints":
        return path.parent.parent / f"eval_{path.stem}.json"
    return path.with_name(f"{path.stem}.metrics.json")


def run_eval(cfg: Config, checkpoint_path: str | Path, out: str | Path | None = None, per_class: bool = False) -> dict:
    """Evaluate ``checkpoint_path`` on the config's val split (torchrun-aware); prints the table and writes
    the metrics JSON to ``out`` (default :func:`default_metrics_path`) and, with ``eval.calibration``, the
    reliability diagram beside it (``.reliability.png``). Returns the report."""
    finished = False
    try:
        ctx = start_run(cfg)
        dataset = builders.build_dataset(cfg, "val")
        model = ckpt.load_trained_model(cfg, ckpt.load_checkpoint(checkpoint_path), checkpoint_path,
                                        dataset.hierarchy, ctx.device)
        report = evaluate(model, dataset, cfg, ctx)
        if ctx.is_main:
            print(format_report(report, per_class=per_class))
            path = Path(out) if out else default_metrics_path(checkpoint_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(to_json_ready(report), indent=1) + "\n")
            print(f"metrics: {path}")
            if "ece" in report["levels"][0]:
                figure = path.with_suffix(".reliability.png")
                draw_reliability(report, figure, f"{cfg.name}: {Path(checkpoint_path).name}, "
                                                 f"{report['parent_scores']} levels, T = {report['temperature']:.3g}")
                print(f"reliability diagram: {figure}")
        finished = True
        return report
    finally:
        cleanup(finished)
