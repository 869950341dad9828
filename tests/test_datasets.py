"""Loaders on tiny fixture datasets in the real layouts; bad-data errors; build_dataset."""
import numpy as np
import pytest
import torch
from PIL import Image

import fixtures_datasets as fx
from hssn import hierarchies
from hssn.data import available, build_dataset
from hssn.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from hssn.data.transforms import build_train_transforms


def check_item(item, raw_expected, lut=None, ignore=255, exact_image=False):
    image, label = item["image"], item["label"]
    assert image.dtype == torch.float32 and image.shape == (3, fx.H, fx.W)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert label.dtype == torch.int64 and label.shape == (fx.H, fx.W)
    expected = raw_expected.astype(np.int64) if lut is None else lut[raw_expected]
    assert np.array_equal(label.numpy(), expected)
    red = (image[0] * 255).round().long().numpy()
    if exact_image:
        assert np.array_equal(red, raw_expected)
    else:  # JPEG: the image still shows the label's blocks at the block centres
        assert np.abs(red[4::8, 4::8] - raw_expected[4::8, 4::8].astype(np.int64)).max() <= 12


# ----------------------------------------------------------------------------------------- cityscapes
def cityscapes_lut():
    lut = np.full(256, 255, dtype=np.int64)
    for k, v in LABEL_ID_TO_TRAIN_ID.items():
        lut[k] = v
    return lut


def test_cityscapes(tmp_path):
    raws = fx.make_cityscapes(tmp_path, "val")
    ds = build_dataset("cityscapes", root=tmp_path, split="val")
    assert [s[0] for s in ds.samples] == sorted(raws) and len(ds) == 3
    for i, (name, _, _) in enumerate(ds.samples):
        item = ds[i]
        assert item["name"] == name
        check_item(item, raws[name], cityscapes_lut(), exact_image=True)
    label = ds[0]["label"]
    assert label[0, 0] == 13 and ds.class_names[13] == "car"
    h = ds.hierarchy
    assert h.names[h.ancestor_at_level(int(label[0, 0]), 1)] == "vehicle"
    assert ds.palette[13].tolist() == [0, 0, 142] and ds.flip_pairs == [] and ds.ignore_index == 255


def test_cityscapes_train_ids_used_when_present(tmp_path):
    raws = fx.make_cityscapes(tmp_path, "train", train_ids_for=["bonn_000000_000019"])
    ds = build_dataset("cityscapes", root=tmp_path, split="train")
    paths = {name: lab.name for name, _, lab in ds.samples}
    assert paths["bonn_000000_000019"].endswith("_gtFine_labelTrainIds.png")
    assert paths["aachen_000000_000019"].endswith("_gtFine_labelIds.png")
    for i, (name, _, _) in enumerate(ds.samples):
        check_item(ds[i], raws[name], cityscapes_lut(), exact_image=True)


def test_cityscapes_custom_ignore_index(tmp_path):
    raws = fx.make_cityscapes(tmp_path, "val")
    ds = build_dataset("cityscapes", root=tmp_path, split="val", ignore_index=200)
    lut = cityscapes_lut()
    lut[lut == 255] = 200
    check_item(ds[0], raws[ds.samples[0][0]], lut, exact_image=True)


# ----------------------------------------------------------------------------------------- mapillary
def test_mapillary(tmp_path):
    raws = fx.make_mapillary(tmp_path, "validation")
    ds = build_dataset("mapillary_v2", root=tmp_path, split="val")
    assert len(ds) == 3 and ds.hierarchy.num_leaves == len(fx.MAPILLARY_LABELS)
    for i, (name, _, _) in enumerate(ds.samples):
        check_item(ds[i], raws[name])
    assert ds.palette.tolist() == [lab["color"] for lab in fx.MAPILLARY_LABELS]
    assert ds.class_names[3] == "human--rider--bicyclist" and ds.readable_names[3] == "Bicyclist"
    shipped = hierarchies.get("mapillary_v2")
    for leaf in range(ds.hierarchy.num_leaves):
        top = ds.hierarchy.names[ds.hierarchy.ancestor_at_level(leaf, 1)]
        assert top == shipped.names[shipped.ancestor_at_level(shipped.names.index(ds.class_names[leaf]), 1)]
    assert ds.evaluated == [lab["evaluate"] for lab in fx.MAPILLARY_LABELS]
    assert ds.scored_leaves == ds.evaluated  # the official protocol: trained as leaves, scored only if evaluated
    merged = build_dataset("mapillary_v2", root=tmp_path, split="val", tree="merged")
    sky = merged.class_names.index("nature--sky")
    assert merged.hierarchy.names[merged.hierarchy.parents[sky]] == "nature--*"
    assert ds.hierarchy.names[ds.hierarchy.parents[sky]] == "nature--sky--*"
    with pytest.raises(ValueError, match="rule must be one of"):
        build_dataset("mapillary_v2", root=tmp_path, split="val", tree="paper")


