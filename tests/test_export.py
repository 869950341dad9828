"""hssn export: ONNX (run by onnxruntime) and torch.export graphs with path inference inside, against
hssn predict on the same checkpoint and images; the metadata round trip; the CLI's errors."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hssn.cli import main  # noqa: E402

pytest.importorskip("onnxruntime")
TINY = ["model.name=deeplabv3plus:resnet10t", "model.kwargs={head_channels: 16, aux_head: false, embed_dim: 16}",
        "data.kwargs={size: 32}", "data.train_kwargs={length: 16}", "data.val_kwargs={length: 3}",
        "train.batch_size=4", "train.iters=4", "train.progress=false", "loss.num_triplets=20", "train.device=cpu",
        "train.eval_at_end=false"]
H, W = 64, 96  # multiples of the network's coarsest stride (32): a --dynamic graph takes them


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of 4 training steps and three H x W images."""
    root = tmp_path_factory.mktemp("export")
    assert main(["train", "synthetic", *TINY, f"train.output_dir={root / 'run'}"]) == 0
    images = []
    for i in range(3):
        path = root / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        images.append(str(path))
    return root, root / "run" / "checkpoints" / "step_0000004.pt", images


def _leaf(path):
    return np.asarray(Image.open(path)).astype(np.int64)


def test_onnx_equals_predict_and_carries_its_metadata(trained, capsys):
    from hssn.data.synthetic import HIERARCHY
    from hssn.export import read_metadata
    from hssn.export.run import main as run_main

    root, checkpoint, images = trained
    model = root / "m.onnx"
    assert main(["export", "synthetic", *TINY, "--checkpoint", str(checkpoint), "--out", str(model),
                 "--size", str(H), str(W), "--dynamic", "--levels", "all"]) == 0
    meta = read_metadata(model)
    assert json.loads(meta["hssn.hierarchy"]) == HIERARCHY.to_dict() and "[0, 1]" in meta["hssn.input"]
    assert json.loads(meta["hssn.outputs"])[0] == "leaf" and len(json.loads(meta["hssn.outputs"])) == 1 + HIERARCHY.height
    assert run_main([str(model), *images, "--out", str(root / "onnx")]) == 0
    assert main(["predict", "synthetic", *images, "--checkpoint", str(checkpoint), "--out", str(root / "eager"),
                 "--scales", "1.0", "--no-flip", *TINY]) == 0
    same = np.mean([(_leaf(root / "onnx" / f"img{i}_leaf.png") == _leaf(root / "eager" / f"img{i}_leaf.png")).mean()
                    for i in range(3)])
    assert same >= 0.999, same  # float ties aside (the sum of sigmoids is a matrix product in the graph)
    for i in range(3):
        for k in (1, 2, 3):
            a = np.asarray(Image.open(root / "onnx" / f"img{i}_k{k}.png"))
            b = np.asarray(Image.open(root / "eager" / f"img{i}_k{k}.png"))
            assert (a == b).all(axis=-1).mean() >= 0.999

    import onnxruntime as ort  # batch of 2 with --dynamic; every level output is the projection of the leaf map

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).random((2, 3, H, W), dtype=np.float32)
    leaf, *levels = session.run(None, {"image": batch})
    table = HIERARCHY.tables("cpu").level_map.numpy()
    assert leaf.shape == (2, H, W) and all((lv == table[k][leaf]).all() for k, lv in enumerate(levels))
    # without --dynamic the graph takes one image at a time
    fixed = root / "fixed.onnx"
    assert main(["export", "synthetic", *TINY, "--checkpoint", str(checkpoint), "--out", str(fixed),
                 "--size", str(H), str(W)]) == 0
    assert run_main([str(fixed), images[0], "--out", str(root / "fixed")]) == 0
    assert (_leaf(root / "fixed" / "img0_leaf.png") == _leaf(root / "onnx" / "img0_leaf.png")).all()
    # a wrong-size image is a one-line error: the fixed graph names both sizes, the dynamic one its multiple
    Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(root / "odd.png")
    assert run_main([str(fixed), str(root / "odd.png"), "--out", str(root / "o2")]) == 2
    assert f"exported for ({H}, {W})" in capsys.readouterr().err
    assert run_main([str(model), str(root / "odd.png"), "--out", str(root / "o2")]) == 2
    assert "multiples of 32, at least 64" in capsys.readouterr().err


