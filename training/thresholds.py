"""Per-class operating thresholds, chosen on the val split as the dataset shows it and as the line does.

`steel-inspect bench e2e --explain` found that most defects the line misses were detected, but
below the one operating threshold chosen on dataset images: in a model window of strip the same
defect scores lower than in its own 200 px image, and not equally for every class. So each class
gets its own threshold, chosen on the val images *and* on line views of them (each val image's
defects pasted once into a window of defect-free strip, `training.line_views`, with textures of
the seed family `CHOICE_FAMILY` and a fixed seed per image), by the class's F2 (recall weighs 4x
precision, as for the common threshold):

- recall of class c: share of its labelled boxes overlapped (IoU >= 0.3) by a class-c detection at
  or above the threshold;
- precision of class c: share of class-c detections at or above it that overlap a labelled box.

A class threshold is never below `floor`: the lowest threshold that keeps detections on
defect-free background frames within the recipe's cap, so the per-class choice cannot bring back
the false alarms on clean strip that the cap keeps out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inspection.datasets import Sample
from training.augment import AugmentConfig
from training.line_views import LineViews
from training.metrics import DETECTION_IOU, ImageResult, iou_matrix
from training.negatives import CHOICE_FAMILY, NegativePool

LINE_VIEW_WINDOW = (384, 384)  # a typical model window on the line (256 .. 512 px)
LINE_VIEW_TEXTURES = 8
# geometry as on the line (no flips or scaling: the dataset's scale is the line's), blend varied
NO_AUGMENT = AugmentConfig(out_size=LINE_VIEW_WINDOW, scale=(1.0, 1.0), flip_h=0.0, flip_v=0.0,
                           gain=(1.0, 1.0), offset=(0.0, 0.0), blur_p=0.0, noise_p=0.0)


def val_line_views(samples: Sequence[Sample], images: Sequence[np.ndarray], line_type: str,
                   classes: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One line view (image, boxes, class indices) of every labelled val image, reproducibly."""
    index = {c: i for i, c in enumerate(classes)}
    views = LineViews(NegativePool(line_type, LINE_VIEW_TEXTURES, NO_AUGMENT, family=CHOICE_FAMILY), NO_AUGMENT,
                      outside_share=0.0)
    out = []
    for i, (sample, image) in enumerate(zip(samples, images, strict=True)):
        if not len(sample.boxes):
            continue
        labels = np.array([index[n] for n in sample.labels], np.int64)
        view, boxes, kept = views.item(image, sample.boxes.astype(np.float32), labels,
                                       np.random.default_rng([CHOICE_FAMILY, 7, i]))
        out.append((view, boxes, kept))
    return out


def _class_f2(results: Sequence[ImageResult], c: int, t: float) -> tuple[float, float, float]:
    found = gt = kept = hits = 0
    for r in results:
        preds = r.pred_boxes[(r.pred_labels == c) & (r.pred_scores >= t)]
        own = r.gt_boxes[r.gt_labels == c]
        gt += len(own)
        kept += len(preds)
        if len(own) and len(preds):
            found += int((iou_matrix(own, preds).max(axis=1) >= DETECTION_IOU).sum())
        if len(preds) and len(r.gt_boxes):
            hits += int((iou_matrix(preds, r.gt_boxes).max(axis=1) >= DETECTION_IOU).sum())
    recall = found / gt if gt else 0.0
    precision = hits / kept if kept else 0.0
    f2 = 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0
    return f2, recall, precision


def class_thresholds(results: Sequence[ImageResult], classes: Sequence[str], candidates: Sequence[float],
                     floor: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Each class's threshold (the lowest of the best F2 among `candidates` >= `floor`) and the
    F2, recall and precision it has on `results`."""
    chosen, info = {}, {}
    allowed = [t for t in candidates if t >= floor] or [max(candidates)]
    for c, name in enumerate(classes):
        rows = [(t, *_class_f2(results, c, t)) for t in allowed]
        t, f2, recall, precision = max(rows, key=lambda r: r[1])  # max keeps the first (lowest) on ties
        chosen[name] = float(t)
        info[name] = {"threshold": float(t), "f2": round(f2, 4), "recall": round(recall, 4),
                      "precision": round(precision, 4)}
    return chosen, info
