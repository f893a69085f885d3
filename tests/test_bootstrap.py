"""training.bootstrap: its per-image tallies give exactly the figures of training.metrics, a resample
is the same as evaluating the drawn images, and the intervals behave as intervals should."""

from __future__ import annotations

import numpy as np
import pytest

from training.bootstrap import figures_for, intervals, paired_intervals, tallies
from training.metrics import ImageResult, compute_metrics

CLASSES = ("a", "b", "c")


def random_images(n: int, seed: int, *, miss_share: float = 0.3) -> list[ImageResult]:
    """Images with 0-3 ground-truth boxes and predictions near them (some shifted, some of another
    class, some missing) plus stray ones; continuous scores, so no two scores tie."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        gt_boxes, gt_labels, boxes, scores, labels = [], [], [], [], []
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(10, 50), rng.uniform(10, 50)
            gt_boxes.append([x, y, x + w, y + h])
            gt_labels.append(int(rng.integers(0, 3)))
            if rng.random() < miss_share:
                continue
            shift = rng.uniform(-0.6, 0.6, size=2) * [w, h]
            boxes.append([x + shift[0], y + shift[1], x + w + shift[0], y + h + shift[1]])
            scores.append(rng.uniform(0.05, 1.0))
            labels.append(gt_labels[-1] if rng.random() < 0.8 else int(rng.integers(0, 3)))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 200, size=2)
            boxes.append([x, y, x + 20, y + 20])
            scores.append(rng.uniform(0.05, 0.6))
            labels.append(int(rng.integers(0, 3)))
        label = gt_labels[0] if gt_labels else None
        images.append(ImageResult(np.array(gt_boxes).reshape(-1, 4), np.array(gt_labels, dtype=int),
                                  np.array(boxes).reshape(-1, 4), np.array(scores), np.array(labels, dtype=int),
                                  image_label=label))
    return images


@pytest.mark.parametrize("threshold", [0.3, np.array([0.2, 0.5, 0.4])])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_all_images_once_give_exactly_the_evaluation_figures(seed: int, threshold: float | np.ndarray) -> None:
    images = random_images(60, seed)
    expected = compute_metrics(images, CLASSES, threshold)
    got = figures_for(tallies(images, len(CLASSES), threshold), np.ones(len(images), dtype=np.int64))
    for name in ("map50", "detection_rate", "false_detections_per_image", "image_accuracy"):
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name


@pytest.mark.parametrize("seed", [4, 5])
def test_a_resample_is_the_evaluation_of_the_drawn_images(seed: int) -> None:
    images = random_images(40, seed)
    counts = np.bincount(np.random.default_rng(seed).integers(0, 40, size=40), minlength=40)
    assert counts.max() > 1 and (counts == 0).any()  # a real resample: repeats and left-out images
    drawn = [im for im, k in zip(images, counts, strict=True) for _ in range(k)]
    expected = compute_metrics(drawn, CLASSES, 0.3)
    got = figures_for(tallies(images, len(CLASSES), 0.3), counts)
    for name in ("map50", "detection_rate", "false_detections_per_image", "image_accuracy"):
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name


def test_intervals_hold_the_figure_narrow_with_more_images_and_repeat_with_the_seed() -> None:
    few, many = random_images(30, 7), random_images(600, 7)
    width = {}
    for name, images in (("few", few), ("many", many)):
        t = tallies(images, len(CLASSES), 0.3)
        point = figures_for(t, np.ones(len(images), dtype=np.int64))
        ci = intervals(t, resamples=400, seed=3)["ci"]
        for figure, (lo, hi) in ci.items():
            assert lo <= point[figure] + 1e-9 and point[figure] - 1e-9 <= hi, (name, figure)
        width[name] = ci["map50"][1] - ci["map50"][0]
        assert intervals(t, resamples=400, seed=3)["ci"] == ci
    assert width["many"] < width["few"] / 2  # ~1/sqrt(n): 20x the images, about 4.5x narrower


def test_paired_intervals_of_a_model_against_itself_and_against_a_better_one() -> None:
    images = random_images(50, 8, miss_share=0.5)
    t = tallies(images, len(CLASSES), 0.3)
    same = paired_intervals(t, t, resamples=300)["figures"]
    assert same["map50"] == {"b_minus_a_ci": [0.0, 0.0], "share_b_better": 0.0}
    # B finds one more defect: in one image it adds a perfect box for a ground-truth box A missed.
    target = next(i for i, im in enumerate(images)
                  if len(im.gt_boxes) and not len(im.pred_boxes))
    im = images[target]
    better = list(images)
    better[target] = ImageResult(im.gt_boxes, im.gt_labels, im.gt_boxes[:1], np.array([0.99]), im.gt_labels[:1],
                                 image_label=im.image_label)
    paired = paired_intervals(t, tallies(better, len(CLASSES), 0.3), resamples=1000)["figures"]
    lo, hi = paired["detection_rate"]["b_minus_a_ci"]
    assert lo >= 0.0 < hi
    # B is better exactly when that image is drawn: 1 - (1 - 1/50)^50 = 0.636 of resamples
    assert paired["detection_rate"]["share_b_better"] == pytest.approx(0.636, abs=0.05)


def test_paired_intervals_refuse_different_images() -> None:
    with pytest.raises(ValueError, match="20 images for A, 21 for B"):
        paired_intervals(tallies(random_images(20, 1), 3, 0.3), tallies(random_images(21, 1), 3, 0.3))
