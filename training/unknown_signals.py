"""What the unknown rule's two signals carry, measured on a registered model (`scripts/unknown_signals.py`).

The rule (`training.unknown`) calls a detection `unknown` when its novelty is above a limit or its class
share below one, both set on val detections of known defects so that together they call about 5 % of
those `unknown` (`BUDGET`). Whether a better rule exists depends on what the signals separate, so this
module measures, for a runtime model (an ONNX file, as the line runs it):

- **AUC per signal**: how well novelty, 1 - class share and -score rank the detections that find a
  defect type the model never learned (the other line type's split, as `choose_rule` and
  `metrics.unseen_test` use it) above the detections that find a known defect (val or test images plus
  one line view of each, as the rule is chosen). 0.5 is chance.
- **Which limit fires** of the model's own rule, on dataset images and on line views apart.
- **Other rules at the same budget**, limits set as quantiles of the known val rows (`rule_limits`): every
  share of the budget for the novelty limit in `BUDGET_SPLITS` (0 switches novelty off; `choose_rule`
  offers 0.25 to 0.75), and the model's rule with a floor under the score (a detection below it is not
  `unknown`). The rows are one detection per found box; `choose_rule` calibrates on every detection that
  overlaps a labelled box, so its limits at the same split differ a little from these.

Val chooses, test reports: the rules are built from val detections only and applied to test as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspection.datasets import DATASET_CLASSES, LINE_DATASETS, Sample, load_split, read_image
from training.unknown import BUDGET, class_share, finding_detections, is_unknown, rule_limits, runtime_detections

BUDGET_SPLITS = (0.0, 0.1, 0.25, 0.5, 0.75)  # novelty's share of the budget, tried side by side
SCORE_FLOORS = (0.25, 0.3, 0.35)
SIGNALS = ("novelty", "1 - class share", "-score")


def found_signals(detector: Any, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                  views_from: int) -> list[dict[str, Any]]:
    """For every labelled box that a detection finds (`training.unknown.finding_detections`, as `evaluate`
    judges it): that detection's score, novelty and class share. Images from index `views_from` on are
    line views."""
    thresholds = np.asarray(detector.thresholds)
    rows = []
    for i, (det, truth) in enumerate(zip(runtime_detections(detector, images), boxes, strict=True)):
        _, finders = finding_detections(det, truth, thresholds)
        share = class_share(det["class_scores"][finders], det["labels"][finders])
        rows += [{"view": i >= views_from, "score": float(det["scores"][j]), "novelty": float(det["novelty"][j]),
                  "share": float(k)} for j, k in zip(finders, share, strict=True)]
    return rows


def auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(a positive ranks above a negative), ties counted half (Mann-Whitney); None when either is empty."""
    positive, negative = np.sort(np.asarray(positive, float)), np.sort(np.asarray(negative, float))
    if not len(positive) or not len(negative):
        return None
    below = np.searchsorted(negative, positive, side="left")
    ties = np.searchsorted(negative, positive, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(positive) * len(negative)))


def _column(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], float)