def test_mapillary_ignore_non_evaluated(tmp_path):
    raws = fx.make_mapillary(tmp_path, "training")
    ds = build_dataset("mapillary_v2", root=tmp_path, split="train", ignore_non_evaluated=True)
    lut = np.arange(256)
    lut[[6, 8]] = 255  # object--traffic-sign--ambiguous, void--unlabeled
    check_item(ds[0], raws[ds.samples[0][0]], lut)


def test_mapillary_rejects_bad_split_and_missing_config(tmp_path):
    fx.make_mapillary(tmp_path, "training")
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("mapillary_v2", root=tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match="validation"):
        build_dataset("mapillary_v2", root=tmp_path, split="val")
    (tmp_path / "config_v2.0.json").unlink()
    with pytest.raises(FileNotFoundError, match="config_v2.0.json"):
        build_dataset("mapillary_v2", root=tmp_path, split="train")


# ----------------------------------------------------------------------------------------- LIP
@pytest.mark.parametrize("layout, with_ids", [("official", True), ("flat", True), ("flat", False)])
def test_lip_layouts(tmp_path, layout, with_ids):
    raws = fx.make_lip(tmp_path, "val", layout=layout, with_ids=with_ids)
    ds = build_dataset("lip", root=tmp_path, split="val")
    assert (ds.id_list is not None) == with_ids
    assert sorted(s[0] for s in ds.samples) == sorted(raws)
    for i, (name, _, _) in enumerate(ds.samples):
        check_item(ds[i], raws[name])
    assert ds.flip_pairs == [(14, 15), (16, 17), (18, 19)] and ds.class_names[14] == "left-arm"


def test_lip_nested_official_layout(tmp_path):
    raws = fx.make_lip(tmp_path / "tmp", "train")
    (tmp_path / "TrainVal_images").mkdir()
    (tmp_path / "TrainVal_parsing_annotations").mkdir()
    (tmp_path / "tmp" / "TrainVal_images").rename(tmp_path / "TrainVal_images" / "TrainVal_images")
    (tmp_path / "tmp" / "TrainVal_parsing_annotations").rename(
        tmp_path / "TrainVal_parsing_annotations" / "TrainVal_parsing_annotations")
    ds = build_dataset("lip", root=tmp_path, split="train")
    assert ds.id_list.parent.name == "TrainVal_images" and len(ds) == len(raws)


def test_lip_id_list_naming_missing_file(tmp_path):
    fx.make_lip(tmp_path, "train")
    with open(tmp_path / "TrainVal_images" / "train_id.txt", "a") as f:
        f.write("999_missing\n")
    with pytest.raises(FileNotFoundError, match="999_missing"):
        build_dataset("lip", root=tmp_path, split="train")


# ----------------------------------------------------------------------------------------- PASCAL-Person-Part
@pytest.mark.parametrize("list_style", ["id", "deeplab", "official"])
def test_pascal_person_part(tmp_path, list_style):
    raws = fx.make_pascal_person_part(tmp_path, "val", list_style=list_style)
    ds = build_dataset("pascal_person_part", root=tmp_path, split="val")
    assert [s[0] for s in ds.samples] == list(raws), "exactly the listed ids, in list order"
    for i, (name, _, _) in enumerate(ds.samples):
        check_item(ds[i], raws[name])
    assert ds.hierarchy.num_channels == 12 and ds.class_names[1] == "head"
    if list_style == "official":  # the archive's own {split}_id.txt is read, labels from pascal_person_part_gt/
        assert ds.list_path.name == "val_id.txt" and ds.samples[0][2].parent.name == "pascal_person_part_gt"
        (ds.list_path).unlink()  # its two-path list naming /SegmentationPart/ works as well
        again = build_dataset("pascal_person_part", root=tmp_path, split="val")
        assert again.list_path.name == "val.txt" and again.samples == ds.samples


