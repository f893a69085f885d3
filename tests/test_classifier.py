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
    feature_bank,
    square_boxes,
    train_classifier,
)
from training.relabel import (
    RelabelError,
    attach,
    checkpoint_key,
    classifier_of,
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


def test_stage_with_a_feature_bank_measures_looked_at_novelty_against_it() -> None:
    """Each looked-at detection's novelty: 1 - cosine similarity of its crop's features to the nearest bank
    entry; a crop whose own features are in the bank is not novel; the rest keep the detector's novelty."""
    image, boxes, scores, labels, class_scores, novelty = _detections()
    classifier = _stage(3, 0.5, 0.1).classifier
    looked_at = scores >= 0.1
    with torch.no_grad():
        x = (image.float() - 127.5) / 128.0
        flat = boxes.reshape(-1, 4)[looked_at.reshape(-1)]
        index = torch.nonzero(looked_at.reshape(-1))[:, 0] // boxes.shape[1]
        features = classifier.features(crops(x, index, square_boxes(flat)))
    unit = features / features.norm(dim=1, keepdim=True)
    other = torch.nn.functional.normalize(torch.randn(20, unit.shape[1], generator=torch.Generator().manual_seed(3)))
    bank = torch.cat([other, unit[:1]])  # the first looked-at detection's own crop is in the bank
    stage = RelabelStage(classifier, 0.5, 0.1, bank=bank)
    with torch.no_grad():
        out_boxes, out_scores, _, _, out_novelty = stage(image, boxes, scores, labels, class_scores, novelty)
    expected = novelty.clone()
    expected[looked_at] = 1 - (unit @ bank.T).max(dim=1).values
    assert expected[looked_at][0] == pytest.approx(0.0, abs=1e-6)
    assert (expected[looked_at][1:] > 1e-3).all()  # the other crops' features are not in the bank
    for row in range(2):
        for j in range(5):
            where = (out_boxes[row] == boxes[row, j]).all(dim=1).nonzero()[:, 0]
            if looked_at[row, j]:  # int8 bank: within its rounding
                assert out_novelty[row, where].item() == pytest.approx(expected[row, j].item(), abs=2e-3)
            elif out_scores[row, where].item() > 0:
                assert out_novelty[row, where].item() == novelty[row, j].item()
    assert stage.bank.dtype == torch.int8 and stage.bank.shape == bank.shape  # a quarter of float32's bytes


def test_feature_bank_is_unit_length_features_of_deployed_crops_and_keeps_a_seeded_limit() -> None:
    classifier = _stage(3, 0.5, 0.1).classifier
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (64, 96), dtype=np.uint8) for _ in range(3)]
    items = [Crop(i, np.array([4.0 + 9 * j, 6.0, 30.0 + 9 * j, 40.0], np.float32), j % 3)
             for i in range(3) for j in range(4)]
    bank = feature_bank(classifier, images, items + [Crop(0, items[0].box.copy(), 1)])  # one box, two classes
    assert bank.shape == (12, classifier.fc.in_features)
    assert torch.allclose(bank.norm(dim=1), torch.ones(12), atol=1e-5)
    with torch.no_grad():
        first = classifier.features(crops((torch.from_numpy(images[0]).float()[None, None] - 127.5) / 128.0,
                                          torch.zeros(1, dtype=torch.int64), square_boxes(
                                              torch.from_numpy(items[0].box[None]))))[0]
    assert torch.allclose(bank[0], first / first.norm(), atol=1e-5)
    limited = feature_bank(classifier, images, items, limit=5, seed=1)
    assert limited.shape[0] == 5 and torch.equal(limited, feature_bank(classifier, images, items, limit=5, seed=1))
    # every row of the limited bank is one of the full bank's rows
    assert ((limited @ bank.T).max(dim=1).values > 1 - 1e-5).all()
    with pytest.raises(ValueError, match="needs boxes of defects"):
        feature_bank(classifier, images, [])


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


@pytest.mark.datasets
def test_found_crops_are_the_detections_that_found_a_labelled_box(datasets_dir: Path) -> None:
    from training.metrics import iou_matrix
    from training.relabel import found_crops

    reference = Detector(_detector_without_classifier(), providers="cpu")
    samples = load_split(datasets_dir, "cr7-det", "val")[:20]
    images = [read_image(s.image_path) for s in samples]
    truth = [s.boxes for s in samples]
    found = found_crops(reference, truth, images, 0.05, first_image=100)
    false = false_detections(reference, truth, images, 0.05, 7)
    assert found and all(100 <= c.image < 120 for c in found)
    for c in found:
        assert iou_matrix(c.box[None], samples[c.image - 100].boxes.astype(np.float32)).max() >= 0.3
    # together with the false detections: every detection >= min_score, once
    assert len(found) + len(false) == sum(len(d.boxes) for d in reference.detect(images, min_score=0.05))


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


