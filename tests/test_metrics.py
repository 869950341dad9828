"""Per-level metrics against hand-computed confusion matrices, violations, mistake severity."""
import math

import pytest
import torch

from hssn_kernels import ClassHierarchy
from hssn_kernels.upsample import tree_violations
from hssn.engine.metrics import (ConfusionMatrix, HierarchicalMetrics, iou, level_confusion, majority_baseline,
                                 mistake_severity, per_level_iou)

# Unbalanced: leaf "c" hangs from the root and stands for itself at the leaf level.
TREE = ClassHierarchy.from_nested({"A": {"a1": {}, "a2": {}}, "B": {"b1": {}}, "c": {}})
a1, a2, b1, c, A, B = (TREE.names.index(n) for n in ("a1", "a2", "b1", "c", "A", "B"))

# (gt, pred, count); plus 2 ignored pixels
PAIRS = [(a1, a1, 3), (a1, a2, 1), (a2, a2, 2), (b1, a1, 1), (c, c, 2), (c, b1, 1)]


def _maps():
    gt = [g for g, _, n in PAIRS for _ in range(n)] + [255, 255]
    pred = [p for _, p, n in PAIRS for _ in range(n)] + [a1, b1]
    return torch.tensor(gt)[None, None], torch.tensor(pred)[None, None]  # (1, 1, 12)


def test_leaf_order_of_the_test_tree():
    assert (a1, a2, b1, c) == (0, 1, 2, 3) and TREE.height == 2


def test_per_level_iou_matches_hand_computation():
    gt, pred = _maps()
    m = HierarchicalMetrics(TREE)
    m.update(pred, gt)
    rep = m.compute()
    leaf, top = rep["levels"]
    assert (leaf["k"], leaf["tree_level"], top["k"], top["tree_level"]) == (1, 2, 2, 1)
    # leaves: a1 3/(3+1+1), a2 2/3, b1 0/2, c 2/3
    assert leaf["iou"]["a1"] == pytest.approx(0.6) and leaf["iou"]["a2"] == pytest.approx(2 / 3)
    assert leaf["iou"]["b1"] == 0.0 and leaf["iou"]["c"] == pytest.approx(2 / 3)
    assert leaf["miou"] == pytest.approx((0.6 + 2 / 3 + 0 + 2 / 3) / 4)
    assert leaf["pixel_acc"] == pytest.approx(7 / 10)
    # top level: A 6/7, B 0/2, c (a leaf standing for itself) 2/3
    assert set(top["iou"]) == {"A", "B", "c"}
    assert top["iou"]["A"] == pytest.approx(6 / 7) and top["iou"]["B"] == 0.0 and top["iou"]["c"] == pytest.approx(2 / 3)
    assert top["miou"] == pytest.approx((6 / 7 + 2 / 3) / 3)
    assert top["pixel_acc"] == pytest.approx(8 / 10)
    assert rep["num_pixels"] == 10
    # wrong pixels: a1->a2 (2 edges), b1->a1 (4, through the root), c->b1 (3)
    assert rep["mistake_severity"] == pytest.approx(3.0)
    assert rep["pixel_acc"] == leaf["pixel_acc"]


def test_inner_node_labels_count_at_their_level_and_coarser():
    """partial_labels: pixels labelled A (x2: predicted a1, b1) and B (predicted b1) join the top level only;
    the leaf level is unchanged; the A pixel predicted b1 is a mistake at distance(A, b1) = 3."""
    gt, pred = _maps()
    gt = torch.cat([gt, torch.tensor([A, A, B])[None, None]], -1)
    pred = torch.cat([pred, torch.tensor([a1, b1, b1])[None, None]], -1)
    m = HierarchicalMetrics(TREE, partial_labels=True)
    m.update(pred, gt)
    rep = m.compute()
    leaf, top = rep["levels"]
    assert leaf["iou"]["a1"] == pytest.approx(0.6) and leaf["pixel_acc"] == pytest.approx(7 / 10)
    assert top["iou"]["A"] == pytest.approx(7 / 9) and top["iou"]["B"] == pytest.approx(1 / 4)
    assert top["iou"]["c"] == pytest.approx(2 / 3) and top["pixel_acc"] == pytest.approx(10 / 13)
    assert rep["mistake_severity"] == pytest.approx((2 + 4 + 3 + 3) / 4)
    assert rep["num_pixels"] == 13 and rep["inner_pixels"] == 3
    with pytest.raises(ValueError, match="partial_labels=True"):
        HierarchicalMetrics(TREE).update(pred, gt)
    with pytest.raises(ValueError, match="outside"):
        HierarchicalMetrics(TREE, partial_labels=True).update(pred, torch.full_like(gt, 17))