@pytest.mark.parametrize("line", ["../../outside/secret", "/../x.jpg /../x.png", "JPEGImages/../../x.jpg a.png",
                                  "JPEGImages/a.jpg ../SegmentationPart/a.png"])
def test_pascal_person_part_list_paths_stay_inside_the_root(tmp_path, line):
    root = tmp_path / "root"
    fx.make_pascal_person_part(root, "train")
    good = (root / "train_id.txt").read_text()
    (root / "train_id.txt").write_text(good + "\n" + line + "\n")
    n = len(good.splitlines()) + 2
    with pytest.raises(ValueError, match=rf"train_id.txt, line {n}: path .* points outside the dataset root"):
        build_dataset("pascal_person_part", root=root, split="train")


def test_pascal_person_part_needs_a_label_folder(tmp_path):
    fx.make_pascal_person_part(tmp_path, "train")
    (tmp_path / "SegmentationPart").rename(tmp_path / "labels")
    with pytest.raises(FileNotFoundError, match="SegmentationPart and pascal_person_part_gt"):
        build_dataset("pascal_person_part", root=tmp_path, split="train")


def test_pascal_person_part_needs_a_list(tmp_path):
    fx.make_pascal_person_part(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="val_id.txt"):
        build_dataset("pascal_person_part", root=tmp_path, split="val")


# ----------------------------------------------------------------------------------------- folder
def test_folder_dataset(tmp_path):
    raws = fx.make_folder(tmp_path, split="train")
    ds = build_dataset("folder", root=tmp_path, split="train")
    assert sorted(s[0] for s in ds.samples) == sorted(raws)
    for i, (name, _, _) in enumerate(ds.samples):
        check_item(ds[i], raws[name], exact_image=True)
    assert ds.class_names == ["cat", "dog", "tree"] and ds.palette[1].tolist() == [0, 255, 0]


def test_folder_dataset_coarse_labels_name_the_key_and_a_negative_ignore_index_works(tmp_path):
    raws = fx.make_folder(tmp_path, split="train")
    name = sorted(raws)[0]
    label = tmp_path / "labels" / "train" / f"{name}.png"
    arr = np.where(raws[name] == 255, 3, raws[name]).astype(np.uint8)  # 3 = "animal", an inner node
    Image.fromarray(arr).save(label)
    ds = build_dataset("folder", root=tmp_path, split="train")
    with pytest.raises(ValueError, match=r"label values \[3\] are inner nodes .* data.partial_labels=true"):
        ds[[s[0] for s in ds.samples].index(name)]
    # ignore_index=-1 (trees wider than 255 channels): the files' void value is 65535 (16-bit PNGs)
    Image.fromarray(np.where(raws[name] == 255, 65535, raws[name].astype(np.int64)).astype(np.uint16)).save(label)
    ds = build_dataset("folder", root=tmp_path, split="train", ignore_index=-1)
    item = ds[[s[0] for s in ds.samples].index(name)]["label"]
    assert torch.equal(item, torch.from_numpy(np.where(raws[name] == 255, -1, raws[name].astype(np.int64))))


def test_tree_file_colours_are_bytes(tmp_path):
    for colour in ("[300, 0, 0]", "[x, 0, 0]", "[1.5, 0, 0]"):
        (tmp_path / "t.yaml").write_text(f"names: [a, b, r]\nparents: [2, 2, -1]\nleaf_colors: [{colour}, [0, 0, 0]]\n")
        with pytest.raises(ValueError, match=r"t.yaml: 'leaf_colors' entry 0 .* int in \[0, 255\]"):
            hierarchies.read_tree_file(tmp_path / "t.yaml")