@pytest.mark.datasets
def test_attached_graph_with_a_feature_bank_matches_pytorch_and_changes_only_looked_at_novelty(
        tmp_path: Path, datasets_dir: Path) -> None:
    parent = _detector_without_classifier()
    classifier = _stage(len(parent.classes), 0.5, 0.1).classifier
    train = load_split(datasets_dir, "cr7-det", "train")[:12]
    bank = feature_bank(classifier, [read_image(s.image_path) for s in train],
                        [Crop(i, box.astype(np.float32), 0) for i, s in enumerate(train) for box in s.boxes])
    stage = RelabelStage(classifier, 0.5, 0.1, bank=bank)
    merged = attach(parent.model_path, export_stage(stage, tmp_path / "stage.onnx", len(parent.classes)),
                    tmp_path / "model.onnx")
    assert any(i.data_type == onnx.TensorProto.INT8 and sorted(i.dims) == sorted(bank.shape)  # int8 bytes
               for i in onnx.load(str(merged)).graph.initializer)
    reference = Detector(parent, providers="cpu")
    images = [read_image(s.image_path) for s in load_split(datasets_dir, "cr7-det", "val")[::90]]
    images.append(np.full((96, 160), 128, np.uint8))  # plain grey: no detection to look at
    checked = parity(reference, stage, merged, images)  # novelty within the tolerance, like the scores
    assert checked["images"] == len(images) and checked["labels_compared"] > 0
    batch = reference._pad(images[0])[None, None]
    source, new = (ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": batch})
                   for path in (parent.model_path, merged))
    # (box, score) -> novelty: no verify, so what is found stays the source's (one box may carry several classes)
    by_place = {(*map(float, b), float(s)): float(v) for b, s, v in zip(source[0][0], source[1][0], source[4][0],
                                                                          strict=True) if s > 0}
    looked = 0
    for b, s, v in zip(new[0][0], new[1][0], new[4][0], strict=True):
        if s <= 0:
            continue
        novelty = by_place[(*map(float, b), float(s))]
        if s >= 0.1:  # looked at: novelty measured against the bank, 1 - cosine in [0, 2]
            looked += 1
            assert v != novelty and 0.0 <= v <= 2.0
        else:
            assert v == novelty
    assert looked > 0


@pytest.mark.datasets
def test_a_registered_models_crop_classifier_is_read_back_from_its_graph(datasets_dir: Path) -> None:
    """`classifier --classifier-from VERSION`: the classifier comes out of the version's ONNX file with
    the same outputs as that file (checked on real images); versions without one, or of other classes,
    are refused by name."""
    registry = Registry(REPO_DIR / "models")
    donor = registry.resolve("cold-20261204-1")  # the crop classifier appended to cold-20261202-4
    parent = registry.resolve(donor.data["classifier"]["source_version"])
    images = [read_image(s.image_path) for s in load_split(datasets_dir, "cr7-det", "val")[::70]]
    taken = classifier_of(registry, donor.version, parent, images)
    classifier, training = taken.classifier, taken.training
    assert taken.verify_weight is None and classifier.fc.out_features == len(parent.classes)
    assert taken.weight == donor.data["classifier"]["weight"]
    assert training["read_back_from"] == donor.version and training["read_back_convolutions"] > 40
    assert training["read_back_parity"]["labels_compared"] > 0
    assert training["best_epoch"] == donor.data["classifier"]["training"]["best_epoch"]
    # the same crops give the same class probabilities as the stage inside the donor's graph
    stage = RelabelStage(classifier, donor.data["classifier"]["weight"], donor.data["classifier"]["min_score"])
    assert parity(Detector(parent, providers="cpu"), stage, donor.model_path, images[:2])["images"] == 2
    with pytest.raises(RelabelError, match="has no crop classifier to take"):
        classifier_of(registry, parent.version, parent, images)
    with pytest.raises(RelabelError, match="names .* of cr7-det, hot-20261205-2"):
        classifier_of(registry, donor.version, registry.resolve("hot-20261205-2"), images)


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
    # --classifier-from: the registered version's classifier and weight, read back, nothing trained
    taken = relabel_version(source.version, models_dir=registry_dir, datasets_dir=datasets_dir, register=False,
                            max_images=10, classifier_from=new.version, bank_line_views=1)
    assert taken["training"]["read_back_from"] == new.version and taken["classifier_weight"] == info["weight"]
    assert info["novelty"]["bank_boxes"] > 0 and new.data["unknown"]["novelty"] == info["novelty"]
    # --bank-line-views 1: one line view of each train image with defects, its found crops join the bank
    train_with_boxes = sum(1 for s in load_split(datasets_dir, "cr7-det", "train")[:10] if len(s.boxes))
    assert info["novelty"]["line_views"] == 0 and taken["novelty_bank"]["line_views"] == train_with_boxes
    assert taken["novelty_bank"]["train_detections"] > info["novelty"]["train_detections"]
    # the images' own crops stay whole (the same as without line views), the views' fill up
    assert taken["novelty_bank"]["bank_boxes"] == (info["novelty"]["bank_boxes"]
                                                   + taken["novelty_bank"]["bank_boxes_in_line_views"])
    assert taken["novelty_bank"]["bank_boxes_in_line_views"] > 0
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
