"""Hostile inputs: every backend gives the same limit values, errors and no crash."""
import os

import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import backends

TREE = hk.ClassHierarchy.from_nested({"a": {"a1": {}, "a2": {}}, "b": {"b1": {}, "b2": {}}})
from trees import DEVICE  # noqa: E402

FAST = [b for b in ("cpu", "triton") if backends.unavailable_reason(b, torch.device("cpu" if b == "cpu" else DEVICE))
        is None] + (["cuda"] if DEVICE == "cuda" else [])
"""The fast backends; "triton" (and "reference") cases run on ``trees.DEVICE``, "cuda" on CUDA (HSSN_TEST_GPU=1)."""


@pytest.fixture(autouse=True)
def _backend_device(request):
    """New tensors on the device of the case's backend (CPU for "cpu" and for cases without one)."""
    backend = getattr(request.node, "callspec", None) and request.node.callspec.params.get("backend")
    device = DEVICE if backend in ("triton", "cuda", "reference") else "cpu"
    torch.set_default_device(device)
    yield
    torch.set_default_device("cpu")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("value", [float("-inf"), float("inf")])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
def test_infinite_logits_give_the_reference_limits(backend, value, gamma):
    rows = []
    for c in range(TREE.num_channels):
        for leaf in TREE.leaves:
            x = torch.zeros(1, TREE.num_channels)
            x[0, c] = value
            rows.append((x, leaf))
    x = torch.cat([r[0] for r in rows])
    t = torch.tensor([r[1] for r in rows])
    expect = hk.focal_tree_min_loss(x, t, TREE, gamma, reduction="none", backend="reference", nan_policy="propagate")
    got = hk.focal_tree_min_loss(x, t, TREE, gamma, reduction="none", backend=backend, nan_policy="propagate")
    assert not torch.isnan(expect).any()
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parents", [[0.7, -1], ["0", -1], [True, -1], "01"])
def test_parents_must_be_ints(parents):
    with pytest.raises(TypeError, match="int"):
        hk.ClassHierarchy.from_parents(parents)


@pytest.mark.parametrize("name,text", [("tree.json", "{not json"), ("tree.yaml", "a: [1, 2\nb: {")])
def test_tree_file_parse_errors_name_the_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=name):
        hk.ClassHierarchy.from_json(path)


def test_tree_distance_table_matches_the_definition():
    from trees import random_tree

    for seed in range(20):
        tree = random_tree(seed, max_depth=6, max_channels=60)
        table = tree.tables().tree_distance
        for i, u in enumerate(tree.leaves):
            for j, v in enumerate(tree.leaves):
                assert int(table[i, j]) == tree.distance(u, v)


ALL = ["reference", *FAST]


def _inputs(dtype=torch.int64):
    torch.manual_seed(0)
    x = torch.randn(2, TREE.num_channels, 3, 4)
    t = torch.tensor(TREE.leaves)[torch.randint(0, 4, (2, 3, 4))].to(dtype)
    return x, t


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", [torch.int16, torch.int8, torch.bool, torch.float32])
def test_one_target_dtype_rule_on_every_backend(backend, dtype):
    x, t = _inputs()
    with pytest.raises(TypeError, match=r"integer tensor of channel ids \(int64, int32, uint8\)"):
        hk.focal_tree_min_loss(x, t.to(dtype), TREE, backend=backend)
    with pytest.raises(TypeError, match=r"integer tensor of channel ids"):
        hk.sample_triplets(t.to(dtype), TREE, backend=backend)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("bad,error", [(-1, ValueError), (2**62, ValueError), (10**8, ValueError), (1.5, TypeError),
                                       (True, TypeError)])
def test_num_triplets_checked_once_with_a_bound(backend, bad, error):
    _, t = _inputs()
    emb = torch.randn(2, 8, 3, 4)
    with pytest.raises(error, match="num_triplets"):
        hk.sample_triplets(t, TREE, num_triplets=bad, backend=backend)
    with pytest.raises(error, match="num_triplets"):
        hk.tree_triplet_loss(emb, t, TREE, num_triplets=bad, backend=backend)


FTM, ARGMAX, SAMPLE, TRIPLET, LEVEL = ("focal_tree_min_loss", "hierarchical_argmax", "sample_triplets",
                                      "tree_triplet_loss", "project_to_level")