def test_scored_leaves_follow_the_official_reduction():
    """Unscored class b1 (Mapillary's evaluate: false): its rows and columns leave the leaf matrix, so the b1
    pixel predicted a1 and the c pixel predicted b1 count nowhere; group B (only b1) is no class at the top."""
    gt, pred = _maps()
    m = HierarchicalMetrics(TREE, scored_leaves=[True, True, False, True])
    m.update(pred, gt, violations=torch.tensor([[[True] * 6 + [False] * 6]]))
    rep = m.compute()
    leaf, top = rep["levels"]
    assert set(leaf["iou"]) == {"a1", "a2", "c"} and set(top["iou"]) == {"A", "c"}
    # leaves without b1: a1 3/(3+1), a2 2/3, c 2/2
    assert leaf["iou"]["a1"] == pytest.approx(0.75) and leaf["iou"]["c"] == 1.0
    assert leaf["pixel_acc"] == pytest.approx(7 / 8) and rep["num_pixels"] == 8
    assert top["iou"]["A"] == 1.0 and top["pixel_acc"] == 1.0
    assert rep["mistake_severity"] == pytest.approx(2.0)  # only a1 -> a2 is left
    # violations are counted on the 9 pixels whose ground truth is scored (a1 x4, a2 x2, c x3), not on b1's
    assert rep["violation_rate"] == pytest.approx(6 / 9)
    assert rep["scored_leaves"] == [True, True, False, True] and len(rep["confusion"]) == 4
    with pytest.raises(ValueError, match="4 bools"):
        HierarchicalMetrics(TREE, scored_leaves=[True])
    with pytest.raises(ValueError, match="no leaf"):
        HierarchicalMetrics(TREE, scored_leaves=[False] * 4)


def test_level_confusion_sums_groups():
    leaf = torch.zeros(4, 4, dtype=torch.int64)
    for g, p, n in PAIRS:
        leaf[g, p] += n
    top, classes = level_confusion(leaf, TREE, 1)
    assert classes == sorted([c, A, B])
    expected = {(A, A): 6, (B, A): 1, (c, c): 2, (c, B): 1}
    for (g, p), n in expected.items():
        assert top[classes.index(g), classes.index(p)] == n
    assert top.sum() == 10


def test_iou_nan_for_absent_classes_and_mean_skips_them():
    m = torch.tensor([[5, 0], [0, 0]])
    v = iou(m)
    assert v[0] == 1.0 and math.isnan(v[1])
    lv = per_level_iou(torch.diag(torch.tensor([4, 0, 0, 0])), TREE)
    assert lv[0]["miou"] == 1.0


def test_confusion_matrix_bincount_and_validation():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 1]), torch.tensor([True, True, True, False]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="shapes differ"):
        cm.update(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def test_inner_node_and_out_of_range_predictions_are_rejected():
    """An inner-node prediction has leaf position -1: counted, it would shift the bincount (a "sidewalk" pixel
    scored as another pair of classes). It is an error, as are ids outside the tree."""
    m = HierarchicalMetrics(TREE)
    target = torch.tensor([[[a1, a2]]])
    for bad in (A, TREE.num_channels, -1):
        with pytest.raises(ValueError, match="inner-node|outside"):
            m.update(torch.tensor([[[a1, bad]]]), target)
    assert int(m.confusion.matrix.sum()) == 0  # nothing counted by the rejected updates
    with pytest.raises(ValueError, match="pred holds ids outside"):
        ConfusionMatrix(3).update(torch.tensor([0, -1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target holds ids outside"):
        ConfusionMatrix(3).update(torch.tensor([0, 1]), torch.tensor([0, 3]))


def test_non_leaf_target_is_rejected():
    m = HierarchicalMetrics(TREE)
    with pytest.raises(ValueError, match="neither leaves"):
        m.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.tensor([[[A, a1]]]))


def test_violation_mask_and_rate():
    # channels: a1 a2 b1 c A B; pixel 0 consistent, pixel 1: a1 on with A off, pixel 2: B off / b1 off (fine)
    s = torch.tensor([
        [0.9, 0.1, 0.1, 0.1, 0.8, 0.1],
        [0.7, 0.1, 0.1, 0.1, 0.3, 0.1],
        [0.1, 0.1, 0.4, 0.9, 0.2, 0.5],
        [0.2, 0.1, 0.6, 0.1, 0.2, 0.5],   # b1 on, its parent B exactly 0.5 (<= 0.5): violation
    ]).T.reshape(1, 6, 1, 4)
    assert tree_violations(s, TREE, 0.5).tolist() == [[[False, True, False, True]]]
    m = HierarchicalMetrics(TREE)
    m.update(torch.tensor([[[a1, a1, c, b1]]]), torch.tensor([[[a1, 255, c, b1]]]), s)
    assert m.compute()["violation_rate"] == pytest.approx(1 / 3)  # the ignored pixel is not counted


def test_mistake_severity_nan_without_mistakes():
    assert math.isnan(mistake_severity(torch.diag(torch.tensor([1, 2, 3, 4])), TREE))


def test_majority_baseline():
    leaf = torch.zeros(4, 4, dtype=torch.int64)
    leaf[a1, a1], leaf[b1, b1], leaf[c, c] = 6, 2, 2
    # leaves: 3 present classes, majority share 0.6 -> 0.2; top: A 0.6 of {A, B, c} -> 0.2
    assert majority_baseline(leaf, TREE) == pytest.approx([0.2, 0.2])
