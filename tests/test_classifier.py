"""The crop classifier stage: crop geometry, the combination rule, the ONNX graph surgery against PyTorch on a
real model and real images, and the whole `steel-inspect classifier` command on a copy of the registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from inspection.cli import main
from inspection.config import REPO_DIR
from inspection.datasets import Sample, load_split, read_image
from inspection.detector import Detector
from inspection.manifest import Manifest
from inspection.registry import Registry
from tests.line_configs import assert_clean_strip_decided, clean_strip_gate_config
from training.classifier import (
    CONTEXT,
    CROP,
    MIN_SIDE,
    ClassifierRecipe,
    Crop,
    CropClassifier,
    RelabelStage,
    choose_verify_weight,
    choose_weight,
    crops,
    square_boxes,
    train_classifier,
)
from training.relabel import (
    RelabelError,
    attach,
    checkpoint_key,
    export_stage,
    false_detections,
    parity,
    relabel_version,
)


def test_square_boxes_are_centred_squares_with_a_margin_and_a_minimum_side() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 30.0], [5.0, 5.0, 7.0, 6.0]])
    squares = square_boxes(boxes)
    assert torch.allclose((squares[:, :2] + squares[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
    sides = squares[:, 2:] - squares[:, :2]
    assert torch.allclose(sides[:, 0], sides[:, 1])
    assert sides[0, 0].item() == pytest.approx(40 * CONTEXT) and sides[1, 0].item() == pytest.approx(MIN_SIDE * CONTEXT)


def test_crops_cut_the_box_region_and_read_mid_grey_outside_the_image() -> None:
    image = torch.zeros(1, 1, 64, 64)
    image[0, 0, 16:32, 16:32] = 1.0  # a bright square; the rest is the normalised mid-grey 0
    out = crops(image, torch.tensor([0, 0]), torch.tensor([[16.0, 16.0, 32.0, 32.0], [-40.0, -40.0, -8.0, -8.0]]))
    assert out.shape == (2, 1, CROP, CROP)
    # the crop is the square (its outermost samples blend with the grey around it)
    assert torch.allclose(out[0, 0, 3:-3, 3:-3], torch.ones(CROP - 6, CROP - 6))
    assert out[1].abs().max().item() == 0.0  # wholly outside: nothing but grey


def _detector_without_classifier() -> Manifest:
    """The active cold model, or the model its crop classifier was appended to."""
    registry = Registry(REPO_DIR / "models")
    active = registry.resolve("cold")
    return registry.resolve(active.data["classifier"]["source_version"]) if active.data.get("classifier") else active


def test_a_kept_classifier_fits_every_detector_of_its_dataset_unless_it_verifies() -> None:
    """`classifier --reuse`: a plain classifier learned from the dataset's boxes only, so a new detector
    of that dataset may use it; a verifying one learned its source's false detections."""
    registry = Registry(REPO_DIR / "models")
    one, two = (registry.resolve(v) for v in ("cold-20261202-3", "cold-20261202-4"))
    hot = registry.resolve("hot-20261205-2")
    plain, verifying = ClassifierRecipe(), ClassifierRecipe(verify=True)
    assert checkpoint_key(one, plain, 0, None) == checkpoint_key(two, plain, 0, None)
    assert checkpoint_key(one, verifying, 0, None) != checkpoint_key(two, verifying, 0, None)
    assert checkpoint_key(one, plain, 0, None) != checkpoint_key(hot, plain, 0, None)  # another dataset
    assert checkpoint_key(one, plain, 0, None) != checkpoint_key(one, plain, 1, None)
    assert checkpoint_key(one, plain, 0, None) != checkpoint_key(one, ClassifierRecipe(crop=64), 0, None)


def _stage(num_classes: int, weight: float, min_score: float, verify_weight: float | None = None) -> RelabelStage:
    torch.manual_seed(0)
    outputs = num_classes + (verify_weight is not None)  # a verifying classifier has a background output
    return RelabelStage(CropClassifier(outputs, imagenet=False), weight, min_score, verify_weight=verify_weight)


