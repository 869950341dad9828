"""Config -> objects: datasets with their transforms, model, loss, optimizer and the poly schedule."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hssn.errors import UserError
from hssn_kernels import HierarchicalLoss

from .config import Config


def _tuples(kwargs: dict) -> dict:
    """Lists in YAML-loaded kwargs become tuples (sizes and rates are tuples in the constructors)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def build_dataset(cfg: Config, split: str, split_name: str | None = None) -> Dataset:
    """The "train" or "val" dataset of ``cfg`` with its transforms and kwargs; ``split`` picks the config's split
    name unless ``split_name`` names another split of the data (e.g. ``eval.temperature_split``). With
    ``eval.label_mapping`` a val dataset's labels are mapped onto the mapping's target tree
    (:class:`hssn.data.mapping.MappedDataset`)."""
    from hssn.data import build_dataset as build
    from hssn.data import transforms as T
    from hssn.data.registry import accepts

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    d = cfg.data
    kwargs = {**d.kwargs, **(d.train_kwargs if split == "train" else d.val_kwargs)}
    if d.partial_labels and accepts(d.name, "partial_labels"):
        kwargs.setdefault("partial_labels", True)
    ds = build(d.name, root=d.root, split=split_name or (d.train_split if split == "train" else d.val_split),
               **_tuples(kwargs))
    if getattr(ds, "partial_labels", False) and not d.partial_labels:
        raise UserError(f"dataset {d.name!r} ({split}) has inner-node labels: set data.partial_labels=true")
    if split == "train" and d.augment:
        ds.transforms = T.build_train_transforms(
            d.crop_size, tuple(float(s) for s in d.scale_range), ds.flip_pairs, ds.ignore_index,
            photometric=d.photometric, cat_max_ratio=d.cat_max_ratio)
        if d.train_resize is not None:
            ds.transforms = T.Compose([T.Resize(size=d.train_resize, keep_ratio=True), *ds.transforms.transforms])
    elif split == "val" and d.eval_size is not None:
        ds.transforms = eval_transforms(cfg, ds.ignore_index)
    if split == "val" and cfg.eval.label_mapping is not None:
        from hssn.data.mapping import LabelMapping, MappedDataset

        try:
            ds = MappedDataset(ds, LabelMapping.load(cfg.eval.label_mapping))
        except ValueError as err:
            raise UserError(f"eval.label_mapping: {err}") from None
    return ds


def eval_transforms(cfg: Config, ignore_index: int):
    """The evaluation preprocessing (``data.eval_size``: fit, keep ratio; the label kept unless
    ``data.eval_resize_label``), shared by ``hssn eval`` and ``hssn predict``."""
    from hssn.data import transforms as T

    d = cfg.data
    return T.build_eval_transforms(d.eval_size, keep_ratio=True, ignore_index=ignore_index,
                                   resize_label=d.eval_resize_label)


def build_model(cfg: Config, hierarchy, pretrained: Any = None) -> nn.Module:
    """``hssn.models.build_model`` with the config's name, weights, kwargs and input normalisation
    (``model.mean`` / ``std``: the model's buffers); ``pretrained`` overrides."""
    from hssn.models import build_model as build

    m = cfg.model
    weights = m.pretrained if pretrained is None else pretrained
    return build(m.name, hierarchy, pretrained=weights, mean=m.mean, std=m.std, **_tuples(m.kwargs))


def build_loss(cfg: Config, hierarchy, ignore_index: int) -> HierarchicalLoss:
    """The configured ablation of :class:`hssn_kernels.HierarchicalLoss`; beta rises over ``loss.beta_steps``
    (null: ``train.iters``).

    The training form: logits at the head's resolution, bilinearly upsampled inside the loss; no host
    syncs (labels are validated by the dataset, non-finite losses by the trainer at ``log_interval``)."""
    lc = cfg.loss
    return HierarchicalLoss(hierarchy, segmentation=lc.segmentation, gamma=float(lc.gamma), triplet=lc.triplet,
                            num_triplets=lc.num_triplets, margin_eps=float(lc.margin_eps),
                            margin_scale=float(lc.margin_scale), distance=lc.distance, beta_max=float(lc.beta_max),
                            beta_steps=lc.beta_steps or cfg.train.iters, ignore_index=ignore_index,
                            backend=lc.backend, upsample="bilinear", validate=False, nan_policy="propagate",
                            partial_labels=cfg.data.partial_labels)


NO_DECAY_NAMES = ("absolute_pos_embed", "relative_position_bias_table", "pos_embed", "query_embed")


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """One group, or two when norm weights, biases and position tables are kept out of weight decay."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for n, p in params:
        (no_decay if p.ndim <= 1 or any(k in n for k in NO_DECAY_NAMES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = {
    "sgd": lambda groups, o: torch.optim.SGD(groups, lr=float(o.lr), momentum=o.momentum),
    "adamw": lambda groups, o: torch.optim.AdamW(groups, lr=float(o.lr), betas=o.betas, fused=True),
}


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (CNN backbones) or AdamW (Swin; the fused CPU / CUDA kernel) per ``optim.name``; build it after
    moving the model to its device."""
    o = cfg.optim
    return OPTIMIZERS[o.name](param_groups(model, float(o.weight_decay), o.no_decay_norm_bias), o)


class PolySchedule:
    """Multiplier of the base lr at ``step``: linear warm-up, then
    ``(1 - min_ratio) * (1 - step / iters) ** power + min_ratio``."""

    def __init__(self, iters: int, power: float = 0.9, min_ratio: float = 0.0, warmup_iters: int = 0,
                 warmup_ratio: float = 1e-6):
        self.iters, self.power, self.min_ratio = int(iters), float(power), float(min_ratio)
        self.warmup_iters, self.warmup_ratio = int(warmup_iters), float(warmup_ratio)

    def __call__(self, step: int) -> float:
        frac = min(step, self.iters) / self.iters
        factor = (1.0 - self.min_ratio) * (1.0 - frac) ** self.power + self.min_ratio
        if step < self.warmup_iters:
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_iters
        return factor


def lr_schedule(cfg: Config) -> PolySchedule:
    """The config's lr factor per step: poly over ``train.iters`` with optional warm-up."""
    o = cfg.optim
    return PolySchedule(cfg.train.iters, o.poly_power, float(o.min_lr) / float(o.lr), o.warmup_iters, o.warmup_ratio)


def set_lr(optimizer: torch.optim.Optimizer, cfg: Config, step: int) -> float:
    """Set every param group's lr to ``optim.lr * lr_schedule(cfg)(step)`` and return it: the schedule is a
    function of the step and the config alone (a resumed run follows the config it is started with; no
    scheduler state is saved, and an old checkpoint's is ignored)."""
    lr = float(cfg.optim.lr) * lr_schedule(cfg)(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
