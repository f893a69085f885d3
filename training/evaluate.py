"""Evaluate a `Detector` on labelled samples: figures as a dict, plots as PNG (torch-free).

The detector runs with min_score 0 (every output slot with a score > 0), so AP sees the whole
PR curve; the threshold-dependent figures (detection rate, false detections, confusion
matrix, precision/recall per class) use the model's operating threshold unless `min_score`
is given. See `training.metrics` for the exact definitions.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inspection.datasets import Sample, read_image
from inspection.detector import UNKNOWN, Detector
from inspection.ensemble import member_versions
from inspection.errors import SteelInspectError
from training.bootstrap import intervals, tallies
from training.metrics import ImageResult, compute_metrics, pr_curve

log = logging.getLogger(__name__)

CHUNK = 16  # images read and detected together; bounds memory on large folders


class EvaluationError(SteelInspectError):
    """Samples cannot be evaluated with this model (e.g. a box class the model does not know)."""


def image_result(sample: Sample, classes: tuple[str, ...], boxes: np.ndarray, scores: np.ndarray,
                 labels: np.ndarray, unseen: Sequence[str] = ()) -> ImageResult:
    """Ground truth and predictions of one image; boxes of `unseen` classes (the model was trained
    without them on purpose) are left out here and judged by `_unseen`."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(sample.labels) - set(index) - set(unseen))
    if unknown:
        raise EvaluationError(f"{sample.image_path}: box class {unknown[0]!r} is not one of the model's "
                              f"classes ({', '.join(classes)})")
    known = [i for i, n in enumerate(sample.labels) if n in index]
    gt_labels = np.array([index[sample.labels[i]] for i in known], dtype=int)
    return ImageResult(gt_boxes=sample.boxes[known], gt_labels=gt_labels,
                       pred_boxes=boxes, pred_scores=scores, pred_labels=labels,
                       image_label=index.get(sample.image_class))


class UnknownTally:
    """How often detections at the operating threshold(s) are reported `unknown` (on real defects and
    on false alarms), and, for classes the model was trained without (`classes_excluded` in its
    manifest), how many of their boxes are found at all and what they are called."""

    def __init__(self, detector: Detector, threshold: float | np.ndarray, unseen: Sequence[str]) -> None:
        self.threshold, self.unseen = threshold, tuple(unseen)
        self.counts = {"on_defects": 0, "on_defects_unknown": 0, "false": 0, "false_unknown": 0}
        self.per_unseen = {c: {"gt_boxes": 0, "found": 0, "found_as_unknown": 0, "found_as": {}} for c in unseen}
        self.has_rule = detector.unknown_rule is not None

    def add(self, sample: Sample, det: Any) -> None:
        from training.metrics import DETECTION_IOU, iou_matrix

        limit = self.threshold[det.labels] if isinstance(self.threshold, np.ndarray) else self.threshold
        keep = det.scores >= limit
        names = np.array(det.class_names, dtype=object)[keep]
        boxes = det.boxes[keep]
        is_unknown = names == UNKNOWN
        if len(boxes):
            hit = (iou_matrix(boxes, sample.boxes).max(axis=1) >= DETECTION_IOU if len(sample.boxes)
                   else np.zeros(len(boxes), bool))
            self.counts["on_defects"] += int(hit.sum())
            self.counts["on_defects_unknown"] += int((hit & is_unknown).sum())
            self.counts["false"] += int((~hit).sum())
            self.counts["false_unknown"] += int((~hit & is_unknown).sum())
        for box, label in zip(sample.boxes, sample.labels, strict=True):
            if label not in self.per_unseen:
                continue
            tally = self.per_unseen[label]
            tally["gt_boxes"] += 1
            ious = iou_matrix(box[None], boxes)[0] if len(boxes) else np.zeros(0)
            if not len(ious) or ious.max() < DETECTION_IOU:
                continue
            called = str(names[int(np.argmax(ious))])
            tally["found"] += 1
            tally["found_as_unknown"] += called == UNKNOWN
            tally["found_as"][called] = tally["found_as"].get(called, 0) + 1

    def figures(self) -> dict[str, Any]:
        c = self.counts
        out: dict[str, Any] = {"unknown": {
            "rule": self.has_rule,
            "share_of_detections_on_defects": round(c["on_defects_unknown"] / c["on_defects"], 4) if c["on_defects"]
            else None,
            "share_of_false_detections": round(c["false_unknown"] / c["false"], 4) if c["false"] else None}}
        if self.per_unseen:
            out["unseen_classes"] = {
                k: {**v, "found_rate": round(v["found"] / v["gt_boxes"], 4) if v["gt_boxes"] else None,
                    "unknown_share_of_found": round(v["found_as_unknown"] / v["found"], 4) if v["found"] else None}
                for k, v in self.per_unseen.items()}
        return out


