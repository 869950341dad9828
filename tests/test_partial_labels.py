"""Labels at any depth (``partial_labels=True``): the reference against a float64 oracle written from the
semantics, every backend against the reference on random trees with random inner targets, gradcheck, and
leaf-only targets giving exactly the leaf-label results."""
import math

import pytest
import torch
import torch.nn.functional as F

import hssn_kernels as hk
from hssn_kernels import ClassHierarchy, native
from hssn_kernels import focal_tree_min as tri
import oracle as ref
from trees import DEVICE, TOL, poison_empty, random_tree

needs_native = pytest.mark.skipif(native.unavailable_reason(torch.device("cpu")) is not None,
                                  reason="native extension not built")
def _device(backend: str) -> str:
    """Where ``backend``'s cases run here: CUDA for "cuda", and for "triton" under HSSN_TEST_GPU=1; else the CPU."""
    return "cuda" if backend == "cuda" or (backend == "triton" and DEVICE == "cuda") else "cpu"


FAST = [b for b in ["cpu", "triton"] + (["cuda"] if DEVICE == "cuda" else [])
        if hk.backends.unavailable_reason(b, torch.device(_device(b))) is None]
"""The fast backends that run here, each on its device (:func:`on`): the Triton cases on ``trees.DEVICE``."""


def on(backend, *tensors):
    """``tensors`` on the device ``backend``'s cases run on (:func:`_device`)."""
    moved = tuple(x.to(_device(backend)) for x in tensors)
    return moved if len(moved) > 1 else moved[0]

# 3 levels: A -> {A1 -> {a, b}, A2 -> {c}}, B -> {d}, e (a leaf at level 1)
TREE = ClassHierarchy.from_nested({"A": {"A1": {"a": {}, "b": {}}, "A2": {"c": {}}}, "B": {"d": {}}, "e": {}})
N = {n: TREE.names.index(n) for n in TREE.names}


def sig(x):
    return 1 / (1 + math.exp(-x))


def oracle(z: list[float], t: int, h: ClassHierarchy, gamma: float) -> float:
    """The semantics, node by node: positive terms on A(t) (min over the node's ancestors), negative terms
    for nodes neither above nor below t (max over the node's descendants), nothing for t's strict descendants."""
    path, below = set(h.ancestors(t)), set(h.descendants(t)) - {t}
    total = 0.0
    for v in range(h.num_channels):
        if v in below:
            continue
        if v in path:
            p = sig(min(z[a] for a in h.ancestors(v)))
            total += -((1 - p) ** gamma) * math.log(p)
        else:
            p = sig(max(z[d] for d in h.descendants(v)))
            total += -(p ** gamma) * math.log(1 - p)
    return total


def random_node_targets(h, shape, gen, ignore_frac=0.15, inner_frac=0.5):
    """Targets over every node (inner nodes with probability about ``inner_frac``) and some 255."""
    leaves, inner = torch.tensor(h.leaves), torch.tensor([c for c in range(h.num_channels) if not h.is_leaf(c)])
    t = leaves[torch.randint(len(leaves), shape, generator=gen)]
    if len(inner):
        pick = inner[torch.randint(len(inner), shape, generator=gen)]
        t = torch.where(torch.rand(shape, generator=gen) < inner_frac, pick, t)
    return torch.where(torch.rand(shape, generator=gen) < ignore_frac, torch.full_like(t, 255), t)


# ----------------------------------------------------------------------------- the reference = the semantics
def test_hand_computed_inner_target_at_level_1():
    """Target A (level 1), gamma 0: terms for A (positive), B, d, e (negative); none for A1, A2, a, b, c."""
    z = torch.zeros(TREE.num_channels, dtype=torch.float64)
    for name, value in {"A": 1.0, "A1": 2.0, "a": -1.0, "b": 3.0, "B": -2.0, "d": 0.5, "e": -0.5}.items():
        z[N[name]] = value
    expected = (-math.log(sig(1.0)) - math.log(1 - sig(max(-2.0, 0.5))) - math.log(1 - sig(0.5))
                - math.log(1 - sig(-0.5)))
    got = ref.focal_tree_min_loss(z[None], torch.tensor([N["A"]]), TREE, gamma=0.0, partial_labels=True)
    assert got.item() == pytest.approx(expected, rel=1e-14)


