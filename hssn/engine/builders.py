"""Config -> objects: datasets with their transforms, model, loss, optimizer and the poly schedule."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hssn_kernels import HierarchicalLoss


def _tuples(kwargs: dict) -> dict:
    """Lists in YAML-loaded kwargs become tuples (sizes and rates are tuples in the constructors)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def build_dataset(cfg: dict, split: str, split_name: str | None = None) -> Dataset:
    """The "train" or "val" dataset of ``cfg`` with its transforms and kwargs; ``split`` picks the config's split
    name unless ``split_name`` names another split of the data (e.g. ``eval.temperature_split``). With
    ``eval.label_mapping`` a val dataset's labels are mapped onto the mapping's target tree
    (:class:`hssn.data.mapping.MappedDataset`)."""
    from hssn.data import build_dataset as build
    from hssn.data import transforms as T
    from hssn.data.registry import accepts

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    d = cfg["data"]
    kwargs = {**d["kwargs"], **d[f"{split}_kwargs"]}
    if d["partial_labels"] and accepts(d["name"], "partial_labels"):
        kwargs.setdefault("partial_labels", True)
    ds = build(d["name"], root=d["root"], split=split_name or d[f"{split}_split"], **_tuples(kwargs))
    if getattr(ds, "partial_labels", False) and not d["partial_labels"]:
        raise ValueError(f"dataset {d['name']!r} ({split}) has inner-node labels: set data.partial_labels=true")
    if split == "train" and d["augment"]:
        ds.transforms = T.build_train_transforms(
            tuple(int(s) for s in d["crop_size"]), tuple(float(s) for s in d["scale_range"]), ds.flip_pairs,
            ds.ignore_index, photometric=d["photometric"], cat_max_ratio=d["cat_max_ratio"])
        if d["train_resize"] is not None:
            size = tuple(int(s) for s in d["train_resize"])
            ds.transforms = T.Compose([T.Resize(size=size, keep_ratio=True), *ds.transforms.transforms])
    elif split == "val" and d["eval_size"] is not None:
        ds.transforms = T.build_eval_transforms(tuple(int(s) for s in d["eval_size"]), keep_ratio=True,
                                                ignore_index=ds.ignore_index, resize_label=d["eval_resize_label"])
    if split == "val" and cfg["eval"]["label_mapping"] is not None:
        from hssn.data.mapping import LabelMapping, MappedDataset

        try:
            ds = MappedDataset(ds, LabelMapping.load(cfg["eval"]["label_mapping"]))
        except ValueError as err:
            raise ValueError(f"eval.label_mapping: {err}") from None
    return ds


def build_model(cfg: dict, hierarchy, pretrained: Any = None) -> nn.Module:
    """``hssn.models.build_model`` with the config's name, weights, kwargs and input normalisation
    (``model.mean`` / ``std``: the model's buffers); ``pretrained`` overrides."""
    from hssn.models import build_model as build

    m = cfg["model"]
    weights = m["pretrained"] if pretrained is None else pretrained
    return build(m["name"], hierarchy, pretrained=weights, mean=tuple(m["mean"]), std=tuple(m["std"]),
                 **_tuples(m["kwargs"]))


def registry_choices() -> dict[tuple[str, ...], tuple]:
    """Config keys whose choices are a registry of the ops or engine: the registry is the list (the
    torch-free config layer cannot import them, so they are checked when a run starts)."""
    from hssn_kernels import backends, modules
    from hssn_kernels._checks import DISTANCES

    return {("loss", "segmentation"): tuple(modules.SEGMENTATION_LOSSES),
            ("loss", "triplet"): (*modules.TRIPLET_VARIANTS, None),
            ("loss", "distance"): DISTANCES,
            ("optim", "name"): tuple(OPTIMIZERS),
            ("loss", "backend"): backends.names()}


def check_choices(cfg: dict, device) -> None:
    """ValueError naming the key when a registry-backed value (:func:`registry_choices`) is unknown, or when
    ``loss.backend`` cannot run on ``device``. Called when a run starts."""
    from hssn_kernels import backends

    for path, choices in registry_choices().items():
        value = cfg[path[0]][path[1]]
        if value not in choices:
            raise ValueError(f"config key {'.'.join(path)!r} must be one of {choices}, got {value!r}")
    name = cfg["loss"]["backend"]
    why = backends.unavailable_reason(name, torch.device(device)) if name != "auto" else None
    if why is not None:
        raise ValueError(f"loss.backend={name!r}: {why}")


def build_loss(cfg: dict, hierarchy, ignore_index: int) -> HierarchicalLoss:
    """The configured ablation of :class:`hssn_kernels.HierarchicalLoss`; beta rises over ``loss.beta_steps``
    (null: ``train.iters``).

    The training form: logits at the head's resolution, bilinearly upsampled inside the loss; no host
    syncs (labels are validated by the dataset, non-finite losses by the trainer at ``log_interval``)."""
    lc = cfg["loss"]
    return HierarchicalLoss(hierarchy, segmentation=lc["segmentation"], gamma=float(lc["gamma"]),
                            triplet=lc["triplet"], num_triplets=int(lc["num_triplets"]),
                            margin_eps=float(lc["margin_eps"]), margin_scale=float(lc["margin_scale"]),
                            distance=lc["distance"], beta_max=float(lc["beta_max"]),
                            beta_steps=int(lc["beta_steps"] or cfg["train"]["iters"]), ignore_index=ignore_index,
                            backend=lc["backend"], upsample="bilinear", validate=False, nan_policy="propagate",
                            partial_labels=bool(cfg["data"]["partial_labels"]))


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
    "sgd": lambda groups, o: torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"]),
    "adamw": lambda groups, o: torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), fused=True),
}


def build_optimizer(cfg: dict, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (CNN backbones) or AdamW (Swin; the fused CPU / CUDA kernel) per ``optim.name``; build it after
    moving the model to its device."""
    o = cfg["optim"]
    groups = param_groups(model, float(o["weight_decay"]), bool(o["no_decay_norm_bias"]))
    return OPTIMIZERS[o["name"]](groups, {**o, "lr": float(o["lr"])})


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


def lr_schedule(cfg: dict) -> PolySchedule:
    """The config's lr factor per step: poly over ``train.iters`` with optional warm-up."""
    o = cfg["optim"]
    return PolySchedule(cfg["train"]["iters"], o["poly_power"], float(o["min_lr"]) / float(o["lr"]),
                        o["warmup_iters"], o["warmup_ratio"])


def set_lr(optimizer: torch.optim.Optimizer, cfg: dict, step: int) -> float:
    """Set every param group's lr to ``optim.lr * lr_schedule(cfg)(step)`` and return it: the schedule is a
    function of the step and the config alone (a resumed run follows the config it is started with; no
    scheduler state is saved, and an old checkpoint's is ignored)."""
    lr = float(cfg["optim"]["lr"]) * lr_schedule(cfg)(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
