"""``loss.segmentation=released``: the objective of the authors' released code, against two direct
implementations written from its definition, and the beta schedule of that code (``loss.beta_steps``)."""
import math

import pytest
import torch
import torch.nn.functional as F

from hssn_kernels import ClassHierarchy, cosine_beta, released_hiera_loss
from hssn_kernels.modules import HierarchicalLoss

from trees import cityscapes_like, random_tree


def authors_cityscapes_form(logits, label, groups, eps=1e-8):
    """A transcription of the released two-level loss (``losses_hiera`` x 5 + CE on the leaves + CE on the
    categories), for a tree whose leaves 0..L-1 come first, grouped in contiguous ranges ``groups``, with the
    categories in channels L.. in group order. ``label`` (B, H, W) with 255 = void; not modified."""
    num_leaves, num_top = groups[-1][1], len(groups)
    s = torch.sigmoid(logits)
    void = label == 255
    leaf_t = torch.where(void, torch.zeros_like(label), label)
    top_t = torch.zeros_like(label)
    for g, (lo, hi) in enumerate(groups):
        top_t[(leaf_t >= lo) & (leaf_t < hi)] = g
    one_leaf = F.one_hot(leaf_t, num_leaves).permute(0, 3, 1, 2).to(s.dtype)
    one_top = F.one_hot(top_t, num_top).permute(0, 3, 1, 2).to(s.dtype)
    top = s[:, num_leaves:num_leaves + num_top]
    top_max = torch.stack([torch.cat([s[:, lo:hi], top[:, g:g + 1]], 1).max(1)[0] for g, (lo, hi) in enumerate(groups)], 1)
    leaf_min = s[:, :num_leaves].clone()
    for g, (lo, hi) in enumerate(groups):
        leaf_min[:, lo:hi] = torch.minimum(s[:, lo:hi], top[:, g:g + 1])
    valid = (~void)[:, None].to(s.dtype)
    n = valid.sum()
    loss = ((-one_leaf * torch.log(leaf_min + eps) - (1 - one_leaf) * torch.log(1 - s[:, :num_leaves] + eps))
            * valid).sum() / n / num_leaves
    loss = loss + ((-one_top * torch.log(top + eps) - (1 - one_top) * torch.log(1 - top_max + eps))
                   * valid).sum() / n / num_top
    ce_leaf = F.cross_entropy(logits[:, :num_leaves], label, ignore_index=255, reduction="none").mean()
    top_label = torch.where(void, torch.full_like(top_t, 255), top_t)
    ce_top = F.cross_entropy(logits[:, num_leaves:], top_label, ignore_index=255, reduction="none").mean()
    return 5 * loss + ce_leaf + ce_top


def per_pixel_definition(logits, target, h: ClassHierarchy, ignore_index=255, eps=1e-8):
    """The docstring's formula pixel by pixel, node by node, in Python floats."""
    z = logits.movedim(1, -1).reshape(-1, h.num_channels).tolist()
    t = target.reshape(-1).tolist()
    sig = [[1 / (1 + math.exp(-x)) for x in row] for row in z]
    size = {lvl: len(h.nodes_at_level(lvl)) for lvl in range(1, h.height + 1)}
    top = list(h.nodes_at_level(1))
    valid = [y != ignore_index for y in t]
    num_valid, tm, ce = sum(valid), 0.0, 0.0
    for row, sr, y, ok in zip(z, sig, t, valid):
        if not ok:
            continue
        path = set(h.ancestors(y))
        for v in range(h.num_channels):
            if v in path:
                term = -math.log(min(sr[a] for a in h.ancestors(v)) + eps)
            else:
                term = -math.log(1 - max(sr[d] for d in h.descendants(v)) + eps)
            tm += term / size[h.level(v)]
        for channels, cls in ((list(h.leaves), y), (top, h.ancestor_at_level(y, 1))):
            m = max(row[c] for c in channels)
            ce += m + math.log(sum(math.exp(row[c] - m) for c in channels)) - row[cls]
    return 5 * tm / num_valid + ce / len(t)


