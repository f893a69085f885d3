"""`steel-inspect dataset export`: the defects inspectors reviewed, as a labelled training folder.

Confirmed and relabelled defects are exported under their reviewed class (a class the line's
public set does not have is kept: a new defect type at this plant), rejected false alarms as
negatives (an image with no object), in the public sets' layout (``images/`` + VOC
``annotations/``) with ``manifest.json`` linking every sample to its defect, coil, camera,
frame, the model version that found it and the review it carries. See
`inspection.records.dataset_export`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from inspection.arguments import non_negative_int
from inspection.errors import SteelInspectError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dataset", help="export reviewed defects as a training dataset", description=__doc__)
    sub = p.add_subparsers(dest="dataset_command", metavar="ACTION")
    sub.required = True
    export = sub.add_parser("export", help="write the reviewed defects of one line type as a labelled folder")
    export.add_argument("--line-type", required=True, choices=("hot", "cold"))
    export.add_argument("--out", type=Path, required=True, help="new (or empty) folder to write")
    export.add_argument("--config", type=Path, help="line config (default: the demo line)")
    export.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    export.add_argument("--crops", type=Path, help="crops folder (default: the config's line.crops_dir)")
    export.add_argument("--crop-margin", type=non_negative_int, metavar="PX",
                        help="context the worker kept around each box (default: the config's "
                             "records.crop_margin_px)")
    export.add_argument("--since", type=_utc, metavar="ISO", help="only reviews at or after this time (UTC)")
    export.add_argument("--until", type=_utc, metavar="ISO", help="only reviews before this time (UTC)")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    export.set_defaults(func=run_export)


def _utc(text: str) -> int:
    """An ISO time (naive = UTC) as nanoseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time such as 2026-12-01T06:00, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e9)


def run_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from inspection.config import load_config
    from inspection.datasets import DATASET_CLASSES, LINE_DATASETS
    from inspection.records.crops import CropStore
    from inspection.records.dataset_export import export_reviewed
    from inspection.records.db import open_db

    config = load_config(args.config)
    db_path = args.db or config.database
    if not Path(db_path).is_file():
        raise SteelInspectError(f"{db_path}: no such database")
    margin = args.crop_margin if args.crop_margin is not None else config.records.crop_margin_px
    db = open_db(db_path, readonly=True)
    try:
        result = export_reviewed(
            db, CropStore(args.crops or config.crops_dir), args.out, line_type=args.line_type,
            known_classes=DATASET_CLASSES[LINE_DATASETS[args.line_type]], crop_margin_px=margin,
            database_name=str(Path(db_path).resolve()), since_ns=args.since, until_ns=args.until,
            progress=None if args.no_progress else
            (lambda items, total: tqdm(items, total=total, desc="export", unit="defect")))
    finally:
        db.close()
    classes = ", ".join(f"{c} {n}" for c, n in sorted(result.classes.items())) or "none"
    print(f"wrote {result.out}: {result.samples} samples from {result.reviews} reviews "
          f"({result.positives} defects: {classes}; {result.negatives} rejected false alarms as negatives)")
    if result.new_classes:
        print(f"classes new to the {args.line_type} public set: {', '.join(result.new_classes)}")
    for reason, count in sorted(result.skipped.items()):
        print(f"skipped {count}: {reason}")
    return 0
