"""Run an exported ONNX file with onnxruntime (CPU) on image files, writing what ``hssn predict`` writes:

    python -m hssn.export.run model.onnx IMAGE ... --out DIR

Images must have the size the file was exported at (``hssn export --size H W``), or for a file exported with
``--dynamic`` any size in multiples of its ``hssn.size_multiple``; 8- or 16-bit images are read as
``hssn predict`` reads them (``read_image``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy

from .graph import read_metadata


def run_onnx(model_path: str | Path, images: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Segment each image with the ONNX file; writes ``{name}_leaf.png`` and ``{name}_k{k}.png`` as
    :func:`hssn.engine.predict.predict_files` does. Returns the paths."""
    import onnxruntime as ort

    from hssn.data.common import read_image
    from hssn.engine.predict import image_outputs, write_prediction

    meta = read_metadata(model_path)
    if "hssn.hierarchy" not in meta:
        raise UserError(f"{model_path}: no hssn metadata (not written by hssn export)")
    hierarchy = ClassHierarchy.from_dict(json.loads(meta["hssn.hierarchy"]))
    palette = torch.tensor(json.loads(meta["hssn.palette"]), dtype=torch.uint8)
    ignore_index = int(meta["hssn.ignore_index"])
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    want = tuple(session.get_inputs()[0].shape[2:])  # ints, or names of symbolic sizes (--dynamic)
    paths, stems = image_outputs(images)
    written = []
    for path, stem in zip(paths, stems):
        image = read_image(path)
        _check_size(tuple(image.shape[1:]), want, meta, f"{path}: image is {tuple(image.shape[1:])} (H, W); {model_path}")
        leaf = torch.from_numpy(session.run(["leaf"], {"image": image[None].numpy()})[0][0])
        written += write_prediction(leaf, Path(out_dir), stem,
                                    {"hierarchy": hierarchy, "palette": palette, "ignore_index": ignore_index})
    return written


def _check_size(size: tuple[int, int], want: tuple, meta: dict[str, str], what: str) -> None:
    """:class:`UserError` unless the graph takes an image of ``size``: the exported size, or for a dynamic graph a
    multiple of its size multiple (at least its minimum count of them)."""
    if all(isinstance(v, int) for v in want):
        if size != want:
            raise UserError(f"{what} was exported for {want}: export one with hssn export --size {size[0]} {size[1]}")
        return
    step, blocks = int(meta["hssn.size_multiple"]), int(meta["hssn.min_blocks"])
    if any(v % step or v < blocks * step for v in size):
        raise UserError(f"{what} takes sizes in multiples of {step}, at least {blocks * step}: pad or resize the image")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hssn.export.run", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX file written by hssn export")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        written = run_onnx(args.model, args.images, args.out)
    except (ValueError, OSError) as err:
        print(f"hssn.export.run: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
