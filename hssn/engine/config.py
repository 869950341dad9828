"""Experiment configs: a schema of every allowed key with its default, YAML files, command-line overrides.

A config file is YAML holding any subset of :data:`DEFAULTS` (unknown keys are an error naming the
key) and optionally ``base: other.yaml`` (or a list): the bases are merged first, in order, the file on
top. Config names resolve to the files shipped in ``hssn/configs/`` (``hssn train synthetic``), any other
string is a path. Overrides ``key.sub=value`` are parsed with ``yaml.safe_load`` and applied last.
The keys under :data:`OPEN_SECTIONS` are free-form dicts passed through to a constructor.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats such as ``1e-3`` (YAML 1.1 makes them strings)
    and rejects a key given twice in one mapping (SafeLoader keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$|^[-+]?(?:\d+\.\d*|\.\d+)$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse config YAML (:class:`_Loader`); a syntax error is a ValueError."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ValueError(f"not valid YAML: {' '.join(str(err).split())}") from None
    _reject_cycles(data, ())
    return data


def _reject_cycles(value: Any, parents: tuple[int, ...]) -> None:
    """``ValueError`` when a YAML alias makes ``value`` contain itself (``&a [*a]``): nothing downstream
    could walk it."""
    if isinstance(value, (dict, list)):
        if id(value) in parents:
            raise ValueError("not valid YAML for a config: a recursive alias (an anchor used inside itself)")
        for item in value.values() if isinstance(value, dict) else value:
            _reject_cycles(item, parents + (id(value),))


class ConfigError(ValueError):
    """A config value that breaks its key's rule; the message names the key, the value and the rule."""

    def __init__(self, key: str, value: Any, rule: str):
        super().__init__(f"config key {key!r} must be {rule}, got {value!r}")
        self.key, self.value, self.rule = key, value, rule


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "reproduces": None,                 # the paper table row this config reproduces (shown by `hssn configs`)
    "model": {
        "name": "deeplabv3plus_r101",   # hssn.models.build_model name: preset or "<head>:<timm backbone>"
        "pretrained": True,             # backbone weights: true (timm ImageNet), false, or a file path
        "kwargs": {},                   # extra build_model kwargs (head_channels, output_stride, img_size, ...)
        "mean": [0.485, 0.456, 0.406],  # input normalisation (images are in [0, 1])
        "std": [0.229, 0.224, 0.225],
    },
    "data": {
        "name": "synthetic",            # hssn.data.build_dataset name
        "root": None,                   # dataset folder (not needed for synthetic)
        "train_split": "train",
        "val_split": "val",
        "kwargs": {},                   # extra dataset kwargs (train and val)
        "train_kwargs": {},             # extra dataset kwargs (train only)
        "val_kwargs": {},               # extra dataset kwargs (val only)
        "train_resize": None,           # [h, w]: fit training images into this (keep ratio) before scaling
        "crop_size": [512, 1024],       # training crop (h, w)
        "scale_range": [0.5, 2.0],      # random rescale factor range
        "photometric": False,           # photometric jitter in training (not in the paper; the authors' mmseg
                                        # pipelines add PhotoMetricDistortion)
        "cat_max_ratio": 1.0,           # < 1: re-draw crops dominated by one class
        "augment": True,                # false: train on the untransformed items (synthetic demo)
        "partial_labels": False,        # labels may be inner nodes (coarse labels; README "Partial labels")
        "eval_size": None,              # [h, w]: resize eval images to fit (keep ratio); None = native size
        "eval_resize_label": False,     # with eval_size: evaluate at the resized size instead of the label's
        "num_workers": 4,
    },
    "loss": {
        "segmentation": "ftm",          # ftm (Eq. 6) | tm | bce | focal | cce | released (the authors' code)
        "gamma": 2.0,
        "triplet": "hierarchy",         # hierarchy | constant | vanilla | null
        "num_triplets": 200,
        "margin_eps": 0.1,
        "margin_scale": 0.5,
        "distance": "cosine",           # cosine | euclidean
        "beta_max": 0.5,                # beta: 0 -> beta_max on a cosine over beta_steps
        "beta_steps": None,             # null = train.iters (the paper); 80000 = the authors' code (any length)
        "backend": "auto",              # hssn_kernels backend
    },
    "optim": {
        "name": "sgd",                  # sgd | adamw
        "lr": 0.01,
        "momentum": 0.9,                # SGD
        "betas": [0.9, 0.999],          # AdamW
        "weight_decay": 1.0e-4,
        "no_decay_norm_bias": False,    # exclude norm / bias / position tables from weight decay
        "poly_power": 0.9,              # lr = (lr - min_lr) * (1 - step / iters) ** power + min_lr
        "min_lr": 0.0,                  # the CNN paper configs use 5e-5 (the authors' mmseg schedules)
        "warmup_iters": 0,              # linear warm-up from warmup_ratio * lr
        "warmup_ratio": 1.0e-6,
        "grad_clip": None,              # max global grad norm, or null
    },
    "train": {
        "iters": 80000,                 # optimizer steps
        "batch_size": 8,                # global images per optimizer step (all processes, all accumulation)
        "accumulate": 1,                # micro-batches per optimizer step
        "amp": True,                    # bf16 autocast on GPU (CPU always runs fp32)
        "sync_bn": True,                # SyncBatchNorm under DDP on GPU
        "seed": 0,
        "log_interval": 50,
        "checkpoint_interval": 8000,
        "keep_checkpoints": 2,          # latest checkpoints kept (the final one always stays)
        "eval_interval": 0,             # validation every N steps (single scale); 0 = only at the end
        "eval_at_end": True,
        "output_dir": "runs/{name}",    # {name} is replaced by the config name
        "resume": None,                 # null | "auto" (latest in output_dir) | a checkpoint path
        "overwrite": False,             # a new run may replace the checkpoints and logs already in output_dir
        "device": "auto",               # auto | cpu | cuda
        "progress": True,               # tqdm bar
    },
    "eval": {
        "scales": [1.0],                # test scales (multi-scale TTA averages sigmoid scores)
        "flip": False,                  # horizontal flip TTA (left/right classes swapped)
        "mode": "whole",                # whole | slide
        "crop_size": [512, 1024],       # slide windows (h, w)
        "stride": [341, 683],           # slide stride (h, w)
        "batch_size": 1,
        "num_workers": 2,
        "max_images": None,             # evaluate only the first N images
        "scored_classes": "dataset",    # dataset: the dataset's official scored classes (Mapillary: evaluate
                                        # = true); all: every leaf
        "parent_scores": "path",        # path: path inference (Eq. 3); sum: inferred parents, each level its
                                        # own argmax of summed leaf probabilities (README "Does the hierarchy help")
        "calibration": True,            # ECE / class-wise ECE per level (keeps full-size probabilities)
        "temperature": None,            # logits / T before probabilities: null (T = 1) | a number | fit
        "temperature_split": None,      # the held-out data split `temperature: fit` fits T on
        "label_mapping": None,          # cross-dataset: a mapping file (or shipped name) of the val data's
                                        # classes onto the model's tree (README "Cross-dataset evaluation")
    },
}

