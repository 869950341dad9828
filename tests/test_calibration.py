"""Inferred parents (``eval.parent_scores: sum``), per-level counting, ECE / class-wise ECE, temperature fitting."""
import math

import numpy as np
import pytest
import torch

from hssn.engine.calibration import ECE_BINS, bin_sums, calibration_error, fit_temperature, reliability
from hssn.engine.inference import InferenceSettings, level_argmax, node_probabilities, predict
from hssn.engine.metrics import HierarchicalMetrics
from trees import random_tree


def _numpy_inferred_parents(z: np.ndarray, tree, softmax: bool):
    """(node probabilities (N, C), per tree level argmax channel ids [(N,)...]) re-derived with numpy from logits
    z (N, C): leaf probabilities, every node the sum over the leaves below it, every level its own argmax."""
    leaves = list(tree.leaves)
    zl = z[:, leaves].astype(np.float64)
    if softmax:
        e = np.exp(zl - zl.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
    else:
        s = 1 / (1 + np.exp(-zl))
        p = s / s.sum(1, keepdims=True)
    nodes = np.zeros((z.shape[0], tree.num_channels))
    for j, leaf in enumerate(leaves):
        for v in tree.ancestors(leaf):
            nodes[:, v] += p[:, j]
    levels = []
    for lvl in range(1, tree.height + 1):
        classes = sorted({tree.ancestor_at_level(leaf, lvl) for leaf in leaves})
        levels.append(np.array(classes)[nodes[:, classes].argmax(1)])
    return nodes, levels


@pytest.mark.parametrize("seed", [3, 11, 29])
@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("softmax", [True, False])
def test_inferred_parents_equal_a_numpy_rederivation(seed, balanced, softmax):
    tree = random_tree(seed + 1000 * balanced, balanced=balanced)
    z = torch.randn(2, tree.num_channels, 3, 5, generator=torch.Generator().manual_seed(seed)) * 3
    settings = InferenceSettings(parent_scores="sum", leaf_softmax=softmax)
    probs = node_probabilities(z, tree, settings)
    flat = z.permute(0, 2, 3, 1).reshape(-1, tree.num_channels).numpy()
    want_nodes, want_levels = _numpy_inferred_parents(flat, tree, softmax)
    got_nodes = probs.permute(0, 2, 3, 1).reshape(-1, tree.num_channels).double().numpy()
    np.testing.assert_allclose(got_nodes, want_nodes, rtol=1e-5, atol=1e-6)
    for got, want in zip(level_argmax(probs, tree), want_levels):
        assert got.reshape(-1).tolist() == want.tolist()
    out = predict(lambda x: z, torch.rand(2, 3, 3, 5), tree, settings)
    assert torch.equal(out.leaf, out.levels[-1]) and len(out.levels) == tree.height
    assert all(tree.is_leaf(c) for c in out.leaf.unique().tolist())


def test_the_temperature_divides_the_logits_and_is_checked():
    tree = random_tree(5)
    z = torch.randn(1, tree.num_channels, 2, 2)
    for rule in ("path", "sum"):
        hot = node_probabilities(z, tree, InferenceSettings(parent_scores=rule, temperature=2.0))
        assert torch.allclose(hot, node_probabilities(z / 2, tree, InferenceSettings(parent_scores=rule)))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            InferenceSettings(temperature=bad)
    with pytest.raises(ValueError, match="parent_scores"):
        InferenceSettings(parent_scores="mean")


def test_ece_equals_a_hand_computation():
    # bins of width 1/15: 0.95 -> bin 14, 0.9 -> bin 13, 0.3 -> bin 4 (0.3 * 15 = 4.5)
    p = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.9, 0.3, 0.3])
    hit = torch.tensor([True, True, True, False, True, False, True])
    sums = bin_sums(p, hit)
    assert sums[0].tolist() == [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 4]
    # |acc - conf| * n / N per bin: bin 14 |0.75 - 0.95| * 4, bin 13 |1 - 0.9| * 1, bin 4 |0.5 - 0.3| * 2
    want = (0.2 * 4 + 0.1 * 1 + 0.2 * 2) / 7
    assert calibration_error(sums) == pytest.approx(want)
    rel = reliability(sums)
    assert rel["count"][14] == 4 and rel["accuracy"][14] == pytest.approx(0.75)
    assert rel["confidence"][4] == pytest.approx(0.3) and math.isnan(rel["accuracy"][0])
    assert bin_sums(torch.tensor([1.0, 0.0]), torch.tensor([True, False]))[0, [0, ECE_BINS - 1]].tolist() == [1, 1]
    assert math.isnan(calibration_error(torch.zeros(3, ECE_BINS)))


def test_a_calibrated_predictor_scores_about_zero_and_an_overconfident_one_does_not():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(400_000, generator=gen)
    hit = torch.rand(400_000, generator=gen) < p  # right with the probability it states
    assert calibration_error(bin_sums(p, hit)) < 0.005
    assert calibration_error(bin_sums(p.sqrt(), hit)) > 0.1


