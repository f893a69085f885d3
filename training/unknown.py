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
about `budget` of them unknown. How that budget is shared between the two signals is chosen on
defect types the model never learns: the other line type's val split (a hot model meets the cold
set's seven classes), the split of the budget that calls most of those found `unknown` wins
(`unseen_val_samples`, `SPLITS`). Without them, each signal gets half. With an `unseen_target` the
budget itself is chosen there too: the smallest (in `BUDGET_STEP`s, at most `budget`) whose best split
calls at least that share of the unseen types found `unknown`. Every known defect called `unknown`
is one the line records without its class (a review, and a miss of the class accuracy), so a model
whose signals separate well should not spend the whole budget. The runtime
(`inspection.detector`) applies the rule from the manifest's ``unknown`` entry: novelty above
``novelty_max`` or class share below ``class_share_min``. How well this finds a new type is
measured by training without a class (`steel-inspect train --exclude-class`) and evaluating on that
class's test defects, and by `evaluate --unseen-class` on the other line type's test split.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspection.datasets import DATASET_CLASSES, LINE_DATASETS, DatasetError, Sample, load_split
from training.data import eval_batches
from training.metrics import DETECTION_IOU, iou_matrix
from training.model import Detector

log = logging.getLogger(__name__)

SHRINK = 0.1  # weight of the average variance in the shrunk covariance
BUDGET = 0.05  # share of val detections of known defects that the rule may call unknown (at most)
BUDGET_STEP = 0.005  # the budgets tried with an unseen target: 0.005, 0.01, ... up to the budget
# With unseen types at hand, the budget is the smallest that calls this share of those found `unknown` on
# val: a tenth above the goal of half (detection issue), as the share moved by up to 0.03 between the
# val and test splits of the other line type (hot-20261206-2: 0.664 on val, 0.637 on test).
UNSEEN_TARGET = 0.6
# Shares of the budget the novelty limit may take (the class share limit the rest), tried on unseen types.
# Each signal keeps at least a quarter: one other dataset must not switch off a signal that another
# plant's defects may need (a shape far from everything learned can still have one confident class).
SPLITS = (0.25, 0.5, 0.75)
DEFAULT_SPLIT = 0.5


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


