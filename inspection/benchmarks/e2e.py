"""End-to-end accuracy: the whole pipeline against the simulator's ground truth.

The simulated cameras paste real defects from the dataset's test split at known positions and
write the ground truth; the line (cameras -> workers -> recorder) runs as it does in the plant
(replay mode, so no frame is dropped and accuracy is not mixed up with speed); then what the
recorder wrote is compared with the ground truth, per coil and camera, in strip millimetres:

- a ground-truth defect is detected when a recorded defect (any class) overlaps its box with
  IoU >= `--iou` (0.3, as in `steel-inspect evaluate`'s detection rate);
- ``class_accuracy``: share of detected defects whose best-overlapping record has the right class
  (a record of class ``unknown`` counts as wrong); ``unknown_share``: share recorded as ``unknown``;
  ``class_accuracy_named``: the class accuracy among the others; ``wrong_class``: what each true
  class was recorded as when it was recorded wrong (true -> recorded -> count);
- ``position_error_mm_p95``: 95th percentile of the centre distance of matched pairs;
- ``false_defects_per_m``: recorded defects that overlap no ground truth, per metre of strip
  inspected per surface (sum over cameras);
- ``intervals_95``: how far those three figures could move on another run of as many defects and
  metres: Wilson intervals for the two shares, the exact Poisson interval for the false defects
  (`inspection.benchmarks._intervals`).

``--explain`` attributes every missed and every false defect to one cause, per class, and runs the
decisive control (the pasted image cut back out of the frame, through the model as `evaluate` does);
see `inspection.benchmarks._e2e_explain`.

``--first-stage`` takes one or more of ``windows`` (the default first stage), ``candidates`` and
``none`` (the model on every tile); the line runs once per value on the same frames (same seed), so
what each first stage costs is measured side by side. Default: ``windows none``; the first value
gives the headline keys. ``--variant NAME KEY=VALUE ...`` (repeatable) runs the line once per variant
of its settings on the same frames, and reports what each trades against the first
(`inspection.benchmarks._e2e_variants`): how a line chooses its own class thresholds.

Defects cut by a frame seam (``--seam-share``, the share of pasted defects the simulator places
across a frame's bottom seam): the ground-truth fragments of one box (same ``group``) are one
ground-truth defect, and the records are read as the recorder merged them (`queries.coil_defects`),
so a cut defect must be found once. ``seam_defects`` counts the cut ground-truth defects,
``seam_detection_rate`` is the detection rate among them, and ``seam_split`` counts detected cut
defects that more than one recorded defect lies on (IoU >= `--iou`, or at least half of the
record inside the ground-truth box): merge failures. ``without_seam_merge`` repeats the figures on
the same database read fragment by fragment (`merge_seams=False`), i.e. what was counted before
fragments were linked.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from inspection.arguments import non_negative_float, non_negative_int, positive_int, unit_float
from inspection.benchmarks._e2e_variants import parse_variants, print_variants, trade
from inspection.benchmarks._intervals import poisson_rate, wilson
from inspection.benchmarks._line import BENCH_SIMULATOR, hardware, run_line, scratch_line
from inspection.benchmarks._matching import Records, best_matches, ground_truth_defects, inside, iou, read_records
from inspection.config import LineConfig
from inspection.errors import SteelInspectError
from inspection.line.process import StopFlag
from inspection.results import UNKNOWN

HELP = "detection rate, class accuracy, position error and false defects of the whole pipeline vs ground truth"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--frames", type=positive_int, default=150, help="frames per camera (default 150)")
    parser.add_argument("--defects-per-100m", type=non_negative_float, default=40.0, help="simulated defect density")
    parser.add_argument("--seam-share", type=unit_float, default=0.25,
                        help="share of pasted defects placed across a frame seam (default 0.25)")
    parser.add_argument("--first-stage", nargs="+", choices=("windows", "candidates", "none"),
                        default=["windows", "none"], help="first stage(s) to run, side by side (default: windows none)")
    parser.add_argument("--iou", type=unit_float, default=0.3)
    parser.add_argument("--model", default=None, help="model name or version (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a line config key for this run, e.g. worker.window_context_px=128 "
                             "(VALUE is read as TOML: numbers, true/false, quoted strings)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="dataset split the pasted defects come from (default test; tune on val)")
    parser.add_argument("--seed", type=non_negative_int, default=11)
    parser.add_argument("--workers", type=positive_int, default=1)
    parser.add_argument("--dir", type=Path, help="keep the run's database and ground truth here")
    parser.add_argument("--explain", action="store_true",
                        help="attribute every missed and every false defect to a cause, per class, with the "
                             "dataset-image and cut-out controls (replays the frames in this process; prints "
                             "tables on stderr, the JSON holds them under runs.STAGE.explain)")
    parser.add_argument("--variant", action="append", nargs="+", default=[], metavar="NAME_OR_KEY=VALUE",
                        help="NAME [KEY=VALUE ...] (repeatable): run the line once per variant on the same frames "
                             "and print what each trades against the first (real defects lost, false defects "
                             "removed); e.g. --variant model 'worker.class_thresholds.cold={}' --variant line")


def run(args: argparse.Namespace) -> dict[str, Any]:
    stages = tuple(dict.fromkeys(args.first_stage))  # in the order given, each once
    variants = parse_variants(args.variant, _settings)
    by_variant: dict[str, dict[str, Any]] = {name: {} for name in variants}
    stop = StopFlag()  # one for every line this benchmark runs (`run_line`)
    with tempfile.TemporaryDirectory(prefix="steel-e2e-") as tmp:
        for stage in stages:
            for name, overrides in variants.items():
                folder = (args.dir or Path(tmp)) / stage / name if name else (args.dir or Path(tmp)) / stage
                folder.mkdir(parents=True, exist_ok=True)
                by_variant[name][stage] = run_once(args, stage, folder, overrides, label=name, stop=stop)
    first = next(iter(variants))
    results = by_variant[first]
    main = results[stages[0]]
    out = {**{k: main[k] for k in ("detection_rate", "class_accuracy", "unknown_share", "position_error_mm_p95",
                                    "false_defects_per_m", "intervals_95", "seam_defects", "seam_detection_rate",
                                    "seam_split")},
           "first_stage": stages[0], "runs": results, "hardware": hardware(),
           "command": "steel-inspect bench e2e " + " ".join(_argv(args))}
    if first:  # --variant given: every variant's runs, and each one's trade against the first
        out["variants"] = {name: {"overrides": variants[name], "runs": runs,
                                  "against_first": {stage: trade(results[stage], runs[stage]) for stage in stages}}
                           for name, runs in by_variant.items()}
        for stage in stages:
            print_variants(by_variant, stage, sys.stderr)
    return out


def _argv(args: argparse.Namespace) -> list[str]:
    return [f"--frames {args.frames}", f"--first-stage {' '.join(args.first_stage)}", f"--seed {args.seed}",
            f"--defects-per-100m {args.defects_per_100m}", f"--seam-share {args.seam_share}",
            f"--split {args.split}", *([f"--model {args.model}"] if args.model else []),
            *(f"--set {item}" for item in args.set), *(["--explain"] if args.explain else []),
            *(f"--variant {' '.join(item)}" for item in args.variant)]


def _settings(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as config overrides (values parsed as TOML)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SteelInspectError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raise SteelInspectError(f"--set {item!r}: VALUE is not a TOML value (quote strings)") from None
    return out


def line_overrides(args: argparse.Namespace, stage: str) -> dict[str, Any]:
    """What the benchmark sets on the line config (`BENCH_SIMULATOR` among it), then `--set`."""
    return {"worker.first_stage": stage,
            "simulator.defects_per_100m": args.defects_per_100m,
            **BENCH_SIMULATOR,
            "simulator.seam_share": args.seam_share,
            "simulator.split": args.split,
            **({"model.name": args.model} if args.model else {}),
            **_settings(args.set)}


def run_once(args: argparse.Namespace, stage: str, folder: Path, overrides: dict[str, Any] | None = None,
             label: str = "", *, stop: StopFlag) -> dict[str, Any]:
    """The line once with first stage `stage` in `folder`; `overrides` (variant `label`'s) go on top of `--set`."""
    line = scratch_line(args.config, folder, **{**line_overrides(args, stage), **(overrides or {})})  # variant last
    started = time.monotonic()
    summary = run_line(line, stop, workers=args.workers, max_frames=args.frames,
                       camera_overrides={"realtime": False, "seed": args.seed})
    elapsed = time.monotonic() - started
    truth = read_ground_truth(line, folder)
    figures = compare(line.database, truth, args.iou)
    raw = compare(line.database, truth, args.iou, merge_seams=False)
    figures["without_seam_merge"] = {k: raw[k] for k in (
        "recorded_defects", "detection_rate", "class_accuracy", "position_error_mm_p95", "false_defects_per_m",
        "seam_detection_rate", "seam_split")}
    if args.explain:
        from inspection.benchmarks._e2e_explain import explain, print_tables

        figures["explain"] = explain(line, truth, line.database, frames=args.frames, seed=args.seed, stage=stage,
                                     iou_min=args.iou, datasets_dir=line.simulator.datasets)
        print(f"\n== first stage {stage}" + (f", variant {label}" if label else ""), file=sys.stderr)
        print_tables(figures["explain"], sys.stderr)
    figures.update({"seconds": round(elapsed, 1), "frames_inspected": summary.get("frames_inspected"),
                    "tiles_inspected_share": summary["workers_reported"]["tiles_inspected_share"],
                    "model": _models(line.database), "ground_truth_source": sorted({t["source"] for t in truth})})
    log.info("e2e (%s): %s", stage, json.dumps(figures))
    return figures


def read_ground_truth(line: LineConfig, folder: Path) -> list[dict[str, Any]]:
    """The ground-truth rows the simulated cameras of `line` (a `scratch_line` in `folder`) wrote."""
    truth = []
    for cam in line.cameras:
        path = folder / "ground_truth" / f"{cam.id}.jsonl"
        truth += [json.loads(row) for row in path.read_text().splitlines() if row.strip()]
    return truth


def _models(db: Path) -> list[str]:
    from inspection.records import line_reads
    from inspection.records.db import open_db

    con = open_db(db, readonly=True)
    try:
        return line_reads.model_versions(con)
    finally:
        con.close()


def compare(db: Path, truth: list[dict[str, Any]], iou_min: float, *, merge_seams: bool = True) -> dict[str, Any]:
    """Match recorded defects with ground truth (see the module docstring)."""
    by_key, fragments, inspected_mm = read_records(db, merge_seams=merge_seams)
    return compare_records(by_key, fragments, inspected_mm, truth, iou_min)


def compare_records(by_key: Records, fragments: int, inspected_mm: float, truth: list[dict[str, Any]],
                    iou_min: float) -> dict[str, Any]:
    """`compare` on records already read (`_matching.read_records`), e.g. a subset of them: what a
    line would have recorded at higher class thresholds (`bench line_thresholds`)."""
    gts = ground_truth_defects(truth)
    matched_records: set[tuple[str, str, int]] = set()
    detected = correct = unknown = seam_detected = seam_split = 0
    errors = []
    per_class: dict[str, list[int]] = {}
    confusion: dict[str, dict[str, int]] = {}  # true class -> recorded class -> count, wrong ones only
    for t, (best, best_iou) in zip(gts, best_matches(gts, by_key), strict=True):
        gt = t["box"]
        candidates = by_key.get((t["coil"], t["camera"]), [])
        stats = per_class.setdefault(t["class"], [0, 0])
        stats[0] += 1
        if best is None or best_iou < iou_min:
            continue
        detected += 1
        stats[1] += 1
        matched_records.add((t["coil"], t["camera"], best))
        cls, box = candidates[best]
        correct += cls == t["class"]
        unknown += cls == UNKNOWN
        if cls != t["class"]:
            row = confusion.setdefault(t["class"], {})
            row[cls] = row.get(cls, 0) + 1
        errors.append(float(np.hypot(*((gt[:2] + gt[2:]) / 2 - (box[:2] + box[2:]) / 2))))
        if t["seam"]:
            seam_detected += 1
            on_it = sum(iou(gt, b) >= iou_min or inside(b, gt) >= 0.5 for _, b in candidates)
            seam_split += on_it > 1
    unmatched = 0
    for (coil, camera), records in by_key.items():
        boxes = [t["box"] for t in gts if t["coil"] == coil and t["camera"] == camera]
        for i, (_, box) in enumerate(records):
            if (coil, camera, i) in matched_records:
                continue
            if not any(iou(g, box) >= iou_min for g in boxes):
                unmatched += 1
    metres = inspected_mm / 1000.0
    seam_gts = sum(t["seam"] for t in gts)
    return {
        "ground_truth_defects": len(gts),
        "ground_truth_rows": len(truth),
        "found": detected,
        "false_defects": unmatched,
        "recorded_defects": sum(len(v) for v in by_key.values()),
        "recorded_fragments": fragments,
        "detection_rate": round(detected / len(gts), 4) if gts else None,
        "class_accuracy": round(correct / detected, 4) if detected else None,
        # defects recorded as `unknown` (the model could not name them) count as wrong above; here apart
        "unknown_share": round(unknown / detected, 4) if detected else None,
        "class_accuracy_named": round(correct / (detected - unknown), 4) if detected > unknown else None,
        "position_error_mm_p95": round(float(np.percentile(errors, 95)), 1) if errors else None,
        "false_defects_per_m": round(unmatched / metres, 4) if metres else None,
        "intervals_95": {"detection_rate": wilson(detected, len(gts)), "class_accuracy": wilson(correct, detected),
                         "false_defects_per_m": poisson_rate(unmatched, metres)},
        "strip_m_inspected": round(metres, 1),
        "detection_rate_per_class": {c: round(d / n, 3) for c, (n, d) in sorted(per_class.items())},
        "wrong_class": {c: dict(sorted(row.items())) for c, row in sorted(confusion.items())},
        "seam_defects": seam_gts,
        "seam_detection_rate": round(seam_detected / seam_gts, 4) if seam_gts else None,
        "seam_split": seam_split,
    }


