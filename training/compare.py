"""Two models side by side on the same labelled images (torch-free): what would change on promotion.

`compare` evaluates both models with `training.evaluate.evaluate` (each at its own operating
thresholds) and then times them on the same images in alternating rounds, so a noisy machine
slows both alike. `table` formats the figures with the difference B - A.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from inspection.datasets import Sample, read_image
from inspection.detector import Detector
from training.bootstrap import DEFAULT_RESAMPLES, FIGURES, paired_intervals, tallies
from training.evaluate import evaluate, operating_threshold
from training.metrics import ImageResult

SPEED_IMAGES = 32  # images per timing round; the first round warms both sessions up and is dropped
SUMMARY = (("map50", "mAP@0.5"), ("map50_95", "mAP@0.5:0.95"), ("detection_rate", "detection rate"),
           ("false_detections_per_image", "false detections / image"), ("image_accuracy", "image accuracy"))


def compare(a: Detector, b: Detector, samples_a: Sequence[Sample], samples_b: Sequence[Sample], *,
            rounds: int = 3, progress: bool = True,
            unseen: Sequence[Sequence[str]] = ((), ()), bootstrap: int = DEFAULT_RESAMPLES) -> dict[str, Any]:
    """Both models' evaluation figures on the same images and their speed measured in alternation.

    The samples are loaded per model (a new class is a name only the model that learned it knows);
    they must name the same images. `unseen`: per model, the box classes it never learned (judged
    apart, see `training.evaluate`). `bootstrap` > 0: each model's 95 % intervals and, under
    "paired_bootstrap", the interval of B - A on the same resampled images (`training.bootstrap`).
    """
    if [s.image_path for s in samples_a] != [s.image_path for s in samples_b]:
        raise ValueError("compare: both models must be evaluated on the same images")
    results: dict[str, list[ImageResult]] = {"a": [], "b": []}
    figures: dict[str, Any] = {
        "a": evaluate(a, samples_a, progress=progress, unseen=unseen[0], bootstrap=bootstrap, collect=results["a"]),
        "b": evaluate(b, samples_b, progress=progress, unseen=unseen[1], bootstrap=bootstrap, collect=results["b"]),
    }
    if bootstrap > 0:
        ta, tb = (tallies(results[key], len(d.manifest.classes), operating_threshold(d))
                  for key, d in (("a", a), ("b", b)))
        figures["paired_bootstrap"] = paired_intervals(ta, tb, bootstrap)
    speed = _alternating_speed(a, b, samples_a[:SPEED_IMAGES], rounds)
    for key in ("a", "b"):
        figures[key]["ms_per_image_alternating"] = speed[key]
    return figures


def _alternating_speed(a: Detector, b: Detector, samples: Sequence[Sample], rounds: int) -> dict[str, float]:
    images = [read_image(s.image_path) for s in samples]
    times: dict[str, list[float]] = {"a": [], "b": []}
    for round_index in range(rounds + 1):
        order = (("a", a), ("b", b)) if round_index % 2 == 0 else (("b", b), ("a", a))
        for key, detector in order:
            t0 = time.perf_counter()
            for image in images:
                detector.detect([image], min_score=0.0)
            if round_index:  # round 0 warms up both sessions
                times[key].append((time.perf_counter() - t0) * 1000 / len(images))
    return {key: round(float(np.median(values)), 3) for key, values in times.items()}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    return f"{b - a:+.3f}"


def table(figures: dict[str, Any], names: tuple[str, str]) -> list[str]:
    """Printable rows: overall figures, unknown shares, speed, per-class precision and recall."""
    a, b = figures["a"], figures["b"]
    width = max(14, *(len(n) for n in names)) + 2
    rows = [f"{'':<34}{names[0]:>{width}}{names[1]:>{width}}{'B - A':>10}"]

    def row(label: str, va: Any, vb: Any) -> None:
        rows.append(f"{label:<34}{_fmt(va):>{width}}{_fmt(vb):>{width}}{_delta(va, vb):>10}")

    row("images", a["images"], b["images"])
    for key, label in SUMMARY:
        row(label, a.get(key), b.get(key))
    row("unknown share on defects", a["unknown"]["share_of_detections_on_defects"],
        b["unknown"]["share_of_detections_on_defects"])
    row("unknown share of false detections", a["unknown"]["share_of_false_detections"],
        b["unknown"]["share_of_false_detections"])
    row("ms / image (alternating rounds)", a["ms_per_image_alternating"], b["ms_per_image_alternating"])
    for cls in sorted(set(a["per_class"]) | set(b["per_class"])):
        pa, pb = a["per_class"].get(cls, {}), b["per_class"].get(cls, {})
        row(f"{cls}: recall", pa.get("recall_at_threshold"), pb.get("recall_at_threshold"))
        row(f"{cls}: precision", pa.get("precision_at_threshold"), pb.get("precision_at_threshold"))
    paired = figures.get("paired_bootstrap")
    if paired:  # is the difference more than the choice of images? (same resampled images for both)
        rows.append(f"95 % interval of B - A, paired bootstrap over {paired['resamples']} resamples of the images:")
        labels = dict(SUMMARY)
        for name in FIGURES:
            item = paired["figures"][name]
            ci = item["b_minus_a_ci"]
            rows.append(f"  {labels[name]:<32}" + ("-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]")
                        + f"   B better in {_fmt(item['share_b_better'])} of resamples")
    ua, ub = a.get("unseen_classes") or {}, b.get("unseen_classes") or {}
    for cls in sorted(set(ua) | set(ub)):  # e.g. a class new at the plant, against the model without it
        row(f"{cls}: found (not learned)", (ua.get(cls) or {}).get("found_rate"),
            (ub.get(cls) or {}).get("found_rate"))
    return rows


def worst_recall_drop(figures: dict[str, Any]) -> tuple[str | None, float]:
    """The class whose recall at threshold falls most from A to B, and by how much (0 if none falls)."""
    worst: tuple[str | None, float] = (None, 0.0)
    for cls, pa in figures["a"]["per_class"].items():
        ra = pa.get("recall_at_threshold")
        rb = figures["b"]["per_class"].get(cls, {}).get("recall_at_threshold")
        if ra is None or rb is None:
            continue
        if ra - rb > worst[1]:
            worst = (cls, ra - rb)
    return worst

