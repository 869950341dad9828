"""Experiment configs: the typed schema (:class:`Config`), YAML files, command-line overrides.

The schema is declared once, below: every key with its default, its rule (type, bounds or choices) and
one line of help; the docs' key table (``docs/engine.md``) and ``hssn configs --defaults`` are generated
from it. A config file is YAML holding any subset of the keys (an unknown key is an error naming it and the
keys allowed there) and optionally ``base: other.yaml`` (or a list): the bases are merged first, in order,
the file on top. Config names resolve to the files shipped in ``hssn/configs/`` (``hssn train synthetic``),
any other string is a path. Overrides ``key.sub=value`` are parsed as YAML and applied last.

Why attrs: the schema is plain declared classes (attrs: frozen, keyword-only, ``attrs.evolve``,
``attrs.fields`` metadata for the generated docs) and it must load on the GPU machine's stack, which has
attrs but not pydantic; the rules are the small :class:`Rule` objects below (attrs validators), whose text
is what both the error and the docs print. Registry-backed choices (losses, backends, optimizers,
datasets) are read from their registries when a value is checked: the registry is the list.
"""
from __future__ import annotations

import copy
import importlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping

import attrs
import yaml

from hssn.errors import UserError


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
    """Parse config YAML (:class:`_Loader`); a syntax error is a :class:`UserError`."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise UserError(f"not valid YAML: {' '.join(str(err).split())}") from None
    _reject_cycles(data, ())
    return data


def _reject_cycles(value: Any, parents: tuple[int, ...]) -> None:
    """:class:`UserError` when a YAML alias makes ``value`` contain itself (``&a [*a]``): nothing downstream
    could walk it."""
    if isinstance(value, (dict, list)):
        if id(value) in parents:
            raise UserError("not valid YAML for a config: a recursive alias (an anchor used inside itself)")
        for item in value.values() if isinstance(value, dict) else value:
            _reject_cycles(item, parents + (id(value),))


class ConfigError(UserError):
    """A config value that breaks its key's rule; the message names the key, the value and the rule."""

    def __init__(self, key: str, value: Any, rule: str):
        super().__init__(f"config key {key!r} must be {rule}, got {value!r}")
        self.key, self.value, self.rule = key, value, rule