def _signal(rows: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    """The signal oriented so that higher means more likely unseen."""
    if name == "novelty":
        return _column(rows, "novelty")
    return 1 - _column(rows, "share") if name == "1 - class share" else -_column(rows, "score")


def signal_aucs(known: Sequence[dict[str, Any]], unseen: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    return {name: _rounded(auc(_signal(unseen, name), _signal(known, name))) for name in SIGNALS}


def limits_fired(rows: Sequence[dict[str, Any]], rule: dict[str, float]) -> dict[str, dict[str, int]]:
    """How many found defects each limit calls `unknown` (novelty only, class share only, both), on
    dataset images and line views apart."""
    out = {}
    for part, in_part in (("images", False), ("line_views", True)):
        subset = [r for r in rows if r["view"] == in_part]
        if not subset:
            continue
        novel = _column(subset, "novelty") > rule["novelty_max"]
        unsure = _column(subset, "share") < rule["class_share_min"]
        out[part] = {"found": len(subset), "novelty_only": int((novel & ~unsure).sum()),
                     "class_share_only": int((unsure & ~novel).sum()), "both": int((novel & unsure).sum())}
    return out


def called_unknown(rows: Sequence[dict[str, Any]], rule: dict[str, float], score_floor: float = 0.0) -> float | None:
    """The share of `rows` the rule calls `unknown` (only at scores >= `score_floor`)."""
    if not rows:
        return None
    called = is_unknown(_column(rows, "novelty"), _column(rows, "share"), rule)
    return _rounded(float((called & (_column(rows, "score") >= score_floor)).mean()))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def rule_table(parts: dict[str, list[dict[str, Any]]], own_rule: dict[str, float],
               budget: float = BUDGET) -> list[dict[str, Any]]:
    """Each rule's share of known and of unseen defects called `unknown`, on val (where its limits were
    set) and test. `parts`: rows of known_val, unseen_val, known_test, unseen_test."""
    known_val = parts["known_val"]
    rules: list[tuple[str, dict[str, float], float]] = [("the model's own rule", own_rule, 0.0)]
    for split in BUDGET_SPLITS:
        rules.append((f"novelty share of budget {split}",
                      rule_limits(_column(known_val, "novelty"), _column(known_val, "share"), budget, split), 0.0))
    rules += [(f"the model's own rule, score floor {floor}", own_rule, floor) for floor in SCORE_FLOORS]
    return [{"rule": name, "novelty_max": rule["novelty_max"], "class_share_min": rule["class_share_min"],
             **{f"{part}_called_unknown": called_unknown(rows, rule, floor) for part, rows in parts.items()}}
            for name, rule, floor in rules]


def _views(samples: Sequence[Sample], images: list[np.ndarray], line_type: str,
           dataset: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from training.thresholds import val_line_views

    views = val_line_views(samples, images, line_type, DATASET_CLASSES[dataset])
    return [v[0] for v in views], [v[1] for v in views]


def measure(detector: Any, datasets_dir: Path, splits_dir: Path | None = None,
            max_images: int | None = None) -> dict[str, Any]:
    """The figures of the module docstring for a runtime `detector` with an unknown rule."""
    rule = detector.unknown_rule
    if rule is None:
        raise ValueError(f"{detector.manifest.version} has no unknown rule to measure")
    line_type = detector.manifest.line_type
    own = LINE_DATASETS[line_type]
    other = next(d for t, d in LINE_DATASETS.items() if t != line_type)
    parts: dict[str, list[dict[str, Any]]] = {}
    for split in ("val", "test"):
        known = load_split(Path(datasets_dir) / own, own, split, splits_dir)[:max_images]
        images = [read_image(s.image_path) for s in known]
        view_images, view_boxes = _views(known, images, line_type, own)
        parts[f"known_{split}"] = found_signals(detector, [*images, *view_images],
                                                [*(s.boxes for s in known), *view_boxes], views_from=len(images))
        unseen = load_split(Path(datasets_dir) / other, other, split, splits_dir)[:max_images]
        parts[f"unseen_{split}"] = found_signals(detector, [read_image(s.image_path) for s in unseen],
                                                 [s.boxes for s in unseen], views_from=len(unseen))
    limits = {"novelty_max": rule.novelty_max, "class_share_min": rule.class_share_min}
    return {"model": detector.manifest.version, "unseen_dataset": other, "rule": limits, "budget": BUDGET,
            "found": {part: len(rows) for part, rows in parts.items()},
            "auc_unseen_over_known": {split: signal_aucs(parts[f"known_{split}"], parts[f"unseen_{split}"])
                                      for split in ("val", "test")},
            "limits_fired": {part: limits_fired(rows, limits) for part, rows in parts.items()},
            "rules": rule_table(parts, limits)}
