"""Detection metrics (numpy only, torch-free): AP, mAP, detection rate, false detections, accuracy.

Definitions (what the evaluation JSON reports):

- **AP** per class at an IoU threshold: predictions of that class over all images, sorted by
  score (descending; ties keep input order), each matched greedily to the *unmatched*
  ground-truth box of the same class with the highest IoU >= threshold (COCO-style matching);
  AP is the area under the precision envelope of the PR curve with **all-point interpolation**
  (PASCAL VOC 2010+ style, not COCO's 101-point sampling). A class without ground truth has
  AP None and is left out of the mean; a class with ground truth but no predictions has AP 0.
- **mAP@0.5** = mean AP over classes with ground truth at IoU 0.5; **mAP@0.5:0.95** = mean
  of the mAPs at IoU 0.50, 0.55, ..., 0.95.
- **detection rate**: share of ground-truth boxes overlapped at IoU >= 0.3 by at least one
  prediction of ANY class scoring >= the operating threshold.
- **false detections per image**: predictions scoring >= the operating threshold that overlap
  no ground-truth box (any class) at IoU >= 0.3, divided by the number of images.
- **image accuracy**: the class of the image's top-scoring prediction (any score, the
  threshold does not apply: every image of these data sets shows a defect) equals the
  image's file-name class; an image without predictions counts as wrong.
- **confusion matrix** at the operating threshold: predictions and ground-truth boxes are
  paired class-agnostically, greedily by descending IoU (>= 0.5), each box used once; rows
  are the ground-truth class, columns the predicted class, the last row/column is
  "background" (a GT box left unpaired is a miss in column background; an unpaired
  prediction is a false detection in row background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inspection.tiling import iou_matrix  # one implementation for the runtime and the metrics

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
DETECTION_IOU = 0.3
CONFUSION_IOU = 0.5


@dataclass(frozen=True)
class ImageResult:
    """Ground truth and predictions for one image (labels are class indices)."""

    gt_boxes: np.ndarray  # [n, 4] x1 y1 x2 y2
    gt_labels: np.ndarray  # int [n]
    pred_boxes: np.ndarray  # [m, 4]
    pred_scores: np.ndarray  # [m]
    pred_labels: np.ndarray  # int [m]
    image_label: int | None = None  # file-name class index, None when unknown

    def __post_init__(self) -> None:
        for name in ("gt_boxes", "pred_boxes"):
            value = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1, 4)
            object.__setattr__(self, name, value)
        for name in ("gt_labels", "pred_labels"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        object.__setattr__(self, "pred_scores", np.asarray(self.pred_scores, dtype=np.float64).reshape(-1))
        if len(self.gt_labels) != len(self.gt_boxes):
            raise ValueError(f"gt_labels: {len(self.gt_labels)} labels for {len(self.gt_boxes)} boxes")
        if not len(self.pred_boxes) == len(self.pred_scores) == len(self.pred_labels):
            raise ValueError(f"predictions: {len(self.pred_boxes)} boxes, {len(self.pred_scores)} scores, "
                             f"{len(self.pred_labels)} labels")


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated area under a PR curve (VOC 2010+)."""
    r = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    p = np.concatenate([[1.0], np.asarray(precision, dtype=np.float64), [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope: best precision at >= this recall
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def class_matches(im: ImageResult, class_index: int, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One image's predictions of a class in descending score order (ties keep input order), as
    indices, and whether each is a true positive: matched greedily, in that order, to the unmatched
    ground-truth box of the class with the highest IoU >= `iou`. Matching never looks past the
    image, so `pr_curve` (and `training.bootstrap`) can put images together in any combination."""
    mine = np.nonzero(im.pred_labels == class_index)[0]
    mine = mine[np.argsort(-im.pred_scores[mine], kind="stable")]
    gt = im.gt_boxes[im.gt_labels == class_index]
    true_pos = np.zeros(len(mine), dtype=bool)
    if len(gt) and len(mine):
        ious = iou_matrix(im.pred_boxes[mine], gt)
        taken = np.zeros(len(gt), dtype=bool)
        for k in range(len(mine)):
            row = np.where(taken, -1.0, ious[k])
            best = int(np.argmax(row))
            if row[best] >= iou:
                taken[best] = true_pos[k] = True
    return mine, true_pos


def pr_curve(images: Sequence[ImageResult], class_index: int, iou: float = 0.5
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(recall, precision, scores) after each prediction of the class, and the GT count."""
    n_gt = int(sum(int(np.sum(im.gt_labels == class_index)) for im in images))
    scores, flags = [np.zeros(0)], [np.zeros(0, dtype=bool)]
    for im in images:
        mine, true_pos = class_matches(im, class_index, iou)
        scores.append(im.pred_scores[mine])
        flags.append(true_pos)
    all_scores = np.concatenate(scores)
    order = np.argsort(-all_scores, kind="stable")  # ties: image order, then each image's own order
    tp = np.cumsum(np.concatenate(flags)[order])
    recall = tp / n_gt if n_gt else np.zeros(len(order))
    precision = tp / np.arange(1, len(order) + 1)
    return recall, precision, all_scores[order], n_gt


def class_ap(images: Sequence[ImageResult], class_index: int, iou: float = 0.5) -> float | None:
    recall, precision, _, n_gt = pr_curve(images, class_index, iou)
    if n_gt == 0:
        return None
    return average_precision(recall, precision) if len(recall) else 0.0


def mean_ap(images: Sequence[ImageResult], num_classes: int, iou: float = 0.5) -> float | None:
    aps = [ap for c in range(num_classes) if (ap := class_ap(images, c, iou)) is not None]
    return float(np.mean(aps)) if aps else None


Threshold = float | np.ndarray  # one for every class, or one per class (indexed by label)


def at_threshold(im: ImageResult, threshold: Threshold) -> np.ndarray:
    """Which of the image's predictions score at or above their class's threshold (or the one threshold)."""
    if isinstance(threshold, np.ndarray) and threshold.ndim:
        return im.pred_scores >= threshold[im.pred_labels]
    return im.pred_scores >= threshold


def found_and_false(im: ImageResult, threshold: Threshold, iou: float = DETECTION_IOU) -> tuple[int, int]:
    """One image's ground-truth boxes found at the threshold (overlapped at IoU >= `iou` by a
    prediction of any class) and its predictions at the threshold that overlap no ground-truth box."""
    preds = im.pred_boxes[at_threshold(im, threshold)]
    if not len(im.gt_boxes):
        return 0, len(preds)
    if not len(preds):
        return 0, 0
    ious = iou_matrix(im.gt_boxes, preds)
    return int(np.sum(ious.max(axis=1) >= iou)), int(np.sum(ious.max(axis=0) < iou))


def detection_rate(images: Sequence[ImageResult], threshold: Threshold,
                   iou: float = DETECTION_IOU) -> float | None:
    total = sum(len(im.gt_boxes) for im in images)
    found = sum(found_and_false(im, threshold, iou)[0] for im in images)
    return found / total if total else None


def false_detections(images: Sequence[ImageResult], threshold: Threshold, iou: float = DETECTION_IOU) -> int:
    return sum(found_and_false(im, threshold, iou)[1] for im in images)


def top_class_correct(im: ImageResult) -> bool | None:
    """Whether the image's top-scoring prediction (any score) names its file-name class; None when
    the image has no known class. An image without predictions is wrong."""
    if im.image_label is None:
        return None
    if not len(im.pred_scores):
        return False
    return int(im.pred_labels[int(np.argmax(im.pred_scores))]) == im.image_label  # first of equal maxima


def image_accuracy(images: Sequence[ImageResult]) -> float | None:
    judged = [c for c in map(top_class_correct, images) if c is not None]
    return sum(judged) / len(judged) if judged else None


def confusion_matrix(images: Sequence[ImageResult], num_classes: int, threshold: Threshold,
                     iou: float = CONFUSION_IOU) -> np.ndarray:
    """[(C+1), (C+1)] counts; index C is background (see module docstring)."""
    bg = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for im in images:
        keep = at_threshold(im, threshold)
        boxes, labels = im.pred_boxes[keep], im.pred_labels[keep]
        ious = iou_matrix(im.gt_boxes, boxes)
        gt_used = np.zeros(len(im.gt_boxes), dtype=bool)
        pred_used = np.zeros(len(boxes), dtype=bool)
        if ious.size:
            pairs = np.argwhere(ious >= iou)
            order = np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")
            for g, p in pairs[order]:
                if not gt_used[g] and not pred_used[p]:
                    gt_used[g] = pred_used[p] = True
                    matrix[im.gt_labels[g], labels[p]] += 1
        for g in np.nonzero(~gt_used)[0]:
            matrix[im.gt_labels[g], bg] += 1
        for p in np.nonzero(~pred_used)[0]:
            matrix[bg, labels[p]] += 1
    return matrix


def precision_recall_at(images: Sequence[ImageResult], class_index: int, threshold: Threshold,
                        iou: float = 0.5) -> tuple[float | None, float | None]:
    """Precision and recall of one class at a score threshold (same matching as AP)."""
    if isinstance(threshold, np.ndarray) and threshold.ndim:
        threshold = float(threshold[class_index])
    recall, precision, scores, n_gt = pr_curve(images, class_index, iou)
    upto = int(np.sum(scores >= threshold))
    p = float(precision[upto - 1]) if upto else None
    r = (float(recall[upto - 1]) if upto else 0.0) if n_gt else None
    return p, r


def compute_metrics(images: Sequence[ImageResult], classes: Sequence[str], threshold: Threshold) -> dict:
    """Every figure of the evaluation JSON (see module docstring for the definitions); `threshold`
    is one operating threshold or an array of one per class."""
    n = len(classes)
    per_class = {}
    for c, name in enumerate(classes):
        aps = [class_ap(images, c, t) for t in IOU_THRESHOLDS]
        precision, recall = precision_recall_at(images, c, threshold)
        per_class[name] = {
            "gt_boxes": int(sum(int(np.sum(im.gt_labels == c)) for im in images)),
            "ap50": _round(aps[0]), "ap50_95": _round(None if aps[0] is None else float(np.mean(aps))),
            "precision_at_threshold": _round(precision), "recall_at_threshold": _round(recall),
        }
    maps = [mean_ap(images, n, t) for t in IOU_THRESHOLDS]
    matrix = confusion_matrix(images, n, threshold)
    n_images = len(images)
    false_count = false_detections(images, threshold)
    return {
        "images": n_images,
        "gt_boxes": int(sum(len(im.gt_boxes) for im in images)),
        "operating_threshold": (dict(zip(classes, np.asarray(threshold).round(4).tolist(), strict=True))
                                if isinstance(threshold, np.ndarray) and threshold.ndim else threshold),
        "map50": _round(maps[0]),
        "map50_95": _round(None if maps[0] is None else float(np.mean([m or 0.0 for m in maps]))),
        "per_class": per_class,
        "detection_rate": _round(detection_rate(images, threshold)),
        "false_detections": false_count,
        "false_detections_per_image": _round(false_count / n_images if n_images else None),
        "image_accuracy": _round(image_accuracy(images)),
        "confusion_matrix": {"labels": [*classes, "background"], "rows": "ground truth",
                             "columns": "prediction", "iou": CONFUSION_IOU, "matrix": matrix.tolist()},
        "definitions": {"ap": "all-point interpolated (VOC 2010+), COCO-style greedy matching",
                        "iou_thresholds_map50_95": list(IOU_THRESHOLDS), "detection_iou": DETECTION_IOU,
                        "image_accuracy": "top-scoring prediction at any score vs file-name class"},
    }


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)
