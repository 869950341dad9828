"""Benchmark: native CPU focal tree-min forward + backward against the reference (float32, 2 threads).

    python tools/bench_native_cpu.py [--shapes city:2x256x512 wide:1x256x256] [--repeats 5] [--no-reference]

Prints, per shape, the median and min wall time (ms) of ``loss.backward()`` for both implementations, the
speedup of the medians and the 1-minute load average before and after (the machine may be shared).
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package and the tree fixtures

import hssn_kernels as hk  # noqa: E402
from trees import cityscapes_like, wide_tree  # noqa: E402

TREES = {"city": cityscapes_like, "wide": wide_tree}


def _inputs(h, shape, seed=0):
    """Random float32 logits (B, C, H, W) * 3 and random leaf targets (B, H, W)."""
    g = torch.Generator().manual_seed(seed)
    b, hh, ww = shape
    x = torch.randn(b, h.num_channels, hh, ww, generator=g) * 3
    leaves = torch.tensor(h.leaves)
    return x, leaves[torch.randint(len(leaves), shape, generator=g)]


def _time(fn, x, t, h, repeats):
    """Wall times (ms) of fn(x, t, h).backward() into an existing .grad, after one warm-up."""
    x = x.clone().requires_grad_(True)
    fn(x, t, h).backward()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x, t, h).backward()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["city:2x256x512", "wide:1x256x256", "wide:2x256x512"],
                    help="tree:BxHxW with tree in " + ", ".join(TREES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true", help="time the native kernel only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    native = lambda x, t, h: hk.focal_tree_min_loss(x, t, h, backend="cpu")  # noqa: E731
    for spec in args.shapes:
        name, dims = spec.split(":")
        shape = tuple(int(d) for d in dims.split("x"))
        h = TREES[name]()
        x, t = _inputs(h, shape)
        load0 = os.getloadavg()[0]
        tn = _time(native, x, t, h, args.repeats)
        line = f"{name:5s} C={h.num_channels:3d} {dims:10s} native median {statistics.median(tn):8.1f} ms (min {min(tn):7.1f})"
        if not args.no_reference:
            tr = _time(functools.partial(hk.focal_tree_min_loss, backend="reference"), x, t, h, args.repeats)
            line += (f"  reference median {statistics.median(tr):8.1f} ms (min {min(tr):7.1f})"
                     f"  speedup {statistics.median(tr) / statistics.median(tn):5.1f}x")
        print(line + f"  load {load0:.1f}->{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