def _detections(n: int = 2, k: int = 5, c: int = 3) -> tuple[torch.Tensor, ...]:
    """Score-sorted detections as the detector outputs them; no two boxes overlap at IoU >= 0.3."""
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (n, 1, 64, 96), dtype=np.uint8))
    boxes = torch.tensor([[[8.0, 8.0, 30.0, 24.0], [40.0, 10.0, 60.0, 50.0], [0.0, 0.0, 10.0, 10.0],
                           [70.0, 30.0, 90.0, 60.0], [20.0, 30.0, 44.0, 44.0]]] * n)[:, :k]
    scores = torch.tensor([[0.9, 0.5, 0.3, 0.08, 0.0]] * n)[:, :k]
    class_scores = torch.from_numpy(rng.uniform(0.01, 1.0, (n, k, c)).astype(np.float32))
    labels = class_scores.argmax(dim=2)
    return image, boxes, scores, labels, class_scores, torch.rand(n, k)


def test_stage_relabels_only_detections_that_can_pass_a_threshold() -> None:
    image, boxes, scores, labels, class_scores, novelty = _detections()
    with torch.no_grad():
        by_classifier = _stage(3, 1.0, 0.1)(image, boxes, scores, labels, class_scores, novelty)[2:4]
        by_detector = _stage(3, 0.0, 0.1)(image, boxes, scores, labels, class_scores, novelty)[2:4]
    looked_at = scores >= 0.1
    normalised = class_scores / class_scores.sum(dim=2, keepdim=True)
    # weight 0: the detector's own distribution, its own arg-max
    assert torch.allclose(by_detector[1], normalised, atol=1e-5)
    assert torch.equal(by_detector[0], labels)
    # weight 1: the classifier alone decides the looked-at ones; the rest keep label and distribution
    classifier = _stage(3, 1.0, 0.1).classifier
    with torch.no_grad():
        x = (image.float() - 127.5) / 128.0
        flat = boxes.reshape(-1, 4)[looked_at.reshape(-1)]
        index = torch.nonzero(looked_at.reshape(-1))[:, 0] // boxes.shape[1]
        direct = torch.softmax(classifier(crops(x, index, square_boxes(flat))), dim=1)
    assert torch.allclose(by_classifier[1][looked_at], direct, atol=1e-5)
    assert torch.equal(by_classifier[0][looked_at], direct.argmax(dim=1))
    assert torch.equal(by_classifier[0][~looked_at], labels[~looked_at])
    assert torch.allclose(by_classifier[1].sum(dim=2), torch.ones(2, 5), atol=1e-5)


def test_stage_keeps_one_box_where_two_detector_classes_on_one_defect_become_one_class() -> None:
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 1, 64, 96), dtype=np.uint8))
    same_place = [10.0, 10.0, 40.0, 40.0]
    boxes = torch.tensor([[same_place, same_place, [50.0, 10.0, 80.0, 40.0], [50.0, 10.0, 80.0, 40.0]]])
    scores = torch.tensor([[0.9, 0.6, 0.5, 0.4]])
    labels = torch.tensor([[0, 1, 2, 2]])  # one defect as classes 0 and 1; another twice as class 2
    class_scores, novelty = torch.full((1, 4, 3), 0.2), torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    with torch.no_grad():
        out_boxes, out_scores, out_labels, _, out_novelty = _stage(3, 1.0, 0.1)(image, boxes, scores, labels,
                                                                                class_scores, novelty)
    # the same crop, so the same class for both boxes of the first defect: the second is dropped and sorted last
    assert torch.equal(out_scores, torch.tensor([[0.9, 0.5, 0.4, 0.0]]))
    assert out_novelty.tolist() == [[1.0, 3.0, 4.0, 2.0]]
    assert torch.equal(out_boxes[0, 3], boxes[0, 1]) and out_labels[0, 0] == out_labels[0, 3]
    # boxes the detector gave one class stay as its NMS left them
    assert out_scores[0, 1] > 0 and out_scores[0, 2] > 0