def training_overlap(manifest_data: dict[str, Any], samples: Sequence[Sample]) -> int | None:
    """How many samples the model was trained on (per its manifest's split file); None if unknown."""
    from inspection.config import REPO_DIR

    split_file = (manifest_data.get("data") or {}).get("split_file")
    if not split_file:
        return None
    path = Path(split_file) if Path(split_file).is_absolute() else REPO_DIR / split_file
    try:
        trained = set(json.loads(path.read_text(encoding="utf-8"))["train"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("cannot read the training list of %s to check for overlap", path)
        return None
    return sum(1 for s in samples if s.image_path.name in trained)


def check_unseen(manifest: Any, unseen: Sequence[str]) -> None:
    """Refuse `unseen` classes the model did learn: judged apart, they would hide its misses."""
    learned = sorted(set(unseen) & set(manifest.classes))
    if learned:
        raise EvaluationError(f"--unseen-class {', '.join(learned)}: {manifest.version} learned these classes")


def operating_threshold(detector: Detector, min_score: float | None = None) -> float | np.ndarray:
    """The score the threshold-dependent figures use: `min_score` when given, else the model's
    per-class operating thresholds (an array in class order) or its single one."""
    if min_score is not None:
        return float(min_score)
    manifest = detector.manifest
    return detector.thresholds if manifest.data.get("operating_thresholds") else manifest.operating_threshold


def evaluate(detector: Detector, samples: Sequence[Sample], out_dir: Path | None = None,
             progress: bool = True, min_score: float | None = None, plot_prefix: str = "",
             unseen: Sequence[str] = (), bootstrap: int = 0,
             collect: list[ImageResult] | None = None, explain: bool = False) -> dict[str, Any]:
    """Every evaluation figure for `samples`; with `out_dir`, also PR-curve and confusion PNGs.
    Boxes of `unseen` classes (and of the classes the model was trained without) are judged apart,
    as defect types the model never learned. `bootstrap` > 0: 95 % intervals of the main figures
    over that many resamples of the images (`training.bootstrap`, under "bootstrap"). `collect`, when
    given, is extended with the per-image results (for paired statistics across two models). `explain`:
    why each missed box and each false detection is one, under "explain" (`training.explain`)."""
    if not samples:
        raise EvaluationError("no samples to evaluate")
    manifest = detector.manifest
    threshold = operating_threshold(detector, min_score)
    check_unseen(manifest, unseen)
    unseen = tuple(dict.fromkeys([*(manifest.data.get("classes_excluded") or ()), *unseen]))
    results: list[ImageResult] = []
    unknown = UnknownTally(detector, threshold, unseen)
    started = time.perf_counter()
    detect_seconds = 0.0
    bar = tqdm(total=len(samples), desc=f"evaluate {manifest.version}", unit="img", disable=not progress)
    with bar:
        for start in range(0, len(samples), CHUNK):
            chunk = samples[start:start + CHUNK]
            images = [read_image(s.image_path) for s in chunk]
            t0 = time.perf_counter()
            detections = detector.detect(images, min_score=0.0)
            detect_seconds += time.perf_counter() - t0
            for sample, det in zip(chunk, detections, strict=True):
                results.append(image_result(sample, manifest.classes, det.boxes, det.scores, det.labels, unseen))
                unknown.add(sample, det)
            bar.update(len(chunk))
    figures = compute_metrics(results, manifest.classes, threshold)
    if bootstrap > 0:
        figures["bootstrap"] = intervals(tallies(results, len(manifest.classes), threshold), bootstrap)
    if explain:
        from training.explain import explain_images

        figures["explain"] = explain_images(results, manifest.classes, threshold)
    if collect is not None:
        collect.extend(results)
    unjudged = sum(1 for r in results if r.image_label is None)
    overlap = training_overlap(manifest.data, samples)
    if overlap:
        log.warning("%d of %d evaluated images were used to train %s: these are not test figures",
                    overlap, len(samples), manifest.version)
    figures.update({
        "training_images_evaluated": overlap,
        "model": {"version": manifest.version, "line_type": manifest.line_type, "sha256": manifest.sha256},
        "images_without_known_class": unjudged,
        **unknown.figures(),
        "providers": detector.providers,
        "flips": list(detector.flips),  # test-time flips fused into every image's detections (inspection.flips)
        "ensemble": member_versions(manifest),  # an ensemble's members (inspection.ensemble); [] for one model
        "seconds": round(time.perf_counter() - started, 3),
        "detect_ms_per_image": round(1000 * detect_seconds / len(samples), 3),
        "hardware": f"{platform.machine()} {platform.processor() or ''}".strip(),
    })
    if out_dir is not None:
        figures["plots"] = write_plots(results, manifest.classes, figures, Path(out_dir), plot_prefix)
    log.info("evaluated %s on %d images: mAP@0.5 %s, detection rate %s, image accuracy %s", manifest.version,
             len(samples), figures["map50"], figures["detection_rate"], figures["image_accuracy"])
    return figures


def write_plots(results: Sequence[ImageResult], classes: Sequence[str], figures: dict[str, Any],
                out_dir: Path, prefix: str = "") -> list[str]:
    """PR curves per class (IoU 0.5) and the confusion matrix as PNG files; returns their names."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    pr_path = out_dir / f"{prefix}pr_curves.png"
    fig, ax = plt.subplots(figsize=(7, 6))
    for c, name in enumerate(classes):
        recall, precision, _, n_gt = pr_curve(results, c, 0.5)
        if n_gt == 0:
            continue
        ap = figures["per_class"][name]["ap50"]
        ax.plot(np.concatenate([[0.0], recall]), np.concatenate([[1.0], precision]),
                label=f"{name} (AP {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"PR curves at IoU 0.5, mAP@0.5 {_fmt(figures['map50'])}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(pr_path, dpi=110)
    plt.close(fig)

    cm_path = out_dir / f"{prefix}confusion_matrix.png"
    matrix = np.array(figures["confusion_matrix"]["matrix"])
    labels = figures["confusion_matrix"]["labels"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.75 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center", fontsize=8,
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="ground truth",
           title=f"confusion at score >= {figures['operating_threshold']}, IoU >= 0.5")
    fig.tight_layout()
    fig.savefig(cm_path, dpi=110)
    plt.close(fig)
    return [pr_path.name, cm_path.name]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
