"""Test-time augmentation: flip with left/right channel swap, multi-scale averaging, sliding windows."""
import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import ClassHierarchy
from hssn.engine.inference import InferenceSettings, flip_permutation, path_inference, slide_logits, tta_scores

# LIP-like: left / right arm leaves under "arms", background as a chain.
TREE = ClassHierarchy.from_nested({"arms": {"left-arm": {}, "right-arm": {}}, "background": {"bg": {}}})
LEFT, RIGHT, BG = (TREE.names.index(n) for n in ("left-arm", "right-arm", "bg"))
ARMS, BACK = TREE.names.index("arms"), TREE.names.index("background")


def position_model(images):
    """Calls bright pixels "left arm" in the image's left half (logit 2) and "right arm" in the right
    half (logit 6, more confident); a model that learned anatomy from position, as a real one does."""
    b, _, h, w = images.shape
    bright = images.mean(1) > 0.5
    right_half = (torch.arange(w) >= w // 2).expand(b, h, w)
    z = torch.full((b, TREE.num_channels, h, w), -6.0)
    z[:, ARMS] = torch.where(bright, 6.0, -6.0)
    z[:, BACK] = torch.where(bright, -6.0, 6.0)
    z[:, BG] = torch.where(bright, -6.0, 6.0)
    left_score = torch.where(right_half, -6.0, 2.0)
    z[:, LEFT] = torch.where(bright, left_score, -6.0)
    z[:, RIGHT] = torch.where(bright, -left_score, -6.0)
    return z


def test_flip_swaps_left_and_right_channels():
    img = torch.zeros(1, 3, 4, 8)
    img[..., 1:3, 1:3] = 1.0  # an arm on the left of the image
    with_swap = tta_scores(position_model, img, InferenceSettings(flip=True, flip_pairs=((LEFT, RIGHT),)))
    leaf, levels = path_inference(with_swap, TREE)
    assert (leaf[0, 1:3, 1:3] == LEFT).all()
    assert (leaf[0, 0] == BG).all()
    assert (levels[0][0, 1:3, 1:3] == ARMS).all()
    # without the swap the mirrored pass votes "right arm" and wins: the swap matters here
    no_swap = tta_scores(position_model, img, InferenceSettings(flip=True))
    assert (path_inference(no_swap, TREE)[0][0, 1:3, 1:3] == RIGHT).all()
    # swapped scores are the average of the identity pass and the mirrored-back pass
    expected_left = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(6.0))) / 2
    assert with_swap[0, LEFT, 1, 1] == pytest.approx(float(expected_left), abs=1e-6)


def test_flip_permutation():
    assert flip_permutation(5, [(1, 3)]).tolist() == [0, 3, 2, 1, 4]
    with pytest.raises(ValueError, match="out of range"):
        flip_permutation(3, [(1, 3)])


def test_multiscale_averages_sigmoid_scores_at_output_size():
    def fn(x):  # logits at stride 2, value = 1 at scale-1 size, 3 elsewhere
        z = torch.full((x.shape[0], TREE.num_channels, x.shape[2] // 2, x.shape[3] // 2), 3.0)
        if x.shape[-1] == 16:
            z.fill_(1.0)
        return z
    s = tta_scores(fn, torch.rand(2, 3, 8, 16), InferenceSettings(scales=(1.0, 0.5)), out_size=(8, 16))
    assert s.shape == (2, TREE.num_channels, 8, 16)
    expected = (torch.sigmoid(torch.tensor(1.0)) + torch.sigmoid(torch.tensor(3.0))) / 2
    assert torch.allclose(s, expected.expand_as(s))


def test_slide_matches_whole_for_a_pointwise_model():
    weight = torch.randn(TREE.num_channels, 3)
    fn = lambda x: torch.einsum("cd,bdhw->bchw", weight, x)  # noqa: E731
    x = torch.rand(1, 3, 13, 21)
    whole = fn(x)
    assert torch.allclose(slide_logits(fn, x, (8, 8), (5, 6)), whole, atol=1e-6)
    assert torch.allclose(slide_logits(fn, x, (16, 32), (8, 8)), whole, atol=1e-6)  # window > image
    s1 = tta_scores(fn, x, InferenceSettings(mode="slide", crop_size=(8, 8), stride=(5, 6)))
    assert torch.allclose(s1, torch.sigmoid(whole), atol=1e-6)


def test_path_inference_on_scores_equals_argmax_on_logits():
    z = torch.randn(2, TREE.num_channels, 5, 7)
    leaf, levels = path_inference(torch.sigmoid(z), TREE)
    assert torch.equal(leaf, hk.hierarchical_argmax(z, TREE))
    assert len(levels) == TREE.height


def test_the_model_normalises_with_its_own_buffers_and_checkpoints_carry_them(tmp_path):
    """mean / std are model buffers: the forward normalises [0, 1] images without touching them; a checkpoint
    brings its normalisation; one written before the buffers existed keeps the config's."""
    from hssn.engine import checkpoint as ckpt
    from hssn.models import build_model

    kw = dict(head_channels=8, aux_head=False, embed_dim=8)
    a = build_model("deeplabv3plus:resnet10t", TREE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **kw).eval()
    b = build_model("deeplabv3plus:resnet10t", TREE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kw).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("pixel_")}, strict=False)
    x = torch.rand(1, 3, 16, 16)
    before = x.clone()
    with torch.no_grad():
        assert torch.allclose(a(x)["logits"], b((x - 0.5) / 0.25)["logits"], atol=1e-5)
    assert torch.equal(x, before)
    ckpt.load_model_weights(b, {"model": a.state_dict()}, tmp_path / "new.pt")
    assert b.pixel_mean.flatten().tolist() == [0.5] * 3 and b.pixel_std.flatten().tolist() == [0.25] * 3
    old = {k: v for k, v in a.state_dict().items() if not k.startswith("pixel_")}
    c = build_model("deeplabv3plus:resnet10t", TREE, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0), **kw)
    ckpt.load_model_weights(c, {"model": old}, tmp_path / "old.pt")
    assert torch.allclose(c.pixel_mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="mean and std"):
        build_model("deeplabv3plus:resnet10t", TREE, mean=(0.5,), **kw)


def test_tta_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        InferenceSettings(mode="tiles")
