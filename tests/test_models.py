"""hssn.models: the three HSSN architectures, the wrapper, the registry and the summary."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights in tests

import itertools
import math
import tokenize
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("timm")
pytest.importorskip("scipy")

from hssn_kernels import ClassHierarchy  # noqa: E402
from oracle import focal_tree_min_loss  # noqa: E402
from hssn.models import (  # noqa: E402
    HSSNModel,
    MaskLossWeights,
    available,
    build_model,
    format_summary,
    hungarian_match,
    mask_weighted_scores,
    maskformer_losses,
    segments_from_target,
    summary,
)
from hssn.models.mask_matching import _pair_costs  # noqa: E402

CITYSCAPES_TREE = {
    "flat": {"road": {}, "sidewalk": {}},
    "construction": {"building": {}, "wall": {}, "fence": {}},
    "object": {"pole": {}, "traffic light": {}, "traffic sign": {}},
    "nature": {"vegetation": {}, "terrain": {}},
    "sky (category)": {"sky": {}},
    "human": {"person": {}, "rider": {}},
    "vehicle": {"car": {}, "truck": {}, "bus": {}, "train": {}, "motorcycle": {}, "bicycle": {}},
}
PERSON_PART_TREE = {
    "background (level 1)": {"background (level 2)": {"background": {}}},
    "human": {
        "upper body": {"head": {}, "torso": {}, "upper-arm": {}, "lower-arm": {}},
        "lower body": {"upper-leg": {}, "lower-leg": {}},
    },
}


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core runner, two spinning threads per op stall far more
    than they gain (the MaskFormer tests ran 10x slower with two threads under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def hierarchy():
    h = ClassHierarchy.from_nested(CITYSCAPES_TREE)
    assert (h.num_channels, h.num_leaves) == (26, 19)
    return h


def hssn_loss(hierarchy):
    """The engine's loss contract: logits at any resolution, upsampled inside the loss."""
    return lambda logits, target: focal_tree_min_loss(logits, target, hierarchy, upsample="bilinear")