def test_class_wise_ece_averages_over_the_levels_classes():
    tree = random_tree(2, max_depth=2)
    gen = torch.Generator().manual_seed(1)
    leaves = list(tree.leaves)
    z = torch.randn(1, tree.num_channels, 40, 50, generator=gen) * 2
    settings = InferenceSettings(parent_scores="sum", leaf_softmax=True, probabilities=True)
    out = predict(lambda x: z, torch.rand(1, 3, 40, 50), tree, settings)
    # labels drawn from the model's own leaf distribution: calibrated at every level by construction
    leaf_p = out.probs[0][leaves].permute(1, 2, 0).reshape(-1, len(leaves))
    draw = torch.multinomial(leaf_p, 1, generator=gen)[:, 0]
    target = torch.tensor(leaves)[draw].view(1, 40, 50)
    m = HierarchicalMetrics(tree, counts=("per_level", "calibration"))
    m.update(out.leaf, target, violations=out.violations, levels=out.levels, probs=out.probs)
    rep = m.compute()
    for lv in rep["levels"]:
        assert lv["ece"] < 0.06 and lv["classwise_ece"] < 0.03
        assert sum(lv["reliability"]["count"]) == 2000
    # the class-wise error is the mean over the level's classes of one binned error per class
    i = tree.height - 1  # the leaf level
    per_class = [calibration_error(m.class_bins[i][j]) for j in range(len(leaves))]
    assert rep["levels"][0]["classwise_ece"] == pytest.approx(sum(per_class) / len(per_class))


def test_per_level_counting_equals_the_leaf_matrix_when_levels_are_the_leafs_ancestors():
    tree = random_tree(7, balanced=False)
    gen = torch.Generator().manual_seed(4)
    leaves = torch.tensor(tree.leaves)
    pred = leaves[torch.randint(len(leaves), (2, 9, 11), generator=gen)]
    target = torch.randint(tree.num_channels, (2, 9, 11), generator=gen)  # leaves and inner nodes
    target[:, 0] = 255
    levels = [tree.leaf_to_level(lvl)[pred] for lvl in range(1, tree.height + 1)]
    by_leaf = HierarchicalMetrics(tree, partial_labels=True)
    by_leaf.update(pred, target)
    per_level = HierarchicalMetrics(tree, partial_labels=True, counts=("per_level",))
    per_level.update(pred, target, levels=levels)
    a, b = by_leaf.compute(), per_level.compute()
    for x, y in zip(a["levels"], b["levels"]):
        assert x["k"] == y["k"] and x["iou"].keys() == y["iou"].keys()
        assert x["miou"] == pytest.approx(y["miou"], nan_ok=True)
        assert x["pixel_acc"] == pytest.approx(y["pixel_acc"], nan_ok=True)
    assert b["non_path_rate"] == 0.0 and a["non_path_rate"] == 0.0


def test_non_path_rate_counts_pixels_whose_levels_disagree():
    from hssn_kernels import ClassHierarchy

    tree = ClassHierarchy.from_nested({"A": {"a1": {}, "a2": {}}, "B": {"b1": {}, "b2": {}}})
    A, a1, a2, B, b1, b2 = (tree.names.index(n) for n in ("A", "a1", "a2", "B", "b1", "b2"))
    leaf = torch.tensor([[[a1, a2, b1, b2]]])
    top = torch.tensor([[[A, B, B, A]]])  # pixels 1 and 3 leave the path
    target = torch.tensor([[[a1, a1, b1, 255]]])
    m = HierarchicalMetrics(tree, counts=("per_level",))
    m.update(leaf, target, levels=[top, leaf])
    rep = m.compute()
    assert rep["non_path_rate"] == pytest.approx(1 / 3)  # the ignored pixel is not counted
    top_level = rep["levels"][1]  # k = 2: A predicted B (wrong), A right, B right
    assert top_level["pixel_acc"] == pytest.approx(1 / 3 * 2) and top_level["iou"]["A"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="per_level"):
        HierarchicalMetrics(tree).update(leaf, target, levels=[top, leaf])
    with pytest.raises(ValueError, match="needs levels"):
        m.update(leaf, target)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 6, generator=gen) * 3
    y = torch.multinomial((z / 2.5).softmax(1), 1, generator=gen)[:, 0]  # labels of a model at T = 2.5
    t = fit_temperature(lambda t: float(torch.nn.functional.cross_entropy(z / t, y)))
    assert t == pytest.approx(2.5, rel=0.05)


def test_numpy_helper_agrees_on_a_hand_tree():
    from hssn_kernels import ClassHierarchy

    tree = ClassHierarchy.from_nested({"A": {"a1": {}, "a2": {}}, "c": {}})
    order = [tree.names.index(n) for n in ("A", "a1", "a2", "c")]
    logits = np.zeros((1, 4))
    logits[0, order] = np.log([1.0, 2.0, 4.0, 3.0])  # A's own logit is not read
    nodes, levels = _numpy_inferred_parents(logits, tree, softmax=True)
    assert nodes[0, order].tolist() == pytest.approx([6 / 9, 2 / 9, 4 / 9, 3 / 9])
    assert levels[0].tolist() == [order[0]] and levels[1].tolist() == [order[2]]
