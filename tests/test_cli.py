"""The ``hssn`` command line: help, config errors, configs listing, eval and predict on a tiny checkpoint."""
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hssn.cli import main  # noqa: E402

TINY = ["model.name=deeplabv3plus:resnet10t", "model.kwargs={head_channels: 16, aux_head: false, embed_dim: 16}",
        "data.kwargs={size: 32}", "data.train_kwargs={length: 16}", "data.val_kwargs={length: 3}",
        "train.batch_size=4", "train.iters=2", "train.progress=false", "loss.num_triplets=20", "train.device=cpu"]


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "predict", "export", "models", "demo", "torchrun"):
        assert command in out


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "hssn", "train", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "key.sub=value" in proc.stdout


def test_train_with_unknown_key_fails_clearly(capsys):
    assert main(["train", "synthetic", "train.iterz=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.iterz'" in err and "iters" in err


def test_missing_config_and_bad_value(capsys):
    assert main(["train", "no_such_config"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "synthetic", "loss.distance=manhattan"]) == 2
    assert "loss.distance" in capsys.readouterr().err


def test_configs_listing_and_show(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "deeplabv3plus_r101_cityscapes" in out and "synthetic" in out
    assert main(["configs", "--show", "ocrnet_hrw48_lip", "train.iters=5"]) == 0
    assert "iters: 5" in capsys.readouterr().out


def test_train_eval_predict_round_trip(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "synthetic", *TINY, f"train.output_dir={run}"]) == 0
    checkpoint = run / "checkpoints" / "step_0000002.pt"
    assert checkpoint.is_file()
    capsys.readouterr()

    metrics = tmp_path / "m.json"
    assert main(["eval", "synthetic", *TINY, "--checkpoint", str(checkpoint), "--scales", "0.75", "1.0",
                 "--no-flip", "--out", str(metrics), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "mIoU^3" in out and "per-class IoU" in out
    report = json.loads(metrics.read_text())
    assert report["scales"] == [0.75, 1.0] and report["flip"] is False and report["num_images"] == 3
    assert [lv["k"] for lv in report["levels"]] == [1, 2, 3]
    assert report["parent_scores"] == "path" and report["temperature"] == 1.0 and report["non_path_rate"] == 0.0
    assert all(0 <= lv["ece"] <= 1 and 0 <= lv["classwise_ece"] <= 1 for lv in report["levels"])
    assert (tmp_path / "m.reliability.png").is_file() and "ECE %" in out

    # inferred parents with a temperature fitted on the held-out test split
    metrics = tmp_path / "sum.json"
    assert main(["eval", "synthetic", *TINY, "eval.parent_scores=sum", "eval.temperature=fit",
                 "eval.temperature_split=test", "--checkpoint", str(checkpoint), "--out", str(metrics)]) == 0
    out = capsys.readouterr().out
    report = json.loads(metrics.read_text())
    assert report["parent_scores"] == "sum" and report["temperature"] != 1.0 and 0 <= report["non_path_rate"] <= 1
    assert "inferred parents" in out and "off one root-to-leaf path" in out

    images = []
    for i, size in enumerate([(30, 40), (24, 24)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    out_dir = tmp_path / "pred"
    assert main(["predict", "synthetic", *images, "--checkpoint", str(checkpoint), "--out", str(out_dir),
                 *TINY]) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(f"img{i}_{s}.png" for i in range(2) for s in ("leaf", "k1", "k2", "k3"))
    leaf = np.asarray(Image.open(out_dir / "img0_leaf.png"))
    assert leaf.shape == (30, 40) and leaf.max() < 11
    colour = np.asarray(Image.open(out_dir / "img0_k3.png"))  # k = 3: the coarsest level, as in mIoU^3
    assert colour.shape == (30, 40, 3)
    assert main(["predict", "synthetic", str(tmp_path / "nope.png"), "--checkpoint", str(checkpoint),
                 "--out", str(out_dir)]) == 2
    capsys.readouterr()

    # inputs with one stem in two folders keep their folders (the second overwrote the first before); a 16-bit
    # image is scaled by 65535, so it predicts as its 8-bit version does
    grey = np.random.default_rng(7).integers(0, 256, (24, 32)).astype(np.uint8)
    for folder, arr in (("a", grey.astype(np.uint16) * 257), ("b", np.repeat(grey[..., None], 3, axis=2))):
        (tmp_path / folder).mkdir()
        Image.fromarray(arr).save(tmp_path / folder / "rgb.png")
    out2 = tmp_path / "pred2"
    assert main(["predict", "synthetic", str(tmp_path / "a" / "rgb.png"), str(tmp_path / "b" / "rgb.png"),
                 "--checkpoint", str(checkpoint), "--out", str(out2), *TINY]) == 0
    assert sorted(str(p.relative_to(out2)) for p in out2.rglob("*.png")) == sorted(
        f"{d}/rgb_{s}.png" for d in "ab" for s in ("leaf", "k1", "k2", "k3"))
    assert np.array_equal(np.asarray(Image.open(out2 / "a" / "rgb_leaf.png")),
                          np.asarray(Image.open(out2 / "b" / "rgb_leaf.png")))
    Image.fromarray(grey).save(tmp_path / "a" / "rgb.jpg")
    _one_line_error(capsys, ["predict", "synthetic", str(tmp_path / "a" / "rgb.png"), str(tmp_path / "a" / "rgb.jpg"),
                             "--checkpoint", str(checkpoint), "--out", str(out2), *TINY],
                    "rgb.png", "rgb.jpg", "same output files")


def _one_line_error(capsys, argv, *names):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)


def test_user_errors_are_one_line_and_status_2(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {iters: [1, 2\n")
    _one_line_error(capsys, ["train", str(broken)], "broken.yaml", "YAML")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _one_line_error(capsys, ["eval", "synthetic", *TINY, "--checkpoint", str(empty)], "empty.pt")
    _one_line_error(capsys, ["train", "synthetic", *TINY, "loss.backend=nope"], "loss.backend", "nope")
    for command in ("eval", "predict"):  # --scales goes through eval.scales' rule (it predicted at 1x1 before)
        extra = [str(tmp_path / "x.png"), "--out", str(tmp_path / "o")] if command == "predict" else []
        _one_line_error(capsys, [command, "synthetic", *TINY, *extra, "--checkpoint", str(empty), "--scales", "-1"],
                        "eval.scales")
    _one_line_error(capsys, ["train", "synthetic", *TINY, "loss.segmentation=dice"], "loss.segmentation", "dice")
    _one_line_error(capsys, ["train", "synthetic", *TINY, "loss.backend=cuda", f"train.output_dir={tmp_path}/a"],
                    "loss.backend", "cuda")
    if not torch.cuda.is_available():  # a GPU machine trains on it
        _one_line_error(capsys, ["train", "synthetic", *TINY, "train.device=cuda"], "train.device")
    truncated = tmp_path / "cut.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    from hssn.data.common import read_image

    with pytest.raises(ValueError, match="cut.png"):
        read_image(truncated)


def test_more_user_errors_are_one_line(tmp_path, capsys):
    """The third hostile round (issue 27): config files, tree files, model sizes, weights and checkpoints."""
    (tmp_path / "base5.yaml").write_text("base: 5\n")
    _one_line_error(capsys, ["train", str(tmp_path / "base5.yaml")], "base5.yaml", "'base' must be")
    (tmp_path / "rec.yaml").write_text("data:\n  kwargs: &a {x: *a}\n")
    _one_line_error(capsys, ["train", str(tmp_path / "rec.yaml")], "rec.yaml", "recursive alias")
    (tmp_path / "dup.yaml").write_text("name: a\nname: b\n")
    _one_line_error(capsys, ["train", str(tmp_path / "dup.yaml")], "dup.yaml", "duplicate key 'name'")
    _one_line_error(capsys, ["models", "--input-size", "0", "0", "deeplabv3plus_r101"], "input_size")
    torch.save({"a": 1}, tmp_path / "junk.pt")
    _one_line_error(capsys, ["train", "synthetic", *TINY, f"model.pretrained={tmp_path / 'junk.pt'}",
                             f"train.output_dir={tmp_path / 'r'}"], "model.pretrained", "junk.pt", "'a'")

    # checkpoints of another model / tree, with no model, with a broken tree, a bare state dict to resume
    from hssn.data.synthetic import HIERARCHY
    from hssn.engine import builders
    from hssn.engine.config import load_config

    cfg = load_config("synthetic", TINY)
    weights = builders.build_model(cfg, HIERARCHY, pretrained=False).state_dict()
    key = next(k for k, v in weights.items() if v.dim() == 4)  # a conv weight: another width
    wide = dict(weights, **{key: torch.zeros(weights[key].shape[0] + 3, *weights[key].shape[1:])})
    cases = {"wide.pt": ({"model": wide}, [key, "shape"]), "none.pt": ({"model": None}, ["'model' entry is NoneType"]),
             "other.pt": ({"model": {"x.weight": torch.zeros(1)}}, ["not weights of this model"]),
             "meta.pt": ({"model": weights, "meta": {"hierarchy": {"parents": [5]}, "palette": []}}, ["broken meta"])}
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for name, (state, words) in cases.items():
        torch.save(state, tmp_path / name)
        command = ["predict", "synthetic", str(image), "--out", str(tmp_path / "o"), *TINY] \
            if name == "meta.pt" else ["eval", "synthetic", *TINY]
        _one_line_error(capsys, [*command, "--checkpoint", str(tmp_path / name)], name, *words)
    torch.save(weights, tmp_path / "bare.pt")
    _one_line_error(capsys, ["train", "synthetic", *TINY, f"train.resume={tmp_path / 'bare.pt'}",
                             f"train.output_dir={tmp_path / 'r2'}"], "bare.pt", "not a training checkpoint")

    # the hierarchy tools' keys: a held-out split that does not exist, a mapping that is no file, a flat model's export
    torch.save({"model": weights}, tmp_path / "ok.pt")
    evaluate = ["eval", "synthetic", *TINY, "--checkpoint", str(tmp_path / "ok.pt")]
    _one_line_error(capsys, [*evaluate, "eval.temperature=fit", "eval.temperature_split=holdout"],
                    "eval.temperature_split='holdout'", "split")
    _one_line_error(capsys, [*evaluate, "eval.temperature=fit"], "eval.temperature_split")
    _one_line_error(capsys, [*evaluate, "eval.label_mapping=nowhere.yaml"], "eval.label_mapping", "nowhere.yaml")
    _one_line_error(capsys, [*evaluate, "eval.parent_scores=mean"], "eval.parent_scores", "'sum'")
    _one_line_error(capsys, ["export", "synthetic", *TINY, "eval.parent_scores=sum", "--checkpoint",
                             str(tmp_path / "ok.pt"), "--out", str(tmp_path / "m.onnx")], "eval.parent_scores")


def test_a_dataloader_worker_error_is_its_own_line():
    from hssn.cli import _one_line

    err = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                     '  File "x.py", line 3, in load\n    raise ValueError(...)\n'
                     "ValueError: data/a.png: label values [42] are neither class ids of this dataset nor the ignore value\n")
    assert _one_line(err) == "data/a.png: label values [42] are neither class ids of this dataset nor the ignore value"
    assert _one_line(ValueError("two\nlines")) == "two lines"


def test_predict_takes_overrides_positionally_as_train_and_eval_do(tmp_path):
    from hssn.cli import split_overrides

    odd = tmp_path / "a=b.png"  # an existing file whose name looks like an override stays an image
    odd.write_bytes(b"")
    images, overrides = split_overrides(["x.png", "train.device=cpu", "model.kwargs={a: 1}", str(odd), "dir/y.jpg"])
    assert images == ["x.png", str(odd), "dir/y.jpg"] and overrides == ["train.device=cpu", "model.kwargs={a: 1}"]
    assert main(["predict", "synthetic", "train.device=cpu", "--checkpoint", "none.pt", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("error", [ValueError("a bug"), TypeError("a bug"), KeyError("a bug")])
def test_a_programming_error_keeps_its_traceback(monkeypatch, error):
    """Only user errors (hssn.errors.UserError and its ConfigError, missing files, FloatingPointError) become one
    line and status 2; a ValueError / TypeError from inside the engine is a bug: it propagates (traceback, status 1)."""
    from hssn.engine import trainer

    def broken(cfg):
        raise error

    monkeypatch.setattr(trainer, "train", broken)
    with pytest.raises(type(error), match="a bug"):
        main(["train", "synthetic", *TINY])


def test_user_error_types_are_one_place():
    from hssn.cli import USER_ERRORS
    from hssn.engine.config import ConfigError
    from hssn.errors import UserError

    assert issubclass(ConfigError, UserError) and issubclass(UserError, ValueError)
    assert UserError in USER_ERRORS and ValueError not in USER_ERRORS and TypeError not in USER_ERRORS