BAD_CALLS = {
    "5 channels": (FTM, lambda x, t, e: ((x[:, :5], t, TREE), {})),
    "int16 target": (FTM, lambda x, t, e: ((x, t.to(torch.int16), TREE), {})),
    "target shape": (FTM, lambda x, t, e: ((x, t[:, :2], TREE), {})),
    "ignore_index a channel": (FTM, lambda x, t, e: ((x, t, TREE), {"ignore_index": 1})),
    "no leaf label": (FTM, lambda x, t, e: ((x, torch.full_like(t, 99), TREE), {})),
    "reduction": (FTM, lambda x, t, e: ((x, t, TREE), {"reduction": "avg"})),
    "upsample": (FTM, lambda x, t, e: ((x, t, TREE), {"upsample": "nearest"})),
    "gamma": (FTM, lambda x, t, e: ((x, t, TREE), {"gamma": -1.0})),
    "argmax size": (ARGMAX, lambda x, t, e: ((x, TREE), {"size": (0, 4)})),
    "argmax size of (N, C)": (ARGMAX, lambda x, t, e: ((x[:, :, 0, 0], TREE), {"size": (2, 2)})),
    "sampling mode": (SAMPLE, lambda x, t, e: ((t, TREE), {"mode": "random"})),
    "sampling target": (SAMPLE, lambda x, t, e: ((t.float(), TREE), {})),
    "num_triplets": (TRIPLET, lambda x, t, e: ((e, t, TREE), {"num_triplets": -1})),
    "seed": (TRIPLET, lambda x, t, e: ((e, t, TREE), {"seed": 1.5})),
    "distance": (TRIPLET, lambda x, t, e: ((e, t, TREE), {"distance": "l1"})),
    "embeddings": (TRIPLET, lambda x, t, e: ((e[:, :0], t, TREE), {})),
    "level": (LEVEL, lambda x, t, e: ((t, TREE, 4), {})),
}
"""A bad input of each rule: name -> (op, inputs -> (args, keywords))."""


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_every_backend_raises_the_validators_error(name):
    """One validator per op (``_checks.<op>_inputs``): every backend, the reference included, raises the same
    error for the same bad input, before any kernel runs."""
    x, t = _inputs()
    op, make = BAD_CALLS[name]
    args, kwargs = make(x, t, torch.randn(2, 8, 3, 4))
    errors = set()
    for backend in ALL if op != LEVEL else ["reference"]:
        with pytest.raises((TypeError, ValueError)) as info:
            getattr(hk, op)(*args, **kwargs, **({} if op == LEVEL else {"backend": backend}))
        errors.add((type(info.value), str(info.value)))
    assert len(errors) == 1, errors


@pytest.mark.parametrize("seed", [1.5, "3", True])
def test_seeds_must_be_ints(seed):
    _, t = _inputs()
    with pytest.raises(TypeError, match="seed"):
        hk.sample_triplets(t, TREE, seed=seed)


@pytest.mark.parametrize("backend", ALL)
def test_uint8_targets_with_a_negative_ignore_index(backend):
    x, t = _inputs()
    t8 = t.to(torch.uint8)
    expect = hk.focal_tree_min_loss(x, t, TREE, ignore_index=-1, backend="reference")
    got = hk.focal_tree_min_loss(x, t8, TREE, ignore_index=-1, backend=backend)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("label", [-1, 4, 10**6])
def test_bad_labels_with_validation_skipped_give_nan_not_a_crash(backend, label):
    x, t = _inputs()
    t[0, 0, 0] = label
    loss = hk.focal_tree_min_loss(x, t, TREE, reduction="none", backend=backend, validate=False,
                                  nan_policy="propagate")
    assert torch.isnan(loss[0, 0, 0]) and torch.isfinite(loss.flatten()[1:]).all()


