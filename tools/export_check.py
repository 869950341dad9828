"""Export a model to ONNX and measure, in one run: the export time, the agreement of onnxruntime's leaf maps with
``hssn predict --scales 1.0 --no-flip`` (eager path inference), the largest top-2 leaf-score gap
among the pixels that differ (float ties are ~1e-7), and the median CPU time per image of both.

    python tools/export_check.py CONFIG --checkpoint CK [--images 20] [--dynamic [--resize 1.5 2]] [key=value ...]
    python tools/export_check.py CONFIG --random-weights --size H W [--images 2] [--dynamic ...] [key=value ...]

With a checkpoint the images are the config's val images; with ``--random-weights`` (a preset at full size, no
training) seeded random images of ``--size`` and the config's shipped tree. ``--dynamic``: a graph of any batch
and image size (``hssn export --dynamic``), compared at the images' size and at each ``--resize`` factor of it.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _inputs(args, cfg):
    """(model in eval mode, hierarchy, images): the checkpoint's model and val images, or with --random-weights
    the untrained model and seeded random images."""
    from hssn import hierarchies
    from hssn.engine import builders, checkpoint as ckpt

    if args.random_weights:
        hierarchy = hierarchies.get(cfg.data.name)
        torch.manual_seed(0)
        model = builders.build_model(cfg, hierarchy, pretrained=False).eval()
        gen = torch.Generator().manual_seed(1)
        return model, hierarchy, [torch.rand(3, *args.size, generator=gen) for _ in range(args.images)]
    dataset = builders.build_dataset(cfg, "val")
    images = [dataset[i]["image"] for i in range(min(args.images, len(dataset)))]
    model = ckpt.load_trained_model(cfg, ckpt.load_checkpoint(args.checkpoint), args.checkpoint, dataset.hierarchy,
                                    torch.device("cpu"))
    return model, dataset.hierarchy, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--random-weights", action="store_true", help="the config's model untrained")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), help="with --random-weights: H W")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--dynamic", action="store_true", help="export with --dynamic")
    parser.add_argument("--resize", type=float, nargs="*", default=[2.0],
                        help="with --dynamic: also compare on the images resized by these factors")
    args = parser.parse_args()
    import onnxruntime as ort

    from hssn.engine.config import load_config
    from hssn.engine.inference import InferenceSettings, model_logits_fn, predict
    from hssn.export.graph import ExportedSegmenter, export_model

    cfg = load_config(args.config, ["model.pretrained=false", *args.overrides])
    model, hierarchy, images = _inputs(args, cfg)
    size = tuple(images[0].shape[1:])
    graph = ExportedSegmenter(model, hierarchy)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        start = time.perf_counter()
        export_model(graph, "onnx", path, size, "size" if args.dynamic else None, {})
        export_s = time.perf_counter() - start
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fn = model_logits_fn(model, False)
    step = graph.size_multiple
    for factor in [1.0, *(args.resize if args.dynamic else [])]:
        hw = tuple(max(2, round(v * factor / step)) * step for v in size) if factor != 1.0 else size
        same, total, tie, t_onnx, t_eager = 0, 0, 0.0, [], []
        for image in images:
            if hw != size:
                image = F.interpolate(image[None], size=hw, mode="bilinear", align_corners=False)[0]
            start = time.perf_counter()
            got = torch.from_numpy(session.run(["leaf"], {"image": image[None].numpy()})[0][0])
            t_onnx.append(time.perf_counter() - start)
            start = time.perf_counter()
            with torch.no_grad():
                want = predict(fn, image[None], hierarchy, InferenceSettings(backend=cfg.loss.backend)).leaf[0]
            t_eager.append(time.perf_counter() - start)
            with torch.no_grad():  # the root-path score sums, for the gap of the pixels that differ
                z = F.interpolate(fn(image[None]), size=hw, mode="bilinear", align_corners=False)
                scores = torch.einsum("bchw,cl->bhwl", torch.sigmoid(z), graph.path)[0]
            top2 = scores.topk(2, dim=-1).values
            differ = got != want
            same += int((~differ).sum())
            total += got.numel()
            tie = max(tie, float((top2[..., 0] - top2[..., 1])[differ].max()) if differ.any() else 0.0)
        print(f"{args.config} ({'random weights, ' if args.random_weights else ''}"
              f"{'dynamic graph, ' if args.dynamic else ''}{hw[0]}x{hw[1]}, {len(images)} images, torch threads "
              f"{torch.get_num_threads()}): export {export_s:.1f} s; onnxruntime leaf map equal to eager path "
              f"inference at {100 * same / total:.4f} % of {total} pixels (largest top-2 score gap among the others "
              f"{tie:.1e}); median ms/image: onnxruntime {1e3 * statistics.median(t_onnx):.1f}, eager "
              f"{1e3 * statistics.median(t_eager):.1f}")


if __name__ == "__main__":
    main()