def test_hand_computed_inner_target_at_level_2_with_focal_weights():
    """Target A1 (level 2), gamma 2: positives A (min over {A}) and A1 (min over {A, A1}); negatives A2, c,
    B, d, e; no terms for a, b."""
    z = torch.zeros(TREE.num_channels, dtype=torch.float64)
    for name, value in {"A": 0.3, "A1": -0.7, "a": 4.0, "b": 5.0, "A2": 1.5, "c": -1.0, "B": 0.1, "d": 0.2,
                        "e": -3.0}.items():
        z[N[name]] = value

    def pos(x):
        p = sig(x)
        return -((1 - p) ** 2) * math.log(p)

    def neg(x):
        p = sig(x)
        return -(p ** 2) * math.log(1 - p)

    expected = pos(0.3) + pos(min(0.3, -0.7)) + neg(max(1.5, -1.0)) + neg(-1.0) + neg(max(0.1, 0.2)) + neg(0.2) \
        + neg(-3.0)
    got = ref.focal_tree_min_loss(z[None], torch.tensor([N["A1"]]), TREE, gamma=2.0, partial_labels=True)
    assert got.item() == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(oracle(z.tolist(), N["A1"], TREE, 2.0), rel=1e-14)


@pytest.mark.parametrize("seed", range(4))
def test_reference_equals_the_oracle_on_random_trees(seed):
    h = random_tree(100 + seed, max_depth=4, max_channels=24)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(40, h.num_channels, generator=gen, dtype=torch.float64) * 3
    t = random_node_targets(h, (40,), gen, ignore_frac=0.0, inner_frac=0.7)
    got = ref.focal_tree_min_loss(z, t, h, gamma=2.0, reduction="none", partial_labels=True)
    want = torch.tensor([oracle(z[i].tolist(), int(t[i]), h, 2.0) for i in range(40)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_leaf_targets_give_exactly_the_leaf_loss_and_inner_targets_need_the_flag():
    h = random_tree(5, max_depth=3, max_channels=20)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, h.num_channels, 4, 5, generator=gen)
    t = random_node_targets(h, (2, 4, 5), gen, inner_frac=0.0)
    for fn in (ref.focal_tree_min_loss, ref.bce_loss, ref.leaf_cross_entropy, ref.released_hiera_loss):
        assert torch.equal(fn(z, t, h, partial_labels=True), fn(z, t, h))
    inner = next(c for c in range(h.num_channels) if not h.is_leaf(c))
    t[0, 0, 0] = inner
    with pytest.raises(ValueError, match="neither leaf channel ids"):
        hk.focal_tree_min_loss(z, t, h, backend="reference")
    hk.focal_tree_min_loss(z, t, h, backend="reference", partial_labels=True)
    t[0, 0, 0] = h.num_channels  # still no channel: an error with the flag too
    with pytest.raises(ValueError, match="neither channel ids"):
        hk.focal_tree_min_loss(z, t, h, backend="reference", partial_labels=True)


def test_gradcheck_with_inner_targets():
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, TREE.num_channels, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    t = random_node_targets(TREE, (2, 3, 3), gen, inner_frac=0.6)
    for fn in (ref.focal_tree_min_loss, ref.bce_loss, ref.leaf_cross_entropy, ref.released_hiera_loss):
        assert torch.autograd.gradcheck(lambda x: fn(x, t, TREE, partial_labels=True), (z,))


def test_unknown_nodes_get_no_gradient():
    z = torch.randn(1, TREE.num_channels, dtype=torch.float64, requires_grad=True)
    ref.focal_tree_min_loss(z, torch.tensor([N["A1"]]), TREE, partial_labels=True).backward()
    assert z.grad[0, N["a"]] == 0 and z.grad[0, N["b"]] == 0 and z.grad[0, N["A1"]] != 0


def test_ablation_losses_follow_the_rule():
    """BCE: no term below the label; CCE: -log of the label subtree's probability (softmax over leaves)."""
    z = torch.randn(1, TREE.num_channels, dtype=torch.float64)
    t = torch.tensor([N["A1"]])
    keep = [c for c in range(TREE.num_channels) if c not in (N["a"], N["b"])]
    labels = torch.tensor([float(c in TREE.ancestors(N["A1"])) for c in range(TREE.num_channels)], dtype=torch.float64)
    bce = F.binary_cross_entropy_with_logits(z[0, keep], labels[keep], reduction="sum")
    assert ref.bce_loss(z, t, TREE, partial_labels=True).item() == pytest.approx(bce.item(), rel=1e-12)
    leaf_z = z[0, list(TREE.leaves)]
    sub = [TREE.leaves.index(N["a"]), TREE.leaves.index(N["b"])]
    cce = torch.logsumexp(leaf_z, 0) - torch.logsumexp(leaf_z[sub], 0)
    assert ref.leaf_cross_entropy(z, t, TREE, partial_labels=True).item() == pytest.approx(cce.item(), rel=1e-12)


# ----------------------------------------------------------------------------- every backend = the reference
def _loss_and_grad(backend, z, t, h, reduction, weights, **kw):
    z, t, weights = on(backend, z, t, weights)
    x = z.detach().clone().requires_grad_()
    loss = hk.focal_tree_min_loss(x, t, h, reduction=reduction, backend=backend, partial_labels=True, **kw)
    (loss.float() * weights).sum().backward()
    return loss.detach().float().cpu(), x.grad.float().cpu()


@needs_native
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_backends_match_the_reference(backend, seed, reduction, monkeypatch):
    monkeypatch.setattr(tri._tu, "empty", poison_empty)
    h = random_tree(200 + seed, max_depth=4, max_channels=40)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2, h.num_channels, 5, 7, generator=gen) * 3
    t = random_node_targets(h, (2, 5, 7), gen)
    w = torch.rand(2, 5, 7, generator=gen) if reduction == "none" else torch.tensor(1.0)
    la, ga = _loss_and_grad("reference", z, t, h, reduction, w)
    lb, gb = _loss_and_grad(backend, z, t, h, reduction, w)
    torch.testing.assert_close(lb, la, **TOL[torch.float32])
    torch.testing.assert_close(gb, ga, **TOL[torch.float32])


