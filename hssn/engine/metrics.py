"""Hierarchical segmentation metrics: per-level IoU from one leaf confusion matrix, calibration per level.

Naming follows the paper: ``mIoU^1`` is the leaf level, ``mIoU^D`` the coarsest; ``mIoU^k`` is computed
at tree level ``l = D + 1 - k`` (1 = children of the root). A leaf shallower than ``l`` stands for
itself there. Every level's confusion matrix is the leaf matrix summed over ancestor groups (path
inference predicts a leaf; its ancestors are the prediction at every level), so only the (L, L) leaf
matrix is accumulated, on the device, with ``torch.bincount``.

* IoU of a class = TP / (TP + FP + FN); classes whose union is empty are NaN and left out of the mean.
* Pixel accuracy = correct / labelled pixels, per level.
* Mistake severity = mean tree distance ``psi(gt leaf, predicted leaf)`` over wrongly labelled pixels.
* Violation rate = share of labelled pixels whose raw scores break the hierarchy before path
  inference: some node ``v`` with a parent ``p`` has ``s_v > 0.5`` while ``s_p <= 0.5``.

Levels predicted each by its own argmax (inferred parents, ``counts=("per_level",)``): every level's (K, K) matrix
is counted from that level's predictions, and the non-path rate is the share of labelled pixels whose
per-level predictions are not one root-to-leaf path. Calibration (ECE, class-wise ECE, reliability bins per
level) is counted from the node probabilities: :mod:`hssn.engine.calibration`.

Labels at any depth (``partial_labels=True``): a pixel labelled at an inner node ``g`` of level ``l`` counts
at levels ``l`` and coarser, as its ancestor there, and is ignored at finer levels; its counts are kept in a
second (C, L) matrix (rows: the label's channel, columns: the predicted leaf). Mistake severity counts it
only when the predicted leaf is not below ``g``, at the tree distance between ``g`` and that leaf.

Scored classes (``scored_leaves``, the official protocol of benchmarks such as Mapillary Vistas): the leaf
matrix is reduced to the rows and columns of the scored leaves before anything is computed, as the official
``reduce_evaluation_to_evaluated_categories`` does: pixels of an unscored class are left out, and a scored
pixel predicted as an unscored class is neither a hit nor a miss. Coarser levels group the scored leaves
only (a group without scored leaves is not a class).
"""
from __future__ import annotations

import math
from typing import Collection

import torch
import torch.distributed as dist

from hssn.errors import UserError
from hssn_kernels import ClassHierarchy
from hssn_kernels.upsample import tree_violations

from .calibration import ECE_BINS, bin_sums, calibration_error, reliability


class ConfusionMatrix:
    """(K, K) int64 counts, rows = ground truth, columns = prediction, kept on ``device``."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
               checked: bool = False) -> None:
        """Count pixels: ``pred`` and ``target`` int tensors of the same shape with ids in [0, K);
        ``valid`` (bool, same shape) selects the pixels to count (default: all). ``checked``: the caller has
        checked the selected ids are in range, so no host sync (else one, for the range check)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
        k = self.num_classes
        pred, target = pred.long(), target.long()
        keep = torch.ones_like(pred, dtype=torch.bool) if valid is None else valid
        if not checked:  # else bincount shifts rows silently
            out = [keep & ((ids < 0) | (ids >= k)) for ids in (pred, target)]
            flags = torch.stack([o.any() for o in out]).tolist()
            for name, bad in zip(("pred", "target"), flags):
                if bad:
                    raise ValueError(f"{name} holds ids outside [0, {k})")
        idx = torch.where(keep, target * k + pred, k * k).reshape(-1).to(self.matrix.device)
        self.matrix += torch.bincount(idx, minlength=k * k + 1)[: k * k].view(k, k)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix)