OPEN_SECTIONS = {("model", "kwargs"), ("data", "kwargs"), ("data", "train_kwargs"), ("data", "val_kwargs")}
"""Paths whose value is a free-form dict (no schema below them)."""


def _merge(base: dict, update: Mapping, path: tuple[str, ...], source: str, replace_open: bool = False) -> dict:
    """``base`` updated recursively with ``update``; KeyError-free ValueError naming unknown keys.

    An open section (:data:`OPEN_SECTIONS`) is merged key by key, or replaced whole with ``replace_open``
    (an override ``model.kwargs={...}`` replaces; ``model.kwargs.key=value`` sets one key)."""
    out = dict(base)
    for key, value in update.items():
        here = path + (str(key),)
        dotted = ".".join(here)
        if key not in base:
            allowed = ", ".join(sorted(base))
            raise ValueError(f"unknown config key {dotted!r} in {source} (allowed here: {allowed})")
        if here in OPEN_SECTIONS:
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"config key {dotted!r} in {source} must be a mapping, got {value!r}")
            out[key] = dict(value or {}) if replace_open else {**base[key], **(value or {})}
        elif isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {dotted!r} in {source} is a section; got {value!r}")
            out[key] = _merge(base[key], value, here, source, replace_open)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A shipped config name ("synthetic", "deeplabv3plus_r101_cityscapes") or a YAML path."""
    text = str(name_or_path)
    candidates = []
    if relative_to is not None:
        candidates.append(relative_to / text)
    candidates += [Path(text), CONFIG_DIR / text, CONFIG_DIR / f"{text}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"config {text!r} not found: not a file and not one of the shipped configs "
                            f"({', '.join(available())})")


def available() -> list[str]:
    """Names of the configs shipped in ``hssn/configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read(path: Path, seen: tuple[Path, ...]) -> dict:
    """The merged raw content of ``path`` and its bases (not yet applied to the defaults)."""
    if path.resolve() in seen:
        raise ValueError(f"config base cycle: {' -> '.join(map(str, seen + (path,)))}")
    try:
        data = load_yaml(path.read_text()) or {}
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a config must be a mapping at the top level")
    data = dict(data)
    bases = data.pop("base", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ValueError(f"{path}: 'base' must be a config name / path or a list of them, got {bases!r}")
    cfg = copy.deepcopy(DEFAULTS)
    for base in bases:
        cfg = _merge(cfg, _read(resolve_path(base, path.parent), seen + (path.resolve(),)), (), str(path))
    return _merge(cfg, data, (), str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], yaml.safe_load(value))."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} must look like key.sub=value")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ValueError(f"override key {key!r} has an empty part")
    try:
        parsed = load_yaml(value)
    except ValueError as err:
        raise ValueError(f"override {text!r}: {err}") from None
    return parts, parsed


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """A copy of ``cfg`` with each ``key.sub=value`` applied; ValueError naming an unknown key."""
    for text in overrides:
        parts, value = parse_override(text)
        nested: Any = value
        for p in reversed(parts):
            nested = {p: nested}
        whole_open = tuple(parts) in OPEN_SECTIONS
        cfg = _merge(cfg, nested, (), f"override {text!r}", replace_open=whole_open)
    return cfg