def test_folder_dataset_with_shipped_tree_and_no_split(tmp_path):
    fx.make_folder(tmp_path)
    ds = build_dataset("folder", root=tmp_path, split=None, hierarchy="lip")
    assert ds.hierarchy is hierarchies.get("lip") and ds.flip_pairs == [(14, 15), (16, 17), (18, 19)]
    assert len(ds) == 3


# ----------------------------------------------------------------------------------------- bad data
def test_missing_folder_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found: .*nowhere"):
        build_dataset("cityscapes", root=tmp_path / "nowhere", split="train")
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        build_dataset("cityscapes", root=tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="LIP image folder not found"):
        build_dataset("lip", root=tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        build_dataset("pascal_person_part", root=tmp_path)


def test_image_without_label(tmp_path):
    fx.make_cityscapes(tmp_path, "train")
    label = tmp_path / "gtFine/train/bonn/bonn_000000_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(ValueError, match="without a label.*bonn_000000_000019_leftImg8bit.png"):
        build_dataset("cityscapes", root=tmp_path, split="train")


def test_label_without_image(tmp_path):
    fx.make_mapillary(tmp_path, "training")
    image = sorted((tmp_path / "training/images").glob("*.jpg"))[1]
    image.unlink()
    with pytest.raises(ValueError, match=f"without an image.*{image.stem}.png"):
        build_dataset("mapillary_v2", root=tmp_path, split="train")


def test_label_value_not_a_class(tmp_path):
    fx.make_lip(tmp_path, "train")
    bad = tmp_path / "TrainVal_parsing_annotations/train_segmentations/101_000001.png"
    arr = np.array(Image.open(bad))
    arr[0, 0] = 42
    Image.fromarray(arr).save(bad)
    ds = build_dataset("lip", root=tmp_path, split="train")
    with pytest.raises(ValueError, match=r"101_000001.png: label values \[42\]"):
        ds[1]


def test_cityscapes_label_id_out_of_range(tmp_path):
    fx.make_cityscapes(tmp_path, "train")
    bad = tmp_path / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    arr = np.array(Image.open(bad))
    arr[3, 3] = 34
    Image.fromarray(arr).save(bad)
    ds = build_dataset("cityscapes", root=tmp_path, split="train")
    with pytest.raises(ValueError, match=r"aachen_000001_000019_gtFine_labelIds.png: label values \[34\]"):
        ds[1]


def test_size_mismatch(tmp_path):
    fx.make_folder(tmp_path)
    Image.fromarray(np.zeros((fx.H, fx.W + 2), np.uint8)).save(tmp_path / "labels/001.png")
    ds = build_dataset("folder", root=tmp_path, split=None)
    with pytest.raises(ValueError, match=r"size mismatch: image .*001.png.*label .*labels/001.png"):
        ds[0]


def test_rgb_label_rejected(tmp_path):
    fx.make_folder(tmp_path)
    Image.fromarray(np.zeros((fx.H, fx.W, 3), np.uint8)).save(tmp_path / "labels/002.png")
    ds = build_dataset("folder", root=tmp_path, split=None)
    with pytest.raises(ValueError, match=r"002.png: label image has mode 'RGB'"):
        ds[1]


def test_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "hierarchy.json").write_text('{"names": ["a", "b"], "parents": [-1, -1]}')
    with pytest.raises(ValueError, match="no images found"):
        build_dataset("folder", root=tmp_path, split=None)


# ----------------------------------------------------------------------------------------- registry
def test_build_dataset_unknown_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'coco'; available: ade20k, cityscapes, folder, lip"):
        build_dataset("coco", root=tmp_path)
    with pytest.raises(ValueError, match="needs root="):
        build_dataset("lip")
    assert set(available()) >= {"cityscapes", "mapillary_v2", "lip", "pascal_person_part", "ade20k", "folder",
                                "synthetic"}


def test_build_dataset_synthetic():
    pytest.importorskip("hssn.data.synthetic")
    ds = build_dataset("synthetic", split="val")
    item = ds[0]
    assert item["image"].shape[0] == 3 and item["label"].dtype == torch.int64


def test_dataloader_with_train_transforms(tmp_path):
    fx.make_lip(tmp_path, "train")
    ds = build_dataset("lip", root=tmp_path, split="train",
                       transforms=build_train_transforms((24, 24), flip_pairs=hierarchies.flip_pairs("lip")))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 24, 24) and batch["label"].shape == (3, 24, 24)
    valid = batch["label"][batch["label"] != 255]
    assert valid.min() >= 0 and valid.max() < 20