def iou(matrix: torch.Tensor) -> torch.Tensor:
    """(K,) float64 IoU per class of a (K, K) confusion matrix; NaN where the union is empty."""
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def _leaf_positions(hierarchy: ClassHierarchy) -> torch.Tensor:
    """(C,) int64: position of each channel in ``hierarchy.leaves`` (-1 for inner nodes)."""
    return hierarchy.tables("cpu").leaf_index.long()


def level_classes(hierarchy: ClassHierarchy, tree_level: int, leaves: torch.Tensor | None = None
                  ) -> tuple[list[int], torch.Tensor]:
    """(channels of the classes at ``tree_level``, (L',) int64 group of each leaf among them).

    ``leaves``: positions in ``hierarchy.leaves`` to group (default all, L' = L). The classes are the nodes
    at that level above those leaves, plus the shallower leaves (they stand for themselves).
    """
    to_level = hierarchy.leaf_to_level(tree_level)[list(hierarchy.leaves)]
    if leaves is not None:
        to_level = to_level[leaves]
    classes = sorted(set(to_level.tolist()))
    group = torch.searchsorted(torch.tensor(classes), to_level)
    return classes, group


def level_confusion(leaf_matrix: torch.Tensor, hierarchy: ClassHierarchy, tree_level: int,
                    leaves: torch.Tensor | None = None) -> tuple[torch.Tensor, list[int]]:
    """(K, K) confusion matrix at ``tree_level`` from the (L', L') leaf matrix of the leaves at positions
    ``leaves`` (default all), and its class channels."""
    classes, group = level_classes(hierarchy, tree_level, leaves)
    onehot = torch.nn.functional.one_hot(group, len(classes)).to(leaf_matrix.dtype).to(leaf_matrix.device)
    return onehot.T @ leaf_matrix @ onehot, classes


def scored_positions(hierarchy: ClassHierarchy, scored_leaves) -> torch.Tensor | None:
    """(L',) int64 positions in ``hierarchy.leaves`` of the scored leaves (None = all); ``scored_leaves`` is
    None or L bools in ``hierarchy.leaves`` order."""
    if scored_leaves is None:
        return None
    mask = torch.as_tensor(list(scored_leaves), dtype=torch.bool)
    if mask.shape != (hierarchy.num_leaves,):
        raise ValueError(f"scored_leaves must hold {hierarchy.num_leaves} bools (one per leaf), got {tuple(mask.shape)}")
    if not mask.any():
        raise ValueError("scored_leaves selects no leaf")
    return mask.nonzero()[:, 0]