def test_verifying_stage_rescores_looked_at_detections_by_the_background_output() -> None:
    image, boxes, scores, labels, class_scores, novelty = _detections()
    stage = _stage(3, 1.0, 0.1, verify_weight=0.5)
    looked_at = scores >= 0.1
    with torch.no_grad():
        out_boxes, out_scores, out_labels, out_class_scores, out_novelty = stage(image, boxes, scores, labels,
                                                                                 class_scores, novelty)
        x = (image.float() - 127.5) / 128.0
        flat = boxes.reshape(-1, 4)[looked_at.reshape(-1)]
        index = torch.nonzero(looked_at.reshape(-1))[:, 0] // boxes.shape[1]
        logits = stage.classifier(crops(x, index, square_boxes(flat)))
    background = torch.softmax(logits, dim=1)[:, 3]
    expected = scores.clone()
    expected[looked_at] = torch.sqrt(scores[looked_at] * (1 - background))
    # the output is re-sorted by the new score: find each input detection by its (unique) box
    for row in range(2):
        for j in range(5):
            where = (out_boxes[row] == boxes[row, j]).all(dim=1).nonzero()[:, 0]
            assert out_scores[row, where].item() == pytest.approx(expected[row, j].item(), abs=1e-5)
            assert out_novelty[row, where].item() == novelty[row, j].item()
    assert torch.all(out_scores[:, :-1] >= out_scores[:, 1:])
    # the class comes from the class outputs alone, the background output takes no part in it
    assert torch.allclose(out_class_scores.sum(dim=2), torch.ones(2, 5), atol=1e-5)
    direct = torch.softmax(logits[:, :3], dim=1).argmax(dim=1)
    by_box = {tuple(b.tolist()): int(lab) for b, lab in zip(out_boxes.reshape(-1, 4), out_labels.reshape(-1),
                                                            strict=True)}
    assert [by_box[tuple(b.tolist())] for b in flat] == direct.tolist()
    # weight 0: the detector's scores, untouched
    with torch.no_grad():
        plain = _stage(3, 1.0, 0.1, verify_weight=0.0)(image, boxes, scores, labels, class_scores, novelty)[1]
    assert torch.equal(plain, scores)


def test_choose_verify_weight_follows_a_background_output_that_separates_and_ties_keep_the_detector() -> None:
    scores = np.array([0.9, 0.6, 0.3, 0.25, 0.2, 0.15])
    real = np.array([True, False, False, True, True, False])
    telling = np.where(real, 0.05, 0.95)  # the background output knows which are real
    weight, table = choose_verify_weight(scores, telling, real)
    assert weight > 0.0 and table[str(weight)] == 1.0 and table["0.0"] < 1.0
    weight, _ = choose_verify_weight(scores, np.full(6, 0.5), real)  # says nothing: the detector's score alone
    assert weight == 0.0


def test_verifying_classifier_needs_background_crops_with_the_background_label() -> None:
    images = [np.full((64, 64), 100, np.uint8)]
    recipe = ClassifierRecipe(epochs=1, verify=True)

    sample = Sample(image_path=Path("a.jpg"), boxes=np.array([[8, 8, 30, 30]], np.float32), labels=("a",),
                    image_class="a")
    with pytest.raises(ValueError, match="needs background crops"):
        train_classifier(images, [sample], images, [sample], ("a", "b"), recipe)
    with pytest.raises(ValueError, match="must have label 2"):
        train_classifier(images, [sample], images, [sample], ("a", "b"), recipe,
                         negatives=[Crop(0, np.array([1, 1, 9, 9], np.float32), 1)])


@pytest.mark.datasets
def test_false_detections_are_the_sources_detections_that_found_no_labelled_box(datasets_dir: Path) -> None:
    from training.metrics import iou_matrix

    parent = _detector_without_classifier()
    reference = Detector(parent, providers="cpu")
    samples = load_split(datasets_dir, "cr7-det", "val")[:40]
    images = [read_image(s.image_path) for s in samples]
    negatives = false_detections(reference, [*(s.boxes for s in samples), None], [*images, images[0]], 0.05,
                                 len(parent.classes))
    assert negatives and all(n.label == len(parent.classes) for n in negatives)
    for n in negatives:
        if n.image < len(samples) and len(samples[n.image].boxes):
            assert iou_matrix(n.box[None], samples[n.image].boxes.astype(np.float32)).max() < 0.3
    # the last image stands for defect-free strip (no labelled boxes): every detection on it is false
    on_plain = sum(1 for n in negatives if n.image == len(samples))
    assert on_plain == len(reference.detect([images[0]], min_score=0.05)[0].boxes)


def test_choose_weight_follows_the_better_namer_and_ties_keep_the_detector() -> None:
    truth = np.array([0, 1, 1, 0])
    detector = np.array([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.9, 0.1]])  # one wrong
    right = np.eye(2)[truth] * 0.98 + 0.01
    weight, table = choose_weight(detector, right, truth)
    assert weight > 0.0 and table[str(weight)] == 1.0 and table["0.0"] == 0.75
    weight, _ = choose_weight(detector, detector, truth)  # the classifier adds nothing: keep the detector
    assert weight == 0.0