@needs_native
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_backends_in_every_dtype_and_on_views(backend, dtype):
    h = random_tree(300, max_depth=3, max_channels=30)
    gen = torch.Generator().manual_seed(3)
    big = (torch.randn(2, h.num_channels, 6, 16, generator=gen) * 2).to(dtype)
    z = big[..., ::2]  # non-contiguous
    t = random_node_targets(h, (2, 6, 8), gen).to(torch.int32)
    la, ga = _loss_and_grad("reference", z, t, h, "mean", torch.tensor(1.0))
    lb, gb = _loss_and_grad(backend, z, t, h, "mean", torch.tensor(1.0))
    tol = TOL[dtype] if dtype != torch.float64 else dict(rtol=1e-6, atol=1e-7)  # native fp64 loss comes back in fp32
    torch.testing.assert_close(lb, la, **tol)
    torch.testing.assert_close(gb, ga, **tol)


@needs_native
@pytest.mark.parametrize("backend", FAST)
def test_fused_upsampling_with_inner_targets(backend):
    h = random_tree(400, max_depth=3, max_channels=25)
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(2, h.num_channels, 4, 5, generator=gen, dtype=torch.float64)
    t = random_node_targets(h, (2, 13, 17), gen)
    for reduction in ("mean", "none"):
        w = torch.rand(2, 13, 17, generator=gen, dtype=torch.float64) if reduction == "none" else torch.tensor(1.0)
        la, ga = _loss_and_grad("reference", z, t, h, reduction, w, upsample="bilinear")
        lb, gb = _loss_and_grad(backend, z, t, h, reduction, w, upsample="bilinear")
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6)


@needs_native
@pytest.mark.parametrize("backend", FAST)
def test_leaf_targets_are_bit_identical_with_the_flag(backend):
    h = random_tree(500, max_depth=3, max_channels=30)
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(2, h.num_channels, 5, 6, generator=gen)
    z, t = on(backend, z, random_node_targets(h, (2, 5, 6), gen, inner_frac=0.0))
    for reduction in ("mean", "none"):
        a = z.clone().requires_grad_()
        b = z.clone().requires_grad_()
        la = hk.focal_tree_min_loss(a, t, h, reduction=reduction, backend=backend)
        lb = hk.focal_tree_min_loss(b, t, h, reduction=reduction, backend=backend, partial_labels=True)
        la.sum().backward()
        lb.sum().backward()
        assert torch.equal(la, lb) and torch.equal(a.grad, b.grad)


