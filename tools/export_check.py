"""Export a checkpoint to ONNX and measure, in one run: the export time, the agreement of onnxruntime's leaf
maps with eager path inference (what ``hssn predict --scales 1.0 --no-flip`` computes) on the config's val
images, and the median CPU time per image of both.

    python tools/export_check.py CONFIG CHECKPOINT [--images 20] [key=value ...]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    import onnxruntime as ort

    from hssn.engine import builders, checkpoint as ckpt
    from hssn.engine.config import load_config
    from hssn.engine.inference import InferenceSettings, model_logits_fn, predict
    from hssn.engine.checkpoint import load_trained_model
    from hssn.export.build import ExportOptions, export_checkpoint

    cfg = load_config(args.config, args.overrides)
    dataset = builders.build_dataset(cfg, "val")
    images = [dataset[i]["image"] for i in range(min(args.images, len(dataset)))]
    size = tuple(images[0].shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        start = time.perf_counter()
        export_checkpoint(cfg, args.checkpoint, path, ExportOptions(size=size))
        export_s = time.perf_counter() - start
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = load_trained_model(cfg, ckpt.load_checkpoint(args.checkpoint), args.checkpoint, dataset.hierarchy,
                               torch.device("cpu"))
    fn = model_logits_fn(model, False)
    same, total, t_onnx, t_eager = 0, 0, [], []
    for image in images:
        start = time.perf_counter()
        got = session.run(["leaf"], {"image": image[None].numpy()})[0][0]
        t_onnx.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            want = predict(fn, image[None], dataset.hierarchy, InferenceSettings(backend=cfg.loss.backend)).leaf
        t_eager.append(time.perf_counter() - start)
        same += int((torch.from_numpy(got) == want[0]).sum())
        total += got.size
    print(f"{args.config} ({size[0]}x{size[1]}, {len(images)} images, torch threads {torch.get_num_threads()}): "
          f"export {export_s:.1f} s; onnxruntime leaf map equal to eager path inference at "
          f"{100 * same / total:.4f} % of {total} pixels; median ms/image: onnxruntime "
          f"{1e3 * statistics.median(t_onnx):.1f}, eager {1e3 * statistics.median(t_eager):.1f}")


if __name__ == "__main__":
    main()
