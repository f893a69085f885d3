"""Bootstrap intervals for the evaluation figures (numpy only, torch-free).

Why: the hot test split has 228 images and the val split 228. Recipes have moved val mAP@0.5
between 0.74 and 0.78 and test mAP@0.5 between 0.67 and 0.72 without the two agreeing, so a
figure needs its uncertainty beside it before anyone ships (or refuses) a model on it.

The unit that is resampled is the **image** (boxes in one image share its texture and lighting,
so they are not independent). Whatever a figure needs from one image is computed once:

- AP@0.5: each prediction's true/false-positive flag (`metrics.class_matches`). The greedy
  matching only ever looks at one image's boxes, in that image's score order, so the flags do not
  depend on which other images are in a sample. A resample repeats each image's entries as often as the
  image was drawn and accumulates them in the global score order; ties between equal scores of
  different images may be ordered differently from a plain evaluation of the resampled images,
  which moves AP by less than the rounding of the JSON.
- detection rate, false detections, image accuracy: per-image counts (`metrics.found_and_false`,
  `metrics.top_class_correct`), summed.

`intervals` gives one model's percentile intervals; `paired_intervals` draws the same images for
two models and gives the interval of the difference B - A and the share of resamples in which B is
better: the question a promotion asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.metrics import (
    ImageResult,
    Threshold,
    average_precision,
    class_matches,
    found_and_false,
    top_class_correct,
)

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
FIGURES = ("map50", "detection_rate", "false_detections_per_image", "image_accuracy")
HIGHER_IS_BETTER = {"map50": True, "detection_rate": True, "false_detections_per_image": False,
                    "image_accuracy": True}


@dataclass(frozen=True)
class _ClassEntries:
    """Every prediction of one class over all images, in global descending score order."""

    image: np.ndarray  # int: the image each prediction belongs to
    true_positive: np.ndarray  # bool at IoU 0.5, greedy matching as in metrics.pr_curve
    gt_per_image: np.ndarray  # int [images]: ground-truth boxes of this class per image


@dataclass(frozen=True)
class Tallies:
    """What each figure needs, per image, for one model on one set of images."""

    classes: tuple[_ClassEntries, ...]
    found: np.ndarray  # ground-truth boxes found at the operating threshold (IoU 0.3, any class)
    gt: np.ndarray  # ground-truth boxes
    false: np.ndarray  # predictions at the threshold on no ground-truth box
    judged: np.ndarray  # bool: the image has a file-name class
    correct: np.ndarray  # bool: its top prediction names that class

    @property
    def images(self) -> int:
        return len(self.gt)


def tallies(results: Sequence[ImageResult], num_classes: int, threshold: Threshold) -> Tallies:
    """Per-image counts and per-prediction flags of `results` (see the module docstring), from the same
    per-image functions `training.metrics` sums."""
    if not results:
        raise ValueError("bootstrap: no images")
    per_class = []
    for c in range(num_classes):
        images, scores, flags = [np.zeros(0, dtype=np.int64)], [np.zeros(0)], [np.zeros(0, dtype=bool)]
        for i, im in enumerate(results):
            mine, true_pos = class_matches(im, c)
            images.append(np.full(len(mine), i))
            scores.append(im.pred_scores[mine])
            flags.append(true_pos)
        order = np.argsort(-np.concatenate(scores), kind="stable")  # ties: image order, as metrics.pr_curve
        gt_counts = np.array([int(np.sum(im.gt_labels == c)) for im in results], dtype=np.int64)
        per_class.append(_ClassEntries(np.concatenate(images)[order], np.concatenate(flags)[order], gt_counts))
    counts = np.array([found_and_false(im, threshold) for im in results], dtype=np.int64).reshape(-1, 2)
    correct = [top_class_correct(im) for im in results]
    return Tallies(tuple(per_class), found=counts[:, 0], gt=np.array([len(im.gt_boxes) for im in results]),
                   false=counts[:, 1], judged=np.array([c is not None for c in correct]),
                   correct=np.array([bool(c) for c in correct]))


def figures_for(t: Tallies, counts: np.ndarray) -> dict[str, float | None]:
    """The figures of a sample that holds image i `counts[i]` times (all ones: the images as they are)."""
    aps = []
    for entries in t.classes:
        n_gt = int(np.dot(counts, entries.gt_per_image))
        if n_gt == 0:
            continue  # a class without ground truth in the sample has no AP (left out of the mean)
        tp = np.repeat(entries.true_positive, counts[entries.image])
        if not len(tp):
            aps.append(0.0)
            continue
        hits = np.cumsum(tp)
        aps.append(average_precision(hits / n_gt, hits / np.arange(1, len(tp) + 1)))
    n_images = int(counts.sum())
    gt = int(np.dot(counts, t.gt))
    judged = int(np.dot(counts, t.judged))
    return {
        "map50": float(np.mean(aps)) if aps else None,
        "detection_rate": int(np.dot(counts, t.found)) / gt if gt else None,
        "false_detections_per_image": int(np.dot(counts, t.false)) / n_images,
        "image_accuracy": int(np.dot(counts, t.correct)) / judged if judged else None,
    }


def _draws(images: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, images]: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, images, size=(resamples, images))
    return np.stack([np.bincount(row, minlength=images) for row in picks])


def _interval(values: list[float | None]) -> list[float] | None:
    kept = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(kept):
        return None
    tail = (1 - LEVEL) / 2 * 100
    return [round(float(v), 4) for v in np.percentile(kept, [tail, 100 - tail])]


def intervals(t: Tallies, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """95 % percentile intervals of each figure over `resamples` bootstrap samples of the images."""
    draws = [figures_for(t, counts) for counts in _draws(t.images, resamples, seed)]
    return {"resamples": resamples, "seed": seed, "level": LEVEL, "unit": "image",
            "ci": {name: _interval([d[name] for d in draws]) for name in FIGURES}}


def paired_intervals(a: Tallies, b: Tallies, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Both models on the same resampled images: the interval of B - A per figure and the share of
    resamples in which B is better (for false detections: fewer)."""
    if a.images != b.images:
        raise ValueError(f"paired bootstrap: {a.images} images for A, {b.images} for B")
    diffs: dict[str, list[float | None]] = {name: [] for name in FIGURES}
    for counts in _draws(a.images, resamples, seed):
        fa, fb = figures_for(a, counts), figures_for(b, counts)
        for name in FIGURES:
            va, vb = fa[name], fb[name]
            diffs[name].append(None if va is None or vb is None else vb - va)
    out: dict[str, Any] = {}
    for name, values in diffs.items():
        kept = np.array([v for v in values if v is not None], dtype=np.float64)
        better = (kept > 0) if HIGHER_IS_BETTER[name] else (kept < 0)
        out[name] = {"b_minus_a_ci": _interval(values),
                     "share_b_better": round(float(better.mean()), 4) if len(kept) else None}
    return {"resamples": resamples, "seed": seed, "level": LEVEL, "unit": "image", "figures": out}
