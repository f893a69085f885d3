"""Unknown defect types: the prototypes and the rule chosen on val, and the runtime that applies the
rule to a real exported model (class_scores and novelty outputs) and reports `unknown` with guesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inspection.datasets import Sample  # noqa: E402
from inspection.detector import UNKNOWN, Detections, Detector, DetectorError  # noqa: E402
from inspection.manifest import file_sha256, load_manifest  # noqa: E402
from training.export import export_onnx  # noqa: E402
from training.model import Detector as TorchDetector  # noqa: E402
from training.unknown import choose_rule, class_share, prototypes  # noqa: E402

torch.set_num_threads(1)


def _found(novelty: list[float], share_top: list[float], boxes: list[list[float]]) -> dict[str, np.ndarray]:
    n = len(novelty)
    class_scores = np.zeros((n, 2), np.float32)
    class_scores[:, 0] = share_top  # with class 1 at 1 - share, the share of class 0 is share_top
    class_scores[:, 1] = 1 - np.array(share_top)
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "scores": np.full(n, 0.9, np.float32),
            "labels": np.zeros(n, np.int64), "class_scores": class_scores,
            "novelty": np.array(novelty, np.float32)}


def test_rule_limits_are_quantiles_of_known_detections() -> None:
    rng = np.random.default_rng(0)
    found, truth = [], []
    for _ in range(200):  # one detection on its defect per image, and one false alarm on texture
        found.append(_found([float(rng.uniform(0.5, 1.5)), 9.0], [float(rng.uniform(0.7, 1.0)), 0.9],
                            [[10, 10, 50, 50], [100, 100, 120, 120]]))
        truth.append(np.array([[10, 10, 50, 50]], np.float32))
    rule = choose_rule(found, truth, np.array([0.5, 0.5], np.float32), budget=0.1)
    assert 1.4 < rule["novelty_max"] < 1.5 and 0.7 < rule["class_share_min"] < 0.72
    assert rule["val_known_detections"] == 200 and rule["val_known_called_unknown"] <= 0.1 + 1e-9
    assert rule["val_false_called_unknown"] == 1.0  # the far-away false alarms are all unknown


def _known_val(rng: np.random.Generator) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
    """200 val images, one detection on its (known) defect in each: novelty 0.5-1.5, class share 0.7-1.0."""
    found = [_found([float(rng.uniform(0.5, 1.5))], [float(rng.uniform(0.7, 1.0))], [[10, 10, 50, 50]])
             for _ in range(200)]
    return found, [np.array([[10, 10, 50, 50]], np.float32) for _ in found]


@pytest.mark.parametrize(("unseen_novelty", "unseen_share", "expected_split"), [
    ((1.3, 1.5), (0.70, 0.72), 0.25),  # unseen types the model half-names: the class share limit takes most
    ((1.36, 1.44), (0.9, 1.0), 0.75),  # confidently named but far from every class: the novelty limit does
])
def test_the_budget_goes_to_the_signal_that_finds_unseen_types(unseen_novelty: tuple[float, float],
                                                                unseen_share: tuple[float, float],
                                                                expected_split: float) -> None:
    rng = np.random.default_rng(1)
    found, truth = _known_val(rng)
    unseen_found = [_found([float(rng.uniform(*unseen_novelty))], [float(rng.uniform(*unseen_share))],
                           [[0, 0, 30, 30]]) for _ in range(100)]
    unseen_truth = [np.array([[0, 0, 30, 30]], np.float32) for _ in unseen_found]
    thresholds = np.array([0.5, 0.5], np.float32)
    rule = choose_rule(found, truth, thresholds, budget=0.1, unseen=(unseen_found, unseen_truth))
    tried = rule["unseen_val"]["called_unknown_per_split"]
    assert rule["novelty_share_of_budget"] == expected_split
    assert tried[str(expected_split)] == max(tried.values()) > tried["0.5"]  # a real gain over the even split
    assert rule["val_known_called_unknown"] <= 0.1 + 1e-9  # the known defects' budget is kept whatever the split
    assert rule["unseen_val"]["found"] == 100 and rule["unseen_val"]["boxes"] == 100
    even = choose_rule(found, truth, thresholds, budget=0.1)  # without unseen types: half each, as before
    assert even["novelty_share_of_budget"] == 0.5 and "unseen_val" not in even


def test_with_an_unseen_target_the_budget_is_the_smallest_that_reaches_it() -> None:
    rng = np.random.default_rng(3)
    found, truth = _known_val(rng)
    # confidently named, a little beyond the known defects' novelty: a larger budget calls more of them unknown
    unseen_found = [_found([float(rng.uniform(1.35, 1.5))], [float(rng.uniform(0.9, 1.0))], [[0, 0, 30, 30]])
                    for _ in range(100)]
    unseen = (unseen_found, [np.array([[0, 0, 30, 30]], np.float32) for _ in unseen_found])
    thresholds = np.array([0.5, 0.5], np.float32)
    fixed = choose_rule(found, truth, thresholds, budget=0.1, unseen=unseen)
    assert fixed["budget"] == 0.1 and "budget_choice" not in fixed  # no target: the budget as given
    target = 0.3
    rule = choose_rule(found, truth, thresholds, budget=0.1, unseen=unseen, unseen_target=target)
    table = {float(b): share for b, share in rule["unseen_val"]["called_unknown_per_budget"].items()}
    reaching = [b for b, share in table.items() if share >= target]
    assert reaching and rule["budget"] == min(reaching) < 0.1  # a smaller budget than the most allowed
    assert all(share < target for b, share in table.items() if b < rule["budget"])  # the smaller ones fall short
    assert sorted(table) == [round(0.005 * k, 4) for k in range(1, len(table) + 1)]  # tried in steps, from 0.005
    assert rule["unseen_val"]["called_unknown_per_split"][str(rule["novelty_share_of_budget"])] == table[rule["budget"]]
    assert rule["val_known_called_unknown"] <= rule["budget"] + 1e-9 < fixed["val_known_called_unknown"]
    assert rule["budget_choice"]["unseen_target"] == target
    # a target no budget reaches: the most allowed, every step tried
    out_of_reach = choose_rule(found, truth, thresholds, budget=0.1, unseen=unseen, unseen_target=0.99)
    assert out_of_reach["budget"] == 0.1 and len(out_of_reach["unseen_val"]["called_unknown_per_budget"]) == 20
    assert out_of_reach["novelty_max"] == fixed["novelty_max"]


def test_unseen_boxes_nothing_finds_are_not_counted_as_found() -> None:
    rng = np.random.default_rng(2)
    found, truth = _known_val(rng)
    unseen_found = [_found([1.0], [0.9], [[0, 0, 30, 30]]), _found([1.0], [0.9], [[200, 200, 230, 230]])]
    unseen_truth = [np.array([[0, 0, 30, 30]], np.float32), np.array([[0, 0, 30, 30]], np.float32)]
    rule = choose_rule(found, truth, np.array([0.5, 0.5], np.float32), unseen=(unseen_found, unseen_truth))
    assert rule["unseen_val"]["boxes"] == 2 and rule["unseen_val"]["found"] == 1


def test_unseen_val_images_are_the_other_line_types(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from inspection.config import default_datasets_dir
    from training.unknown import unseen_val_samples

    assert unseen_val_samples("hot", tmp_path) == []  # no cr7-det beside it: a warning, the even split
    assert "no cr7-det folder" in caplog.text
    root = default_datasets_dir()
    if not (root / "cr7-det").is_dir():
        pytest.skip(f"datasets not found at {root}")
    samples = unseen_val_samples("hot", root, max_images=5)
    assert len(samples) == 5 and all("cr7-det" in str(s.image_path) for s in samples)


def test_rule_needs_a_known_detection() -> None:
    found = [_found([1.0], [0.9], [[0, 0, 10, 10]])]
    with pytest.raises(ValueError, match="no val detection"):
        choose_rule(found, [np.array([[50, 50, 60, 60]], np.float32)], np.array([0.5, 0.5], np.float32))


def test_class_share() -> None:
    scores = np.array([[0.6, 0.2, 0.2], [0.3, 0.3, 0.0]], np.float32)
    np.testing.assert_allclose(class_share(scores, np.array([0, 1])), [0.6, 0.5])


def test_prototypes_give_zero_novelty_at_a_class_mean(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TorchDetector(2, stride=8).eval()
    rng = np.random.default_rng(1)
    images, samples = [], []
    for i in range(6):
        image = rng.integers(60, 200, (64, 64), dtype=np.uint8)
        images.append(image)
        boxes = np.array([[8, 8, 24, 24], [30, 30, 60, 50]], np.float32)
        samples.append(Sample(tmp_path / f"{i}.png", boxes, ("a", "b"), "a"))
    means, precision, counts = prototypes(model, samples, images, ("a", "b"))
    assert counts == {"a": 6, "b": 6} and means.shape == (2, 48) and precision.shape == (48, 48)
    np.testing.assert_allclose(precision, precision.T, rtol=1e-4, atol=1e-4)
    assert np.linalg.eigvalsh(precision.astype(np.float64)).min() > 0
    model.set_prototypes(torch.from_numpy(means), torch.from_numpy(precision))
    at_mean = torch.from_numpy(means)[None, :1]  # [1, 1, F]: exactly class a's mean
    assert float(model.novelty(at_mean)) == pytest.approx(0.0, abs=1e-4)
    far = at_mean + 100.0
    assert float(model.novelty(far)) > 100


def _exported(tmp_path: Path, rule: dict | None) -> Detector:
    torch.manual_seed(3)
    model = TorchDetector(2, stride=8).eval()
    with torch.no_grad():
        model.heat_head[-1].bias.fill_(0.0)  # scores around 0.5 everywhere: plenty of detections
    model.set_prototypes(torch.zeros(2, 48), torch.eye(48))
    folder = tmp_path / ("rule" if rule else "none")
    path = export_onnx(model, folder / "model.onnx")
    manifest = {"schema": 1, "version": "hot-u1", "line_type": "hot", "model_file": "model.onnx",
                "classes": ["a", "b"], "operating_threshold": 0.3, "sha256": file_sha256(path),
                "input": {"name": "image", "dtype": "uint8", "channels": 1, "size_multiple": 32},
                "outputs": {"max_detections": 100}}
    if rule is not None:
        manifest["unknown"] = rule
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return Detector(load_manifest(folder / "manifest.json"), providers="cpu")


@pytest.mark.parametrize(("rule", "all_unknown"), [
    ({"novelty_max": -1.0, "class_share_min": 0.0}, True),  # everything lies beyond the novelty limit
    ({"novelty_max": 1e12, "class_share_min": 0.0}, False),
    ({"novelty_max": 1e12, "class_share_min": 1.1}, True),  # no class can hold more than all of them
])
def test_runtime_applies_the_manifest_rule(tmp_path: Path, rule: dict, all_unknown: bool) -> None:
    detector = _exported(tmp_path, rule)
    image = np.random.default_rng(0).integers(0, 255, (96, 128), dtype=np.uint8)
    (found,) = detector.detect([image])
    assert len(found) > 0 and found.class_scores.shape == (len(found), 2) and found.novelty.shape == (len(found),)
    assert bool(found.unknown.all()) is all_unknown and bool(found.unknown.any()) is all_unknown
    listed = found.to_list()
    if all_unknown:
        assert {e["class"] for e in listed} == {UNKNOWN} and set(found.class_names) == {UNKNOWN}
        guesses = listed[0]["guesses"]
        assert [g["class"] for g in guesses] in (["a", "b"], ["b", "a"]) and guesses[0]["score"] >= guesses[1]["score"]
        assert "novelty" in listed[0]
    else:
        assert UNKNOWN not in {e["class"] for e in listed} and "guesses" not in listed[0]


def test_model_without_a_rule_reports_its_classes(tmp_path: Path) -> None:
    detector = _exported(tmp_path, None)
    (found,) = detector.detect([np.full((64, 64), 128, np.uint8)])
    assert detector.unknown_rule is None and found.unknown is None and UNKNOWN not in found.class_names


def test_detections_validate_the_optional_fields() -> None:
    with pytest.raises(DetectorError, match="unknown"):
        Detections(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int64), ("a",),
                   unknown=np.zeros(2, bool))


def test_frame_inspector_reports_unknown_defects_with_their_guesses(tmp_path: Path) -> None:
    """From the model's outputs to the value the worker sends: class `unknown` and the best guesses."""
    from inspection.frame import Frame, StreamKey
    from inspection.frame_inspector import FrameInspector, InspectorSettings
    from inspection.results import FrameResult, decode, encode

    detector = _exported(tmp_path, {"novelty_max": -1.0, "class_share_min": 0.0})
    pixels = np.random.default_rng(1).integers(0, 255, (256, 320), dtype=np.uint8)
    frame = Frame(source=StreamKey("L1", "hot", "top-1", "top"), coil="C1", seq=1, index=0, captured_ns=1,
                  position_mm=0.0, offset_mm=0.0, mm_per_px_x=1.0, mm_per_px_y=1.0, pixels=pixels)
    (result,) = FrameInspector(detector, InspectorSettings(first_stage="none")).inspect([frame])
    assert result.defects and {d.cls for d in result.defects} == {UNKNOWN}
    assert all(len(d.guesses) == 2 and {c for c, _ in d.guesses} == {"a", "b"} for d in result.defects)
    sent = FrameResult(frame.source, "C1", 1, 0, 1, 0.0, 256.0, "hot-u1", "ab" * 32, 2, result.defects)
    assert decode(encode(sent)).defects == result.defects  # the guesses survive the wire


def test_the_rule_can_be_chosen_on_an_onnx_files_own_outputs(tmp_path: Path) -> None:
    """`quantize` chooses the rule again on the int8 copy's outputs: the same calibration, through the runtime."""
    from training.unknown import runtime_detections

    detector = _exported(tmp_path, None)
    images = [np.random.default_rng(i).integers(0, 255, (96, 128), dtype=np.uint8) for i in range(3)]
    found = runtime_detections(detector, images)
    assert len(found) == 3 and all(f["class_scores"].shape == (len(f["scores"]), 2) for f in found)
    truth = [f["boxes"][:1].copy() for f in found]  # call each image's best detection a real defect
    rule = choose_rule(found, truth, detector.thresholds)
    assert rule["val_known_detections"] >= 3 and rule["novelty_max"] >= 0