def upsample(logits, size):
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def blocky_target(batch, height, width, hierarchy, seed=0, block=16):
    """(B, H, W) int64 leaf ids constant on ``block``-sized squares, with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    leaves = torch.tensor(hierarchy.leaves)
    coarse = leaves[torch.randint(len(leaves), (batch, math.ceil(height / block), math.ceil(width / block)), generator=g)]
    target = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :height, :width].contiguous()
    target[:, :2, :] = 255
    return target


def training_loss(model, out, target, loss_fn):
    loss = loss_fn(out["logits"], target)
    return loss + sum(model.auxiliary_losses(out, target, loss_fn).values())


# ---------------------------------------------------------------- the three presets at full size
PRESET_PROJECTION = {  # (channels, stride) of the backbone's deepest feature, the projection head's input
    "deeplabv3plus_r101": (2048, 8),
    "ocrnet_hrw48": (384, 32),
    "maskformer_swins": (768, 32),
}
PRESET_BACKBONE = {
    "deeplabv3plus_r101": "resnet101d.gluon_in1k",
    "ocrnet_hrw48": "hrnet_w48.ms_in1k",
    "maskformer_swins": "swin_small_patch4_window7_224.ms_in1k",
}
PRESET_EXTRA = {
    "deeplabv3plus_r101": {"aux_logits"},
    "ocrnet_hrw48": {"aux_logits"},
    "maskformer_swins": {"pred_logits", "pred_masks", "aux_pred_logits", "aux_pred_masks"},
}


@pytest.mark.parametrize("preset", sorted(PRESET_EXTRA))
def test_preset_projection_reads_the_backbone_feature(preset, hierarchy):
    """The paper's encoder embedding: the projection head's input is the backbone's deepest feature (by channel
    count and stride), through conv-BN-ReLU-conv and L2 normalisation; the preset uses ImageNet-1K weights."""
    torch.manual_seed(0)
    model = build_model(preset, hierarchy, pretrained=False)
    channels, stride = PRESET_PROJECTION[preset]
    assert (model.backbone.channels[-1], model.backbone.reductions[-1]) == (channels, stride)
    assert model.backbone.name == PRESET_BACKBONE[preset] and model.backbone.weights == "random init"
    conv1, bn, _, conv2 = model.projection.proj
    assert (conv1.in_channels, conv1.out_channels, bn.num_features, conv2.out_channels) == (channels, channels,
                                                                                             channels, 256)
    seen = {}
    model.projection.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    model.train()(torch.randn(1, 3, 64, 96))
    assert seen["x"].shape == (1, channels, math.ceil(64 / stride), math.ceil(96 / stride))


def test_projection_from_decoder_and_deep_stem(hierarchy):
    dec = build_model("deeplabv3plus:resnet18", hierarchy, head_channels=32, projection_from="decoder")
    assert dec.projection.proj[0].in_channels == 32
    out = dec.train()(torch.randn(2, 3, 64, 64))
    assert out["embeddings"].shape == (2, 256, 16, 16)
    with pytest.raises(ValueError, match="projection_from"):
        build_model("deeplabv3plus:resnet18", hierarchy, projection_from="neck")
    # ResNet-101-D: three 3x3 convs in the stem (mmseg ResNetV1d), not one 7x7
    r101 = build_model("deeplabv3plus_r101", hierarchy, pretrained=False)
    stem = [m for m in r101.backbone.model.conv1.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.kernel_size for m in stem] == [(3, 3)] * 3
    swapped = build_model("deeplabv3plus_r101", hierarchy, backbone="resnet101.a1h_in1k", pretrained=False)
    assert swapped.backbone.name == "resnet101.a1h_in1k" and swapped.head.rates == r101.head.rates
    assert swapped.backbone.model.conv1.kernel_size == (7, 7)
    with pytest.raises(ValueError, match="swaps the backbone of a preset"):
        build_model("deeplabv3plus:resnet18", hierarchy, backbone="resnet34")


@pytest.mark.parametrize("preset", sorted(PRESET_EXTRA))
def test_preset_forward_backward_shapes(preset, hierarchy):
    torch.manual_seed(0)
    model = build_model(preset, hierarchy, pretrained=False)
    c, loss_fn = hierarchy.num_channels, hssn_loss(hierarchy)
    assert model.output_stride == 4
    for shape in [(1, 3, 128, 128), (1, 3, 96, 160)]:
        model.train()
        model.zero_grad(set_to_none=True)
        h, w = shape[-2:]
        out = model(torch.randn(shape))
        assert set(out) == {"logits", "embeddings"} | PRESET_EXTRA[preset]
        assert out["logits"].shape == (1, c, h // 4, w // 4)
        stride = PRESET_PROJECTION[preset][1]
        assert out["embeddings"].shape == (1, 256, math.ceil(h / stride), math.ceil(w / stride))
        assert torch.allclose(out["embeddings"].norm(dim=1), torch.ones(()), atol=1e-5)  # L2-normalised
        if "aux_logits" in out:
            assert out["aux_logits"].shape[:2] == (1, c)
        if "pred_logits" in out:
            assert out["pred_logits"].shape == (1, 100, c)
            assert out["pred_masks"].shape == (1, 100, h // 4, w // 4)
            assert out["aux_pred_logits"].shape == (1, 5, 100, c)  # deep supervision of decoder layers 1-5
            assert out["aux_pred_masks"].shape == (1, 5, 100, h // 4, w // 4)
        target = blocky_target(1, h, w, hierarchy)
        loss = training_loss(model, out, target, loss_fn) + out["embeddings"].pow(2).mean()
        assert torch.isfinite(loss)
        loss.backward()
        for part in (model.backbone, model.head, model.projection):
            grads = [p.grad for p in part.parameters() if p.grad is not None]
            assert grads, f"{preset}: no gradient reached {type(part).__name__}"
            assert all(torch.isfinite(g).all() for g in grads)
        model.eval()
        with torch.no_grad():
            ev = model(torch.randn(shape))
        assert set(ev) == {"logits"} | ({"pred_logits", "pred_masks"} & PRESET_EXTRA[preset])
        assert ev["logits"].shape == (1, c, h // 4, w // 4)


# ---------------------------------------------------------------- small variants train
SMALL = {
    "deeplabv3plus:resnet18": {"head_channels": 64},
    "ocrnet:hrnet_w18_small": {"head_channels": 64, "ocr_channels": 32},
    "maskformer:swin_tiny_patch4_window7_224": {"head_channels": 64, "num_queries": 16, "dec_layers": 2},
    "fcn:resnet18": {"head_channels": 64, "output_stride": 8, "aux_head": True},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_variant_loss_decreases(name, hierarchy):
    torch.manual_seed(0)
    model = build_model(name, hierarchy, embed_dim=32, **SMALL[name]).train()
    images = torch.randn(2, 3, 64, 64)
    target = blocky_target(2, 32, 32, hierarchy, block=8)  # labels at half resolution: cheaper reference loss
    loss_fn = hssn_loss(hierarchy)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        out = model(images)
        assert out["embeddings"].shape[1] == 32
        loss = training_loss(model, out, target, loss_fn)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-3:]) < 0.8 * losses[0], losses


def test_any_input_size_is_padded_and_cropped(hierarchy):
    """HRNet needs sizes divisible by 32 internally; the wrapper pads and crops back."""
    model = build_model("ocrnet:hrnet_w18_small", hierarchy, head_channels=32, ocr_channels=16).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 100, 70))
    assert out["logits"].shape == (2, hierarchy.num_channels, 25, 18)


# ---------------------------------------------------------------- the HSSN adaptation
def test_channels_follow_the_hierarchy(hierarchy):
    person = ClassHierarchy.from_nested(PERSON_PART_TREE)
    for h in (hierarchy, person):
        for name, kwargs in [("deeplabv3plus:resnet18", {}), ("maskformer:resnet18", {"num_queries": 8, "dec_layers": 1})]:
            model = build_model(name, h, head_channels=32, **kwargs)
            out = model.eval()(torch.randn(1, 3, 64, 64))
            assert out["logits"].shape[1] == h.num_channels


def test_no_model_file_hard_codes_a_class_count():
    counts = {7, 12, 19, 20, 25, 26, 124, 144}  # dataset class / channel counts
    allowed = {("deeplabv3plus.py", 12)}  # ASPP rate 12/24/36 at output stride 8, not a class count
    model_dir = Path(__file__).resolve().parents[1] / "hssn" / "models"
    files = sorted(model_dir.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        with path.open("rb") as fh:
            for tok in tokenize.tokenize(fh.readline):
                if tok.type == tokenize.NUMBER and tok.string.isdigit() and int(tok.string) in counts:
                    assert (path.name, int(tok.string)) in allowed, f"{path.name}:{tok.start[0]} literal {tok.string}"


def test_eval_drops_projection_and_export_excludes_it(hierarchy):
    torch.manual_seed(0)
    model = build_model("deeplabv3plus:resnet18", hierarchy, head_channels=32)
    x = torch.randn(1, 3, 64, 64)
    assert "embeddings" in model.train()(x)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert set(out) == {"logits"}
    exported = model.export()
    full = model.state_dict()
    assert any(k.startswith("projection.") for k in full)
    assert not any(k.startswith("projection.") for k in exported)
    assert set(exported) == {k for k in full if not k.startswith("projection.")}
    assert set(model.state_dict(for_inference=True)) == set(exported)
    torch.manual_seed(1)
    fresh = build_model("deeplabv3plus:resnet18", hierarchy, head_channels=32).eval()
    fresh.load_state_dict(exported)  # strict for everything but the projection head
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)["logits"], out["logits"])
    with pytest.raises(RuntimeError, match="missing keys"):
        fresh.load_state_dict({k: v for k, v in exported.items() if not k.startswith("head.classifier")})


def test_aux_loss_is_weighted_loss_of_upsampled_aux_logits(hierarchy):
    torch.manual_seed(0)
    model = build_model("deeplabv3plus:resnet18", hierarchy, head_channels=32).train()
    out = model(torch.randn(2, 3, 64, 64))
    target = blocky_target(2, 64, 64, hierarchy)
    loss_fn = hssn_loss(hierarchy)
    aux = model.auxiliary_losses(out, target, loss_fn)
    assert set(aux) == {"aux"}
    expected = 0.4 * focal_tree_min_loss(upsample(out["aux_logits"], (64, 64)), target, hierarchy)
    torch.testing.assert_close(aux["aux"], expected)
    no_aux = build_model("deeplabv3plus:resnet18", hierarchy, head_channels=32, aux_head=False).train()
    out = no_aux(torch.randn(1, 3, 64, 64))
    assert "aux_logits" not in out and no_aux.auxiliary_losses(out, target[:1], loss_fn) == {}
    with pytest.raises(TypeError, match="int64"):
        model.auxiliary_losses(out, target.int(), loss_fn)


def test_pretrained_weights_from_a_local_file(tmp_path, hierarchy):
    import timm

    torch.manual_seed(123)
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(0)
    model = build_model("fcn:resnet18", hierarchy, pretrained=str(path), head_channels=16)
    loaded = model.backbone.model
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.running_var"):
        torch.testing.assert_close(loaded.state_dict()[key], reference.state_dict()[key])
    scratch = build_model("fcn:resnet18", hierarchy, pretrained=False, head_channels=16)
    assert not torch.equal(scratch.backbone.model.conv1.weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError):
        build_model("fcn:resnet18", hierarchy, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(TypeError, match="pretrained"):
        build_model("fcn:resnet18", hierarchy, pretrained=1.5)


# ---------------------------------------------------------------- MaskFormer
def _segments(hierarchy, q=6, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.tensor(hierarchy.leaves)[torch.randint(3, (h, w), generator=g) * 5]
    target[0, :3] = 255
    return target, segments_from_target(target, hierarchy)


def test_segments_carry_leaf_paths(hierarchy):
    target, seg = _segments(hierarchy)
    assert seg.leaf.tolist() == sorted(set(target[target != 255].tolist()))
    for leaf, cls, mask in zip(seg.leaf, seg.classes, seg.masks):
        assert set(torch.nonzero(cls).flatten().tolist()) == set(hierarchy.ancestors(int(leaf)))
        assert torch.equal(mask.bool(), (target == leaf).flatten())
    with pytest.raises(ValueError, match="not leaves"):
        segments_from_target(torch.full((2, 2), hierarchy.num_channels - 1), hierarchy)


def test_hungarian_match_is_a_valid_optimal_assignment(hierarchy):
    target, seg = _segments(hierarchy)
    g_count, c = seg.leaf.numel(), hierarchy.num_channels
    for q in (2, 5):  # fewer and more queries than segments
        torch.manual_seed(q)
        cls, masks = torch.randn(q, c), torch.randn(q, target.numel())
        qi, gi = hungarian_match(cls, masks, seg)
        assert len(qi) == len(gi) == min(q, g_count)
        assert len(set(qi.tolist())) == len(qi) and len(set(gi.tolist())) == len(gi)
        w = MaskLossWeights()
        cost_cls, dice, focal = _pair_costs(cls, masks, seg, w)
        cost = w.cls * cost_cls + w.dice * dice + w.focal * focal
        best = min(
            sum(cost[a, b] for a, b in zip(rows, cols))
            for rows in itertools.permutations(range(q), min(q, g_count))
            for cols in itertools.permutations(range(g_count), min(q, g_count))
        )
        assert cost[qi, gi].sum() <= best + 1e-5


def test_hungarian_match_finds_the_planted_queries(hierarchy):
    target, seg = _segments(hierarchy)
    q, planted = 7, [4, 0, 6]
    cls = torch.full((q, hierarchy.num_channels), -6.0)
    masks = torch.full((q, target.numel()), -6.0)
    for g, qq in enumerate(planted):
        cls[qq] = seg.classes[g] * 12 - 6
        masks[qq] = seg.masks[g] * 12 - 6
    qi, gi = hungarian_match(cls, masks, seg)
    assert dict(zip(gi.tolist(), qi.tolist())) == dict(enumerate(planted))


def test_maskformer_losses_are_finite_and_decrease(hierarchy):
    torch.manual_seed(0)
    b, q, c = 2, 8, hierarchy.num_channels
    target = blocky_target(b, 32, 32, hierarchy, block=8)
    pred_logits = torch.randn(b, q, c, requires_grad=True)
    pred_masks = torch.randn(b, q, 16, 16, requires_grad=True)
    opt = torch.optim.Adam([pred_logits, pred_masks], lr=0.1)
    totals = []
    for _ in range(25):
        opt.zero_grad()
        losses = maskformer_losses(pred_logits, pred_masks, target, hierarchy)
        assert set(losses) == {"mask_dice", "mask_focal", "query_cls"}
        assert all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        total.backward()
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.5 * totals[0], totals
    all_void = torch.full((b, 32, 32), 255)
    losses = maskformer_losses(pred_logits, pred_masks, all_void, hierarchy)
    assert losses["mask_dice"].item() == 0 and torch.isfinite(losses["query_cls"])


def test_mask_weighted_scores_formula_and_range():
    torch.manual_seed(0)
    cls, masks = torch.randn(2, 5, 4) * 3, torch.randn(2, 5, 3, 6) * 3
    logits = mask_weighted_scores(cls, masks)
    m = masks.sigmoid()
    expected = torch.einsum("bqc,bqhw->bchw", cls.sigmoid(), m) / m.sum(1, keepdim=True)
    torch.testing.assert_close(logits.sigmoid(), expected, rtol=1e-5, atol=1e-6)
    extreme = mask_weighted_scores(torch.full((1, 3, 2), 50.0), torch.full((1, 3, 2, 2), -1e4))
    assert torch.isfinite(extreme).all()


# ---------------------------------------------------------------- registry and summary
def test_registry_lists_and_rejects(hierarchy):
    listing = available()
    assert set(listing["presets"]) == {"deeplabv3plus_r101", "ocrnet_hrw48", "maskformer_swins"}
    assert set(listing["heads"]) >= {"deeplabv3plus", "ocrnet", "maskformer", "fcn"}
    with pytest.raises(ValueError, match="deeplabv3plus_r101"):
        build_model("pspnet_r50", hierarchy)
    with pytest.raises(ValueError, match="unknown timm model"):
        build_model("deeplabv3plus:not_a_timm_model", hierarchy)
    with pytest.raises(TypeError, match="num_querys"):
        build_model("maskformer:resnet18", hierarchy, num_querys=4)
    with pytest.raises(TypeError, match="ClassHierarchy"):
        build_model("fcn:resnet18", 26)
    with pytest.raises(ValueError, match="output_stride"):
        build_model("ocrnet:hrnet_w18_small", hierarchy, output_stride=8)
    model = build_model("deeplabv3plus:resnet18", hierarchy, head_channels=16, output_stride=16)
    assert model.head.rates == (6, 12, 18)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    other = ClassHierarchy.from_nested(PERSON_PART_TREE)
    with pytest.raises(ValueError, match="channels"):
        HSSNModel(model.backbone, model.head, other)


def test_summary_counts_parameters_and_flops(hierarchy):
    s = summary("deeplabv3plus:resnet18", hierarchy, input_size=(1, 3, 128, 128), head_channels=32)
    assert s["params_total"] == s["params_backbone"] + s["params_head"] + s["params_projection"]
    # resnet18's last stage: 512 channels -> conv 512x512, BN 512, conv 512 -> 256
    assert s["params_projection"] == (512 * 512 + 512) + 2 * 512 + (512 * 256 + 256)
    assert s["params_inference"] == s["params_total"] - s["params_projection"]
    model = build_model("deeplabv3plus:resnet18", hierarchy, head_channels=32)
    big = summary(model, input_size=(1, 3, 256, 256))
    assert big["params_total"] == s["params_total"]
    assert 3.5 < big["flops"] / s["flops"] < 4.5  # a conv net's FLOPs scale with the pixel count
    table = format_summary([s, big])
    assert "deeplabv3plus:resnet18" in table and len(table.splitlines()) == 4


def test_maskformer_deep_supervision_adds_one_set_loss_per_layer(hierarchy):
    torch.manual_seed(0)
    kwargs = dict(head_channels=32, num_queries=6, dec_layers=3)
    model = build_model("maskformer:resnet18", hierarchy, **kwargs).train()
    images, target = torch.randn(2, 3, 64, 64), blocky_target(2, 64, 64, hierarchy)
    out = model(images)
    assert out["aux_pred_logits"].shape == (2, 2, 6, hierarchy.num_channels)
    losses = model.auxiliary_losses(out, target, hssn_loss(hierarchy))
    per_layer = [maskformer_losses(out["pred_logits"], out["pred_masks"], target, hierarchy)] + [
        maskformer_losses(out["aux_pred_logits"][:, i], out["aux_pred_masks"][:, i], target, hierarchy) for i in range(2)
    ]
    for key, value in losses.items():
        torch.testing.assert_close(value, sum(layer[key] for layer in per_layer))
    flat = build_model("maskformer:resnet18", hierarchy, deep_supervision=False, **kwargs).train()
    out = flat(images)
    assert "aux_pred_logits" not in out
    assert set(flat.auxiliary_losses(out, target, hssn_loss(hierarchy))) == {"mask_dice", "mask_focal", "query_cls"}