def _at_thresholds(det: dict[str, np.ndarray], thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, novelty and class share of the detections at their class's operating threshold."""
    keep = (det["scores"] >= thresholds[det["labels"]]) & (det["scores"] > 0)
    return (det["boxes"][keep], det["novelty"][keep],
            class_share(det["class_scores"][keep], det["labels"][keep]))


def finding_detections(det: dict[str, np.ndarray], truth: np.ndarray,
                       thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labelled boxes of `truth` that a detection finds (the best overlap at IoU >= DETECTION_IOU among
    the detections at their class's operating threshold, as `evaluate` judges an unseen type): their
    indices, and the indices into `det` of the detections that find them."""
    keep = np.flatnonzero((det["scores"] >= thresholds[det["labels"]]) & (det["scores"] > 0))
    if not len(truth) or not len(keep):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    iou = iou_matrix(np.asarray(truth, np.float32), det["boxes"][keep])
    best = iou.argmax(axis=1)
    hit = np.flatnonzero(iou[np.arange(len(truth)), best] >= DETECTION_IOU)
    return hit, keep[best[hit]]


def _unseen_found(found: Sequence[dict[str, np.ndarray]], gt_boxes: Sequence[np.ndarray],
                  thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Novelty and class share of the detection that finds each unseen box (`finding_detections`); boxes
    nothing finds are left out."""
    novelty, share = [], []
    for det, truth in zip(found, gt_boxes, strict=True):
        _, finders = finding_detections(det, truth, thresholds)
        novelty += det["novelty"][finders].tolist()
        share += class_share(det["class_scores"][finders], det["labels"][finders]).tolist()
    return np.array(novelty, np.float64), np.array(share, np.float64)


def rule_limits(known_novelty: np.ndarray, known_share: np.ndarray, budget: float, split: float) -> dict[str, float]:
    """The two limits that call about `budget` of the known detections `unknown`, `split` of it by novelty."""
    return {"novelty_max": round(float(np.quantile(known_novelty, 1 - budget * split)), 4),
            "class_share_min": round(float(np.quantile(known_share, budget * (1 - split))), 4)}


def choose_rule(found: Sequence[dict[str, np.ndarray]], gt_boxes: Sequence[np.ndarray], thresholds: np.ndarray,
                budget: float = BUDGET,
                unseen: tuple[Sequence[dict[str, np.ndarray]], Sequence[np.ndarray]] | None = None,
                unseen_target: float | None = None) -> dict[str, Any]:
    """The limits of the rule on val: quantiles of the detections (at their class's operating
    threshold) that overlap a labelled defect at IoU >= DETECTION_IOU, so that the rule calls at
    most about `budget` of them unknown; with what the rule then does to val. `unseen`: detections
    and boxes of defect types the model never learned; the share of the budget the novelty limit
    takes (`SPLITS`) is the one that calls most of those found unknown (else `DEFAULT_SPLIT`). With
    `unseen` and `unseen_target`: the budget is the smallest multiple of `BUDGET_STEP` up to `budget`
    whose best split calls at least `unseen_target` of those found unknown (`budget` when none does)."""
    known_novelty, known_share, false_novelty, false_share = [], [], [], []
    for det, truth in zip(found, gt_boxes, strict=True):
        boxes, novelty, share = _at_thresholds(det, thresholds)
        if not len(boxes):
            continue
        if len(truth):
            hit = iou_matrix(boxes, np.asarray(truth, np.float32)).max(axis=1) >= DETECTION_IOU
        else:
            hit = np.zeros(len(novelty), bool)
        known_novelty += novelty[hit].tolist()
        known_share += share[hit].tolist()
        false_novelty += novelty[~hit].tolist()
        false_share += share[~hit].tolist()
    if not known_novelty:
        raise ValueError("unknown rule: no val detection of a known defect to calibrate on")
    known_n, known_s = np.array(known_novelty), np.array(known_share)
    split, tried, per_budget, most = DEFAULT_SPLIT, None, None, budget
    if unseen is not None:
        unseen_n, unseen_s = _unseen_found(*unseen, thresholds)
        if len(unseen_n):
            per_budget = {}
            for tried_budget in _budgets(most, unseen_target):
                split, tried = _best_split(known_n, known_s, unseen_n, unseen_s, tried_budget)
                per_budget[str(tried_budget)] = tried[str(split)]
                budget = tried_budget
                if unseen_target is not None and tried[str(split)] >= unseen_target:
                    break
        else:
            log.warning("unknown rule: no unseen defect found on the unseen val images; each signal gets half")
    rule = rule_limits(known_n, known_s, budget, split)
    known = is_unknown(known_n, known_s, rule)
    false = is_unknown(np.array(false_novelty), np.array(false_share), rule) if false_novelty else np.zeros(0)
    out = {**rule, "budget": budget, "novelty_share_of_budget": split,
           "val_known_detections": len(known_novelty), "val_known_called_unknown": round(float(known.mean()), 4),
           "val_false_detections": len(false_novelty),
           "val_false_called_unknown": round(float(false.mean()), 4) if len(false) else None,
           "rule": "unknown when novelty > novelty_max or class share < class_share_min; limits are the "
                   f"{1 - budget * split:.4f} and {budget * (1 - split):.4f} quantiles of val detections of "
                   "known defects"}
    if unseen is not None:
        out["unseen_val"] = {"boxes": int(sum(len(b) for b in unseen[1])), "found": len(unseen_n),
                             "called_unknown_per_split": tried,
                             "choice": "the novelty share of the budget that calls most unseen defects found "
                                       "unknown" if tried else "no unseen defect found: half each"}
        if unseen_target is not None and per_budget:
            out["unseen_val"]["called_unknown_per_budget"] = per_budget
            out["budget_choice"] = {
                "unseen_target": unseen_target,
                "rule": f"the smallest budget in steps of {BUDGET_STEP} (at most {most}) "
                        f"whose best split calls at least {unseen_target} of the unseen val defects found "
                        "unknown; the largest when none does"}
    return out


def _budgets(budget: float, unseen_target: float | None) -> list[float]:
    """The budgets `choose_rule` tries in turn: `budget` alone, or with a target every step up to it."""
    if unseen_target is None:
        return [budget]
    steps = int(np.floor(budget / BUDGET_STEP + 1e-9))
    return [round(BUDGET_STEP * k, 4) for k in range(1, steps + 1)] + ([] if steps * BUDGET_STEP >= budget - 1e-9
                                                                       else [budget])


def _best_split(known_n: np.ndarray, known_s: np.ndarray, unseen_n: np.ndarray, unseen_s: np.ndarray,
                budget: float) -> tuple[float, dict[str, float]]:
    """The novelty share of `budget` that calls most unseen defects found unknown (ties: the even split),
    and the share called per split tried."""
    calls = {s: is_unknown(unseen_n, unseen_s, rule_limits(known_n, known_s, budget, s)) for s in SPLITS}
    tried = {str(s): round(float(called.mean()), 4) for s, called in calls.items()}
    return max(SPLITS, key=lambda s: (tried[str(s)], -abs(s - DEFAULT_SPLIT))), tried


def _other_split(line_type: str, datasets_dir: Path, split: str, splits_dir: Path | None,
                 max_images: int | None) -> tuple[str, list[Sample]]:
    """The other line type's dataset name and the samples of its `split`: defect types a model of
    `line_type` never learns (another mill's classes). Empty, with a warning, where that dataset is not
    beside this one (a plant training on its own data)."""
    other = next(d for t, d in LINE_DATASETS.items() if t != line_type)
    if not (Path(datasets_dir) / other / "images").is_dir():
        log.warning("unknown rule: no %s folder in %s for unseen %s images", other, datasets_dir, split)
        return other, []
    try:
        samples = load_split(Path(datasets_dir) / other, other, split, splits_dir)
    except DatasetError as exc:
        log.warning("unknown rule: no unseen %s images (%s)", split, exc)
        return other, []
    return other, samples[:max_images] if max_images else samples


def unseen_val_samples(line_type: str, datasets_dir: Path, splits_dir: Path | None = None,
                       max_images: int | None = None) -> list[Sample]:
    """The other line type's val split, on which `choose_rule` shares its budget (empty: half each)."""
    return _other_split(line_type, datasets_dir, "val", splits_dir, max_images)[1]


def unseen_pairs(found: Sequence[dict[str, np.ndarray]], samples: Sequence[Sample]
                 ) -> tuple[Sequence[dict[str, np.ndarray]], list[np.ndarray]] | None:
    """`choose_rule`'s `unseen` argument from detections on `unseen_val_samples` (None when empty)."""
    return (found, [s.boxes for s in samples]) if samples else None


def unseen_test_figures(detector: Any, line_type: str, datasets_dir: Path, splits_dir: Path | None = None,
                        max_images: int | None = None) -> dict[str, Any] | None:
    """How a runtime `detector` reports defect types it never learned: the other line type's test split,
    every box judged as unseen (`steel-inspect evaluate --unseen-class` for each of its classes); the
    share of those boxes found and the share of the found ones called `unknown`. None without the data."""
    from training.evaluate import evaluate

    other, samples = _other_split(line_type, datasets_dir, "test", splits_dir, max_images)
    if not samples:
        return None
    # a plant's own class of the same name was learned: `evaluate` judges it as known, not unseen
    unseen = tuple(c for c in DATASET_CLASSES[other] if c not in detector.manifest.classes)
    if not unseen:
        return None
    figures = evaluate(detector, samples, progress=False, unseen=unseen)["unseen_classes"]
    boxes = sum(v["gt_boxes"] for v in figures.values())
    found = sum(v["found"] for v in figures.values())
    called = sum(v["found_as_unknown"] for v in figures.values())
    unseen_args = " ".join(f"--unseen-class {shlex.quote(c)}" for c in unseen)
    return {"dataset": other, "split": "test", "boxes": boxes, "found": found,
            "found_rate": round(found / boxes, 4) if boxes else None,
            "called_unknown": called, "unknown_share_of_found": round(called / found, 4) if found else None,
            "per_class": figures,
            "command": f"steel-inspect evaluate --model VERSION --data {Path(datasets_dir) / other} --split test "
                       f"{unseen_args} --json OUT"}


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
