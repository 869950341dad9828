"""Evaluation loop: TTA scores -> path inference -> hierarchical metrics, sharded over the processes."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .distributed import DistInfo, ShardSampler
from .inference import model_logits_fn, predict_leaves
from .metrics import HierarchicalMetrics


def evaluate(model: torch.nn.Module, dataset: Dataset, eval_cfg: dict, mean: Sequence[float], std: Sequence[float],
             info: DistInfo, amp: bool = False, backend: str = "auto", progress: bool = False) -> dict:
    """The metrics report (:meth:`HierarchicalMetrics.compute`) of ``model`` on ``dataset``.

    ``eval_cfg`` is the config's ``eval`` section (its scales and flip validated there). With
    ``scored_classes: dataset`` the report scores the dataset's ``scored_leaves`` (its official protocol,
    e.g. Mapillary's evaluated classes) where it has them; ``all`` scores every leaf. Each process
    evaluates its shard; the counts are summed over the processes, so every rank returns the full report.
    The model is put in eval mode and left there.
    """
    scales = list(eval_cfg["scales"])
    flip = bool(eval_cfg["flip"])
    length = len(dataset) if eval_cfg["max_images"] is None else min(len(dataset), int(eval_cfg["max_images"]))
    loader = DataLoader(dataset, batch_size=int(eval_cfg["batch_size"]),
                        sampler=ShardSampler(length, info.world_size, info.rank),
                        num_workers=int(eval_cfg["num_workers"]), pin_memory=info.device.type == "cuda")
    hierarchy = dataset.hierarchy
    scored = getattr(dataset, "scored_leaves", None) if eval_cfg["scored_classes"] == "dataset" else None
    metrics = HierarchicalMetrics(hierarchy, dataset.ignore_index, info.device, scored_leaves=scored,
                                  partial_labels=getattr(dataset, "partial_labels", False))
    fn = model_logits_fn(model, mean, std, amp)
    model.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc="eval", disable=not (progress and info.is_main), leave=False):
            images = batch["image"].to(info.device, non_blocking=True)
            label = batch["label"].to(info.device, non_blocking=True)
            leaf, violations = predict_leaves(fn, images, hierarchy, backend, scales, flip, dataset.flip_pairs,
                                              tuple(label.shape[-2:]), eval_cfg["mode"], eval_cfg["crop_size"],
                                              eval_cfg["stride"])
            metrics.update(leaf, label, violations=violations)
    metrics.all_reduce()
    report = metrics.compute()
    report["scales"], report["flip"], report["num_images"] = scales, flip, length
    return report
