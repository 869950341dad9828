"""Calibration per tree level: expected calibration error, class-wise ECE, reliability diagrams, temperature.

* ECE (Guo et al., 2017): each pixel's confidence (the probability of its predicted class at the level) falls in
  one of :data:`ECE_BINS` equal-width bins of [0, 1] (a confidence of 1 in the last); with ``n_b`` pixels,
  accuracy ``acc_b`` and mean confidence ``conf_b`` in bin b of N, ``ECE = sum_b n_b / N |acc_b - conf_b|``.
* Class-wise ECE (Kull et al., 2019): for every class j of the level, every pixel's probability ``p_j`` binned
  the same way against the outcome "labelled j"; the mean of these errors over the level's classes.
* Temperature scaling: logits divided by one T > 0 before the probabilities, T fitted by minimising the
  negative log-likelihood of held-out pixels (:func:`fit_temperature`).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

ECE_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)
"""The interval :func:`fit_temperature` searches (bounded, on log T)."""


def bin_index(p: torch.Tensor) -> torch.Tensor:
    """(N,) int64 bin of each probability in [0, 1] (1 falls in the last bin)."""
    return (p.double() * ECE_BINS).long().clamp_(0, ECE_BINS - 1)


def bin_sums(p: torch.Tensor, hit: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(3, ECE_BINS) float64 [pixel count, sum of ``p``, sum of ``hit``] per bin of the probabilities ``p`` with
    outcomes ``hit`` (bool, same shape) where ``keep`` (bool, same shape; default everywhere). No host sync."""
    b = bin_index(p).reshape(-1)
    w = torch.ones_like(b, dtype=torch.float64) if keep is None else keep.reshape(-1).double()
    out = torch.zeros((3, ECE_BINS), dtype=torch.float64, device=p.device)
    for row, values in enumerate((w, p.reshape(-1).double() * w, hit.reshape(-1).double() * w)):
        out[row].scatter_add_(0, b, values)
    return out


def calibration_error(sums: torch.Tensor) -> float:
    """ECE of (..., 3, ECE_BINS) :func:`bin_sums` (the mean over any leading dims); NaN without pixels."""
    count = sums[..., 0, :].sum(-1)
    if not bool((count > 0).all()):
        return math.nan
    err = (sums[..., 2, :] - sums[..., 1, :]).abs().sum(-1) / count
    return float(err.mean())


def reliability(sums: torch.Tensor) -> dict:
    """``{"count", "confidence", "accuracy"}`` per bin of (3, ECE_BINS) :func:`bin_sums` (lists; NaN where a
    bin is empty)."""
    count = sums[0]
    safe = count.clamp(min=1)
    empty = count == 0
    return {"count": [int(v) for v in count.tolist()],
            "confidence": torch.where(empty, math.nan, sums[1] / safe).tolist(),
            "accuracy": torch.where(empty, math.nan, sums[2] / safe).tolist()}


def fit_temperature(nll: Callable[[float], float]) -> float:
    """The T in :data:`TEMPERATURE_RANGE` minimising ``nll(T)`` (bounded Brent search on log T, scipy)."""
    from scipy.optimize import minimize_scalar

    lo, hi = (math.log(v) for v in TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: nll(math.exp(log_t)), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-4})
    return float(math.exp(result.x))


def draw_reliability(report: dict, path, title: str = "") -> None:
    """A reliability diagram PNG of a metrics report with calibration: accuracy against mean confidence per
    bin, one line per level (legend: level and its ECE) over the diagonal of perfect calibration, and the
    share of pixels per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    centres = [(i + 0.5) / ECE_BINS for i in range(ECE_BINS)]
    depth = len(report["levels"])
    for lv in report["levels"]:
        rel = lv["reliability"]
        name = f"k={lv['k']}" + (" (leaves)" if lv["k"] == 1 else " (coarsest)" if lv["k"] == depth else "")
        line, = top.plot(rel["confidence"], rel["accuracy"], marker="o", markersize=3,
                         label=f"{name}: ECE {100 * lv['ece']:.2f} %")
        total = sum(rel["count"]) or 1
        bottom.plot(centres, [c / total for c in rel["count"]], color=line.get_color(), marker="o", markersize=3)
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(fontsize=8, loc="upper left")
    top.set_title(title or "reliability per level (mIoU^k numbering)", fontsize=9)
    bottom.set_xlabel(f"confidence ({ECE_BINS} equal-width bins)")
    bottom.set_ylabel("share of pixels")
    bottom.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
