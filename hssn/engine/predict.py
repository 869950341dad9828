"""``hssn predict``: per image, the leaf id map PNG and one colourised PNG per tree level."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from hssn.errors import UserError

from . import builders, checkpoint as ckpt
from .config import Config
from .distributed import start_run
from .inference import InferenceSettings, model_logits_fn, predict
from .checkpoint import load_trained_model


def label_meta(cfg: Config, checkpoint: dict | None = None, path: str | Path = "checkpoint") -> dict:
    """``{"hierarchy", "palette" (L, 3) uint8, "flip_pairs", "ignore_index"}`` from the checkpoint's (read
    from ``path``) stored metadata, else from the shipped tree of ``data.name``, else from the val dataset."""
    meta = ckpt.checkpoint_meta(checkpoint, path) if checkpoint is not None else None
    if meta is not None:
        return meta
    from hssn import hierarchies

    name = cfg.data.name
    if name in hierarchies.available():
        extra = hierarchies.metadata(name)
        return {"hierarchy": hierarchies.get(name), "palette": torch.tensor(extra["leaf_colors"], dtype=torch.uint8),
                "flip_pairs": [tuple(p) for p in extra["flip_pairs"]], "ignore_index": 255}
    from .builders import build_dataset

    ds = build_dataset(cfg, "val")
    return {"hierarchy": ds.hierarchy, "palette": ds.palette, "flip_pairs": ds.flip_pairs,
            "ignore_index": ds.ignore_index}


def save_leaf_png(leaf: torch.Tensor, path: Path) -> None:
    """(H, W) leaf ids as an 8-bit greyscale PNG (16-bit when an id exceeds 255)."""
    arr = leaf.cpu().numpy()
    img = Image.fromarray(arr.astype(np.uint8), "L") if arr.max(initial=0) < 256 else \
        Image.fromarray(arr.astype(np.uint16))
    img.save(path)


def output_stems(paths: Sequence[Path]) -> list[Path]:
    """Each image's output name without suffix, relative to ``out_dir``: its path below the inputs' common
    folder, suffix dropped (``a/rgb.png``, ``b/rgb.webp`` -> ``a/rgb``, ``b/rgb``; one folder -> the stems).
    Raises ``ValueError`` naming the inputs when two would still share a name (``x.png`` and ``x.jpg``)."""
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([r.parent for r in resolved]))
    stems = [r.relative_to(root).with_suffix("") for r in resolved]
    seen: dict[Path, Path] = {}
    for path, stem in zip(paths, stems):
        if stem in seen:
            raise UserError(f"images {seen[stem]} and {path} would write the same output files "
                            f"({stem}_leaf.png ...); rename one or predict them separately")
        seen[stem] = path
    return stems


def image_outputs(images: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(image paths, their output names by :func:`output_stems`); ``FileNotFoundError`` naming missing ones."""
    paths = [Path(p) for p in images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {', '.join(missing)}")
    return paths, output_stems(paths)


def write_prediction(leaf: torch.Tensor, out_dir: Path, stem: Path, meta: dict,
                     levels: list[torch.Tensor] | None = None) -> list[Path]:
    """Write one image's (H, W) leaf map: ``{stem}_leaf.png`` and ``{stem}_k{k}.png`` per level (k as in
    mIoU^k: k = 1 leaves ... D coarsest) under ``out_dir``, coloured with ``meta``'s tree, palette and ignore
    index (:func:`label_meta`), the level maps from ``levels`` ((H, W) channel ids per tree level, inferred
    parents) or else from the leaf's ancestors. Returns the paths."""
    from hssn.data.palettes import colorize_level

    hierarchy, palette, ignore_index = meta["hierarchy"], meta["palette"], meta["ignore_index"]

    (out_dir / stem).parent.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}_leaf.png"
    save_leaf_png(leaf, target)
    written = [target]
    for level in range(1, hierarchy.height + 1):
        target = out_dir / f"{stem}_k{hierarchy.height + 1 - level}.png"
        ids = leaf if levels is None else levels[level - 1]
        Image.fromarray(colorize_level(ids, hierarchy, palette, level, ignore_index).numpy()).save(target)
        written.append(target)
    return written


def predict_files(cfg: Config, checkpoint_path: str | Path, images: Sequence[str | Path], out_dir: str | Path
                  ) -> list[Path]:
    """Segment each image file; writes ``{name}_leaf.png`` (leaf ids) and ``{name}_k{k}.png`` (colours) for
    k = 1 (leaves) .. D (coarsest), numbered as the metrics' mIoU^k, into ``out_dir``, ``name`` as
    :func:`output_stems` gives it (inputs from several folders keep their relative folders). Returns the paths."""
    from hssn.data.common import read_image

    paths, stems = image_outputs(images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = start_run(cfg)
    checkpoint = ckpt.load_checkpoint(checkpoint_path)  # read once: labels' metadata and weights
    meta = label_meta(cfg, checkpoint, checkpoint_path)
    hierarchy = meta["hierarchy"]
    model = load_trained_model(cfg, checkpoint, checkpoint_path, hierarchy, ctx.device)
    fn = model_logits_fn(model, ctx.amp)
    settings = InferenceSettings.from_config(cfg, meta["flip_pairs"])
    transforms = builders.eval_transforms(cfg, meta["ignore_index"])
    written = []
    for path, stem in zip(paths, stems):
        image = read_image(path)
        size = tuple(image.shape[1:])
        # the evaluator's preprocessing; the placeholder label (a broadcast zero) only carries the size
        image = transforms({"image": image, "label": torch.zeros((), dtype=torch.int64).expand(size)})["image"]
        with torch.no_grad():
            out = predict(fn, image[None].to(ctx.device), hierarchy, settings, size)
        levels = None if out.levels is None else [lv[0].cpu() for lv in out.levels]
        written += write_prediction(out.leaf[0].cpu(), out_dir, stem, meta, levels)
    return written
