"""`steel-inspect thresholds --model M --data DIR [--flip h --flip v] [--json OUT]`.

Chooses each class's operating threshold again, on the val split, for the way a line runs the
model: with the test-time flips given (`inspection.flips`, `[worker] flips`). A model's own
thresholds were chosen on single-view scores; a fused score is lower wherever a view disagrees,
so the same thresholds find fewer defects (hot-20261205-3 on val, flips h and v: detection rate
0.950 -> 0.940 while the false detections fell from 1.49 to 1.12 per image). The rule is the one
training uses (`training.thresholds`): val images and one line view of each, the best F2 per class,
never below the model's per-class floor. Prints the `[worker.class_thresholds.<line type>]` table
to paste into the line config beside `flips`, and the val figures with the model's own thresholds
and with the chosen ones. Choose on val, as here; `evaluate --split test` then reports. For flips
h and v it kept hot-20261205-3's thresholds and lowered six of cold-20261204-1's seven by 0.05.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from inspection.arguments import positive_int
from inspection.commands.predict import add_model_arguments, load_detector, write_json
from inspection.errors import SteelInspectError
from inspection.extras import require_extra


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("thresholds", help="per-class operating thresholds chosen again on val "
                                                      "(e.g. for test-time flips); prints the line config table",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--data", type=Path, required=True, metavar="DIR",
                        help="the datasets root or the model's dataset folder (its val split is used)")
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="use at most N val images (smoke; thresholds from few images are not for a line)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def toml_table(line_type: str, chosen: dict[str, float]) -> str:
    """The line config table that sets `chosen` (class names quoted: some have spaces)."""
    body = "\n".join(f"{json.dumps(name)} = {value:g}" for name, value in chosen.items())
    return f"[worker.class_thresholds.{line_type}]\n{body}\n"


def run(args: argparse.Namespace) -> int:
    require_extra("train", "thresholds (the line views of val defects)", "torch")
    from inspection.commands.evaluate import load_evaluation_samples
    from inspection.datasets import read_image
    from inspection.ensemble import member_versions
    from training.evaluate import evaluate
    from training.relabel import class_thresholds_again, threshold_floor

    if args.min_score is not None or args.class_thresholds:
        raise SteelInspectError("thresholds: --min-score and --class-threshold do not apply here "
                                "(the command chooses the thresholds)")
    detector = load_detector(args)
    manifest = detector.manifest
    samples = load_evaluation_samples(args.data, "val", manifest.classes, manifest.line_type)[:args.max_images]
    images = [read_image(s.image_path) for s in samples]
    floor = threshold_floor(manifest)
    chosen, info = class_thresholds_again(detector, samples, images, manifest.line_type, manifest.classes, floor)
    figures: dict[str, Any] = {
        "model": manifest.version, "ensemble": member_versions(manifest), "flips": list(detector.flips),
        "floor": floor, "val_images": len(samples),
        "chosen": chosen, "per_class": info,
        "model_thresholds": {c: round(float(t), 4) for c, t in zip(manifest.classes, detector.thresholds, strict=True)},
    }
    with_chosen = load_detector(args, class_thresholds=chosen)
    for label, runs in (("val_model_thresholds", detector), ("val_chosen", with_chosen)):
        result = evaluate(runs, samples, progress=not args.no_progress, bootstrap=0)
        figures[label] = {k: result[k] for k in ("map50", "detection_rate", "false_detections_per_image",
                                                 "image_accuracy")}
    if args.json is not None:
        write_json(args.json, figures)
    print(json.dumps({k: figures[k] for k in ("model", "ensemble", "flips", "chosen", "val_model_thresholds",
                                              "val_chosen")}))
    print(toml_table(manifest.line_type, chosen), end="")
    print("# or, for evaluate / predict: " + " ".join(shlex.quote(f"--class-threshold={name}={value:g}")
                                                    for name, value in chosen.items()))
    return 0