def reduce_to_scored(leaf_matrix: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """The (L', L') rows and columns of the scored leaves (``positions`` from :func:`scored_positions`)."""
    if positions is None:
        return leaf_matrix
    return leaf_matrix[positions][:, positions]


def level_class_index(hierarchy: ClassHierarchy, tree_level: int, classes: list[int]) -> torch.Tensor:
    """(C,) int64: each channel's node at ``tree_level`` (itself if shallower) as an index into ``classes``
    (:func:`level_classes`), -1 where that node is not one of them (a group without scored leaves)."""
    to_level = hierarchy.leaf_to_level(tree_level)
    known = torch.tensor(classes)
    idx = torch.searchsorted(known, to_level).clamp(max=len(classes) - 1)
    return torch.where(known[idx] == to_level, idx, -1)


def inner_level_confusion(inner_matrix: torch.Tensor, hierarchy: ClassHierarchy, tree_level: int,
                          classes: list[int], positions: torch.Tensor | None) -> torch.Tensor:
    """(K, K) counts at ``tree_level`` of the inner-labelled pixels: rows = the label's ancestor at that level
    (labels shallower than the level are left out), columns = the predicted leaf's class; ``inner_matrix``
    (C, L) rows = label channel, columns = predicted leaf position; ``classes`` from :func:`level_confusion`."""
    tabs = hierarchy.tables("cpu")
    class_of = level_class_index(hierarchy, tree_level, classes)
    rows = torch.where(~tabs.is_leaf & (tabs.level >= tree_level), class_of, -1)
    leaves = tabs.leaves.long() if positions is None else tabs.leaves.long()[positions]
    cols = inner_matrix if positions is None else inner_matrix[:, positions]
    row_onehot = torch.nn.functional.one_hot(rows + 1, len(classes) + 1)[:, 1:].to(cols.dtype)
    col_onehot = torch.nn.functional.one_hot(class_of[leaves], len(classes)).to(cols.dtype)
    return row_onehot.T @ cols @ col_onehot


def per_level_iou(leaf_matrix: torch.Tensor, hierarchy: ClassHierarchy, scored_leaves=None,
                  inner_matrix: torch.Tensor | None = None) -> list[dict]:
    """One dict per paper level k = 1 (leaves) .. D (coarsest):
    ``{"k", "tree_level", "miou", "pixel_acc", "iou": {class name: IoU or NaN}}`` (fractions), from the full
    (L, L) leaf matrix (and the (C, L) matrix of inner-labelled pixels, if any), scored on ``scored_leaves``
    only (None = all; see the module docstring)."""
    if leaf_matrix.shape != (hierarchy.num_leaves, hierarchy.num_leaves):
        raise ValueError(f"leaf matrix must be ({hierarchy.num_leaves}, {hierarchy.num_leaves}), "
                         f"got {tuple(leaf_matrix.shape)}")
    positions = scored_positions(hierarchy, scored_leaves)
    reduced = reduce_to_scored(leaf_matrix.cpu(), positions)
    depth = hierarchy.height
    out = []
    for k in range(1, depth + 1):
        tree_level = depth + 1 - k
        m, classes = level_confusion(reduced, hierarchy, tree_level, positions)
        if inner_matrix is not None:
            m = m + inner_level_confusion(inner_matrix.cpu(), hierarchy, tree_level, classes, positions)
        out.append(level_entry(m, hierarchy, tree_level, classes))
    return out


def level_entry(matrix: torch.Tensor, hierarchy: ClassHierarchy, tree_level: int, classes: list[int]) -> dict:
    """``{"k", "tree_level", "miou", "pixel_acc", "iou": {class name: IoU or NaN}}`` of one level's (K, K)
    confusion ``matrix`` over the class channels ``classes``."""
    values = iou(matrix)
    present = values[~values.isnan()]
    total = int(matrix.sum())
    return {
        "k": hierarchy.height + 1 - tree_level,
        "tree_level": tree_level,
        "miou": float(present.mean()) if len(present) else math.nan,
        "pixel_acc": float(matrix.diagonal().sum()) / total if total else math.nan,
        "iou": {hierarchy.names[c]: float(v) for c, v in zip(classes, values)},
    }


def majority_baseline(leaf_matrix: torch.Tensor, hierarchy: ClassHierarchy) -> list[float]:
    """mIoU per paper level k = 1 .. D of a constant prediction of the level's most frequent class (a
    chance reference): its IoU is that class's pixel share, the other present classes score 0."""
    out = []
    for k in range(1, hierarchy.height + 1):
        m, _ = level_confusion(leaf_matrix.cpu(), hierarchy, hierarchy.height + 1 - k)
        gt = m.sum(1).double()
        present = int((gt > 0).sum())
        out.append(float(gt.max() / gt.sum()) / present if present else math.nan)
    return out


def mistake_severity(leaf_matrix: torch.Tensor, hierarchy: ClassHierarchy, scored_leaves=None,
                     inner_matrix: torch.Tensor | None = None) -> float:
    """Mean tree distance between ground-truth and predicted leaf over the wrong pixels (NaN if none), on the
    scored leaves only (None = all). Inner-labelled pixels (``inner_matrix`` (C, L)) are wrong when the
    predicted leaf is not below the label, at the distance between the label node and that leaf."""
    positions = scored_positions(hierarchy, scored_leaves)
    m = reduce_to_scored(leaf_matrix.cpu().double(), positions)
    distance = reduce_to_scored(hierarchy.tree_distance.double(), positions)
    wrong = m.sum() - m.diagonal().sum()
    total = (m * distance).sum()
    if inner_matrix is not None:
        dist = hierarchy.distance_table(range(hierarchy.num_channels), hierarchy.leaves).double()  # (C, L)
        below = hierarchy.tables("cpu").is_ancestor[list(hierarchy.leaves)].T  # leaf j is below node c
        cols = (slice(None),) if positions is None else (slice(None), positions)
        counts = inner_matrix.cpu().double()[cols] * ~below[cols]
        wrong = wrong + counts.sum()
        total = total + (counts * dist[cols]).sum()
    if wrong == 0:
        return math.nan
    return float(total / wrong)



class LevelTables:
    """Lookup tables of one tree level for per-level counting, on ``device``: ``classes`` (the level's scored
    class channels, :func:`level_classes`), ``to_level`` (C,) channel -> its node at the level, ``pred_class``
    (C,) a predicted channel at the level -> its class index (-1: no scored leaf below it, not a class) and
    ``gt_class`` (C,) a label channel -> its class index at the level, -1 where the label does not count there
    (an unscored leaf; an inner-node label finer than the level: it counts at its own level and coarser)."""

    def __init__(self, hierarchy: ClassHierarchy, tree_level: int, positions: torch.Tensor | None, device):
        tabs = hierarchy.tables("cpu")
        self.classes, _ = level_classes(hierarchy, tree_level, positions)
        self.to_level = hierarchy.leaf_to_level(tree_level)
        self.pred_class = level_class_index(hierarchy, tree_level, self.classes)
        scored = torch.zeros(hierarchy.num_channels, dtype=torch.bool)
        leaves = tabs.leaves.long()
        scored[leaves if positions is None else leaves[positions]] = True
        counts = torch.where(tabs.is_leaf, scored, tabs.level.long() >= tree_level)
        self.gt_class = torch.where(counts, self.pred_class, -1)
        self.to_level, self.pred_class, self.gt_class = (t.to(device) for t in (self.to_level, self.pred_class,
                                                                                 self.gt_class))


COUNTS = ("per_level", "calibration")
"""What :class:`HierarchicalMetrics` may count beyond the leaf confusion matrix (its ``counts``)."""


class HierarchicalMetrics:
    """Accumulates the leaf confusion matrix, the violation counts and, on request, per-level counts;
    :meth:`compute` gives the report.

    ``update(leaf_pred (B, H, W), target (B, H, W), scores (B, C, H, W) or None, violations (B, H, W) or None,
    levels, probs)``: leaf channel ids, ``ignore_index`` pixels of the target skipped; ``scores`` = the sigmoid
    scores path inference used, or ``violations`` = their ``hssn_kernels.upsample.tree_violations``, already
    computed; ``levels`` = [(B, H, W) predicted channel ids at tree level 1, ..., D] when each level was
    predicted by its own argmax (needs ``"per_level"`` counted; None: the leaf's ancestors); ``probs`` (B, C, H, W)
    node probabilities for the calibration counts (needs ``"calibration"`` counted).
    ``scored_leaves``: L bools in ``hierarchy.leaves`` order (None = all): the classes the report scores;
    violations are counted on pixels of scored classes (and on every inner-labelled pixel).
    ``partial_labels``: targets may be inner nodes (module docstring); otherwise they are an error.
    ``counts`` (a subset of :data:`COUNTS`) adds what the predictions carry beyond the leaf map:
    ``"per_level"``: every level's confusion matrix is counted from its own predictions (``levels``) instead of
    being summed from the leaf matrix; the report adds ``non_path_rate``, the share of counted pixels whose
    per-level predictions are not one root-to-leaf path. ``"calibration"``: each level of the report adds
    ``ece``, ``classwise_ece`` and ``reliability`` (:mod:`hssn.engine.calibration`), from the probability of the
    predicted node (pixels labelled at that level).
    """

    def __init__(self, hierarchy: ClassHierarchy, ignore_index: int = 255, device: torch.device | str = "cpu",
                 scored_leaves=None, partial_labels: bool = False, counts: Collection[str] = ()):
        self.hierarchy, self.ignore_index = hierarchy, int(ignore_index)
        self.partial_labels = bool(partial_labels)
        self.inner = (torch.zeros((hierarchy.num_channels, hierarchy.num_leaves), dtype=torch.int64, device=device)
                      if self.partial_labels else None)
        self.scored_leaves = None if scored_leaves is None else [bool(v) for v in scored_leaves]
        positions = scored_positions(hierarchy, self.scored_leaves)
        self.scored = torch.ones(hierarchy.num_leaves, dtype=torch.bool, device=device)
        if positions is not None:
            self.scored.zero_()[positions.to(device)] = True
        self.confusion = ConfusionMatrix(hierarchy.num_leaves, device)
        self.leaf_pos = _leaf_positions(hierarchy).to(device)
        self.counts = torch.zeros(4, dtype=torch.int64, device=device)  # violating, counted; off-path, counted
        unknown = set(counts) - set(COUNTS)
        if unknown:
            raise ValueError(f"counts must be a subset of {COUNTS}, got {sorted(unknown)}")
        self.per_level, self.calibration = "per_level" in counts, "calibration" in counts
        self.tables = ([LevelTables(hierarchy, tl, positions, device) for tl in range(1, hierarchy.height + 1)]
                       if self.per_level or self.calibration else [])
        self.level_matrices = ([ConfusionMatrix(len(t.classes), device) for t in self.tables]
                               if self.per_level else [])
        self.top_bins = torch.zeros((len(self.tables), 3, ECE_BINS), dtype=torch.float64, device=device)
        self.class_bins = [torch.zeros((len(t.classes), 3, ECE_BINS), dtype=torch.float64, device=device)
                           for t in self.tables] if self.calibration else []

    def update(self, leaf_pred: torch.Tensor, target: torch.Tensor, scores: torch.Tensor | None = None,
               violations: torch.Tensor | None = None, levels: list[torch.Tensor] | None = None,
               probs: torch.Tensor | None = None) -> None:
        target = target.to(self.leaf_pos.device)
        valid = target != self.ignore_index
        num_c = self.hierarchy.num_channels
        target_out = valid & ((target < 0) | (target >= num_c))
        safe_target = torch.where(valid & ~target_out, target, torch.zeros_like(target)).long()
        gt_pos = self.leaf_pos[safe_target]
        inner = valid & (gt_pos < 0)
        pred = leaf_pred.to(self.leaf_pos.device).long()
        pred_out = (pred < 0) | (pred >= num_c)
        pred_pos = self.leaf_pos[pred.clamp(0, num_c - 1)]
        # every rule of the inputs in one host sync
        flags = torch.stack([target_out.any(), inner.any() & (not self.partial_labels), pred_out.any(),
                             (pred_pos < 0).any()]).tolist()
        if flags[0]:
            raise UserError(f"target holds ids outside [0, {num_c}) that are not ignore_index")
        if flags[1]:
            raise UserError("target holds ids that are neither leaves nor ignore_index (inner-node labels need "
                            "partial_labels=True)")
        if flags[2]:
            raise ValueError(f"leaf_pred holds ids outside [0, {num_c})")
        if flags[3]:  # an inner node has no leaf position (-1): it would count as another class
            raise ValueError("leaf_pred holds inner-node ids: predictions must be leaf channel ids "
                             "(hssn_kernels.hierarchical_argmax returns them)")
        self.confusion.update(pred_pos, gt_pos, valid & ~inner, checked=True)
        if self.partial_labels:
            idx = torch.where(inner, safe_target * self.hierarchy.num_leaves + pred_pos, self.inner.numel())
            self.inner += torch.bincount(idx.reshape(-1), minlength=self.inner.numel() + 1)[:-1].view_as(self.inner)
        if scores is not None:
            violations = tree_violations(scores, self.hierarchy, 0.5)  # scores are probabilities
        counted = valid & (self.scored[gt_pos.clamp(min=0)] | inner)
        if violations is not None:
            bad = violations.to(valid.device)
            self.counts[:2] += torch.stack([(bad & counted).sum(), counted.sum()])
        if levels is not None and not self.per_level:
            raise ValueError("levels (one argmax per level) need counts with 'per_level'")
        if probs is not None and not self.calibration:
            raise ValueError("probs need counts with 'calibration'")
        if not self.tables:
            return
        if self.per_level and levels is None:
            raise ValueError("counting 'per_level' needs levels: the predicted channel ids at every tree level")
        if self.calibration and probs is None:
            raise ValueError("counting 'calibration' needs probs: the (B, C, H, W) node probabilities")
        if levels is None:
            levels = [t.to_level[pred] for t in self.tables]
        else:
            levels = [lv.to(pred.device).long() for lv in levels]
            if len(levels) != len(self.tables) or any(lv.shape != pred.shape for lv in levels):
                raise ValueError(f"levels must hold {len(self.tables)} maps shaped like leaf_pred {tuple(pred.shape)}")
            stacked = torch.stack(levels)
            if bool(((stacked < 0) | (stacked >= num_c)).any()):  # one host sync for every level
                raise ValueError(f"levels hold ids outside [0, {num_c})")
            off_path = torch.zeros_like(valid)
            for t, lv in zip(self.tables, levels):
                off_path |= lv != t.to_level[pred]
            self.counts[2:] += torch.stack([(off_path & counted).sum(), counted.sum()])
        for i, (t, lv) in enumerate(zip(self.tables, levels)):
            gt = torch.where(valid, t.gt_class[safe_target], -1)
            pc = t.pred_class[lv]
            if self.per_level:
                self.level_matrices[i].update(pc, gt.clamp(min=0), (gt >= 0) & (pc >= 0), checked=True)
            if self.calibration:
                self._count_calibration(i, probs, lv, pc, gt)

    def _count_calibration(self, i: int, probs: torch.Tensor, pred_channel: torch.Tensor, pred_class: torch.Tensor,
                           gt: torch.Tensor) -> None:
        """Add level ``i``'s pixels labelled there to its top-label and class-wise bins."""
        probs = probs.to(gt.device)
        if probs.shape[0] != gt.shape[0] or probs.shape[1] != self.hierarchy.num_channels or \
                probs.shape[2:] != gt.shape[1:]:
            raise ValueError(f"probs must be (B, {self.hierarchy.num_channels}, H, W) like the target "
                             f"{tuple(gt.shape)}, got {tuple(probs.shape)}")
        labelled = gt >= 0
        confidence = probs.gather(1, pred_channel[:, None])[:, 0]
        self.top_bins[i] += bin_sums(confidence, pred_class == gt, labelled)
        for j, c in enumerate(self.tables[i].classes):
            self.class_bins[i][j] += bin_sums(probs[:, c], gt == j, labelled)

    def all_reduce(self) -> None:
        """Sum the counts of all processes (no-op outside torch.distributed)."""
        self.confusion.all_reduce()
        for m in self.level_matrices:
            m.all_reduce()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in [self.counts, self.top_bins, *self.class_bins] + ([self.inner] if self.inner is not None else []):
                dist.all_reduce(t)

    def compute(self) -> dict:
        """``{"levels": per_level_iou(...), "pixel_acc", "mistake_severity", "violation_rate", "non_path_rate",
        "num_pixels", "scored_leaves", "confusion"}`` (fractions, NaN where undefined; ``num_pixels`` = the
        scored pixels; ``confusion`` = the full (L, L) leaf matrix as nested lists, rows = ground truth, in
        ``hierarchy.leaves`` order; ``scored_leaves`` None = all; with partial labels also ``inner_pixels``, the
        scored pixels labelled at inner nodes). ``non_path_rate`` is 0 unless ``per_level`` (the levels are
        then the leaf's ancestors); with ``calibration`` each level adds ``ece``, ``classwise_ece``,
        ``reliability``."""
        m = self.confusion.matrix.cpu()
        inner = None if self.inner is None else self.inner.cpu()
        if self.per_level:
            levels = [level_entry(lm.matrix.cpu(), self.hierarchy, i + 1, t.classes)
                      for i, (t, lm) in enumerate(zip(self.tables, self.level_matrices))][::-1]
        else:
            levels = per_level_iou(m, self.hierarchy, self.scored_leaves, inner)
        if self.calibration:
            for lv in levels:
                i = lv["tree_level"] - 1
                top, classwise = self.top_bins[i].cpu(), self.class_bins[i].cpu()
                lv.update(ece=calibration_error(top), classwise_ece=calibration_error(classwise),
                          reliability=reliability(top))
        viol, counted, off_path, counted_levels = self.counts.tolist()
        positions = scored_positions(self.hierarchy, self.scored_leaves)
        num_inner = 0 if inner is None else int((inner if positions is None else inner[:, positions]).sum())
        report = {
            "levels": levels,
            "pixel_acc": levels[0]["pixel_acc"],
            "mistake_severity": mistake_severity(m, self.hierarchy, self.scored_leaves, inner),
            "violation_rate": viol / counted if counted else math.nan,
            "non_path_rate": (off_path / counted_levels if counted_levels else math.nan) if self.per_level else 0.0,
            "num_pixels": int(reduce_to_scored(m, positions).sum()) + num_inner,
            "scored_leaves": self.scored_leaves,
            "confusion": m.tolist(),
        }
        if inner is not None:
            report["inner_pixels"] = num_inner
        return report


def format_report(report: dict, per_class: bool = False) -> str:
    """A plain-text table of :meth:`HierarchicalMetrics.compute` (percentages)."""
    calibrated = "ece" in report["levels"][0]
    head = f"{'level':<8}{'tree level':>11}{'classes':>9}{'mIoU %':>9}{'pixel acc %':>13}"
    lines = [head + (f"{'ECE %':>8}{'cw-ECE %':>10}" if calibrated else "")]
    for lv in report["levels"]:
        row = (f"{'mIoU^' + str(lv['k']):<8}{lv['tree_level']:>11}{len(lv['iou']):>9}"
               f"{100 * lv['miou']:>9.2f}{100 * lv['pixel_acc']:>13.2f}")
        lines.append(row + (f"{100 * lv['ece']:>8.2f}{100 * lv['classwise_ece']:>10.3f}" if calibrated else ""))
    if "parent_scores" in report:
        rule = {"path": "path inference (Eq. 3)", "sum": "inferred parents (summed leaf probabilities)"}
        lines.append(f"levels predicted by {rule[report['parent_scores']]}, temperature {report['temperature']:.3g}")
    lines.append(f"mistake severity (mean tree distance of wrong pixels): {report['mistake_severity']:.3f}")
    lines.append(f"hierarchy violations before path inference: {100 * report['violation_rate']:.2f}% of pixels")
    if report.get("parent_scores") == "sum":
        lines.append(f"per-level predictions off one root-to-leaf path: {100 * report['non_path_rate']:.2f}% of pixels")
    if per_class:
        for lv in report["levels"]:
            lines.append(f"-- per-class IoU %, mIoU^{lv['k']}")
            lines += [f"  {name:<28}{100 * v:7.2f}" for name, v in lv["iou"].items()]
    return "\n".join(lines)


def to_json_ready(report: dict) -> dict:
    """``report`` with NaN replaced by None (strict JSON)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean(report)