def test_equals_the_authors_cityscapes_form():
    h = cityscapes_like()
    groups = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 13), (13, 19)]
    assert all(h.names[19 + g] == h.names[h.parents[lo]] for g, (lo, _) in enumerate(groups))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 26, 5, 7, generator=g, dtype=torch.float64) * 3
    label = torch.randint(0, 19, (2, 5, 7), generator=g)
    label[0, :2] = 255
    before = label.clone()
    ours = released_hiera_loss(logits, label, h)
    assert torch.equal(label, before), "the caller's target is not modified"
    assert ours.item() == pytest.approx(authors_cityscapes_form(logits, label, groups).item(), rel=1e-12)
    # void_in_ce: the released code's in-place side effect (void -> label 0 before its CE terms)
    mutated = torch.where(label == 255, torch.zeros_like(label), label)
    expect = _ce_both(logits, mutated, groups) - _ce_both(logits, label, groups)
    got = released_hiera_loss(logits, label, h, void_in_ce=True) - ours
    assert got.item() == pytest.approx(expect.item(), rel=1e-10)


def _ce_both(logits, label, groups):
    num_leaves = groups[-1][1]
    top_t = torch.full_like(label, 255)
    for g, (lo, hi) in enumerate(groups):
        top_t[(label >= lo) & (label < hi)] = g
    return (F.cross_entropy(logits[:, :num_leaves], label, ignore_index=255, reduction="none").mean()
            + F.cross_entropy(logits[:, num_leaves:], top_t, ignore_index=255, reduction="none").mean())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equals_the_definition_on_random_trees(seed):
    h = random_tree(seed, max_depth=3, max_channels=14)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, h.num_channels, 3, 4, generator=g, dtype=torch.float64) * 2
    leaves = torch.tensor(h.leaves)
    target = leaves[torch.randint(len(leaves), (1, 3, 4), generator=g)]
    target[0, 0, 0] = 255
    ours = released_hiera_loss(logits, target, h)
    assert ours.item() == pytest.approx(per_pixel_definition(logits, target, h), rel=1e-12)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: released_hiera_loss(x, target, h), (logits,))


def test_upsampled_and_in_the_hierarchical_loss():
    h = cityscapes_like()
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 26, 4, 4, generator=g)
    target = torch.randint(0, 19, (1, 16, 16), generator=g)
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    direct = released_hiera_loss(up, target, h)
    assert released_hiera_loss(logits, target, h, upsample="bilinear").item() == pytest.approx(direct.item())
    loss = HierarchicalLoss(h, segmentation="released", triplet=None, upsample="bilinear")
    assert loss(logits, target)["seg"].item() == pytest.approx(direct.item())
    with pytest.raises(RuntimeError, match="backend 'cpu' does not implement released_hiera_loss"):
        released_hiera_loss(logits, target, h, backend="cpu", upsample="bilinear")


def test_beta_steps_of_the_authors_code():
    """The released code: beta = (1 + cos((step - 80000) / 80000 * pi)) / 4 before step 80000, then 0.5,
    whatever the schedule length; this is the cosine of the paper over a fixed 80000 steps."""
    for step in (0, 1, 20000, 40000, 79999, 80000, 200000):
        released = 0.25 * (1 + math.cos((step - 80000) / 80000 * math.pi)) if step < 80000 else 0.5
        assert cosine_beta(step, 80000, 0.5) == pytest.approx(released, abs=1e-12)
    from hssn.engine import builders
    from hssn.engine.config import load_config

    cfg = load_config("deeplabv3plus_r101_mapillary_v2", ["loss.beta_steps=80000"])
    assert builders.build_loss(cfg, cityscapes_like(), 255).beta_steps == 80000
    assert builders.build_loss(load_config("deeplabv3plus_r101_mapillary_v2"), cityscapes_like(), 255).beta_steps \
        == 240000
    with pytest.raises(ValueError, match="beta_steps"):
        load_config("synthetic", ["loss.beta_steps=0"])