def test_ade20k_void_is_ignored_and_ids_1_to_150_are_the_leaves(tmp_path):
    from hssn.data.ade20k import ADE20KDataset

    raws = fx.make_ade20k(tmp_path, "val")
    ds = ADE20KDataset(tmp_path, "val")  # the folder holding ADEChallengeData2016
    assert len(ds) == 3 and ds.hierarchy.num_leaves == 150 and ds.palette.shape == (150, 3)
    for i, key in enumerate(sorted(raws)):
        label = ds[i]["label"]
        raw = torch.from_numpy(raws[key].astype(np.int64))
        assert (label[raw == 0] == 255).all()
        assert torch.equal(label[raw > 0], raw[raw > 0] - 1)
    assert len(ADE20KDataset(tmp_path / "ADEChallengeData2016", "validation")) == 3  # the folder itself
    names = ds.hierarchy.names
    assert [names[c] for c in (0, 12, 20, 149)] == ["wall", "person", "car", "flag"]
    with pytest.raises(ValueError, match="split"):
        ADE20KDataset(tmp_path, "test")


def test_ade20k_label_above_150_names_the_file(tmp_path):
    from hssn.data.ade20k import ADE20KDataset

    raws = fx.make_ade20k(tmp_path, "train", n=1)
    stem = next(iter(raws))
    bad = raws[stem].copy()
    bad[0, 0] = 151
    fx._save(bad, tmp_path / "ADEChallengeData2016" / "annotations" / "training" / f"{stem}.png")
    with pytest.raises(ValueError, match=stem):
        ADE20KDataset(tmp_path, "train")[0]


def test_ade20k_tree_file_is_logicsegs_groups_over_the_standard_class_order():
    from hssn import hierarchies

    tree, meta = hierarchies.get("ade20k"), hierarchies.metadata("ade20k")
    assert [len(tree.nodes_at_level(lvl)) for lvl in (1, 2, 3)] == [3, 14, 150]
    assert list(tree.leaves) == list(range(150))
    assert {tree.names[c] for c in tree.nodes_at_level(1)} == {"Construction", "Object", "Nature"}
    assert {tree.names[c] for c in tree.nodes_at_level(2)} == {
        "flat", "structure", "barrier", "sign", "furniture", "vehicle", "support", "device", "container", "fabric",
        "other objects", "living things", "plant-group", "nature"}
    group = {tree.names[c]: tree.names[tree.parents[c]] for c in tree.leaves}
    assert group["person"] == group["animal"] == "living things"
    assert {group[n] for n in ("car", "bus", "truck", "van", "boat", "ship", "airplane", "bicycle", "minibike")} == {
        "vehicle"}
    assert "lingorX/LogicSeg" in meta["rule"] and "mmseg/models/losses/ade20k.py" in meta["rule"]
    assert "not published" in meta["rule"] and "LogicSeg 16" in meta["rule"]


def test_pascal_part108_reads_logicsegs_layout_and_tree(tmp_path):
    from hssn.data.pascal_part108 import PascalPart108Dataset

    raws = fx.make_pascal_part108(tmp_path, "val")
    ds = PascalPart108Dataset(tmp_path, "val")
    tree = ds.hierarchy
    assert (tree.num_leaves, tree.num_channels, len(tree.nodes_at_level(1))) == (108, 123, 21)
    for i, key in enumerate(sorted(raws)):
        label = ds[i]["label"]
        raw = torch.from_numpy(raws[key].astype(np.int64))
        assert torch.equal(label, raw)  # 0-107 are the leaves, 255 is void
    names = tree.names
    assert names[tree.parents[names.index("person hair")]] == "person" and tree.parents[0] == -1  # background
    assert tree.level(names.index("boat")) == 1 and tree.is_leaf(names.index("tv screen"))
    assert "lingorX/LogicSeg" in hierarchies.metadata("pascal_part108")["rule"]
    with pytest.raises(FileNotFoundError, match="img_dir"):
        PascalPart108Dataset(tmp_path, "train")