@pytest.mark.datasets
@pytest.mark.parametrize("verify_weight", [None, 0.5])
def test_attached_graph_matches_pytorch_on_real_images_and_keeps_the_other_outputs(
        tmp_path: Path, datasets_dir: Path, verify_weight: float | None) -> None:
    parent = _detector_without_classifier()
    stage = _stage(len(parent.classes), 0.5, 0.1, verify_weight)
    merged = attach(parent.model_path, export_stage(stage, tmp_path / "stage.onnx", len(parent.classes)),
                    tmp_path / "model.onnx")
    graph = onnx.load(str(merged)).graph
    assert [o.name for o in graph.output] == ["boxes", "scores", "labels", "class_scores", "novelty"]
    assert [i.name for i in graph.input] == ["image"]
    reference = Detector(parent, providers="cpu")
    images = [read_image(s.image_path) for s in load_split(datasets_dir, "cr7-det", "val")[::90]]
    images.append(np.full((96, 160), 128, np.uint8))  # plain grey: no detection to look at
    checked = parity(reference, stage, merged, images)
    assert checked["images"] == len(images) and checked["labels_compared"] > 0
    # A batch of two, another size: every detection left is one of the source's (box, score, novelty), with
    # its score lowered (never raised above the source's) by the background output when the stage verifies.
    batch = np.stack([reference._pad(images[0][:256, :320]), reference._pad(images[1][:256, :320])])[:, None]
    source, new = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": batch})
                   for path in (parent.model_path, merged))
    def detections(outputs: list[np.ndarray], row: int) -> dict[tuple[float, ...], list[float]]:
        """(box, novelty) -> the scores there (one cell may hold detections of several classes)."""
        out: dict[tuple[float, ...], list[float]] = {}
        for b, s, v in zip(outputs[0][row], outputs[1][row], outputs[4][row], strict=True):
            if s > 0:
                out.setdefault((*map(float, b), float(v)), []).append(float(s))
        return out

    rescored = 0
    for row in (0, 1):
        mine, theirs = detections(new, row), detections(source, row)
        assert mine and set(mine) <= set(theirs)
        for place, scores in mine.items():
            changed = [s for s in scores if s not in theirs[place]]
            if verify_weight is None:
                assert not changed
            else:  # sqrt(score * (1 - p_background)) <= sqrt(score) of a looked-at (>= 0.1) source detection
                assert all(s <= max(theirs[place]) ** 0.5 + 1e-6 and max(theirs[place]) >= 0.1 for s in changed)
            rescored += len(changed)
    assert (source[1] >= 0.1).any() and not np.array_equal(source[3], new[3])
    assert (rescored > 0) == (verify_weight is not None)


def test_attach_refuses_a_graph_without_class_scores(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["boxes"])], "plain",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("boxes", TensorProto.UINT8, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "plain.onnx"))
    stage = _stage(3, 0.5, 0.1)
    with pytest.raises(RelabelError, match="expected input image and outputs boxes, scores, labels"):
        attach(tmp_path / "plain.onnx", export_stage(stage, tmp_path / "stage.onnx", 3), tmp_path / "out.onnx")


