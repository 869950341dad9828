"""Configs: every shipped config parses, builds its model (full size, on the meta device) and its datasets
(tiny on-disk fixtures); defaults, bases, overrides and unknown keys."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from hssn import hierarchies  # noqa: E402
from hssn.engine import builders  # noqa: E402
from hssn.engine.config import DEFAULTS, available, load_config, parse_override  # noqa: E402

ARCHS = ("deeplabv3plus_r101", "ocrnet_hrw48", "maskformer_swins")
PAPER_DATASETS = ("cityscapes", "mapillary_v2", "lip", "pascal_person_part")
DATASETS = PAPER_DATASETS + ("ade20k", "pascal_part108")
PAPER = {  # iterations, batch, crop; ADE20K: the usual ADE20K schedule, PASCAL-Part-108: LogicSeg's (no paper rows)
    "cityscapes": (80000, 8, [512, 1024]), "mapillary_v2": (240000, 8, [512, 1024]),
    "lip": (160000, 16, [480, 480]), "pascal_person_part": (80000, 16, [480, 480]), "ade20k": (160000, 16, [512, 512]),
    "pascal_part108": (60000, 16, [512, 512]),
}


def test_shipped_configs():
    assert set(available()) == {f"{a}_{d}" for a in ARCHS for d in DATASETS} | {"synthetic"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_paper_settings(arch, dataset):
    cfg = load_config(f"{arch}_{dataset}")
    assert cfg.name == f"{arch}_{dataset}"
    assert cfg.model.name == arch and cfg.data.name == dataset
    iters, batch, crop = PAPER[dataset]
    assert (cfg.train.iters, cfg.train.batch_size, list(cfg.data.crop_size)) == (iters, batch, crop)
    assert cfg.data.scale_range == (0.5, 2.0)
    assert cfg.to_dict()["loss"] == {**DEFAULTS["loss"], "segmentation": "ftm", "gamma": 2.0, "triplet": "hierarchy",
                                     "num_triplets": 200, "beta_max": 0.5}
    assert cfg.eval.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and cfg.eval.flip is True
    o = cfg.optim
    if arch == "maskformer_swins":
        assert (o.name, o.lr, o.weight_decay) == ("adamw", 6e-5, 0.01)
    else:
        assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert o.poly_power == 0.9


@pytest.mark.parametrize("arch", ARCHS)
def test_configs_build_their_models(arch):
    """The full-size model of every dataset, built on the meta device (shapes only), runs a forward."""
    for dataset in DATASETS:
        cfg = load_config(f"{arch}_{dataset}")
        hierarchy = hierarchies.get(dataset)
        with torch.device("meta"):
            model = builders.build_model(cfg, hierarchy, pretrained=False)
        out = model.eval()(torch.empty(1, 3, 64, 96, device="meta"))
        assert out["logits"].shape[:2] == (1, hierarchy.num_channels)


@pytest.mark.parametrize("dataset", DATASETS)
def test_configs_build_their_datasets(dataset, tmp_path):
    import fixtures_datasets as fx

    makers = {
        "cityscapes": lambda r, s: fx.make_cityscapes(r, s),
        "mapillary_v2": lambda r, s: fx.make_mapillary(r, {"train": "training", "val": "validation"}[s]),
        "lip": lambda r, s: fx.make_lip(r, s),
        "pascal_person_part": lambda r, s: fx.make_pascal_person_part(r, s),
        "ade20k": lambda r, s: fx.make_ade20k(r, s),
        "pascal_part108": lambda r, s: fx.make_pascal_part108(r, s),
    }
    for split in ("train", "val"):
        makers[dataset](tmp_path, split)
    cfg = load_config(f"deeplabv3plus_r101_{dataset}", [f"data.root={tmp_path}", "data.crop_size=[24, 40]"])
    if dataset in ("mapillary_v2", "ade20k", "pascal_part108"):
        cfg = load_config(f"deeplabv3plus_r101_{dataset}", [f"data.root={tmp_path}", "data.crop_size=[24, 40]",
                                                            "data.train_resize=[64, 96]", "data.eval_size=[16, 24]"])
    train, val = builders.build_dataset(cfg, "train"), builders.build_dataset(cfg, "val")
    item = train[0]
    assert item["image"].shape == (3, 24, 40) and item["label"].shape == (24, 40)
    vitem = val[0]
    if dataset in ("mapillary_v2", "ade20k", "pascal_part108"):  # scored at the label's native size (the official protocol), image resized
        assert vitem["image"].shape[1:] == (16, 24) and vitem["label"].shape == (32, 48)
        if dataset == "mapillary_v2":
            assert train.scored_leaves == train.evaluated and cfg.eval.scored_classes == "dataset"
    else:
        assert vitem["image"].shape[1:] == vitem["label"].shape
    if dataset == "lip":
        assert len(train.flip_pairs) == 3


def test_synthetic_config_builds_small_model():
    cfg = load_config("synthetic")
    ds = builders.build_dataset(cfg, "val")
    model = builders.build_model(cfg, ds.hierarchy)
    out = model.eval()(torch.rand(1, 3, 32, 32))
    assert out["logits"].shape[1] == ds.hierarchy.num_channels
    assert cfg.model.pretrained is False and cfg.train.device == "cpu"


def test_defaults_without_file_and_name_from_file(tmp_path):
    assert load_config().to_dict() == DEFAULTS
    path = tmp_path / "mine.yaml"
    path.write_text("train: {iters: 5}\n")
    cfg = load_config(path)
    assert cfg.name == "mine" and cfg.train.iters == 5 and cfg.train.batch_size == 8


def test_base_configs_merge_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {iters: 7, batch_size: 4}\nmodel: {kwargs: {head_channels: 32}}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain: {iters: 9}\nmodel: {kwargs: {aux_head: false}}\n")
    cfg = load_config(tmp_path / "b.yaml", ["train.seed=3"])
    assert (cfg.train.iters, cfg.train.batch_size, cfg.train.seed) == (9, 4, 3)
    assert cfg.model.kwargs == {"head_channels": 32, "aux_head": False}
    (tmp_path / "c.yaml").write_text("base: synthetic\n")
    assert load_config(tmp_path / "c.yaml").data.name == "synthetic"
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "loop.yaml")


def test_overrides_parse_yaml_values():
    cfg = load_config("synthetic", ["loss.triplet=null", "optim.lr=1e-4", "eval.scales=[0.5, 1.0]",
                                    "model.kwargs.head_channels=8", "train.amp=false"])
    assert cfg.loss.triplet is None and cfg.optim.lr == 1e-4
    assert cfg.eval.scales == (0.5, 1.0) and cfg.model.kwargs["head_channels"] == 8
    assert cfg.train.amp is False
    assert parse_override("a.b= x") == (["a", "b"], "x")


@pytest.mark.parametrize("override, match", [
    ("train.itres=5", "'train.itres'"), ("bogus=1", "'bogus'"), ("train=3", "section"),
    ("eval.mode=tiled", "eval.mode"), ("train.iters=0", "train.iters"),
    ("eval.scales=[]", "eval.scales"), ("noequals", "key.sub=value"), ("data.crop_size=[1]", "data.crop_size"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        load_config("synthetic", [override])


def test_unknown_key_in_file_and_missing_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: {learning_rate: 0.1}\n")
    with pytest.raises(ValueError, match="'optim.learning_rate'"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_optimizer_and_poly_schedule():
    cfg = load_config("maskformer_swins_lip", ["train.iters=10"])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    opt = builders.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW) and [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    lrs = []
    for step in range(11):
        assert builders.set_lr(opt, cfg, step) == opt.param_groups[-1]["lr"]
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
    assert lrs[0] == pytest.approx(6e-5)
    assert lrs[5] == pytest.approx(6e-5 * 0.5 ** 0.9)
    assert opt.param_groups[0]["lr"] == 0.0
    warm = builders.PolySchedule(100, 1.0, 0.0, warmup_iters=10, warmup_ratio=0.1)
    assert warm(0) == pytest.approx(0.1) and warm(10) == pytest.approx(0.9)


def test_yaml_numbers_and_types_follow_the_schema(tmp_path):
    from hssn.engine.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("base: synthetic\noptim: {lr: 1e-3, weight_decay: 1e-4}\n")
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 1e-4
    for override, key in [("optim.momentum=fast", "optim.momentum"), ("train.seed=1.5", "train.seed"),
                          ("train.keep_checkpoints=0", "train.keep_checkpoints"), ("train.amp=1", "train.amp"),
                          ("optim.weight_decay='1e-4'", "optim.weight_decay")]:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            load_config("synthetic", [override])
    path.write_text("optim: {lr: [1, 2\n")
    with pytest.raises(ValueError, match="c.yaml.*not valid YAML"):
        load_config(path)


def test_an_override_replaces_an_open_section_or_sets_one_key():
    from hssn.engine.config import load_config

    base = load_config("synthetic").model.kwargs
    assert "embed_dim" in base
    assert load_config("synthetic", ["model.kwargs={head_channels: 8}"]).model.kwargs == {"head_channels": 8}
    one = load_config("synthetic", ["model.kwargs.head_channels=8"]).model.kwargs
    assert one == {**base, "head_channels": 8}


@pytest.mark.parametrize("override, match", [("loss.segmentation=dice", "'loss.segmentation' must be one of"),
                                             ("loss.triplet=cosine", "'loss.triplet'"),
                                             ("optim.name=lamb", "'optim.name'"),
                                             ("loss.distance=l1", "'loss.distance'"),
                                             ("loss.backend=fast", "'loss.backend'")])
def test_registry_backed_keys_are_checked_against_their_registries(override, match):
    """The registries (SEGMENTATION_LOSSES, TRIPLET_VARIANTS, DISTANCES, OPTIMIZERS, backends) are the lists;
    the schema reads them when it checks a value, so a bad name fails when the config loads."""
    from hssn.engine.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_config("synthetic", [override])


def test_docs_key_table_and_defaults_are_generated_from_the_schema():
    """docs/engine.md's key table is :func:`key_table` (regenerate: python tools/config_docs.py); `hssn configs
    --defaults` is YAML that loads back to the defaults, every key with its rule and help."""
    from pathlib import Path

    from hssn.engine.config import defaults_yaml, key_table, load_yaml

    doc = (Path(__file__).resolve().parent.parent / "docs" / "engine.md").read_text()
    assert key_table() in doc, "docs/engine.md's config key table is stale: run python tools/config_docs.py"
    assert load_yaml(defaults_yaml()) == DEFAULTS
    assert defaults_yaml().count("#") >= sum(len(v) if isinstance(v, dict) else 1 for v in DEFAULTS.values())


def test_a_config_is_immutable_and_round_trips(tmp_path):
    import attrs

    from hssn.engine.config import dump_config

    cfg = load_config("synthetic", ["eval.scales=[0.5, 1.0]"])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.train.iters = 3
    path = tmp_path / "again.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert cfg.with_overrides(["train.iters=3"]).train.iters == 3 and cfg.train.iters == 1000


def test_duplicate_yaml_keys_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train: {iters: 5}\ntrain: {iters: 6}\n")
    with pytest.raises(ValueError, match="duplicate key 'train'"):
        load_config(path)


@pytest.mark.parametrize("override,key", [
    ("optim.grad_clip=-1", "optim.grad_clip"),  # clip_grad_norm_(max_norm=-1) flipped every gradient's sign
    ("optim.poly_power=-1", "optim.poly_power"), ("optim.lr=.nan", "optim.lr"), ("optim.warmup_ratio=2", "optim.warmup_ratio"),
    ("eval.scales=[.inf]", "eval.scales"), ("eval.max_images=-1", "eval.max_images"),
    ("data.eval_size=[0, 0]", "data.eval_size"), ("train.output_dir=runs/{foo}", "train.output_dir"),
    ("loss.gamma=-1", "loss.gamma"), ("loss.margin_eps=.nan", "loss.margin_eps"), ("data.cat_max_ratio=0", "data.cat_max_ratio"),
    ("data.crop_size=[.inf, 4]", "data.crop_size")])
def test_nonsensical_values_are_config_errors_naming_the_key(override, key):
    from hssn.engine.config import ConfigError

    with pytest.raises(ConfigError, match=f"config key '{key}' must be") as err:
        load_config("synthetic", [override])
    assert err.value.key == key and isinstance(err.value, ValueError)


@pytest.mark.parametrize("dataset", ["ade20k", "pascal_part108"])
def test_the_new_dataset_configs_train_and_evaluate_on_their_fixtures(dataset, tmp_path):
    """`hssn train deeplabv3plus_r101_ade20k` (and PASCAL-Part-108) on a tiny model: trains, evaluates per level."""
    import fixtures_datasets as fx
    from hssn.engine.trainer import train

    for split in ("train", "val"):
        getattr(fx, f"make_{dataset}")(tmp_path, split)
    cfg = load_config(f"deeplabv3plus_r101_{dataset}", [
        f"data.root={tmp_path}", "model.name=deeplabv3plus:resnet10t", "model.pretrained=false",
        "model.kwargs={head_channels: 16, aux_head: false, embed_dim: 16}", "data.crop_size=[32, 32]",
        "data.train_resize=null", "data.eval_size=null", "train.batch_size=2", "train.iters=2",
        "train.progress=false", "loss.num_triplets=10", "train.device=cpu", "data.num_workers=0",
        "eval.num_workers=0", "eval.scales=[1.0]", "eval.flip=false", f"train.output_dir={tmp_path / 'run'}"])
    result = train(cfg)
    levels = result["report"]["levels"]
    tree = hierarchies.get(dataset)
    assert [lv["k"] for lv in levels] == list(range(1, tree.height + 1))
    assert all("ece" in lv for lv in levels) and result["report"]["num_pixels"] > 0