@pytest.mark.parametrize("backend", ALL)
def test_double_backward_is_an_error_on_every_fast_backend(backend):
    x, t = _inputs()
    x.requires_grad_(True)
    loss = hk.focal_tree_min_loss(x, t, TREE, backend=backend)
    if backend == "reference":  # plain autograd: real second derivatives
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        assert g.requires_grad
        return
    with pytest.raises(RuntimeError, match="second derivative"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_meta_inputs_bool_maps_and_empty_embeddings_are_clear_errors():
    x, t = _inputs()
    with pytest.raises(ValueError, match="meta tensors are not supported"):
        hk.focal_tree_min_loss(x.to("meta"), t.to("meta"), TREE)
    with pytest.raises(TypeError, match="integer tensor"):
        hk.project_to_level(torch.zeros(3, dtype=torch.bool), TREE, 1)
    with pytest.raises(ValueError, match="E >= 1"):
        hk.tree_triplet_loss(torch.randn(2, 0, 3, 4), t, TREE)


@pytest.mark.parametrize("backend", ALL)
def test_a_nan_embedding_follows_the_nan_policy(backend):
    _, t = _inputs()
    emb = torch.randn(2, 8, 3, 4)
    emb[:, :, 1, :] = float("nan")  # every sampled triplet will likely touch a NaN row; some surely do
    loss = hk.tree_triplet_loss(emb, t, TREE, num_triplets=50, backend=backend, nan_policy="propagate")
    assert torch.isnan(loss)
    with pytest.raises(ValueError, match="tree-triplet loss is NaN"):
        hk.tree_triplet_loss(emb, t, TREE, num_triplets=50, backend=backend)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("norm", [1e-30, 1e25, 3e37])
def test_huge_and_tiny_embeddings_do_not_overflow(backend, distance, norm):
    """float32 rows of norm 1e25 (squares 1e50 > float32's 3.4e38) or 1e-30 (squares underflow): the loss and its
    gradient equal the float64 reference's on the same values (computed on max-abs-scaled rows), finite."""
    _, t = _inputs()
    unit = torch.nn.functional.normalize(torch.randn(2, 8, 3, 4, dtype=torch.float64), dim=1)
    unit[0, :, 0, 0] *= 0.25  # rows of different norms
    e64 = (unit * norm).requires_grad_(True)
    want = hk.tree_triplet_loss(e64, t, TREE, num_triplets=40, distance=distance, backend="reference")
    (want_grad,) = torch.autograd.grad(want, e64)
    e32 = e64.detach().float().requires_grad_(True)
    got = hk.tree_triplet_loss(e32, t, TREE, num_triplets=40, distance=distance, backend=backend)
    (got_grad,) = torch.autograd.grad(got, e32)
    assert torch.isfinite(got) and torch.isfinite(got_grad).all()
    assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6 * max(1.0, norm if distance == "euclidean" else 1))
    scale = float(want_grad.abs().max())
    assert torch.allclose(got_grad.double().cpu(), want_grad.cpu(), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("backend", ALL)
def test_fp64_results_stay_fp64(backend):
    x, t = _inputs()
    x = x.double().requires_grad_(True)
    assert hk.focal_tree_min_loss(x, t, TREE, backend=backend).dtype == torch.float64
    emb = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert hk.tree_triplet_loss(emb, t, TREE, num_triplets=20, backend=backend).dtype == torch.float64
    if backend == "cpu":
        torch.autograd.gradcheck(lambda a: hk.focal_tree_min_loss(a, t, TREE, backend="cpu"), (x,))


CRASH_SCRIPT = """
import os, sys, torch
os.environ["TRITON_INTERPRET"] = "1"
import hssn_kernels as hk
tree = hk.ClassHierarchy.from_nested({"a": {"a1": {}, "a2": {}}, "b": {"b1": {}, "b2": {}}})
backend = sys.argv[1]
x = torch.randn(1, 6, 4, 4)
for label in (10**9, -7, 4):
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[0, 1, 1] = label
    hk.focal_tree_min_loss(x, t, tree, backend=backend, validate=False, nan_policy="propagate")
    hk.hierarchical_argmax(x, tree, backend=backend)
    emb = torch.randn(1, 8, 4, 4)
    t[0, 0, 0] = 255  # pixel 0 void: unused triplet slots point there
    hk.tree_triplet_loss(emb, t, tree, num_triplets=500, backend=backend, validate=False, nan_policy="propagate")
print("survived")
"""


@pytest.mark.parametrize("backend", ALL)
def test_bad_labels_with_validation_skipped_never_crash(backend, tmp_path):
    """In a subprocess, so that a segfault fails this test instead of killing the run."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, backend], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize("backend", ALL)
def test_sampling_skips_labels_that_are_no_leaf(backend):
    _, t = _inputs()
    t[0, 0, :] = 4  # an inner node, validation skipped
    table, _, _ = hk.sample_triplets(t, TREE, num_triplets=100, backend=backend, validate=False), None, None
    a, p, n = table
    used = torch.cat([a, p, n])
    assert not ((used // 4 == 0) & (used < 4)).any()  # pixels 0..3 (row 0 of image 0) never drawn
    expect = hk.sample_triplets(t, TREE, num_triplets=100, backend="reference", validate=False)
    assert all(torch.equal(x, y) for x, y in zip(table, expect))


@pytest.mark.parametrize("backend", FAST)
def test_fused_losses_save_no_logits_and_allow_retain_graph(backend):
    x, t = _inputs()
    x.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s):
        loss = hk.focal_tree_min_loss(x, t, TREE, backend=backend)
    assert not any(s.data_ptr() == x.data_ptr() for s in saved)  # the fused gradient, not the logits
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x)
    assert torch.equal(g1, g2)


def test_compiled_path_with_bad_labels_gives_nan_not_a_crash():
    x, t = _inputs()
    t[0, 0, 0] = 10**6  # under torch.compile labels are never validated

    @torch.compile(fullgraph=True, backend="aot_eager")
    def loss_fn(z, y):
        return hk.focal_tree_min_loss(z, y, TREE, reduction="none", backend="cpu" if "cpu" in FAST else "reference",
                                      nan_policy="propagate")

    out = loss_fn(x, t)
    assert torch.isnan(out[0, 0, 0]) and torch.isfinite(out.flatten()[1:]).all()


LONG = os.environ.get("HSSN_FUZZ_LONG") == "1"


@pytest.mark.parametrize("seed", range(200 if LONG else 8))
def test_random_trees_labels_and_values_agree_across_backends(seed):
    """Random trees, shapes, dtypes of labels, ignored / bad labels and extreme logits: every fast backend
    equals the reference (``HSSN_FUZZ_LONG=1`` runs 200 seeds instead of 8)."""
    from trees import random_tree

    gen = torch.Generator().manual_seed(seed)
    tree = random_tree(seed, max_depth=4, max_channels=24)
    shape = tuple(int(v) for v in torch.randint(1, 6, (3,), generator=gen))
    x = torch.randn(shape[0], tree.num_channels, *shape[1:], generator=gen) * 4
    x[torch.rand(x.shape, generator=gen) < 0.05] = float("inf")
    x[torch.rand(x.shape, generator=gen) < 0.05] = float("-inf")
    labels = torch.tensor([*tree.leaves, 255])
    t = labels[torch.randint(len(labels), (shape[0], *shape[1:]), generator=gen)]
    t = t.to([torch.int64, torch.int32, torch.uint8][seed % 3])
    expect = hk.focal_tree_min_loss(x, t, tree, reduction="none", backend="reference", nan_policy="propagate")
    for backend in FAST:
        got = hk.focal_tree_min_loss(x, t, tree, reduction="none", backend=backend, nan_policy="propagate")
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-5, equal_nan=True)


# ----------------------------------------------------------------------------- third round (issue 27)
@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype,ignore_index", [(torch.int32, 2**32 + 1), (torch.int32, -(2**31) - 1),
                                                (torch.uint8, 2**32 + 1), (torch.int64, 2**40 + 1)])
def test_an_ignore_index_outside_the_target_dtype_is_never_wrapped(backend, dtype, ignore_index):
    """torch would compare 2**32 + 1 with int32 labels as 1: label-1 pixels dropped from the divisor only."""
    x, t = _inputs()
    assert (t == 1).any()
    expect = hk.focal_tree_min_loss(x.double(), t, TREE, ignore_index=-7, backend="reference")  # nothing ignored
    got = hk.focal_tree_min_loss(x, t.to(dtype), TREE, ignore_index=ignore_index, backend=backend)
    torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-6)
    big = torch.tensor(TREE.leaves)[torch.randint(0, 4, (2, 7, 9))]
    up = hk.focal_tree_min_loss(x, big.to(dtype), TREE, ignore_index=ignore_index, backend=backend, upsample="bilinear")
    torch.testing.assert_close(up.double(), hk.focal_tree_min_loss(x.double(), big, TREE, ignore_index=-7,
                                                                   backend="reference", upsample="bilinear"),
                               rtol=1e-5, atol=1e-6)
    got_trip = hk.sample_triplets(t.to(dtype), TREE, 20, seed=3, ignore_index=ignore_index, backend=backend)
    ref_trip = hk.sample_triplets(t, TREE, 20, seed=3, ignore_index=-7, backend="reference")
    assert torch.equal(got_trip[0].cpu(), ref_trip[0].cpu())


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("name,value,error", [("margin_eps", float("nan"), ValueError),
                                              ("margin_scale", float("inf"), ValueError),
                                              ("margin_eps", None, TypeError), ("margin_scale", "0.5", TypeError)])
def test_triplet_margins_must_be_finite_numbers(backend, name, value, error):
    """A NaN margin made the reference pass gradient through the NaN hinge and the native kernels none."""
    e = torch.randn(2, 8, 3, 4)
    _, t = _inputs()
    with pytest.raises(error, match=name):
        hk.tree_triplet_loss(e, t, TREE, backend=backend, nan_policy="propagate", **{name: value})


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_an_infinite_embedding_gives_the_same_loss_and_gradient_on_every_backend(distance):
    torch.manual_seed(1)
    _, t = _inputs()
    e = torch.randn(2, 8, 3, 4)
    e[0, :, 1, 2] = float("inf")
    results = {}
    for backend in ALL:
        device = DEVICE if backend in ("triton", "cuda", "reference") else "cpu"
        x = e.to(device).requires_grad_()
        loss = hk.tree_triplet_loss(x, t.to(device), TREE, 30, backend=backend, nan_policy="propagate",
                                    distance=distance)
        loss.backward()
        results[backend] = (loss.detach().cpu(), x.grad.cpu())
    ref_loss, ref_grad = results["reference"]
    for backend, (loss, grad) in results.items():
        torch.testing.assert_close(loss, ref_loss, equal_nan=True, msg=backend)
        assert torch.equal(grad.isnan(), ref_grad.isnan()), backend
        torch.testing.assert_close(grad.nan_to_num(), ref_grad.nan_to_num(), rtol=1e-4, atol=1e-5, msg=backend)


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(gamma=None), TypeError, "gamma must be a number"), (dict(gamma="2"), TypeError, "gamma must be a number"),
    (dict(ignore_index=float("nan")), TypeError, "ignore_index must be an int"),
    (dict(ignore_index=None), TypeError, "ignore_index must be an int"),
    (dict(ignore_index=254.0), TypeError, "ignore_index must be an int"),
    (dict(ignore_index=2**70), ValueError, "ignore_index must fit in int64")])
def test_loss_argument_errors_name_the_argument(kwargs, error, words):
    x, t = _inputs()
    for backend in ALL:
        with pytest.raises(error, match=words):
            hk.focal_tree_min_loss(x, t, TREE, backend=backend, **kwargs)


@pytest.mark.parametrize("size,error", [((2.5, 3), TypeError), ("34", TypeError), ((True, 4), TypeError),
                                        ((0, 4), ValueError), ((3,), TypeError), (None, None)])
def test_size_is_a_pair_of_positive_ints(size, error):
    import numpy as np

    x, _ = _inputs()
    if error is None:  # numpy ints and a torch.Size are fine
        assert hk.hierarchical_argmax(x, TREE, size=(np.int64(5), 6)).shape == (2, 5, 6)
        assert hk.hierarchical_argmax(x, TREE, size=torch.Size([5, 6])).shape == (2, 5, 6)
        return
    with pytest.raises(error, match="size"):
        hk.hierarchical_argmax(x, TREE, size=size)


def test_numpy_bools_and_level_and_step_types():
    import numpy as np

    x, t = _inputs()
    a = hk.focal_tree_min_loss(x, t[:, :2, :3], TREE, upsample="bilinear", align_corners=np.bool_(True),
                               backend="reference")
    b = hk.focal_tree_min_loss(x, t[:, :2, :3], TREE, upsample="bilinear", align_corners=True, backend="reference")
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="align_corners must be a bool, got 1"):
        hk.focal_tree_min_loss(x, t, TREE, upsample="bilinear", align_corners=1)
    for level in (1.0, True):
        with pytest.raises(TypeError, match="level must be an int"):
            hk.project_to_level(t, TREE, level)
    loss = hk.HierarchicalLoss(TREE, backend="reference")
    with pytest.raises(TypeError, match="step must be an int"):
        loss(x, t, x[:, :3], step=1.5)


def test_triplet_module_resizes_labels_without_float_rounding():
    """Through float32, label ids above 2**24 changed (then a misleading error); now the ids are gathered."""
    wide = hk.ClassHierarchy.from_nested({"r": {f"l{i}": {} for i in range(3)}})
    t = torch.full((1, 8, 8), 2**24 + 1, dtype=torch.int64)  # the ignore index
    t[0, :4] = 1
    e = torch.randn(1, 4, 4, 4)
    loss = hk.TreeTripletLoss(wide, num_triplets=10, ignore_index=2**24 + 1, backend="reference")
    assert torch.isfinite(loss(e, t))
    from hssn_kernels.modules import nearest_resize

    assert set(nearest_resize(t, (4, 4)).unique().tolist()) == {1, 2**24 + 1}
