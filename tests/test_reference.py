"""The reference ops: hand-computed cases, properties over random trees, gradcheck, bad input."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hssn_kernels as hk
from hssn_kernels import ClassHierarchy
import oracle as R
from trees import cityscapes_like, random_tree

SMALL = ClassHierarchy.from_nested({"P": {"a": {}, "b": {}}, "Q": {"c": {}}})  # channels a b c P Q


def logsig(x):
    return -math.log1p(math.exp(-x))


# Three pixels: target a, target c, ignored.
Z = torch.tensor([[1.0, -1.0, 0.5, 2.0, -0.5], [0.3, 0.2, -1.0, -2.0, 1.5], [9.0, 9.0, 9.0, 9.0, 9.0]],
                 dtype=torch.float64)
T = torch.tensor([0, 2, 255])


def test_hand_computed_tree_min():
    # pixel 1 (a): P: min{P}=2; a: min{a,P}=1; b: max{b}=-1; c: max{c}=.5; Q: max{Q,c}=.5
    l1 = -logsig(2.0) - logsig(1.0) - logsig(1.0) - 2 * logsig(-0.5)
    # pixel 2 (c): Q: min{Q}=1.5; c: min{c,Q}=-1; a: .3; b: .2; P: max{P,a,b}=.3
    l2 = -logsig(1.5) - logsig(-1.0) - 2 * logsig(-0.3) - logsig(-0.2)
    per = R.tree_min_loss(Z, T, SMALL, reduction="none")
    assert per.tolist() == pytest.approx([l1, l2, 0.0], rel=1e-12)
    assert R.tree_min_loss(Z, T, SMALL, reduction="sum").item() == pytest.approx(l1 + l2, rel=1e-12)
    z = Z.clone().requires_grad_()
    R.tree_min_loss(z, T, SMALL).backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # pixel 2: a receives its own term and P's term (P's max is at a); P receives nothing.
    assert z.grad[1, 0].item() == pytest.approx(2 * sig(0.3) / 2, rel=1e-12)
    assert z.grad[1, 3].item() == 0.0
    assert z.grad[2].abs().sum().item() == 0.0  # ignored pixel


def test_hand_computed_focal():
    g = 2.0
    fpos = lambda x: -((1 - 1 / (1 + math.exp(-x))) ** g) * logsig(x)  # noqa: E731
    fneg = lambda x: -((1 / (1 + math.exp(-x))) ** g) * logsig(-x)  # noqa: E731
    l1 = fpos(2.0) + fpos(1.0) + fneg(-1.0) + 2 * fneg(0.5)
    per = R.focal_tree_min_loss(Z, T, SMALL, gamma=g, reduction="none")
    assert per[0].item() == pytest.approx(l1, rel=1e-12)
    assert R.focal_tree_min_loss(Z, T, SMALL, gamma=g).item() == pytest.approx(per.sum().item() / 2, rel=1e-12)


def test_ties_send_gradient_to_lowest_channel():
    z = torch.zeros(1, 5, dtype=torch.float64, requires_grad=True)
    R.tree_min_loss(z, torch.tensor([0]), SMALL, reduction="sum").backward()
    # Q's max over {c, Q} ties: c (channel 2) takes Q's term as well as its own; Q gets nothing.
    g = z.grad[0]
    assert g[4].item() == 0.0
    assert g[2].item() == pytest.approx(2 * 0.5)
    # a's min over {a, P} ties: a (channel 0) wins.
    assert g[0].item() == pytest.approx(-0.5) and g[3].item() == pytest.approx(-0.5)


def test_hand_computed_argmax_and_levels():
    assert R.hierarchical_argmax(Z[:2], SMALL).tolist() == [0, 2]
    assert R.hierarchical_argmax(torch.zeros(1, 5), SMALL).tolist() == [0]  # tie -> lowest leaf
    leaf, levels = hk.hierarchical_argmax(Z[:2], SMALL, levels=True)
    assert [m.tolist() for m in levels] == [[3, 4], [0, 2]]
    assert R.project_to_level(torch.tensor([0, 2, 255]), SMALL, 1).tolist() == [3, 4, 255]


def test_leaf_cross_entropy_and_bce_match_torch():
    z = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 2, 255, 0])
    valid = t != 255
    ce = torch.nn.functional.cross_entropy(z[valid][:, :3], t[valid])
    assert R.leaf_cross_entropy(z, t, SMALL).item() == pytest.approx(ce.item(), rel=1e-12)
    labels = SMALL.tables().is_ancestor[t[valid]].double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z[valid], labels, reduction="sum") / valid.sum()
    assert R.bce_loss(z, t, SMALL).item() == pytest.approx(bce.item(), rel=1e-12)


def test_hash32_matches_plain_integer_arithmetic():
    def h(x):
        x &= 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 1]
    assert R.hash32(torch.tensor(xs)).tolist() == [h(x) for x in xs]
    key = h(7)
    assert R.triplet_rand(7, torch.tensor([0, 5])).tolist() == [h((h(i ^ key) + key) & 0xFFFFFFFF) for i in (0, 5)]


def _draw_case(data, max_pixels=60):
    h = random_tree(data.draw(st.integers(0, 10_000)), max_depth=data.draw(st.integers(1, 6)),
                    max_channels=data.draw(st.integers(2, 200)), balanced=data.draw(st.booleans()),
                    shuffle=data.draw(st.booleans()))
    n = data.draw(st.integers(1, max_pixels))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    z = torch.randn(n, h.num_channels, generator=g, dtype=torch.float64) * 3
    leaves = torch.tensor(h.leaves)
    t = leaves[torch.randint(len(leaves), (n,), generator=g)]
    t[torch.rand(n, generator=g) < 0.2] = 255 if h.num_channels <= 255 else -1
    return h, z, t, (255 if h.num_channels <= 255 else -1)


PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(st.data())
def test_loss_properties(data):
    h, z, t, ii = _draw_case(data)
    ftm = R.focal_tree_min_loss(z, t, h, ignore_index=ii, reduction="none")
    tm = R.tree_min_loss(z, t, h, ignore_index=ii, reduction="none")
    bce = R.bce_loss(z, t, h, ignore_index=ii, reduction="none")
    assert (ftm >= 0).all() and (tm >= 0).all()
    assert (tm >= bce - 1e-9).all()  # tree-min pushes p toward the wrong side
    assert torch.equal(R.focal_tree_min_loss(z, t, h, gamma=0.0, ignore_index=ii, reduction="none"), tm)
    assert (ftm[t == ii] == 0).all()
    assert (R.focal_bce_loss(z, t, h, ignore_index=ii, reduction="none") <= bce + 1e-9).all()


@PROPS
@given(st.data())
def test_argmax_properties(data):
    h, z, _, _ = _draw_case(data)
    leaf = R.hierarchical_argmax(z, h)
    assert all(h.is_leaf(int(c)) for c in leaf)
    # the chosen leaf has the largest root-path score sum
    s = torch.sigmoid(z)
    sums = torch.stack([s[:, list(h.ancestors(c))].sum(1) for c in h.leaves], 1)
    chosen = torch.stack([s[i, list(h.ancestors(int(c)))].sum() for i, c in enumerate(leaf)])
    assert torch.allclose(chosen, sums.max(1).values)
    for lvl in range(1, h.height):
        fine, coarse = R.project_to_level(leaf, h, lvl + 1), R.project_to_level(leaf, h, lvl)
        assert torch.equal(R.project_to_level(fine, h, lvl), coarse)


@PROPS
@given(st.data())
def test_triplet_properties(data):
    h, _, t, ii = _draw_case(data, max_pixels=200)
    seed = data.draw(st.integers(0, 2**32 - 1))
    mode = data.draw(st.sampled_from(["tree", "vanilla"]))
    a, p, n = R.sample_triplets(t, h, 50, seed=seed, ignore_index=ii, mode=mode)
    assert a.numel() <= 50 and a.shape == p.shape == n.shape
    assert (t[a] != ii).all() and (t[p] != ii).all() and (t[n] != ii).all()
    li = h.tables().leaf_index.long()
    d = h.tree_distance
    dap, dan = d[li[t[a]], li[t[p]]], d[li[t[a]], li[t[n]]]
    assert (dap < dan).all()
    if mode == "vanilla":
        assert (dap == 0).all()
    assert ((a != p) & (a != n) & (p != n)).all()
    again = R.sample_triplets(t, h, 50, seed=seed, ignore_index=ii, mode=mode)
    assert all(torch.equal(x, y) for x, y in zip((a, p, n), again))


def test_triplets_edge_cases():
    h = cityscapes_like()
    one_class = torch.zeros(4, 4, dtype=torch.long)
    assert R.sample_triplets(one_class, h, 10)[0].numel() == 0
    assert R.sample_triplets(torch.full((4, 4), 255), h, 10)[0].numel() == 0
    t = torch.randint(0, 19, (2, 8, 8))
    a1 = R.sample_triplets(t, h, 30, seed=1)[0]
    a2 = R.sample_triplets(t, h, 30, seed=2)[0]
    assert a1.numel() == 30 and not torch.equal(a1, a2)
    e = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss = R.tree_triplet_loss(e, torch.zeros(2, 4, 4, dtype=torch.long), h)
    loss.backward()
    assert loss.item() == 0.0 and e.grad.abs().sum() == 0


def test_triplet_loss_hand_computed():
    h = SMALL
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # pixels 0,1,2
    t = torch.tensor([0, 1, 2])  # a, b (psi 2 from a), c (psi 4 from a)
    a, p, n = R.sample_triplets(t, h, 5, seed=0)
    loss = R.tree_triplet_loss(e, t, h, 5, seed=0)
    d = lambda i, j: (1 - (e[i] @ e[j]) / (e[i].norm() * e[j].norm())) / 2  # noqa: E731
    li = h.tables().leaf_index.long()
    expect = []
    for i, j, k in zip(a.tolist(), p.tolist(), n.tolist()):
        gap = h.tree_distance[li[t[i]], li[t[k]]] - h.tree_distance[li[t[i]], li[t[j]]]
        m = 0.1 + 0.5 * gap.item() / (2 * h.height)
        expect.append(max(d(i, j) - d(i, k) + m, 0.0))
    assert a.numel() > 0
    assert loss.item() == pytest.approx(sum(float(x) for x in expect) / len(expect), rel=1e-12)


def _away_from_ties(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2).requires_grad_()


@pytest.mark.parametrize("fn", [R.focal_tree_min_loss, R.tree_min_loss, R.bce_loss, R.focal_bce_loss, R.leaf_cross_entropy])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_losses(fn, reduction):
    h = random_tree(4, max_channels=20)
    z = _away_from_ties((2, h.num_channels, 2, 3), 1)
    t = torch.tensor(h.leaves)[torch.randint(h.num_leaves, (2, 2, 3))]
    t[0, 0, 0] = 255
    assert torch.autograd.gradcheck(lambda x: fn(x, t, h, reduction=reduction), (z,))


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("margin", [True, False])
def test_gradcheck_triplet(distance, margin):
    h = cityscapes_like()
    e = _away_from_ties((2, 6, 4, 5), 2)
    t = torch.randint(0, 19, (2, 4, 5))
    assert torch.autograd.gradcheck(
        lambda x: R.tree_triplet_loss(x, t, h, 20, distance=distance, hierarchy_margin=margin), (e,))
    assert torch.autograd.gradcheck(lambda x: R.vanilla_triplet_loss(x, t, h, 20, distance=distance), (e,))


def test_low_precision_inputs_return_their_dtype():
    h = cityscapes_like()
    t = torch.randint(0, 19, (2, 3, 4))
    z = torch.randn(2, 26, 3, 4)
    for dt in (torch.float16, torch.bfloat16):
        zz = z.to(dt).requires_grad_()
        loss = R.focal_tree_min_loss(zz, t, h)
        loss.backward()
        assert loss.dtype == dt and zz.grad.dtype == dt
        assert loss.float().item() == pytest.approx(R.focal_tree_min_loss(z.to(dt).float(), t, h).item(), rel=1e-2)


def test_all_ignored_and_empty():
    h = cityscapes_like()
    z = torch.randn(2, 26, 3, 4, requires_grad=True)
    t = torch.full((2, 3, 4), 255)
    loss = hk.focal_tree_min_loss(z, t, h)
    loss.backward()
    assert loss.item() == 0.0 and z.grad.abs().sum() == 0
    empty = torch.randn(0, 26)
    assert hk.focal_tree_min_loss(empty, torch.zeros(0, dtype=torch.long), h).item() == 0.0
    assert hk.focal_tree_min_loss(empty, torch.zeros(0, dtype=torch.long), h, reduction="none").shape == (0,)
    assert hk.hierarchical_argmax(empty, h).shape == (0,)


def test_nan_policy():
    h = cityscapes_like()
    z = torch.randn(1, 26, 2, 2)
    z[0, 5, 1, 1] = float("nan")
    t = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="NaN"):
        hk.focal_tree_min_loss(z, t, h)
    per = hk.focal_tree_min_loss(z, t, h, reduction="none", nan_policy="propagate")
    assert torch.isnan(per[0, 1, 1]) and torch.isfinite(per[0, 0]).all()
    t[0, 1, 1] = 255  # a NaN at an ignored pixel is never read
    assert torch.isfinite(hk.focal_tree_min_loss(z, t, h))


def test_inputs_not_mutated():
    h = cityscapes_like()
    z = torch.randn(2, 26, 3, 4)
    t = torch.randint(0, 19, (2, 3, 4))
    t[0, 0, 0] = 255
    z0, t0 = z.clone(), t.clone()
    hk.focal_tree_min_loss(z, t, h)
    hk.hierarchical_argmax(z, h)
    hk.tree_triplet_loss(z, t, h, 10)
    hk.project_to_level(t, h, 1)
    assert torch.equal(z, z0) and torch.equal(t, t0)


@pytest.mark.parametrize(
    "make, exc, message",
    [
        (lambda h: (torch.randn(2, 25, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long)), ValueError, "25 channels but the hierarchy has 26"),
        (lambda h: (torch.randn(2, 26, 3, 4), torch.full((2, 3, 4), 19)), ValueError, r"values \[19\] that are neither leaf"),
        (lambda h: (torch.randn(2, 26, 3, 4), torch.full((2, 3, 4), -3)), ValueError, "neither leaf"),
        (lambda h: (torch.randn(2, 26, 3, 4), torch.zeros(2, 3, 4)), TypeError, "integer tensor"),
        (lambda h: (torch.randn(2, 26, 3, 4), torch.zeros(2, 3, 5, dtype=torch.long)), ValueError, "does not match"),
        (lambda h: (torch.randn(2, 26, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long, device="meta")), ValueError, "is on meta"),
        (lambda h: (torch.randint(0, 3, (2, 26, 3, 4)), torch.zeros(2, 3, 4, dtype=torch.long)), TypeError, "floating-point"),
        (lambda h: (torch.randn(26, 3, 4), torch.zeros(3, 4, dtype=torch.long)), ValueError, r"\(B, C, H, W\) or \(N, C\)"),
    ],
)
def test_bad_input(make, exc, message):
    h = cityscapes_like()
    z, t = make(h)
    with pytest.raises(exc, match=message):
        hk.focal_tree_min_loss(z, t, h)
    with pytest.raises(exc, match=message):
        R.focal_tree_min_loss(z, t, h)


def test_bad_options():
    h = cityscapes_like()
    z, t = torch.randn(4, 26), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="reduction"):
        hk.focal_tree_min_loss(z, t, h, reduction="avg")
    with pytest.raises(ValueError, match="gamma"):
        hk.focal_tree_min_loss(z, t, h, gamma=-1.0)
    with pytest.raises(ValueError, match="ignore_index 3 is channel 3"):
        hk.focal_tree_min_loss(z, t, h, ignore_index=3)
    with pytest.raises(RuntimeError, match="unknown backend"):
        hk.focal_tree_min_loss(z, t, h, backend="fortran")
    with pytest.raises(ValueError, match="seed"):
        hk.sample_triplets(t, h, seed=-1)
    with pytest.raises(ValueError, match="distance"):
        hk.tree_triplet_loss(z, t, h, distance="manhattan")
    with pytest.raises(TypeError, match="ClassHierarchy"):
        hk.focal_tree_min_loss(z, t, [1, 2])


def test_functional_reference_backend_matches_reference():
    h = random_tree(7)
    z = torch.randn(3, h.num_channels, 5, 6, dtype=torch.float64)
    t = torch.tensor(h.leaves)[torch.randint(h.num_leaves, (3, 5, 6))]
    for red in ("mean", "sum", "none"):
        assert torch.equal(hk.focal_tree_min_loss(z, t, h, reduction=red, backend="reference"),
                           R.focal_tree_min_loss(z, t, h, reduction=red))
    assert torch.equal(hk.hierarchical_argmax(z, h, backend="reference"), R.hierarchical_argmax(z, h))
    e = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    assert torch.equal(hk.tree_triplet_loss(e, t, h, backend="reference", seed=3), R.tree_triplet_loss(e, t, h, seed=3))


def test_modules_and_beta_schedule():
    h = cityscapes_like()
    assert hk.cosine_beta(0, 100) == 0.0
    assert hk.cosine_beta(50, 100) == pytest.approx(0.25)
    assert hk.cosine_beta(100, 100) == pytest.approx(0.5) and hk.cosine_beta(500, 100) == pytest.approx(0.5)
    z = torch.randn(2, 26, 8, 8, requires_grad=True)
    e = torch.randn(2, 16, 4, 4, requires_grad=True)
    t = torch.randint(0, 19, (2, 8, 8))
    loss = hk.HierarchicalLoss(h, beta_steps=100, backend="reference")
    out = loss(z, t, e, step=50)
    assert out["loss"].item() == pytest.approx(out["seg"].item() + 0.25 * out["triplet"].item(), rel=1e-6)
    out["loss"].backward()
    assert e.grad is not None and z.grad is not None
    for seg in ("ftm", "tm", "bce", "focal", "cce"):
        for trip in ("hierarchy", "constant", "vanilla", None):
            assert torch.isfinite(hk.HierarchicalLoss(h, seg, triplet=trip)(z, t, e)["loss"])
    with pytest.raises(ValueError, match="segmentation loss"):
        hk.HierarchicalLoss(h, "dice")


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_torch_compile_fullgraph_through_functional_api(backend):
    """The reference's triplet sampling is data-dependent (nonzero), so it compiles without triplets."""
    if backend == "auto" and hk.backends.unavailable_reason("cpu", torch.device("cpu")) is not None:
        pytest.skip("native CPU extension not built")
    h = cityscapes_like()
    z = torch.randn(2, 26, 5, 6, requires_grad=True)
    t = torch.randint(0, 19, (2, 5, 6))
    loss = hk.HierarchicalLoss(h, backend=backend, beta_steps=10, triplet=None if backend == "reference" else "hierarchy")

    def step(z, t):
        return loss(z, t, z[:, :8], step=5)["loss"] + hk.hierarchical_argmax(z, h, backend=backend).sum() * 0

    out = torch.compile(step, fullgraph=True, backend="aot_eager")(z, t)  # tracing + fake kernels + autograd; inductor codegen is slow on CI
    out.backward()
    assert out.item() == pytest.approx(step(z, t).item(), rel=1e-5)
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_torch_compile_dynamic_shapes_and_gamma():
    """dynamic=True makes the channel dim and gamma symbolic: the checks and the backend choice still trace
    (the fast backends; the reference's per-node Python loop specialises on the tree and is not traced so)."""
    backend = "auto"
    if hk.backends.unavailable_reason("cpu", torch.device("cpu")) is not None:
        pytest.skip("native CPU extension not built")
    h = cityscapes_like()

    def step(z, t, gamma):
        return hk.focal_tree_min_loss(z, t, h, gamma=gamma, backend=backend) \
            + hk.hierarchical_argmax(z, h, backend=backend).float().mean() * 0

    compiled = torch.compile(step, fullgraph=True, dynamic=True, backend="aot_eager")
    for shape, gamma in (((2, 5, 6), 2.0), ((3, 7, 9), 1.5)):
        z = torch.randn(shape[0], 26, *shape[1:], requires_grad=True)
        t = torch.randint(0, 19, shape)
        out = compiled(z, t, gamma)
        out.backward()
        assert out.item() == pytest.approx(step(z, t, gamma).item(), rel=1e-5)
