"""Unknown defect types: what the model has not learned is called ``unknown``, not a known class.

A plant always meets defects that no training set had. A detector trained on six classes reports
such a defect as whichever of the six it resembles most, often with a fair score. Two signals
from the exported graph tell the runtime that it is guessing (`training.model`):

- ``novelty``: the smallest Mahalanobis distance (per feature dimension) of the head's feature
  vector at the detection's cell from the class means of the training set (pooled covariance,
  shrunk towards its average variance so the inverse is stable). Features of a kind never seen in
  training lie far from every mean.
- ``class share``: the detection's class score over the sum of every class's score at that cell.
  Two or three classes that all half fit mean the model cannot tell which it is.

`prototypes` computes the means and the precision from the training split (features at the cell
of each labelled box's centre, as the heads were trained there); `choose_rule` sets the two limits
on val, as quantiles of the detections that found a real, known defect: the rule calls at most
about `budget` of them unknown. The runtime (`inspection.detector`) applies the rule from the
manifest's ``unknown`` entry: novelty above ``novelty_max`` or class share below
``class_share_min``. How well this finds a new type is measured by training without a class
(`steel-inspect train --exclude-class`) and evaluating on that class's test defects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from inspection.datasets import Sample
from training.data import eval_batches
from training.metrics import DETECTION_IOU, iou_matrix
from training.model import Detector

SHRINK = 0.1  # weight of the average variance in the shrunk covariance
BUDGET = 0.05  # share of val detections of known defects that the rule may call unknown (half per signal)


def head_features(model: Detector, images: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
    """The head's input features [F, h, w] of each (padded) image."""
    out: list[np.ndarray | None] = [None] * len(images)
    model.eval()
    with torch.no_grad():
        for idx, batch in eval_batches(images, batch_size):
            x = (batch.to(torch.float32) - model.mean) / model.std
            features = model.maps(x)[3].numpy()
            for row, i in enumerate(idx):
                out[i] = features[row]
    return out  # type: ignore[return-value]


def prototypes(model: Detector, samples: Sequence[Sample], images: Sequence[np.ndarray],
               classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Class means [C, F], the shrunk pooled precision [F, F] and the sample count per class."""
    index = {c: i for i, c in enumerate(classes)}
    per_class: list[list[np.ndarray]] = [[] for _ in classes]
    for sample, features in zip(samples, head_features(model, images), strict=True):
        _, h, w = features.shape
        for box, label in zip(sample.boxes, sample.labels, strict=True):
            if label not in index:
                continue
            cx = min(int((box[0] + box[2]) / 2 / model.stride), w - 1)
            cy = min(int((box[1] + box[3]) / 2 / model.stride), h - 1)
            per_class[index[label]].append(features[:, cy, cx])
    dims = model.proto_mean.shape[1]
    means = np.zeros((len(classes), dims), np.float64)
    scatter = np.zeros((dims, dims), np.float64)
    total = 0
    for c, vectors in enumerate(per_class):
        if not vectors:
            continue
        v = np.stack(vectors).astype(np.float64)
        means[c] = v.mean(axis=0)
        centred = v - means[c]
        scatter += centred.T @ centred
        total += len(v)
    if total < 2:
        raise ValueError("prototypes: fewer than two labelled boxes in the training images")
    covariance = scatter / (total - 1)
    covariance = (1 - SHRINK) * covariance + SHRINK * np.trace(covariance) / dims * np.eye(dims)
    precision = np.linalg.inv(covariance)
    return (means.astype(np.float32), precision.astype(np.float32),
            {c: len(v) for c, v in zip(classes, per_class, strict=True)})


def detections(model: Detector, images: Sequence[np.ndarray], batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    """Every output of the exported graph, computed by the torch model, per image (clipped boxes)."""
    out: list[dict[str, np.ndarray] | None] = [None] * len(images)
    model.eval()
    with torch.no_grad():
        for idx, batch in eval_batches(images, batch_size):
            boxes, scores, labels, class_scores, novelty = (t.numpy() for t in model.detect(batch))
            for row, i in enumerate(idx):
                h, w = images[i].shape
                b = boxes[row].copy()
                b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
                b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
                out[i] = {"boxes": b, "scores": scores[row], "labels": labels[row],
                          "class_scores": class_scores[row], "novelty": novelty[row]}
    return out  # type: ignore[return-value]


def class_share(class_scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The detection's class score over the sum of every class's score at its cell."""
    own = np.take_along_axis(class_scores, labels[:, None], axis=1)[:, 0]
    return own / np.maximum(class_scores.sum(axis=1), 1e-9)


def is_unknown(novelty: np.ndarray, share: np.ndarray, rule: dict[str, float]) -> np.ndarray:
    """The runtime's rule (`inspection.detector`), here for choosing and measuring it."""
    return (novelty > rule["novelty_max"]) | (share < rule["class_share_min"])


def choose_rule(found: Sequence[dict[str, np.ndarray]], gt_boxes: Sequence[np.ndarray], thresholds: np.ndarray,
                budget: float = BUDGET) -> dict[str, Any]:
    """The limits of the rule on val: quantiles of the detections (at their class's operating
    threshold) that overlap a labelled defect at IoU >= DETECTION_IOU, so that each signal alone
    calls at most `budget` / 2 of them unknown; with what the rule then does to val."""
    known_novelty, known_share, false_novelty, false_share = [], [], [], []
    for det, truth in zip(found, gt_boxes, strict=True):
        keep = det["scores"] >= thresholds[det["labels"]]
        keep &= det["scores"] > 0
        if not keep.any():
            continue
        novelty = det["novelty"][keep]
        share = class_share(det["class_scores"][keep], det["labels"][keep])
        if len(truth):
            hit = iou_matrix(det["boxes"][keep], np.asarray(truth, np.float32)).max(axis=1) >= DETECTION_IOU
        else:
            hit = np.zeros(len(novelty), bool)
        known_novelty += novelty[hit].tolist()
        known_share += share[hit].tolist()
        false_novelty += novelty[~hit].tolist()
        false_share += share[~hit].tolist()
    if not known_novelty:
        raise ValueError("unknown rule: no val detection of a known defect to calibrate on")
    rule = {"novelty_max": round(float(np.quantile(known_novelty, 1 - budget / 2)), 4),
            "class_share_min": round(float(np.quantile(known_share, budget / 2)), 4)}
    known = is_unknown(np.array(known_novelty), np.array(known_share), rule)
    false = is_unknown(np.array(false_novelty), np.array(false_share), rule) if false_novelty else np.zeros(0)
    return {**rule, "budget": budget,
            "val_known_detections": len(known_novelty), "val_known_called_unknown": round(float(known.mean()), 4),
            "val_false_detections": len(false_novelty),
            "val_false_called_unknown": round(float(false.mean()), 4) if len(false) else None,
            "rule": "unknown when novelty > novelty_max or class share < class_share_min; limits are the "
                    f"{1 - budget / 2:.3f} and {budget / 2:.3f} quantiles of val detections of known defects"}


def runtime_detections(detector: Any, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """`detections` computed by a runtime `inspection.detector.Detector` (an ONNX file, e.g. an int8
    copy whose features differ from its fp32 source), every output slot with a score > 0."""
    out = []
    for det in detector.detect(list(images), min_score=0.0):
        if det.class_scores is None or det.novelty is None:
            raise ValueError(f"{detector.manifest.version} has no class_scores / novelty outputs")
        out.append({"boxes": det.boxes, "scores": det.scores, "labels": det.labels,
                    "class_scores": det.class_scores, "novelty": det.novelty})
    return out