@pytest.mark.slow
@pytest.mark.datasets
def test_classifier_command_registers_a_measured_version(tmp_path: Path, datasets_dir: Path, ipc_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    registry_dir = tmp_path / "models"
    source = _detector_without_classifier()
    (registry_dir / "cold").mkdir(parents=True)
    shutil.copytree(source.model_path.parent, registry_dir / "cold" / source.version)
    Registry(registry_dir).promote(source.version, reason="test setup")

    code = main(["classifier", source.version, "--models", str(registry_dir), "--datasets", str(datasets_dir),
                 "--max-images", "10", "--epochs", "1", "--threads", "2", "--out", str(tmp_path / "cls"),
                 "--json", str(tmp_path / "summary.json"), "--config", str(clean_strip_gate_config(tmp_path, ipc_dir))])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    new = Registry(registry_dir).resolve(summary["version"])  # loads = sha256 verified
    info = new.data["classifier"]
    assert info["source_version"] == source.version and info["source_sha256"] == source.sha256
    assert info["weight"] in (0.0, 0.25, 0.5, 0.75, 1.0) and info["training"]["train_boxes"] > 0
    assert info["parity"]["labels_compared"] > 0
    assert set(new.data["operating_thresholds"]) == set(source.classes)
    assert min(new.data["operating_thresholds"].values()) >= info["min_score"]
    assert new.data["metrics"]["test"]["images"] > 0 and new.data["metrics"]["source_test_same_run"]["images"] > 0
    assert set(new.data["speed_side_by_side"]["threads_1"]) == {"source", "classifier"}
    image = read_image(load_split(datasets_dir, "cr7-det", "test")[0].image_path)
    found = Detector(new, providers="cpu").detect([image])
    assert all(0 <= label < len(new.classes) for label in found[0].labels)
    assert (Registry(registry_dir).active("cold") == new.version) == summary["activated"]
    assert_clean_strip_decided(new.data["promotion"], summary["activated"])
    with pytest.raises(RelabelError, match="already has a crop classifier"):
        relabel_version(new.version, models_dir=registry_dir, datasets_dir=datasets_dir, register=False)
    # The kept classifier is used again for the same source and recipe, not for another recipe.
    again = relabel_version(source.version, models_dir=registry_dir, datasets_dir=datasets_dir, register=False,
                            epochs=1, max_images=10, out_dir=tmp_path / "cls", reuse=True)
    assert again["classifier_weight"] == summary["classifier_weight"]
    assert again["val_accuracy_per_weight"] == summary["val_accuracy_per_weight"]
    assert "reused_from" in again["training"] and "reused_from" not in info["training"]
    other = relabel_version(source.version, models_dir=registry_dir, datasets_dir=datasets_dir, register=False,
                            epochs=2, max_images=10, out_dir=tmp_path / "cls", reuse=True)
    assert "reused_from" not in other["training"]
    (tmp_path / "cls" / "classifier.pt").write_bytes(b"cut short by a full disk")  # never trusted: trained again
    corrupt = relabel_version(source.version, models_dir=registry_dir, datasets_dir=datasets_dir, register=False,
                              epochs=2, max_images=10, out_dir=tmp_path / "cls", reuse=True)
    assert "reused_from" not in corrupt["training"]


@pytest.mark.slow
@pytest.mark.datasets
def test_classifier_command_with_verify_rescores_and_records_how(tmp_path: Path, datasets_dir: Path) -> None:
    registry_dir = tmp_path / "models"
    source = _detector_without_classifier()
    (registry_dir / "cold").mkdir(parents=True)
    shutil.copytree(source.model_path.parent, registry_dir / "cold" / source.version)
    Registry(registry_dir).promote(source.version, reason="test setup")

    summary = relabel_version(source.version, models_dir=registry_dir, datasets_dir=datasets_dir, epochs=1,
                              max_images=10, out_dir=tmp_path / "cls", verify=True)
    new = Registry(registry_dir).resolve(summary["version"])
    info = new.data["classifier"]
    assert info["command"].endswith("--verify") and info["training"]["recipe"]["verify"] is True
    crops_used = info["training"]["background_crops"]
    assert crops_used["train"] > 0 and 0 < crops_used["per_epoch"] <= crops_used["train"]
    verify = info["verify"]
    assert verify["weight"] in (0.0, 0.25, 0.5, 0.75, 1.0) and set(verify["val_ap_per_weight"]) == {
        "0.0", "0.25", "0.5", "0.75", "1.0"}
    assert 0 < verify["val_real"] <= verify["val_detections"]
    assert "rescored" in new.data["outputs"]["scores"]
    image = read_image(load_split(datasets_dir, "cr7-det", "test")[0].image_path)
    found = Detector(new, providers="cpu").detect([image], min_score=0.0)[0]
    assert np.all(np.diff(found.scores) <= 0) and np.all((found.scores >= 0) & (found.scores <= 1))
    assert all(0 <= label < len(new.classes) for label in found.labels)  # background is never a class
    # the kept verifying classifier (one more output) is used again for the same source and recipe
    again = relabel_version(source.version, models_dir=registry_dir, datasets_dir=datasets_dir, epochs=1,
                            max_images=10, out_dir=tmp_path / "cls", verify=True, register=False, reuse=True)
    assert "reused_from" in again["training"] and again["classifier_weight"] == summary["classifier_weight"]
