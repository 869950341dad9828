"""The ``hssn`` command: train, eval, predict, export, models, configs, demo (``hssn COMMAND --help``)."""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Callable, Sequence

from hssn.errors import UserError


CONFIG_HELP = "a shipped config name (see `hssn configs`) or a path to a YAML file"
OVERRIDE_HELP = "config overrides key.sub=value (value parsed as YAML), e.g. train.iters=1000 loss.triplet=null"


def _cmd_train(args: argparse.Namespace) -> int:
    from hssn.engine.config import load_config
    from hssn.engine.trainer import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg)
    if result["checkpoint"] is not None:
        print(f"checkpoint: {result['checkpoint']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from hssn.engine.config import load_config
    from hssn.engine.evaluator import run_eval

    cfg = load_config(args.config, _tta_overrides(args.overrides, args))
    run_eval(cfg, args.checkpoint, out=args.out, per_class=args.per_class)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from hssn.engine.config import load_config
    from hssn.engine.predict import predict_files

    images, overrides = split_overrides(args.inputs)
    if not images:
        raise UserError("hssn predict needs at least one image file (arguments holding '=' are config overrides)")
    cfg = load_config(args.config, _tta_overrides(overrides, args))
    written = predict_files(cfg, args.checkpoint, images, args.out)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from hssn.engine.config import load_config
    from hssn.export.build import ExportOptions, export_checkpoint

    if args.levels not in ("leaf", "all"):
        raise UserError(f"--levels must be leaf or all, got {args.levels!r}")
    cfg = load_config(args.config, args.overrides)
    path = export_checkpoint(cfg, args.checkpoint, args.out, ExportOptions(
        args.format, None if args.size is None else tuple(args.size), args.dynamic, args.levels == "all"))
    print(f"exported {args.format}: {path}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from hssn import hierarchies
    from hssn.models import PRESETS, format_summary, summary

    hierarchy = hierarchies.get(args.hierarchy)
    names = args.names or sorted(PRESETS)
    size = (1, 3, *args.input_size)
    print(f"hierarchy {args.hierarchy}: {hierarchy.num_channels} channels; input {'x'.join(map(str, size))}")
    print(format_summary([summary(n, hierarchy, size) for n in names]))
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from hssn.engine.config import CONFIG_DIR, available, defaults_yaml, dump_config, load_config

    if args.show:
        cfg = load_config(args.show, args.overrides)
        print(f"# reproduces: {cfg.reproduces or 'no paper table row'}")
        print(dump_config(cfg), end="")
    elif args.defaults:
        print(defaults_yaml(), end="")
    else:
        print(f"configs shipped in {CONFIG_DIR}:")
        for name in available():
            print(f"  {name:<40} {load_config(name).reproduces or ''}".rstrip())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hssn.experiments.ablation import run_ablation
    from hssn.experiments.demo import run_demo

    if args.ablation:
        run_ablation(args.out or "runs/demo_ablation", args.overrides, experiment=args.ablation)
    else:
        run_demo(args.out or "runs/demo", args.overrides, compare_bce=args.compare_bce)
    return 0


OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=")


def split_overrides(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(image paths, config overrides) of ``hssn predict``'s positional arguments: ``key.sub=value`` is an
    override unless a file of that name exists."""
    images, overrides = [], []
    for text in inputs:
        (overrides if OVERRIDE_KEY.match(text) and not os.path.exists(text) else images).append(text)
    return images, overrides


def _tta_overrides(overrides: Sequence[str], args: argparse.Namespace) -> list[str]:
    """``overrides`` with ``--scales`` / ``--flip`` as ``eval.scales`` / ``eval.flip``: the config's rules check
    them (a scale <= 0 is the same one-line error as in a config file)."""
    extra = [f"eval.scales=[{', '.join(repr(s) for s in args.scales)}]"] if args.scales else []
    extra += [f"eval.flip={str(args.flip).lower()}"] if args.flip is not None else []
    return list(overrides) + extra


def _tta_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scales", type=float, nargs="+", help="test scales (default: the config's eval.scales)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="flip TTA on")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="flip TTA off")


USER_ERRORS = (UserError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
               FloatingPointError)
"""Errors a user fixes (a config value, a file, a non-finite loss): one line and exit status 2. Anything else is a
bug and keeps its traceback (exit status 1)."""

THREADED = ("train", "eval", "predict", "demo")
"""Commands that run models: they choose the torch thread count first (``distributed.choose_threads``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hssn", description="Hierarchical semantic segmentation (HSSN, CVPR 2022): train, evaluate, predict.",
        epilog="Distributed: torchrun --nproc_per_node=N -m hssn train CONFIG [key=value ...]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}

    def add(name: str, fn, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        commands[name] = fn
        p.set_defaults(func=fn)
        return p

    p = add("train", _cmd_train, "train a model (resumes with train.resume=auto)")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)

    p = add("eval", _cmd_eval, "evaluate a checkpoint on the config's val split (per-level mIoU, TTA)")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)
    p.add_argument("--checkpoint", required=True, help="training checkpoint or exported state dict")
    p.add_argument("--out", help="write the metrics JSON here (default: next to the checkpoint)")
    p.add_argument("--per-class", action="store_true", help="print per-class IoU of every level")
    _tta_args(p)

    p = add("predict", _cmd_predict, "segment image files: one colour PNG per level and the leaf id PNG")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_OVERRIDE",
                   help="image files, and config overrides key.sub=value (value parsed as YAML) as for train / eval")
    p.add_argument("--checkpoint", required=True, help="training checkpoint or exported state dict")
    p.add_argument("--out", required=True, help="output folder")
    _tta_args(p)

    p = add("export", _cmd_export, "write a checkpoint as ONNX or torch.export with path inference inside")
    p.add_argument("config", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)
    p.add_argument("--checkpoint", required=True, help="training checkpoint or exported state dict")
    p.add_argument("--format", default="onnx", help="onnx (default) or torch (a torch.export .pt2 file)")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: eval.crop_size)")
    dynamic = p.add_mutually_exclusive_group()
    dynamic.add_argument("--dynamic", dest="dynamic", action="store_const", const="size",
                         help="any batch size and any H, W in multiples of the network's coarsest stride (32 for the "
                              "presets; at least 2 of them): --size is then the example, such a multiple")
    dynamic.add_argument("--dynamic-batch", dest="dynamic", action="store_const", const="batch",
                         help="any batch size, the image size fixed (the Swin presets: their windows are built for "
                              "one size)")
    p.add_argument("--levels", default="leaf", help="leaf (default): the leaf map; all: also one map per level")

    p = add("models", _cmd_models, "parameter counts and FLOPs of the model presets")
    p.add_argument("names", nargs="*", help="model names (default: all presets)")
    p.add_argument("--hierarchy", default="cityscapes", help="shipped class tree (default: cityscapes)")
    p.add_argument("--input-size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))

    p = add("configs", _cmd_configs, "list the shipped configs, or print one fully resolved")
    p.add_argument("--show", metavar="CONFIG", help="print this config with defaults and overrides applied")
    p.add_argument("--defaults", action="store_true", help="print every key with its default")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP)

    p = add("demo", _cmd_demo, "train + evaluate a small model on the synthetic dataset (CPU, a few minutes)")
    p.add_argument("overrides", nargs="*", help=OVERRIDE_HELP + " (applied to configs/synthetic.yaml)")
    p.add_argument("--out", help="output folder (default: runs/demo, or runs/demo_ablation with --ablation)")
    p.add_argument("--compare-bce", action="store_true", help="also train the BCE baseline and compare")
    p.add_argument("--ablation", nargs="?", const="losses", metavar="EXPERIMENT",
                   help="the long mode: 'losses' (default), the paper's loss ablation, 7 variants x 3 seeds; "
                        "'coarse', fine labels vs fine + coarse labels, 4 x 3 seeds; 'hierarchy', HSSN vs flat CCE "
                        "with inferred parents vs BCE, in-domain and shifted, 3 x 3 seeds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hssn`` script and ``python -m hssn``; :data:`USER_ERRORS` exit with status 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # positionals after an option (`--out DIR key=value`) are the command's own trailing positionals
    trailing = "inputs" if hasattr(args, "inputs") else "overrides" if hasattr(args, "overrides") else None
    unknown = [a for a in extra if a.startswith("-") or trailing is None]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        setattr(args, trailing, list(getattr(args, trailing)) + extra)
    try:
        if args.command in THREADED:
            from hssn.engine.distributed import set_threads

            set_threads()
        return args.func(args)
    except USER_ERRORS as err:
        print(f"hssn {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    """The error's message on one line; for an error re-raised from a DataLoader worker, the worker's own
    last line ("ValueError: <file>: ...") instead of the flattened worker traceback."""
    text = str(err)
    if "DataLoader worker" in text and "Traceback" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
        kind = f"{type(err).__name__}: "
        text = text[len(kind):] if text.startswith(kind) else text
    return " ".join(text.split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
