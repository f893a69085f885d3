"""training.metrics against hand-computed values (each expected figure is derived in a comment)."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    ImageResult,
    average_precision,
    class_ap,
    compute_metrics,
    confusion_matrix,
    detection_rate,
    false_detections,
    image_accuracy,
    iou_matrix,
    mean_ap,
)

A = [0, 0, 100, 100]
B = [200, 200, 260, 240]
FAR = [400, 400, 450, 450]


def im(gt: list, pred: list, image_label: int | None = None) -> ImageResult:
    """gt: [(box, label)], pred: [(box, score, label)]."""
    return ImageResult(
        gt_boxes=np.array([g[0] for g in gt], dtype=float).reshape(-1, 4),
        gt_labels=np.array([g[1] for g in gt], dtype=int),
        pred_boxes=np.array([p[0] for p in pred], dtype=float).reshape(-1, 4),
        pred_scores=np.array([p[1] for p in pred], dtype=float),
        pred_labels=np.array([p[2] for p in pred], dtype=int),
        image_label=image_label,
    )


@pytest.mark.parametrize(("a", "b", "expected"), [
    (A, A, 1.0),
    (A, [0, 0, 100, 72], 0.72),  # 7200 / 10000
    (A, [50, 0, 150, 100], 1 / 3),  # 5000 / 15000
    (A, FAR, 0.0),
    (A, [100, 0, 200, 100], 0.0),  # touching edges
])
def test_iou(a: list, b: list, expected: float) -> None:
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize(("recall", "precision", "expected"), [
    ([1.0], [1.0], 1.0),
    ([0.5, 1.0], [1.0, 0.5], 0.75),  # 0.5 * 1 + 0.5 * 0.5
    ([0.0, 0.5, 1.0], [0.0, 0.5, 2 / 3], 2 / 3),  # envelope lifts 0.5 to 2/3
    ([0.5, 0.5], [1.0, 0.5], 0.5),  # recall stops at 0.5
    ([], [], 0.0),
])
def test_average_precision_all_point(recall: list, precision: list, expected: float) -> None:
    assert average_precision(np.array(recall), np.array(precision)) == pytest.approx(expected)


# (name, images, class, expected AP@0.5)
AP_CASES = [
    ("perfect", [im([(A, 0), (B, 0)], [(A, .9, 0), (B, .8, 0)])], 0, 1.0),
    # FP first: p/r after each = (0, 0), (.5, .5), (2/3, 1) -> envelope 2/3 at both recall steps
    ("fp ranked first", [im([(A, 0), (B, 0)], [(FAR, .95, 0), (A, .9, 0), (B, .8, 0)])], 0, 2 / 3),
    ("fp ranked last", [im([(A, 0), (B, 0)], [(A, .9, 0), (B, .8, 0), (FAR, .7, 0)])], 0, 1.0),
    ("missed box", [im([(A, 0), (B, 0)], [(A, .9, 0)])], 0, 0.5),
    ("wrong class", [im([(A, 0)], [(A, .9, 1)])], 0, 0.0),
    ("no prediction", [im([(A, 0)], [])], 0, 0.0),
    # duplicate on the same GT: second match is a FP, recall already 1 -> AP 1
    ("duplicate", [im([(A, 0)], [(A, .9, 0), ([0, 0, 100, 90], .8, 0)])], 0, 1.0),
    # across images: image 2's FP (score .85) lands between the two TPs:
    # (1, .5) (1/2, .5) (2/3, 1) -> AP = .5 * 1 + .5 * 2/3
    ("two images", [im([(A, 0)], [(A, .9, 0)]), im([(B, 0)], [(FAR, .85, 0), (B, .8, 0)])], 0, 5 / 6),
    ("localisation below 0.5", [im([(A, 0)], [([50, 0, 150, 100], .9, 0)])], 0, 0.0),
]


@pytest.mark.parametrize(("name", "images", "cls", "expected"), AP_CASES, ids=[c[0] for c in AP_CASES])
def test_class_ap(name: str, images: list, cls: int, expected: float) -> None:
    assert class_ap(images, cls, 0.5) == pytest.approx(expected)


def test_class_without_ground_truth_is_left_out_of_the_mean() -> None:
    images = [im([(A, 0)], [(A, .9, 1), (A, .5, 0)])]
    assert class_ap(images, 1) is None
    assert mean_ap(images, 2) == pytest.approx(1.0)  # only class 0 counts, found at .5


def test_map_50_95_localisation() -> None:
    # IoU 0.72: a match at 0.50 .. 0.70 (5 thresholds), none at 0.75 .. 0.95 -> 0.5
    metrics = compute_metrics([im([(A, 0)], [([0, 0, 100, 72], .9, 0)], 0)], ["a", "b"], 0.5)
    assert metrics["map50"] == pytest.approx(1.0)
    assert metrics["map50_95"] == pytest.approx(0.5)
    assert metrics["per_class"]["a"]["ap50_95"] == pytest.approx(0.5)
    assert metrics["per_class"]["b"]["ap50"] is None


# (name, images, threshold, detection rate, false detections)
RATE_CASES = [
    ("all found", [im([(A, 0), (B, 1)], [(A, .9, 0), (B, .9, 1)])], .5, 1.0, 0),
    ("any class counts", [im([(A, 0)], [(A, .9, 1)])], .5, 1.0, 0),
    ("below threshold", [im([(A, 0), (B, 0)], [(A, .9, 0), (B, .4, 0)])], .5, 0.5, 0),
    # IoU 1/3 >= 0.3 counts as found, and the prediction is not false
    ("loose overlap", [im([(A, 0)], [([50, 0, 150, 100], .9, 0)])], .5, 1.0, 0),
    # IoU 0.25 < 0.3: missed and false
    ("too little overlap", [im([(A, 0)], [([60, 0, 160, 100], .9, 0)])], .5, 0.0, 1),
    ("false in empty image", [im([(A, 0)], [(A, .9, 0)]), im([], [(FAR, .9, 0), (B, .6, 1)])], .5, 1.0, 2),
]


@pytest.mark.parametrize(("name", "images", "thr", "rate", "false"), RATE_CASES,
                         ids=[c[0] for c in RATE_CASES])
def test_detection_rate_and_false_detections(name: str, images: list, thr: float, rate: float,
                                             false: int) -> None:
    assert detection_rate(images, thr) == pytest.approx(rate)
    assert false_detections(images, thr) == false


@pytest.mark.parametrize(("images", "expected"), [
    ([im([(A, 0)], [(A, .9, 0)], 0)], 1.0),
    ([im([(A, 0)], [(A, .9, 1), (A, .8, 0)], 0)], 0.0),  # top-scoring prediction decides
    ([im([(A, 0)], [(A, .2, 0)], 0)], 1.0),  # no threshold for the image label
    ([im([(A, 0)], [], 0), im([(A, 1)], [(A, .9, 1)], 1)], 0.5),  # no prediction = wrong
    ([im([(A, 0)], [(A, .9, 0)], None)], None),  # unknown image class is not judged
])
def test_image_accuracy(images: list, expected: float | None) -> None:
    result = image_accuracy(images)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_confusion_matrix_counts_matches_misses_and_false_detections() -> None:
    images = [
        im([(A, 0), (B, 1)], [(A, .9, 0), (B, .9, 0)]),  # correct; class 1 seen as 0
        im([(A, 1)], [(FAR, .9, 1), (A, .3, 1)]),  # FAR is false; the A hit is below threshold -> miss
    ]
    expected = np.array([
        [1, 0, 0],  # GT 0: predicted 0
        [1, 0, 1],  # GT 1: once as 0, once missed
        [0, 1, 0],  # background: one false class-1 prediction
    ])
    np.testing.assert_array_equal(confusion_matrix(images, 2, 0.5), expected)


def test_compute_metrics_perfect_predictions() -> None:
    images = [im([(A, 0), (B, 1)], [(A, .9, 0), (B, .8, 1)], 0), im([(B, 1)], [(B, .7, 1)], 1)]
    metrics = compute_metrics(images, ["a", "b"], 0.5)
    assert metrics["map50"] == 1.0 and metrics["map50_95"] == 1.0
    assert metrics["detection_rate"] == 1.0 and metrics["false_detections_per_image"] == 0.0
    assert metrics["image_accuracy"] == 1.0
    assert metrics["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert metrics["per_class"]["b"] == {"gt_boxes": 2, "ap50": 1.0, "ap50_95": 1.0,
                                         "precision_at_threshold": 1.0, "recall_at_threshold": 1.0}


def test_image_result_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="gt_labels"):
        ImageResult(np.zeros((2, 4)), np.zeros(1), np.zeros((0, 4)), np.zeros(0), np.zeros(0))