@needs_native
@pytest.mark.parametrize("backend", FAST)
def test_inner_label_without_the_flag_is_nan_when_unvalidated(backend):
    """validate=False (the training path) keeps today's rule for an inner label without the flag: NaN."""
    t, z = on(backend, torch.tensor([N["A1"], N["a"]]), torch.randn(2, TREE.num_channels))
    per = hk.focal_tree_min_loss(z, t, TREE, reduction="none", backend=backend, validate=False, nan_policy="propagate")
    assert torch.isnan(per[0]) and torch.isfinite(per[1])


def test_opcheck_with_the_partial_flag():
    if native.unavailable_reason(torch.device("cpu")) is not None:
        pytest.skip("native extension not built")
    tabs = TREE.tables("cpu")
    z = torch.randn(2, TREE.num_channels, 3, 3, requires_grad=True)
    t = random_node_targets(TREE, (2, 3, 3), torch.Generator().manual_seed(6))
    torch.library.opcheck(torch.ops.hssn.ftm_forward,
                          (z, t, tabs.parent, tabs.bottom_up, tabs.ancestors, tabs.dfs, 2.0, 255, 2, True, True))


# ----------------------------------------------------------------------------- triplets
@needs_native
@pytest.mark.parametrize("backend", ["reference"] + FAST)
def test_triplets_leave_inner_pixels_out(backend):
    gen = torch.Generator().manual_seed(7)
    t = random_node_targets(TREE, (2, 8, 8), gen, ignore_frac=0.1, inner_frac=0.5)
    a, p, n = (x.cpu() for x in hk.sample_triplets(on(backend, t), TREE, 64, seed=3, backend=backend,
                                                    partial_labels=True))
    flat = t.reshape(-1)
    used = flat[torch.cat([a, p, n])]
    assert len(a) > 0 and all(TREE.is_leaf(int(c)) for c in used.unique())
    only_leaves = hk.leaf_labels_only(t, TREE, 255)
    a2, p2, n2 = hk.sample_triplets(only_leaves, TREE, 64, seed=3, backend="reference")
    assert torch.equal(a, a2) and torch.equal(p, p2) and torch.equal(n, n2)
    emb = torch.randn(2, 8, 8, 8, generator=gen)
    loss = hk.tree_triplet_loss(*on(backend, emb, t), TREE, 64, seed=3, backend=backend, partial_labels=True)
    want = ref.tree_triplet_loss(emb, only_leaves, TREE, 64, seed=3)
    torch.testing.assert_close(loss.cpu(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="leaf channel ids"):
        hk.tree_triplet_loss(*on(backend, emb, t), TREE, 64, seed=3, backend=backend)


# ----------------------------------------------------------------------------- data and training
def test_folder_dataset_reads_inner_node_ids_only_with_the_flag(tmp_path):
    import numpy as np
    from PIL import Image

    import fixtures_datasets as fx
    from hssn.data import build_dataset

    fx.make_folder(tmp_path, "train")
    coarse = np.full((fx.H, fx.W), 3, dtype=np.uint8)  # "animal": known only up to the parent
    coarse[:, : fx.W // 2] = 0
    Image.fromarray(coarse).save(tmp_path / "labels" / "train" / "001.png")
    strict = build_dataset("folder", root=tmp_path)
    with pytest.raises(ValueError, match=r"001.png: label values \[3\]"):
        strict[[s[0] for s in strict.samples].index("001")]
    ds = build_dataset("folder", root=tmp_path, partial_labels=True)
    label = ds[[s[0] for s in ds.samples].index("001")]["label"]
    assert ds.partial_labels and set(label.unique().tolist()) == {0, 3}
    from hssn.engine import builders
    from hssn.engine.config import load_config

    cfg = load_config(None, ["data.name=folder", f"data.root={tmp_path}", "data.augment=false",
                             "data.partial_labels=true"])
    via_config = builders.build_dataset(cfg, "train")  # the one config key reaches the dataset
    assert via_config.partial_labels and len(via_config) == len(ds)
    Image.fromarray(np.full((fx.H, fx.W), 9, dtype=np.uint8)).save(tmp_path / "labels" / "train" / "002.png")
    with pytest.raises(ValueError, match=r"002.png: label values \[9\]"):
        ds[[s[0] for s in ds.samples].index("002")]


def test_mixed_dataset_and_the_synthetic_coarse_variant():
    from hssn.data import build_dataset
    from hssn.data.synthetic import HIERARCHY

    fine = build_dataset("synthetic", split="train", length=3, seed=1)
    mixed = build_dataset("mixed", split="train", parts=[
        {"name": "synthetic", "kwargs": {"length": 3, "seed": 1}},
        {"name": "synthetic", "kwargs": {"length": 2, "seed": 2, "coarse_fraction": 1.0, "coarse_level": 1}}])
    assert len(mixed) == 5 and mixed.partial_labels and not fine.partial_labels
    assert torch.equal(mixed[1]["label"], fine[1]["label"])
    coarse = mixed[4]["label"]
    assert all(HIERARCHY.level(int(c)) == 1 for c in coarse.unique())
    fine2 = build_dataset("synthetic", split="train", length=2, seed=2)
    assert torch.equal(coarse, HIERARCHY.leaf_to_level(1)[fine2[1]["label"]])  # same scene, coarser labels
    from hssn.data.mixed import MixedDataset

    with pytest.raises(ValueError, match="another class tree"):
        MixedDataset([fine, _other_tree()])
    with pytest.raises(ValueError, match="coarse_level"):
        build_dataset("synthetic", coarse_fraction=0.5, coarse_level=3)


def _other_tree():
    class Other(torch.utils.data.Dataset):
        hierarchy, ignore_index = TREE, 255

        def __len__(self):
            return 1

    return Other()


def test_training_on_fine_and_coarse_labels_with_one_key(tmp_path):
    from hssn.engine.config import load_config
    from hssn.engine.trainer import Trainer

    parts = ('data.kwargs={parts: [{name: synthetic, kwargs: {size: 32, length: 8, seed: 0}}, '
             '{name: synthetic, kwargs: {size: 32, length: 8, seed: 5, coarse_fraction: 1.0, coarse_level: 2}}]}')
    common = ["data.name=mixed", parts, "data.train_kwargs={}", "data.val_kwargs={}", "train.iters=3", "train.batch_size=4",
              "train.log_interval=1", "train.progress=false", "eval.batch_size=8",
              f"train.output_dir={tmp_path}", "model.kwargs.head_channels=16", "model.kwargs.embed_dim=16"]
    with pytest.raises(ValueError, match="data.partial_labels=true"):
        Trainer(load_config("synthetic", common))
    result = Trainer(load_config("synthetic", common + ["data.partial_labels=true"])).fit()
    assert result["step"] == 3
    report = result["report"]  # the coarse half of the val scenes is scored at levels 2 and 1 only
    assert report["inner_pixels"] == 8 * 32 * 32 and report["num_pixels"] == 16 * 32 * 32



def test_the_coarse_label_experiment_builds_its_datasets():
    """``hssn demo --ablation coarse``: every variant's config builds; the mixed variants hold N fine + M
    coarse scenes and need the flag; validation is the same N-independent fine set for every variant."""
    from hssn.engine import builders
    from hssn.experiments import ablation
    from hssn.engine.config import load_config

    variants = ablation.coarse_experiment(load_config("synthetic", ablation.COARSE_SCHEDULE))
    assert set(variants) == {"fine", "fine_coarse", "fine_coarse_long", "fine_long"}
    sizes = {}
    for key, (_, overrides) in variants.items():
        cfg = load_config("synthetic", [*ablation.COARSE_SCHEDULE, *overrides])
        train, val = builders.build_dataset(cfg, "train"), builders.build_dataset(cfg, "val")
        sizes[key] = (len(train), train.partial_labels, len(val), val.partial_labels, cfg.train.iters)
    n, m = ablation.COARSE_FINE_SCENES, ablation.COARSE_EXTRA_SCENES
    long = ablation.COARSE_ITERS * (n + m) // n
    assert sizes == {"fine": (n, False, 100, False, ablation.COARSE_ITERS),
                     "fine_coarse": (n + m, True, 100, False, ablation.COARSE_ITERS),
                     "fine_coarse_long": (n + m, True, 100, False, long), "fine_long": (n, False, 100, False, long)}
