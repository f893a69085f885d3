"""`evaluate --explain`: why each missed box and each false detection on dataset images is one.

The image-level counterpart of `bench e2e --explain` (`inspection.benchmarks._e2e_explain`), with
the same names where the causes are the same. Judged at the operating thresholds, as the detection
rate and the false detections per image are (`training.metrics`):

Every ground-truth box no detection at its class's threshold overlaps at IoU >= `DETECTION_IOU`:

- ``below_threshold``: a detection of any class (score >= `SCORE_FLOOR`) overlaps it at IoU >= 0.3,
  but scores below its class's threshold;
- ``box_mismatch``: otherwise, detections at the threshold overlap it, none at IoU >= 0.3 (the box
  too small, too large or split in parts);
- ``no_detection``: otherwise.

Every detection at its class's threshold that overlaps no ground-truth box at IoU >= 0.3:

- ``plain_texture``: it overlaps no labelled box at all;
- ``near_defect``: it overlaps one at IoU < 0.3. Of these, ``fragments`` counts per class those lying
  at least half (`AREA_SHARE`) inside the labelled boxes of their own class: a piece of a labelled
  area (NEU-DET labels one crazing area as several boxes, or as one large one).

What the attribution cannot say: whether a ``plain_texture`` detection lies on a defect nobody
labelled. The data sets label some defects of an image and not others (a look at the hot val split,
2026-12-05: most inclusion images with such detections show an unlabelled streak under them); those
count as false here, as they do in every figure of `evaluate`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from inspection.benchmarks._causes import AREA_SHARE, cause_table, print_cause_tables, share_inside
from inspection.tiling import iou_matrix
from training.metrics import DETECTION_IOU, ImageResult, Threshold, at_threshold

SCORE_FLOOR = 0.05  # detections below this are noise for the attribution (as on the line)
MISSED_CAUSES = ("below_threshold", "box_mismatch", "no_detection")
FALSE_CAUSES = ("plain_texture", "near_defect")


def explain_images(results: Sequence[ImageResult], classes: Sequence[str], threshold: Threshold) -> dict[str, Any]:
    """Per class and cause, the missed boxes and the false detections of `results` (module docstring)."""
    missed: dict[str, Counter] = defaultdict(Counter)
    false: dict[str, Counter] = defaultdict(Counter)
    fragments: Counter = Counter()
    gt_total = 0
    for im in results:
        gt_total += len(im.gt_boxes)
        passing = at_threshold(im, threshold)
        considered = im.pred_scores >= SCORE_FLOOR
        ious = (iou_matrix(im.pred_boxes, im.gt_boxes) if len(im.pred_boxes) and len(im.gt_boxes)
                else np.zeros((len(im.pred_boxes), len(im.gt_boxes))))
        for j, label in enumerate(im.gt_labels):
            column = ious[:, j]
            if np.any(passing & (column >= DETECTION_IOU)):
                continue
            if np.any(considered & (column >= DETECTION_IOU)):
                cause = "below_threshold"
            elif np.any(passing & (column > 0.0)):
                cause = "box_mismatch"
            else:
                cause = "no_detection"
            missed[classes[label]][cause] += 1
        for k in np.nonzero(passing)[0]:
            row = ious[k] if len(im.gt_boxes) else np.zeros(0)
            if len(row) and row.max() >= DETECTION_IOU:
                continue
            name = classes[im.pred_labels[k]]
            if not len(row) or row.max() <= 0.0:
                false[name]["plain_texture"] += 1
                continue
            false[name]["near_defect"] += 1
            own = [b for b, lab in zip(im.gt_boxes, im.gt_labels, strict=True) if lab == im.pred_labels[k]]
            fragments[name] += share_inside(im.pred_boxes[k], own) >= AREA_SHARE
    false_table = cause_table(false, FALSE_CAUSES, None)
    false_table["fragments"] = {cls: n for cls, n in sorted(fragments.items()) if n}
    false_table["per_image"] = round(false_table["total"] / len(results), 4) if results else None
    return {"missed": cause_table(missed, MISSED_CAUSES, gt_total), "false": false_table,
            "score_floor": SCORE_FLOOR, "iou": DETECTION_IOU}


def print_explained(figures: dict[str, Any], out: TextIO) -> None:
    """The attribution as plain-text tables (the JSON holds the same numbers)."""
    print_cause_tables(figures, {"missed": (MISSED_CAUSES, "boxes"), "false": (FALSE_CAUSES, "detections")}, out)
    false = figures["false"]
    pieces = sum(false["fragments"].values())
    print(f"near_defect: {pieces} of {false['by_cause']['near_defect']} lie at least half inside labelled boxes "
          f"of their own class ({', '.join(f'{k} {v}' for k, v in false['fragments'].items()) or 'none'})", file=out)