def test_a_dynamic_graph_takes_every_multiple_of_its_stride(trained):
    """--dynamic: any batch and any H, W in multiples of the backbone's coarsest stride; onnxruntime gives the
    eager graph's leaf maps at sizes and batches other than the example's."""
    import onnxruntime as ort

    from hssn.data.synthetic import HIERARCHY
    from hssn.engine import checkpoint as ckpt
    from hssn.engine.config import load_config
    from hssn.export import read_metadata
    from hssn.export.graph import ExportedSegmenter

    root, checkpoint, _ = trained
    path = root / "dyn.onnx"
    assert main(["export", "synthetic", *TINY, "--checkpoint", str(checkpoint), "--out", str(path), "--dynamic",
                 "--size", "64", "64"]) == 0
    assert read_metadata(path)["hssn.size_multiple"] == "32"
    model = ckpt.load_trained_model(load_config("synthetic", TINY), ckpt.load_checkpoint(checkpoint), checkpoint,
                                    HIERARCHY, torch.device("cpu"))
    graph = ExportedSegmenter(model, HIERARCHY)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for batch, h, w in [(1, 64, 64), (2, 96, 160), (1, 224, 64), (3, 128, 96)]:
        x = torch.rand(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            want = graph(x)[0].numpy()
        got = session.run(["leaf"], {"image": x.numpy()})[0]
        assert got.shape == (batch, h, w) and (got == want).mean() >= 0.999, (batch, h, w, (got == want).mean())


def test_torch_export_program_matches_the_eager_graph(trained):
    from hssn.export import read_metadata
    from hssn.export.graph import ExportedSegmenter

    root, checkpoint, _ = trained
    path = root / "m.pt2"
    assert main(["export", "synthetic", *TINY, "--checkpoint", str(checkpoint), "--out", str(path), "--format",
                 "torch", "--size", str(H), str(W), "--dynamic"]) == 0
    program = torch.export.load(str(path))
    x, y = torch.rand(3, 3, H, W), torch.rand(1, 3, 2 * H, W)  # the example's size and another
    got, got_y = program.module()(x)[0], program.module()(y)[0]
    from hssn.data.synthetic import HIERARCHY
    from hssn.engine import checkpoint as ckpt
    from hssn.engine.config import load_config
    from hssn.engine.checkpoint import load_trained_model

    cfg = load_config("synthetic", TINY)
    model = load_trained_model(cfg, ckpt.load_checkpoint(checkpoint), checkpoint, HIERARCHY, torch.device("cpu"))
    with torch.no_grad():
        want, want_y = ExportedSegmenter(model, HIERARCHY)(x)[0], ExportedSegmenter(model, HIERARCHY)(y)[0]
    assert torch.equal(got, want) and torch.equal(got_y, want_y)
    assert read_metadata(path)["hssn.mean"] == json.dumps(list(cfg.model.mean))


def test_export_errors_are_one_line(trained, tmp_path, capsys):
    root, checkpoint, _ = trained

    def one_line(argv, *words):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err

    opts = ["--checkpoint", str(checkpoint), "--size", "32", "32"]
    base = ["export", "synthetic", *TINY]
    one_line([*base, *opts, "--out", str(tmp_path / "m.x"), "--format", "tflite"], "format", "tflite")
    one_line([*base, *opts, "--out", str(tmp_path / "nowhere" / "m.onnx")], "nowhere", "does not exist")
    one_line([*base, *opts, "--out", str(tmp_path / "m.onnx"), "--levels", "some"], "--levels")
    one_line([*base, *opts, "--out", str(tmp_path / "m.onnx"), "--dynamic"], "multiples of 32", "--size 64 64")
    other = "model.kwargs={head_channels: 8, aux_head: false, embed_dim: 16}"  # another head width
    one_line([*base, other, *opts, "--out", str(tmp_path / "m.onnx")], "step_0000004.pt", "shape")


@pytest.mark.parametrize("name", ["ocrnet:resnet10t", "maskformer:resnet10t"])
def test_the_other_architectures_export_to_the_same_maps(name, tmp_path):
    """OCRNet and MaskFormer (its sigmoid-mixture per-pixel map included) as tiny random models: the ONNX
    graph under onnxruntime gives the eager graph's leaf maps."""
    import onnxruntime as ort

    from hssn.data.synthetic import HIERARCHY
    from hssn.export.graph import ExportedSegmenter, export_model
    from hssn.models import build_model

    torch.manual_seed(0)
    graph = ExportedSegmenter(build_model(name, HIERARCHY, pretrained=False, mean=[0.5] * 3, std=[0.25] * 3), HIERARCHY)
    path = export_model(graph, "onnx", tmp_path / "m.onnx", (64, 64), "size", {})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 64, 64), (1, 3, 96, 160)]:  # the example's size, and another batch and size
        x = torch.rand(*shape)
        with torch.no_grad():
            assert np.array_equal(session.run(["leaf"], {"image": x.numpy()})[0], graph(x)[0].numpy())


def test_a_fixed_size_backbone_refuses_a_dynamic_image_size(tmp_path):
    """Swin is built for one image size (its attention windows and position tables): --dynamic (size) is a clear
    error pointing to --dynamic-batch, before any tracing."""
    from hssn.data.synthetic import HIERARCHY
    from hssn.errors import UserError
    from hssn.export.graph import ExportedSegmenter, export_model
    from hssn.models import build_model

    model = build_model("maskformer:swin_tiny_patch4_window7_224", HIERARCHY, pretrained=False, img_size=(224, 224),
                        head_channels=16, embed_dim=16)
    assert model.backbone.fixed_size == (224, 224)
    with pytest.raises(UserError, match="built for 224 x 224 images.*--dynamic-batch"):
        export_model(ExportedSegmenter(model, HIERARCHY), "onnx", tmp_path / "m.onnx", (224, 224), "size", {})