def load_config(name_or_path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    """The full config: defaults <- bases <- file <- overrides; ``name`` defaults to the file stem."""
    if name_or_path is None:
        cfg = copy.deepcopy(DEFAULTS)
    else:
        path = resolve_path(name_or_path)
        cfg = _read(path, ())
        if "name" not in (load_yaml(path.read_text()) or {}):
            cfg["name"] = path.stem
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


CHOICES = {  # the engine's own choice lists; the ops' registries are checked by builders.check_choices
    ("eval", "mode"): ("whole", "slide"),
    ("eval", "parent_scores"): ("path", "sum"),  # hssn.engine.inference.predict: the two level rules
    ("eval", "scored_classes"): ("dataset", "all"),
    ("train", "device"): ("auto", "cpu", "cuda"),
}


def _get(cfg: dict, path: tuple[str, ...]) -> Any:
    for p in path:
        cfg = cfg[p]
    return cfg


NONE_TYPE = type(None)
TYPES: dict[tuple[str, ...], tuple[type, ...]] = {
    ("model", "pretrained"): (bool, str),
    ("reproduces",): (str, NONE_TYPE),
    ("loss", "triplet"): (str, NONE_TYPE),
    ("optim", "grad_clip"): (int, float, NONE_TYPE),
    ("data", "root"): (str, NONE_TYPE),
    ("data", "train_resize"): (list, NONE_TYPE),
    ("data", "eval_size"): (list, NONE_TYPE),
    ("train", "resume"): (str, NONE_TYPE),
    ("eval", "max_images"): (int, NONE_TYPE),
    ("loss", "beta_steps"): (int, NONE_TYPE),
    ("eval", "temperature"): (int, float, str, NONE_TYPE),
    ("eval", "temperature_split"): (str, NONE_TYPE),
    ("eval", "label_mapping"): (str, NONE_TYPE),
}
"""Keys whose type is not the type of their default (a float default also takes ints)."""


def _leaves(tree: dict, path: tuple[str, ...] = ()):
    for key, value in tree.items():
        here = path + (key,)
        if isinstance(value, dict) and here not in OPEN_SECTIONS:
            yield from _leaves(value, here)
        else:
            yield here, value


def _check_types(cfg: dict) -> None:
    """Every key has the type of its default in :data:`DEFAULTS` (or one of :data:`TYPES`)."""
    names = {bool: "a bool", int: "an int", float: "a number", str: "a string", list: "a list", dict: "a mapping",
             NONE_TYPE: "null"}
    for path, default in _leaves(DEFAULTS):
        value = _get(cfg, path)
        allowed = TYPES.get(path) or ((int, float) if type(default) is float else (type(default),))
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if isinstance(value, tuple) and list in allowed:
            ok = True
        if not ok:
            want = " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in allowed))
            raise ConfigError(".".join(path), value, want)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_ranges(cfg: dict) -> None:
    """The range rules the type check cannot express (each found by a hostile-input round: a negative
    grad_clip flipped every gradient's sign, a negative poly_power divided by zero mid-run, ...)."""
    rules = [
        (("optim", "grad_clip"), lambda v: v is None or (_finite(v) and v > 0), "a positive number or null"),
        (("optim", "poly_power"), lambda v: _finite(v) and v > 0, "a positive number"),
        (("optim", "lr"), lambda v: _finite(v) and v > 0, "a positive number"),
        (("optim", "warmup_ratio"), lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]"),
        (("loss", "gamma"), lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
        (("loss", "margin_eps"), _finite, "a finite number"),
        (("loss", "margin_scale"), _finite, "a finite number"),
        (("loss", "beta_max"), lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
        (("data", "cat_max_ratio"), lambda v: _finite(v) and 0 < v <= 1, "a number in (0, 1]"),
        (("eval", "max_images"), lambda v: v is None or v >= 1, "a positive int or null"),
        (("data", "eval_size"), lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)), "null or two positive ints [h, w]"),
        (("eval", "temperature"), lambda v: v is None or v == "fit" or (_finite(v) and v > 0),
         "null, a positive number or 'fit'"),
        (("eval", "scales"), lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(
            _finite(x) and x > 0 for x in v), "a non-empty list of positive finite numbers"),
    ]
    for path, ok, rule in rules:
        if not ok(_get(cfg, path)):
            raise ConfigError(".".join(path), _get(cfg, path), rule)
    for path in [("data", "crop_size"), ("data", "scale_range"), ("eval", "crop_size"), ("eval", "stride")]:
        v = _get(cfg, path)
        if not isinstance(v, (list, tuple)) or len(v) != 2 or any(not _finite(x) or x <= 0 for x in v):
            raise ConfigError(".".join(path), v, "two positive finite numbers")
    if cfg["eval"]["temperature"] == "fit" and cfg["eval"]["temperature_split"] is None:
        raise ConfigError("eval.temperature_split", None, "a data split name when eval.temperature is 'fit'")
    try:
        str(cfg["train"]["output_dir"]).format(name=cfg["name"])
    except (KeyError, IndexError, ValueError, AttributeError):
        raise ConfigError("train.output_dir", cfg["train"]["output_dir"],
                          "a path whose only {...} field is {name}") from None


def validate(cfg: dict) -> None:
    """:class:`ConfigError` naming the key whose value has the wrong type or is out of range."""
    _check_types(cfg)  # registry-backed keys (loss.segmentation, loss.triplet, loss.distance, optim.name,
    # loss.backend) are checked against their registries when a run starts: builders.check_choices
    for path in [("train", "seed"), ("optim", "warmup_iters"), ("eval", "num_workers"), ("data", "num_workers"),
                 ("train", "eval_interval")]:
        if _get(cfg, path) < 0:
            raise ConfigError(".".join(path), _get(cfg, path), ">= 0")
    if cfg["train"]["keep_checkpoints"] < 1:
        raise ConfigError("train.keep_checkpoints", cfg['train']['keep_checkpoints'], ">= 1")
    if not 0 <= cfg["optim"]["momentum"] < 1:
        raise ConfigError("optim.momentum", cfg['optim']['momentum'], "in [0, 1)")
    if cfg["optim"]["weight_decay"] < 0:
        raise ConfigError("optim.weight_decay", cfg['optim']['weight_decay'], ">= 0")
    for path, choices in CHOICES.items():
        if _get(cfg, path) not in choices:
            raise ConfigError(".".join(path), _get(cfg, path), f"one of {choices}")
    positive = [("train", "iters"), ("train", "batch_size"), ("train", "accumulate"), ("train", "log_interval"),
                ("train", "checkpoint_interval"), ("eval", "batch_size"), ("loss", "num_triplets")]
    for path in positive:
        v = _get(cfg, path)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(".".join(path), v, "a positive int")
    steps = cfg["loss"]["beta_steps"]
    if steps is not None and (isinstance(steps, bool) or steps <= 0):
        raise ConfigError("loss.beta_steps", steps, "a positive int or null")
    _check_ranges(cfg)


def dump_config(cfg: dict) -> str:
    """The config as YAML text (loads back with :func:`load_config` from a file)."""
    return yaml.safe_dump(cfg, sort_keys=False)
