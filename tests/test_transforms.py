"""Transforms keep image and label aligned, swap left/right ids, pad with ignore, never mutate inputs."""
import pytest
import torch

from hssn.data import transforms as T


def encoded_item(h=20, w=30, seed=0, num_classes=20, block=5):
    """Blocky labels with some 255, and an image whose every channel is label / 255."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, num_classes + 1, (h // block, w // block), generator=g)
    grid[grid == num_classes] = 255
    label = grid.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = (label.float() / 255.0)[None].repeat(3, 1, 1)
    return {"image": image, "label": label, "name": "x"}


def decode(image):
    return (image[0] * 255).round().long()


def assert_unchanged(item, copy):
    assert torch.equal(item["image"], copy["image"]) and torch.equal(item["label"], copy["label"])


@pytest.mark.parametrize("seed", range(4))
def test_random_scale_keeps_alignment(seed):
    item = encoded_item(seed=seed)
    copy = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in item.items()}
    g = torch.Generator().manual_seed(seed)
    out = T.RandomScale(0.5, 2.0, image_mode="nearest", generator=g)(item)
    assert torch.equal(decode(out["image"]), out["label"])
    assert_unchanged(item, copy)
    # bilinear image: label still agrees away from block edges (most pixels)
    out = T.RandomScale(0.5, 2.0, generator=torch.Generator().manual_seed(seed))(item)
    assert (decode(out["image"]) == out["label"]).float().mean() > 0.6
    assert set(out["label"].unique().tolist()) <= set(item["label"].unique().tolist())


def test_resize_label_is_nearest_exact():
    label = torch.arange(4).repeat(4, 1)  # columns 0 1 2 3
    item = {"image": torch.zeros(3, 4, 4), "label": label}
    out = T.Resize(size=(4, 8))(item)
    assert out["label"][0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    out = T.Resize(size=(2, 2))(item)
    assert out["label"][0].tolist() == [1, 3]
    assert T.Resize(size=(10, 10), keep_ratio=True).target_size(20, 40) == (5, 10)


@pytest.mark.parametrize("seed", range(3))
def test_random_crop_alignment_and_padding(seed):
    item = encoded_item(seed=seed)
    g = torch.Generator().manual_seed(seed)
    out = T.RandomCrop(12, 16, generator=g)(item)
    assert out["label"].shape == (12, 16) and out["image"].shape == (3, 12, 16)
    assert torch.equal(decode(out["image"]), out["label"])
    out = T.RandomCrop(25, 40, ignore_index=255, generator=g)(item)  # larger than 20x30: pad
    assert out["label"].shape == (25, 40)
    assert (out["label"][20:] == 255).all() and (out["label"][:, 30:] == 255).all()
    assert (out["image"][:, 20:] == 0).all() and (out["image"][:, :, 30:] == 0).all()
    assert torch.equal(out["label"][:20, :30], item["label"])


def test_random_crop_cat_max_ratio_rejects_single_class_crops():
    label = torch.zeros(40, 40, dtype=torch.long)
    label[:, 30:] = 1
    item = {"image": torch.zeros(3, 40, 40), "label": label}
    crop = T.RandomCrop(10, 20, cat_max_ratio=0.9, generator=torch.Generator().manual_seed(0))
    hits = sum(len(crop(item)["label"].unique()) == 2 for _ in range(20))
    plain = T.RandomCrop(10, 20, generator=torch.Generator().manual_seed(0))
    plain_hits = sum(len(plain(item)["label"].unique()) == 2 for _ in range(20))
    assert hits > plain_hits


def test_flip_swaps_left_right_ids():
    label = torch.tensor([[14, 15, 0, 16], [18, 19, 255, 17]])
    item = {"image": (label.float() / 255)[None].repeat(3, 1, 1), "label": label}
    pairs = [(14, 15), (16, 17), (18, 19)]
    out = T.RandomHorizontalFlip(1.0, pairs)(item)
    assert out["label"].tolist() == [[17, 0, 14, 15], [16, 255, 18, 19]]
    assert decode(out["image"]).tolist() == [[16, 0, 15, 14], [17, 255, 19, 18]], "image mirrored, not swapped"
    assert label.tolist() == [[14, 15, 0, 16], [18, 19, 255, 17]]
    same = T.RandomHorizontalFlip(0.0, pairs)(item)
    assert torch.equal(same["label"], label)


def test_photometric_changes_image_only():
    item = encoded_item()
    item["image"] = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(1))
    copy = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in item.items()}
    out = T.PhotometricJitter(p=1.0, generator=torch.Generator().manual_seed(0))(item)
    assert torch.equal(out["label"], item["label"])
    assert not torch.allclose(out["image"], item["image"])
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert_unchanged(item, copy)


def test_hue_rotation_keeps_grey_and_luma():
    grey = torch.full((3, 2, 2), 0.4)
    assert torch.allclose(T._rotate_hue(grey, 1.0), grey, atol=1e-5)
    img = torch.rand(3, 4, 4)
    luma = torch.einsum("c,chw->hw", torch.tensor([0.299, 0.587, 0.114]), img)
    rotated = T._rotate_hue(img, 0.7)
    assert torch.allclose(torch.einsum("c,chw->hw", torch.tensor([0.299, 0.587, 0.114]), rotated), luma, atol=1e-5)


def test_pad_to_divisor():
    item = encoded_item(h=20, w=30)
    out = T.PadTo(size_divisor=16, ignore_index=255)(item)
    assert out["label"].shape == (32, 32) and out["image"].shape == (3, 32, 32)
    assert torch.equal(out["label"][:20, :30], item["label"]) and (out["label"][20:] == 255).all()


def test_build_helpers_and_global_rng_determinism():
    item = encoded_item()
    train = T.build_train_transforms((16, 16), flip_pairs=[(1, 2)])
    torch.manual_seed(3)
    a = train(item)
    torch.manual_seed(3)
    b = train(item)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["label"].shape == (16, 16) and a["name"] == "x"
    ev = T.build_eval_transforms(size=(10, 15), size_divisor=8, resize_label=True)(item)
    assert ev["label"].shape == (16, 16) and ev["image"].shape == (3, 16, 16)
    ev = T.build_eval_transforms(size=(10, 15))(item)
    assert ev["image"].shape == (3, 10, 15) and ev["label"].shape == (20, 30)
    with pytest.raises(ValueError, match="size_divisor needs resize_label"):
        T.build_eval_transforms(size=(10, 15), size_divisor=8)


def test_bad_inputs():
    with pytest.raises(ValueError, match="label must be int64"):
        T.RandomCrop(4, 4)({"image": torch.zeros(3, 4, 4), "label": torch.zeros(4, 4, dtype=torch.int32)})
    with pytest.raises(ValueError, match="sizes differ"):
        T.RandomHorizontalFlip()({"image": torch.zeros(3, 4, 5), "label": torch.zeros(4, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match="min_scale"):
        T.RandomScale(2.0, 1.0)


def test_nearest_indices_exact_at_ties():
    # (i + 0.5) * 30 / 11 is exactly 15 at i = 5: floating point gives 14.999...
    assert T.nearest_indices(30, 11)[5] == 15
    assert T.nearest_indices(30, 29)[14] == 15
    for n_in in range(1, 25):
        for n_out in range(1, 25):
            idx = T.nearest_indices(n_in, n_out)
            assert idx.min() >= 0 and idx.max() < n_in
            assert all(abs((i + 0.5) * n_in / n_out - (int(j) + 0.5)) <= 0.5 + 1e-9 for i, j in enumerate(idx))
