"""Cross-dataset evaluation: mapping files (validation, the shipped Mapillary v2.0 -> Cityscapes mapping), the
mapped dataset on a Mapillary fixture in the real layout, and scoring a mapped inner node at its level only."""
import json

import pytest
import torch

import fixtures_datasets as fx
from hssn import hierarchies
from hssn.data.mapping import LabelMapping, MappedDataset, available
from hssn.engine.metrics import HierarchicalMetrics

CS = hierarchies.get("cityscapes")


def test_the_shipped_mapping_lists_every_mapillary_label_once_onto_cityscapes_nodes():
    assert "mapillary_v2_to_cityscapes" in available()
    m = LabelMapping.load("mapillary_v2_to_cityscapes")
    source = hierarchies.get("mapillary_v2")
    assert m.source == source and m.target == CS
    assert sorted(m.pairs) == sorted(source.names[c] for c in source.leaves)  # all 124, each once
    targets = {t for t in m.pairs.values() if t is not None}
    assert targets <= set(CS.names)
    # every Cityscapes class has a Mapillary counterpart
    assert {CS.names[c] for c in CS.leaves} <= targets
    expected = {"construction--flat--road": "road", "object--vehicle--on-rails": "train", "nature--sky": "sky",
                "human--rider--bicyclist": "rider", "marking--discrete--arrow--left": "road",
                "construction--flat--bike-lane": "flat", "object--vehicle--caravan": None, "void--unlabeled": None}
    assert {k: m.pairs[k] for k in expected} == expected


@pytest.mark.parametrize("body, message", [
    ("source: mapillary_v2\ntarget: cityscapes\nmap: {nature--sky: sky, nature--sky: road}\n", "duplicate key"),
    ("source: mapillary_v2\ntarget: cityscapes\nmap: {nature--skies: sky}\n", "'nature--skies' is not a node"),
    ("source: mapillary_v2\ntarget: cityscapes\nmap: {nature--sky: heaven}\n", "'heaven', not a node"),
    ("source: mapillary_v2\ntarget: nowhere\nmap: {nature--sky: sky}\n", "neither a shipped tree"),
    ("source: mapillary_v2\ntarget: cityscapes\nmap: {}\n", "non-empty"),
    ("source: mapillary_v2\nmap: {nature--sky: sky}\n", "keys source, target, map"),
])
def test_a_bad_mapping_file_is_an_error_naming_the_file_and_the_entry(tmp_path, body, message):
    path = tmp_path / "m.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message) as err:
        LabelMapping.load(path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="not found"):
        LabelMapping.load(tmp_path / "none.yaml")


def test_mapped_mapillary_fixture_labels_and_scoring(tmp_path):
    from hssn.data.mapillary import MapillaryVistasDataset

    raws = fx.make_mapillary(tmp_path, "validation")
    ds = MapillaryVistasDataset(tmp_path, "val")
    mapped = MappedDataset(ds, LabelMapping.load("mapillary_v2_to_cityscapes"))
    assert mapped.hierarchy == CS and mapped.ignore_index == 255 and len(mapped) == len(ds)
    names = [lab["name"] for lab in fx.MAPILLARY_LABELS]
    want = {"animal--bird": 255, "construction--flat--road": CS.names.index("road"),
            "construction--flat--sidewalk": CS.names.index("sidewalk"), "human--rider--bicyclist": CS.names.index("rider"),
            "marking--discrete--arrow--left": CS.names.index("road"), "nature--sky": CS.names.index("sky"),
            "object--traffic-sign--ambiguous": 255, "object--vehicle--car": CS.names.index("car"),
            "void--unlabeled": 255}
    for i, key in enumerate(sorted(raws)):
        label = mapped[i]["label"]
        raw = torch.from_numpy(raws[key].astype("int64"))
        for v in raw.unique().tolist():
            assert (label[raw == v] == want[names[v]]).all()
    # every target of the fixture is a leaf: not partial; the leaves nothing maps onto are not scored
    assert mapped.partial_labels is False
    assert mapped.scored_leaves == [CS.names[c] in {"road", "sidewalk", "rider", "sky", "car"} for c in CS.leaves]


def test_a_class_mapped_onto_an_inner_node_counts_at_that_level_and_coarser(tmp_path):
    """A pixel labelled 'flat' (bike lane) is right at the category level when the model predicts road or
    sidewalk, and is not counted at the class level."""
    flat, road, sidewalk, car = (CS.names.index(n) for n in ("flat", "road", "sidewalk", "car"))
    target = torch.tensor([[[flat, flat, road, 255]]])
    pred = torch.tensor([[[sidewalk, car, road, car]]])
    m = HierarchicalMetrics(CS, partial_labels=True)
    m.update(pred, target)
    rep = m.compute()
    leaf, category = rep["levels"]
    assert leaf["pixel_acc"] == 1.0  # only the road pixel counts at the class level
    assert category["pixel_acc"] == pytest.approx(2 / 3)  # flat->sidewalk right, flat->car wrong, road right


def test_hssn_eval_of_a_cityscapes_model_on_mapillary_through_the_mapping(tmp_path):
    from hssn.cli import main

    cs_root, mv_root = tmp_path / "cs", tmp_path / "mv"
    for split in ("train", "val"):
        fx.make_cityscapes(cs_root, split)
    fx.make_mapillary(mv_root, "validation")
    tiny = ["model.name=deeplabv3plus:resnet10t", "model.pretrained=false",
            "model.kwargs={head_channels: 16, aux_head: false, embed_dim: 16}", "data.crop_size=[32, 48]",
            "train.batch_size=2", "train.iters=1", "train.progress=false", "loss.num_triplets=10", "train.device=cpu",
            "data.num_workers=0", "eval.num_workers=0", "train.eval_at_end=false", "train.amp=false"]
    run = tmp_path / "run"
    assert main(["train", "deeplabv3plus_r101_cityscapes", *tiny, f"data.root={cs_root}",
                 f"train.output_dir={run}"]) == 0
    checkpoint = next((run / "checkpoints").glob("*.pt"))
    out = tmp_path / "cross.json"
    assert main(["eval", "deeplabv3plus_r101_cityscapes", *tiny, "data.name=mapillary_v2", f"data.root={mv_root}",
                 "eval.label_mapping=mapillary_v2_to_cityscapes", "eval.parent_scores=sum",
                 "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [len(lv["iou"]) for lv in report["levels"]] == [5, 4]  # the mapped leaves; their categories
    assert report["num_pixels"] > 0 and report["parent_scores"] == "sum"
    # a mapping whose source tree does not hold the dataset's classes is one line naming the key
    assert main(["eval", "deeplabv3plus_r101_cityscapes", *tiny, f"data.root={cs_root}",
                 "eval.label_mapping=mapillary_v2_to_cityscapes", "--checkpoint", str(checkpoint)]) == 2