# ---------------------------------------------------------------------------------------------------- rules
class Rule:
    """A key's rule: ``text`` (as errors and the docs print it) and ``test(value) -> bool``; an attrs
    validator raising :class:`ConfigError` with the dotted key."""

    def __init__(self, text: str, test: Callable[[Any], bool]):
        self._text, self.test = text, test

    @property
    def text(self) -> str:
        return self._text

    def __call__(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not self.test(value):
            raise ConfigError(instance.PREFIX + attribute.name, _thaw(value), self.text)


class Registry(Rule):
    """One of the names of a registry ``"module:attribute"`` (a collection of names, or a function returning
    one), plus ``extra``; the module is imported when a value is checked."""

    def __init__(self, source: str, *extra: Any):
        self.source, self.extra = source, extra
        super().__init__("", lambda v: v in self.choices())

    def choices(self) -> tuple:
        module, attribute = self.source.split(":")
        names = getattr(importlib.import_module(module), attribute)
        return (*(names() if callable(names) else names), *self.extra)

    @property
    def text(self) -> str:
        return f"one of {self.choices()}"


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


BOOL = Rule("true or false", lambda v: isinstance(v, bool))
STRING = Rule("a string", lambda v: isinstance(v, str))
MAPPING = Rule("a mapping (free-form keyword arguments)", lambda v: isinstance(v, dict))
POSITIVE_INT = Rule("a positive int", lambda v: _int(v) and v > 0)
COUNT = Rule("an int >= 0", lambda v: _int(v) and v >= 0)
POSITIVE = Rule("a positive finite number", lambda v: _number(v) and v > 0)
NON_NEGATIVE = Rule("a finite number >= 0", lambda v: _number(v) and v >= 0)
FINITE = Rule("a finite number", _number)
FRACTION = Rule("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1)
SIZE = Rule("two positive ints [h, w]", lambda v: isinstance(v, tuple) and len(v) == 2 and all(
    _int(x) and x > 0 for x in v))


def optional(rule: Rule) -> Rule:
    return Rule(f"null or {rule.text}", lambda v: v is None or rule.test(v))


def one_of(*choices: Any) -> Rule:
    return Rule(f"one of {choices}", lambda v: v in choices)


def numbers(count: int, item: Callable[[Any], bool], text: str) -> Rule:
    """A list of ``count`` numbers (any length >= 1 when ``count`` is 0) each passing ``item``."""
    return Rule(text, lambda v: isinstance(v, tuple) and (len(v) == count if count else len(v) > 0)
                and all(_number(x) and item(x) for x in v))


def _freeze(value: Any) -> Any:
    """YAML lists become tuples (a config is immutable; :meth:`Config.to_dict` gives lists back)."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _thaw(value: Any) -> Any:
    """Tuples back to lists, recursively (YAML and checkpoints hold plain lists)."""
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return [_thaw(v) for v in value] if isinstance(value, (tuple, list)) else value


def key(default: Any, rule: Rule, help: str) -> Any:
    """One config key: its default, its rule and one line of help (``docs/engine.md``, ``hssn configs --defaults``)."""
    if rule is MAPPING:
        return attrs.field(factory=lambda: copy.deepcopy(default), validator=rule, metadata={"help": help},
                           converter=lambda v: copy.deepcopy(dict(v)) if isinstance(v, Mapping) else v)
    return attrs.field(default=_freeze(default), validator=rule, converter=_freeze, metadata={"help": help})


def section(cls: type, help: str) -> Any:
    return attrs.field(factory=cls, metadata={"help": help, "section": cls},
                       converter=lambda v: cls.from_dict(v) if isinstance(v, Mapping) else v)


class _Section:
    PREFIX: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: Mapping) -> Any:
        """The section of ``data`` (missing keys take their defaults); an unknown key is a :class:`UserError`."""
        names = [f.name for f in attrs.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise UserError(f"unknown config key {cls.PREFIX + str(unknown[0])!r} (allowed here: {', '.join(sorted(names))})")
        return cls(**data)


def _frozen(prefix: str):
    """``attrs.frozen`` (keyword-only) for a section whose keys are ``prefix.key``."""
    def wrap(cls):
        cls.PREFIX = prefix
        return attrs.frozen(kw_only=True)(cls)
    return wrap


# ---------------------------------------------------------------------------------------------------- schema
PARENT_SCORES = ("path", "sum")
"""How the levels are predicted (``eval.parent_scores``; :func:`hssn.engine.inference.predict`): ``path``, path
inference (Eq. 3) on the model's own node scores (the leaf decides every level); ``sum``, inferred parents: leaf
probabilities summed up the tree, each level predicted by its own argmax over its classes (the flat baseline of
"Flattening the Parent Bias", CVPR 2024)."""
EVAL_MODES = ("whole", "slide")
"""``eval.mode``: the whole image at once, or sliding windows."""

@_frozen("model.")
class ModelConfig(_Section):
    name: str = key("deeplabv3plus_r101", STRING, "a preset (`hssn models`) or `<head>:<timm backbone>`, e.g. "
                    "`deeplabv3plus:resnet18`")
    pretrained: bool | str = key(True, Rule("true, false or a weights file path", lambda v: isinstance(v, (bool, str))),
                                 "backbone weights: true = timm ImageNet weights")
    kwargs: dict = key({}, MAPPING, "extra build_model kwargs: `head_channels`, `output_stride`, `img_size`, "
                       "`aux_head`, `embed_dim`, ...")
    mean: tuple = key([0.485, 0.456, 0.406], numbers(3, _number, "three finite numbers"),
                      "input normalisation of images in [0, 1] (model buffers: saved with the weights)")
    std: tuple = key([0.229, 0.224, 0.225], numbers(3, lambda x: x > 0, "three positive finite numbers"),
                     "input normalisation (see mean)")


@_frozen("data.")
class DataConfig(_Section):
    name: str = key("synthetic", Registry("hssn.data.registry:available"), "the dataset (`hssn.data.build_dataset`)")
    root: str | None = key(None, optional(STRING), "dataset folder (not needed for synthetic)")
    train_split: str = key("train", STRING, "the training split")
    val_split: str = key("val", STRING, "the evaluation split")
    kwargs: dict = key({}, MAPPING, "extra dataset kwargs (train and val)")
    train_kwargs: dict = key({}, MAPPING, "extra dataset kwargs (train only)")
    val_kwargs: dict = key({}, MAPPING, "extra dataset kwargs (val only)")
    train_resize: tuple | None = key(None, optional(SIZE), "fit training images into [h, w] (keep ratio) before "
                                     "scaling")
    crop_size: tuple = key([512, 1024], SIZE, "training crop [h, w]")
    scale_range: tuple = key([0.5, 2.0], numbers(2, lambda x: x > 0, "two positive finite numbers [low, high]"),
                             "random rescale factor range")
    photometric: bool = key(False, BOOL, "photometric jitter in training (not in the paper; the authors' mmseg "
                            "pipelines add PhotoMetricDistortion)")
    cat_max_ratio: float = key(1.0, Rule("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
                               "< 1: re-draw crops dominated by one class")
    augment: bool = key(True, BOOL, "false: train on the untransformed items (the synthetic demo)")
    partial_labels: bool = key(False, BOOL, "labels may be inner nodes (coarse labels; README \"Partial labels\")")
    eval_size: tuple | None = key(None, optional(SIZE), "resize eval images to fit [h, w] (keep ratio); null = "
                                  "native size")
    eval_resize_label: bool = key(False, BOOL, "with eval_size: evaluate at the resized size instead of the label's")
    num_workers: int = key(4, COUNT, "training DataLoader workers")


@_frozen("loss.")
class LossConfig(_Section):
    segmentation: str = key("ftm", Registry("hssn_kernels.modules:SEGMENTATION_LOSSES"),
                            "ftm (Eq. 6), tm, bce, focal, cce, released (the authors' code)")
    gamma: float = key(2.0, NON_NEGATIVE, "focal exponent")
    triplet: str | None = key("hierarchy", Registry("hssn_kernels.modules:TRIPLET_VARIANTS", None),
                              "tree-triplet margin (Eq. 9), null = no triplet term")
    num_triplets: int = key(200, POSITIVE_INT, "triplets sampled per image")
    margin_eps: float = key(0.1, FINITE, "margin = margin_eps + margin_scale * tree distance / max distance")
    margin_scale: float = key(0.5, FINITE, "see margin_eps")
    distance: str = key("cosine", Registry("hssn_kernels._checks:DISTANCES"), "embedding distance")
    beta_max: float = key(0.5, NON_NEGATIVE, "triplet weight: beta rises 0 -> beta_max on a cosine over beta_steps")
    beta_steps: int | None = key(None, optional(POSITIVE_INT), "null = train.iters (the paper); 80000 = the "
                                 "authors' code (any length)")
    backend: str = key("auto", Registry("hssn_kernels.backends:names"), "hssn_kernels backend")


@_frozen("optim.")
class OptimConfig(_Section):
    name: str = key("sgd", Registry("hssn.engine.builders:OPTIMIZERS"), "sgd (CNNs) or adamw (Swin)")
    lr: float = key(0.01, POSITIVE, "base learning rate")
    momentum: float = key(0.9, Rule("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1), "SGD momentum")
    betas: tuple = key([0.9, 0.999], numbers(2, lambda x: 0 <= x < 1, "two numbers in [0, 1)"), "AdamW betas")
    weight_decay: float = key(1.0e-4, NON_NEGATIVE, "weight decay")
    no_decay_norm_bias: bool = key(False, BOOL, "exclude norm / bias / position tables from weight decay")
    poly_power: float = key(0.9, POSITIVE, "lr = (lr - min_lr) * (1 - step / iters) ** power + min_lr")
    min_lr: float = key(0.0, NON_NEGATIVE, "the CNN paper configs use 5e-5 (the authors' mmseg schedules)")
    warmup_iters: int = key(0, COUNT, "linear warm-up steps from warmup_ratio * lr")
    warmup_ratio: float = key(1.0e-6, FRACTION, "warm-up start factor")
    grad_clip: float | None = key(None, optional(POSITIVE), "max global gradient norm, or null")


@_frozen("train.")
class TrainConfig(_Section):
    iters: int = key(80000, POSITIVE_INT, "optimizer steps")
    batch_size: int = key(8, POSITIVE_INT, "global images per optimizer step (all processes, all accumulation)")
    accumulate: int = key(1, POSITIVE_INT, "micro-batches per optimizer step")
    amp: bool = key(True, BOOL, "bf16 autocast on GPU (CPU always runs fp32)")
    sync_bn: bool = key(True, BOOL, "SyncBatchNorm under DDP on GPU")
    seed: int = key(0, COUNT, "random seed")
    log_interval: int = key(50, POSITIVE_INT, "steps per log row (and per non-finite check)")
    checkpoint_interval: int = key(8000, POSITIVE_INT, "steps per checkpoint")
    keep_checkpoints: int = key(2, POSITIVE_INT, "latest checkpoints kept (the final one always stays)")
    eval_interval: int = key(0, COUNT, "validation every N steps (single scale); 0 = only at the end")
    eval_at_end: bool = key(True, BOOL, "evaluate with the eval section's TTA after the last step")
    output_dir: str = key("runs/{name}", STRING, "{name} is replaced by the config name")
    resume: str | None = key(None, optional(STRING), "null, auto (the newest checkpoint in output_dir) or a "
                             "checkpoint path")
    overwrite: bool = key(False, BOOL, "a new run may replace the checkpoints and logs already in output_dir")
    device: str = key("auto", one_of("auto", "cpu", "cuda"), "auto = CUDA when available")
    progress: bool = key(True, BOOL, "tqdm progress bars")


@_frozen("eval.")
class EvalConfig(_Section):
    scales: tuple = key([1.0], numbers(0, lambda x: x > 0, "a non-empty list of positive finite numbers"),
                        "test scales (multi-scale TTA averages probabilities)")
    flip: bool = key(False, BOOL, "horizontal flip TTA (left/right classes swapped)")
    mode: str = key("whole", one_of(*EVAL_MODES), "whole image or sliding windows")
    crop_size: tuple = key([512, 1024], SIZE, "slide windows [h, w]")
    stride: tuple = key([341, 683], SIZE, "slide stride [h, w]")
    batch_size: int = key(1, POSITIVE_INT, "images per evaluation batch")
    num_workers: int = key(2, COUNT, "evaluation DataLoader workers")
    max_images: int | None = key(None, optional(POSITIVE_INT), "evaluate only the first N images")
    scored_classes: str = key("dataset", one_of("dataset", "all"), "dataset: the dataset's official scored classes "
                              "(Mapillary: evaluate = true); all: every leaf")
    parent_scores: str = key("path", one_of(*PARENT_SCORES), "path: path inference (Eq. 3); sum: inferred parents, "
                             "each level its own argmax of summed leaf probabilities")
    calibration: bool = key(True, BOOL, "ECE / class-wise ECE per level (keeps full-size probabilities)")
    temperature: float | str | None = key(None, Rule("null, a positive finite number or 'fit'", lambda v: (
        v is None or v == "fit" or (_number(v) and v > 0))), "logits / T before probabilities: null (T = 1), a number "
        "or fit (on temperature_split)")
    temperature_split: str | None = key(None, optional(STRING), "the held-out data split `temperature: fit` fits T on")
    label_mapping: str | None = key(None, optional(STRING), "cross-dataset: a mapping file (or shipped name) of the "
                                    "val data's classes onto the model's tree")

    def __attrs_post_init__(self):
        if self.temperature == "fit" and self.temperature_split is None:
            raise ConfigError("eval.temperature_split", None, "a data split name when eval.temperature is 'fit'")


@_frozen("")
class Config(_Section):
    """A whole validated config: ``cfg.train.iters``; :meth:`to_dict` for YAML and checkpoints."""

    name: str = key("experiment", STRING, "run name (default: the file stem); train.output_dir may use {name}")
    reproduces: str | None = key(None, optional(STRING), "the paper table row this config reproduces "
                                 "(`hssn configs`)")
    model: ModelConfig = section(ModelConfig, "the network")
    data: DataConfig = section(DataConfig, "the dataset, its splits and the training augmentation")
    loss: LossConfig = section(LossConfig, "the HSSN objective (`hssn_kernels.HierarchicalLoss`)")
    optim: OptimConfig = section(OptimConfig, "optimizer and poly learning-rate schedule")
    train: TrainConfig = section(TrainConfig, "the training run")
    eval: EvalConfig = section(EvalConfig, "evaluation, prediction and export")

    def __attrs_post_init__(self):
        try:
            self.train.output_dir.format(name=self.name)
        except (KeyError, IndexError, ValueError, AttributeError):
            raise ConfigError("train.output_dir", self.train.output_dir,
                              "a path whose only {...} field is {name}") from None

    def to_dict(self) -> dict:
        """Plain dicts and lists (YAML, checkpoints)."""
        return _thaw(attrs.asdict(self))

    def with_overrides(self, overrides: Iterable[str]) -> "Config":
        """A copy with ``key.sub=value`` overrides applied (:func:`apply_overrides`)."""
        return Config.from_dict(apply_overrides(self.to_dict(), overrides))


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

def _defaults(cls: type) -> dict[str, Any]:
    """The schema's defaults as plain dicts (read from the fields: no registry is imported)."""
    return {f.name: _defaults(f.metadata["section"]) if "section" in f.metadata else
            _thaw(f.default.factory() if isinstance(f.default, attrs.Factory) else f.default)
            for f in attrs.fields(cls)}


DEFAULTS: dict[str, Any] = _defaults(Config)
"""Every key with its default (plain dicts and lists)."""

OPEN_SECTIONS = {(s.name, f.name) for s in attrs.fields(Config) if "section" in s.metadata
                 for f in attrs.fields(s.metadata["section"]) if f.validator is MAPPING}
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
            raise UserError(f"unknown config key {dotted!r} in {source} (allowed here: {allowed})")
        if here in OPEN_SECTIONS:
            if value is not None and not isinstance(value, Mapping):
                raise UserError(f"config key {dotted!r} in {source} must be a mapping, got {value!r}")
            out[key] = dict(value or {}) if replace_open else {**base[key], **(value or {})}
        elif isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise UserError(f"config key {dotted!r} in {source} is a section; got {value!r}")
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
        raise UserError(f"config base cycle: {' -> '.join(map(str, seen + (path,)))}")
    try:
        data = load_yaml(path.read_text()) or {}
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: a config must be a mapping at the top level")
    data = dict(data)
    bases = data.pop("base", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{path}: 'base' must be a config name / path or a list of them, got {bases!r}")
    cfg = copy.deepcopy(DEFAULTS)
    for base in bases:
        cfg = _merge(cfg, _read(resolve_path(base, path.parent), seen + (path.resolve(),)), (), str(path))
    return _merge(cfg, data, (), str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], yaml.safe_load(value))."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r} must look like key.sub=value")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise UserError(f"override key {key!r} has an empty part")
    try:
        parsed = load_yaml(value)
    except ValueError as err:
        raise UserError(f"override {text!r}: {err}") from None
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


def load_config(name_or_path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """The validated config: defaults <- bases <- file <- overrides; ``name`` defaults to the file stem."""
    if name_or_path is None:
        cfg = copy.deepcopy(DEFAULTS)
    else:
        path = resolve_path(name_or_path)
        cfg = _read(path, ())
        if "name" not in (load_yaml(path.read_text()) or {}):
            cfg["name"] = path.stem
    return Config.from_dict(apply_overrides(cfg, overrides))


def dump_config(cfg: Config) -> str:
    """The config as YAML text (loads back with :func:`load_config` from a file)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _keys(cls: type = Config, values: Mapping = DEFAULTS, depth: int = 0):
    """(dotted key, default, field, depth) of every key in declaration order, each section as a row of its own
    (field None) before its keys."""
    for f in attrs.fields(cls):
        if "section" in f.metadata:
            yield cls.PREFIX + f.name, None, f, depth
            yield from _keys(f.metadata["section"], values[f.name], depth + 1)
        else:
            yield cls.PREFIX + f.name, values[f.name], f, depth


def key_table() -> str:
    """The Markdown table of every key: default, rule, help (``docs/engine.md``; a test keeps it current)."""
    rows = ["| key | default | rule | help |", "|---|---|---|---|"]
    for dotted, default, f, _ in _keys():
        cells = ([f"**`{dotted}`**", "", "section", f.metadata["help"]] if "section" in f.metadata else
                 [f"`{dotted}`", f"`{json.dumps(default)}`", f.validator.text, f.metadata["help"]])
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def defaults_yaml() -> str:
    """Every key with its default as YAML, its rule and help as a comment (``hssn configs --defaults``)."""
    lines = []
    for dotted, default, f, depth in _keys():
        name = dotted.rsplit(".", 1)[-1]
        value = "" if "section" in f.metadata else f" {json.dumps(default)}"
        rule = "" if "section" in f.metadata else f"{f.validator.text}: "
        lines.append(f"{'  ' * depth}{name}:{value}  # {rule}{f.metadata['help']}")
    return "\n".join(lines) + "\n"
