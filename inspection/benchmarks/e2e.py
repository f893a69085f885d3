"""End-to-end accuracy: the whole pipeline against the simulator's ground truth.

The simulated cameras paste real defects from the dataset's test split at known positions and
write the ground truth; the line (cameras -> workers -> recorder) runs as it does in the plant
(replay mode, so no frame is dropped and accuracy is not mixed up with speed); then what the
recorder wrote is compared with the ground truth, per coil and camera, in strip millimetres:

- a ground-truth defect is detected when a recorded defect (any class) overlaps its box with
  IoU >= `--iou` (0.3, as in `steel-inspect evaluate`'s detection rate);
- ``class_accuracy``: share of detected defects whose best-overlapping record has the right class;
- ``position_error_mm_p95``: 95th percentile of the centre distance of matched pairs;
- ``false_defects_per_m``: recorded defects that overlap no ground truth, per metre of strip
  inspected per surface (sum over cameras).

With ``--first-stage both`` the line runs twice on the same frames (same seed): with the cheap
first stage and with the model on every tile, so what the first stage costs is measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from inspection.benchmarks._line import hardware, scratch_line

HELP = "detection rate, class accuracy, position error and false defects of the whole pipeline vs ground truth"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--frames", type=int, default=150, help="frames per camera (default 150)")
    parser.add_argument("--defects-per-100m", type=float, default=40.0, help="simulated defect density")
    parser.add_argument("--first-stage", choices=("candidates", "none", "both"), default="both")
    parser.add_argument("--iou", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="keep the run's database and ground truth here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    stages = ("candidates", "none") if args.first_stage == "both" else (args.first_stage,)
    results = {}
    with tempfile.TemporaryDirectory(prefix="steel-e2e-") as tmp:
        for stage in stages:
            folder = (args.dir or Path(tmp)) / stage
            folder.mkdir(parents=True, exist_ok=True)
            results[stage] = run_once(args, stage, folder)
    main = results[stages[0]]
    return {**{k: main[k] for k in ("detection_rate", "class_accuracy", "position_error_mm_p95",
                                     "false_defects_per_m")},
            "first_stage": stages[0], "runs": results, "hardware": hardware(),
            "command": "steel-inspect bench e2e " + " ".join(_argv(args))}


def _argv(args: argparse.Namespace) -> list[str]:
    return [f"--frames {args.frames}", f"--first-stage {args.first_stage}", f"--seed {args.seed}",
            f"--defects-per-100m {args.defects_per_100m}"]


def run_once(args: argparse.Namespace, stage: str, folder: Path) -> dict[str, Any]:
    from inspection.pipeline import run_pipeline

    line = scratch_line(args.config, folder, **{"worker.first_stage": stage,
                                                "simulator.defects_per_100m": args.defects_per_100m})
    started = time.monotonic()
    summary = run_pipeline(line, workers=args.workers, max_frames=args.frames,
                           camera_overrides={"realtime": False, "seed": args.seed})
    elapsed = time.monotonic() - started
    truth = []
    for cam in line.cameras:
        path = folder / "ground_truth" / f"{cam.id}.jsonl"
        truth += [json.loads(row) for row in path.read_text().splitlines() if row.strip()]
    figures = compare(line.database, truth, args.iou)
    figures.update({"seconds": round(elapsed, 1), "frames_inspected": summary.get("frames_inspected"),
                    "tiles_inspected_share": summary["workers_reported"]["tiles_inspected_share"],
                    "model": _models(line.database), "ground_truth_source": sorted({t["source"] for t in truth})})
    log.info("e2e (%s): %s", stage, json.dumps(figures))
    return figures


def _models(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT DISTINCT version FROM models")]
    finally:
        con.close()


def compare(db: Path, truth: list[dict[str, Any]], iou_min: float) -> dict[str, Any]:
    """Match recorded defects with ground truth (see the module docstring)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT d.coil, d.camera, d.class, d.along_mm, d.across_mm, d.length_mm, d.width_mm FROM defects d"
        ).fetchall()
        inspected_mm = con.execute("SELECT coalesce(sum(length_mm), 0) FROM frames WHERE status = 'inspected'"
                                   ).fetchone()[0]
    finally:
        con.close()
    by_key: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    for coil, camera, cls, along, across, length, width in rows:
        box = np.array([along - length / 2, across - width / 2, along + length / 2, across + width / 2])
        by_key.setdefault((coil, camera), []).append((cls, box))
    matched_records: set[tuple[str, str, int]] = set()
    detected = correct = 0
    errors = []
    per_class: dict[str, list[int]] = {}
    for t in truth:
        gt = np.array([t["along_mm"][0], t["across_mm"][0], t["along_mm"][1], t["across_mm"][1]], float)
        candidates = by_key.get((t["coil"], t["camera"]), [])
        best, best_iou = None, 0.0
        for i, (_, box) in enumerate(candidates):
            overlap = _iou(gt, box)
            if overlap > best_iou:
                best, best_iou = i, overlap
        stats = per_class.setdefault(t["class"], [0, 0])
        stats[0] += 1
        if best is None or best_iou < iou_min:
            continue
        detected += 1
        stats[1] += 1
        matched_records.add((t["coil"], t["camera"], best))
        cls, box = candidates[best]
        correct += cls == t["class"]
        errors.append(float(np.hypot(*((gt[:2] + gt[2:]) / 2 - (box[:2] + box[2:]) / 2))))
    unmatched = 0
    for (coil, camera), records in by_key.items():
        gts = [np.array([t["along_mm"][0], t["across_mm"][0], t["along_mm"][1], t["across_mm"][1]], float)
               for t in truth if t["coil"] == coil and t["camera"] == camera]
        for i, (_, box) in enumerate(records):
            if (coil, camera, i) in matched_records:
                continue
            if not any(_iou(g, box) >= iou_min for g in gts):
                unmatched += 1
    metres = inspected_mm / 1000.0
    return {
        "ground_truth_defects": len(truth),
        "recorded_defects": len(rows),
        "detection_rate": round(detected / len(truth), 4) if truth else None,
        "class_accuracy": round(correct / detected, 4) if detected else None,
        "position_error_mm_p95": round(float(np.percentile(errors, 95)), 1) if errors else None,
        "false_defects_per_m": round(unmatched / metres, 4) if metres else None,
        "strip_m_inspected": round(metres, 1),
        "detection_rate_per_class": {c: round(d / n, 3) for c, (n, d) in sorted(per_class.items())},
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
