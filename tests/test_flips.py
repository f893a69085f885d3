"""Test-time flips (inspection.flips): the fusion rule, the geometry on a real ONNX model, the settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspection.detector import Detections, Detector
from inspection.flips import FlipError, check_flips, flipped, fuse, unflipped_boxes
from inspection.registry import Manifest, Registry
from tests.tiny_models import add_tiny_model, blob_image

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
CLASSES = ("dark_spot", "bright_spot")


def dets(boxes: list[list[float]], scores: list[float], labels: list[int], extras: bool = False) -> Detections:
    n = len(scores)
    more = {"class_scores": np.tile(np.array([[0.2, 0.6]], np.float32), (n, 1)) + np.float32(scores[0] if n else 0),
            "novelty": np.full(n, 2.0 * (scores[0] if n else 0), np.float32)} if extras else {}
    return Detections(boxes=np.array(boxes, np.float32).reshape(-1, 4), scores=np.array(scores, np.float32),
                      labels=np.array(labels, np.int64), classes=CLASSES, **more)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("registry")
    return add_tiny_model(Registry(root / "models"), root, classes=CLASSES, version="hot-t1", operating_threshold=0.5)


def test_a_defect_every_view_sees_keeps_its_score_and_one_view_alone_keeps_its_share() -> None:
    width, height = 100, 80
    alone = dets([[10, 20, 30, 40], [60, 50, 70, 60]], [0.8, 0.5], [1, 0])
    # the mirrored view sees the first defect (at x 70..90 of its own pixels), slightly wider, not the second
    mirrored = dets([[70, 20, 92, 40]], [0.6], [1])
    fused = fuse([alone, mirrored], ("", "h"), height, width)
    np.testing.assert_allclose(fused["scores"], [0.7, 0.25])
    np.testing.assert_array_equal(fused["labels"], [1, 0])
    # score-weighted mean of (10, 20, 30, 40) at 0.8 and (8, 20, 30, 40) at 0.6
    np.testing.assert_allclose(fused["boxes"][0], [(10 * 0.8 + 8 * 0.6) / 1.4, 20, 30, 40], rtol=1e-6)
    np.testing.assert_allclose(fused["boxes"][1], [60, 50, 70, 60])
    assert fused["class_scores"] is None and fused["novelty"] is None


def test_other_classes_and_a_views_own_second_box_stay_apart() -> None:
    view = dets([[10, 10, 50, 50], [12, 10, 50, 50]], [0.9, 0.4], [1, 1])  # two boxes of one view: never one group
    other = dets([[10, 10, 50, 50]], [0.8], [0])  # same place in the other view, another class
    fused = fuse([view, other], ("", "v"), 60, 60)
    assert len(fused["scores"]) == 2 + 1
    np.testing.assert_allclose(sorted(fused["scores"]), sorted([0.45, 0.2, 0.4]))


def test_class_scores_and_novelty_are_the_mean_of_the_members() -> None:
    a = dets([[0, 0, 10, 10]], [0.8], [1], extras=True)
    b = dets([[0, 0, 10, 10]], [0.4], [1], extras=True)
    fused = fuse([a, b], ("", "hv"), 10, 10)
    np.testing.assert_allclose(fused["class_scores"], [[0.2 + 0.6, 0.6 + 0.6]], rtol=1e-6)
    np.testing.assert_allclose(fused["novelty"], [1.2], rtol=1e-6)
    np.testing.assert_allclose(fused["boxes"], [[0, 0, 10, 10]])


def test_geometry_of_each_flip() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert flipped(image, "h")[0].tolist() == [3, 2, 1, 0]
    assert flipped(image, "v")[:, 0].tolist() == [8, 4, 0]
    assert flipped(image, "hv")[0, 0] == 11 and flipped(image, "").tolist() == image.tolist()
    box = np.array([[1, 0, 2, 1]], np.float32)  # x1 y1 x2 y2 in a 4 x 3 view
    assert unflipped_boxes(box, "h", 3, 4).tolist() == [[2, 0, 3, 1]]
    assert unflipped_boxes(box, "hv", 3, 4).tolist() == [[2, 2, 3, 3]]


@pytest.mark.parametrize(("flips", "message"), [
    (["x"], "'x' is not one of h, v, hv"), (["h", "h"], "names a flip twice"), ("hv", "got the string 'hv'")])
def test_bad_flips_are_named(flips: object, message: str) -> None:
    with pytest.raises(FlipError, match=message):
        check_flips(flips)  # type: ignore[arg-type]


def test_on_a_real_onnx_model_the_views_agree_to_the_pixel(manifest: Manifest) -> None:
    # The blob model cuts the image into 32-px cells; 256 x 192 is a whole number of cells, so each mirrored
    # view sees every blob in one cell and its box, taken back to the image, must be exact.
    image = blob_image(192, 256, [((10, 12, 30, 20), 1), ((70, 100, 90, 120), 0), ((196, 132, 220, 156), 1)])
    plain = Detector(manifest, providers="cpu").detect([image])[0]
    with_flips = Detector(manifest, providers="cpu", flips=["h", "v", "hv"]).detect([image])[0]
    assert len(plain) == 3
    np.testing.assert_array_equal(with_flips.boxes, plain.boxes)
    np.testing.assert_allclose(with_flips.scores, plain.scores, rtol=1e-6)
    np.testing.assert_array_equal(with_flips.labels, plain.labels)


def test_a_fragment_only_one_view_raises_falls_below_the_threshold(manifest: Manifest) -> None:
    # 240 px wide (padded to 256): in the image the blob at x 20..40 crosses the cell border at 32 and comes
    # out as two boxes; mirrored it lies in one cell (x 200..220). The left part overlaps the mirrored box
    # at IoU 0.6 and fuses with it; the fragment x 32..40 (IoU 0.4) is backed by one view of two, so it
    # keeps half its score (0.88 / 2), below the threshold of 0.5.
    image = blob_image(64, 240, [((20, 10, 40, 20), 1)])
    plain = Detector(manifest, providers="cpu").detect([image])[0]
    with_flip = Detector(manifest, providers="cpu", flips=["h"]).detect([image], min_score=0.0)[0]
    assert plain.boxes.tolist() == [[20, 10, 32, 20], [32, 10, 40, 20]]
    assert with_flip.boxes.tolist() == [[20, 10, 36, 20], [32, 10, 40, 20]]  # (32 + 40) / 2: equal scores
    np.testing.assert_allclose(with_flip.scores, [plain.scores[0], plain.scores[1] / 2], rtol=1e-6)
    assert Detector(manifest, providers="cpu", flips=["h"]).detect([image])[0].boxes.tolist() == [[20, 10, 36, 20]]


@pytest.mark.skipif(not (DATASETS / "neu-det").is_dir(), reason="needs ../shared/datasets/neu-det")
def test_the_shipped_hot_model_with_a_flip_is_mirror_symmetric() -> None:
    # Flipping the input swaps which view is "the image": the same two model runs, so the fused detections
    # of the mirrored image must be the mirror of the image's. A wrong way back from a view breaks this.
    from inspection.datasets import read_image

    image = read_image(sorted((DATASETS / "neu-det").rglob("*.jpg"))[0])
    detector = Detector(Registry(REPO / "models").resolve("hot"), providers="cpu", flips=["h"])
    found, mirrored = detector.detect([image, flipped(image, "h")], min_score=0.05)
    assert len(found) > 0
    back = unflipped_boxes(mirrored.boxes, "h", *image.shape)
    order_a, order_b = np.lexsort(found.boxes.T), np.lexsort(back.T)
    np.testing.assert_allclose(back[order_b], found.boxes[order_a], atol=1e-3)
    np.testing.assert_allclose(mirrored.scores[order_b], found.scores[order_a], atol=1e-6)


@pytest.mark.skipif(not (DATASETS / "neu-det").is_dir(), reason="needs ../shared/datasets/neu-det")
def test_thresholds_chosen_again_for_flips_paste_into_a_line_config(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")  # the line views of val defects
    import tomllib

    from inspection.cli import main
    from inspection.config import load_config
    from training.finalize import THRESHOLDS

    out = tmp_path / "thresholds.json"
    assert main(["thresholds", "--model", "hot", "--registry", str(REPO / "models"), "--providers", "cpu",
                 "--flip", "h", "--data", str(DATASETS), "--max-images", "12", "--no-progress",
                 "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["flips"] == ["h"] and figures["val_images"] == 12
    chosen = figures["chosen"]
    assert set(chosen) == set(figures["model_thresholds"])
    assert all(t in THRESHOLDS and t >= figures["floor"] - 1e-9 for t in chosen.values())
    assert figures["val_chosen"]["detection_rate"] is not None
    printed = capsys.readouterr().out
    table = printed[printed.index("[worker.class_thresholds.hot]"):]
    assert tomllib.loads(table)["worker"]["class_thresholds"]["hot"] == chosen
    # the table replaces the demo line's own and loads as the line's thresholds, beside its flips
    demo = (REPO / "inspection" / "lines" / "demo.toml").read_text()
    start = demo.index("[worker.class_thresholds.hot]")
    end = demo.index("\n[", start + 1)
    config = tmp_path / "line.toml"
    config.write_text(demo[:start] + table + demo[end:])
    assert load_config(config, {"worker.flips": ["h"]}).worker.class_thresholds["hot"] == chosen


def test_thresholds_refuses_a_fixed_score(capsys: pytest.CaptureFixture) -> None:
    from inspection.cli import main

    assert main(["thresholds", "--model", "hot", "--registry", str(REPO / "models"), "--min-score", "0.3",
                 "--data", str(DATASETS)]) != 0
    assert "--min-score and --class-threshold do not apply" in capsys.readouterr().err
