"""`steel-inspect predict --model NAME_OR_PATH --images DIR --json OUT [--min-score S]`.

Writes a JSON list, one entry per image file in DIR (sorted by name):
``{"image": name, "width": w, "height": h, "defects": [{"class", "score", "box": [x1, y1, x2, y2]}]}``.
An image that cannot be decoded is not fatal: it is listed with ``"width": null,
"height": null, "defects": [], "error": "..."``, logged as a warning, and counted in the
summary line on stderr; the exit status is 0 unless `--strict` is given (then 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from inspection.arguments import class_threshold, non_negative_int, unit_float
from inspection.config import default_models_dir
from inspection.errors import SteelInspectError, write_problem
from inspection.flips import FLIPS

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
CHUNK = 16


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every command that runs a model shares."""
    parser.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                        help="hot or cold (the active model), a version, or a path to a version folder, "
                             "model.onnx or manifest.json")
    parser.add_argument("--registry", type=Path, default=None, metavar="DIR",
                        help="model registry folder "
                             f"(default: $STEEL_INSPECT_MODELS or {default_models_dir()})")
    parser.add_argument("--providers", choices=("auto", "cpu", "openvino"), default="auto",
                        help="auto probes TensorRT, CUDA, then OpenVINO and ONNX Runtime on the CPU; cpu is ONNX "
                             "Runtime's CPU provider, openvino OpenVINO's CPU plugin (default: auto)")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="CPU threads (0: one per core)")
    parser.add_argument("--min-score", type=unit_float, default=None, metavar="S",
                        help="score threshold (default: the model's operating threshold)")
    parser.add_argument("--class-threshold", dest="class_thresholds", action="append", type=class_threshold,
                        default=[], metavar="CLASS=S",
                        help="a class's operating threshold in place of the model's, as a line's "
                             "[worker.class_thresholds] sets it (e.g. what `thresholds` chose); repeatable")
    parser.add_argument("--flip", dest="flips", action="append", choices=FLIPS, default=[],
                        help="test-time flip: also run each image mirrored (h: left-right, v: top-bottom, hv: "
                             "both) and fuse what the views found; repeat for several (each costs one more "
                             "model run; inspection/flips.py)")


def load_detector(args: argparse.Namespace, class_thresholds: dict[str, float] | None = None):  # noqa: ANN201
    """The Detector the options describe (imported lazily: the command line parses without onnxruntime);
    `class_thresholds` in place of --class-threshold."""
    from inspection.detector import Detector
    from inspection.registry import Registry

    manifest = Registry(args.registry).resolve(args.model)
    named = dict(args.class_thresholds) if class_thresholds is None else class_thresholds
    unknown = sorted(set(named) - set(manifest.classes))
    if unknown:  # on the command line a misspelt class is a mistake, not a line's tuning knob to skip
        raise SteelInspectError(f"--class-threshold: {manifest.version} has no class {unknown[0]!r} "
                                f"(classes: {', '.join(manifest.classes)})")
    return Detector(manifest, providers=args.providers, intra_op_threads=args.threads, flips=args.flips,
                    class_thresholds=named)


def write_json(path: Path, data: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SteelInspectError(f"{path}: cannot write: {write_problem(path, exc)}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="run a model on a folder of images; writes JSON",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of image files")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="where to write the results")
    parser.add_argument("--strict", action="store_true", help="exit 1 when an image cannot be decoded")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SteelInspectError(f"--images {folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SteelInspectError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def predict_folder(detector: Any, paths: list[Path], min_score: float | None, progress: bool = True
                   ) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from inspection.datasets import DatasetError, read_image

    entries: list[dict[str, Any]] = []
    with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), CHUNK):
            readable, images = [], []
            for path in paths[start:start + CHUNK]:
                entry: dict[str, Any] = {"image": path.name, "width": None, "height": None, "defects": []}
                entries.append(entry)
                try:
                    image = read_image(path)
                except DatasetError as exc:
                    entry["error"] = str(exc)
                    log.warning("skipping unreadable image: %s", exc)
                    continue
                entry["height"], entry["width"] = image.shape
                readable.append(entry)
                images.append(image)
            for entry, found in zip(readable, detector.detect(images, min_score=min_score), strict=True):
                entry["defects"] = found.to_list()
            bar.update(len(paths[start:start + CHUNK]))
    return entries


def run(args: argparse.Namespace) -> int:
    paths = list_images(args.images)
    detector = load_detector(args)
    entries = predict_folder(detector, paths, args.min_score, progress=not args.no_progress)
    write_json(args.json, entries)
    failed = [e["image"] for e in entries if "error" in e]
    defects = sum(len(e["defects"]) for e in entries)
    threshold = detector.manifest.operating_threshold if args.min_score is None else args.min_score
    print(f"wrote {args.json}: {len(entries)} images, {defects} defects at score >= {threshold}, "
          f"{len(failed)} unreadable{': ' + ', '.join(failed[:5]) if failed else ''} "
          f"(model {detector.manifest.version} on {detector.providers[0]})", file=sys.stderr)
    return 1 if failed and args.strict else 0
