"""`steel-inspect evaluate --model M --data DIR --json OUT [--split train|val|test] [--min-score S]`.

DIR is any folder laid out like the datasets (images/ + annotations/, VOC .xml or YOLO .txt;
YOLO class ids are mapped with the model manifest's classes). With `--split`, DIR is a dataset
folder (or the datasets root) whose committed split file `models/splits/<dataset>.json` names
the images; the dataset is the model's (neu-det for hot, cr7-det for cold) unless DIR is
named like a known dataset. PNG plots (PR curves, confusion matrix) are written next to the
JSON as `<OUT stem>_pr_curves.png` and `<OUT stem>_confusion_matrix.png`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inspection.arguments import non_negative_int
from inspection.commands.predict import add_model_arguments, load_detector, write_json
from inspection.extras import require_extra
from training.bootstrap import DEFAULT_RESAMPLES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate",
                                   help="AP, mAP, detection rate, confusion matrix on labelled images",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--data", type=Path, required=True, metavar="DIR",
                        help="folder with images/ + annotations/ (or a dataset root with --split)")
    parser.add_argument("--split", choices=("train", "val", "test"), default=None,
                        help="evaluate only this split of a dataset "
                             "(figures on 'train' are not test figures)")
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="where to write the figures")
    parser.add_argument("--unseen-class", action="append", default=[], metavar="CLASS",
                        help="boxes of CLASS are a defect type the model never learned (e.g. another "
                             "dataset's classes): reported under unseen_classes as the share found and the "
                             "share of those called unknown; repeatable")
    parser.add_argument("--bootstrap", type=non_negative_int, default=DEFAULT_RESAMPLES, metavar="N",
                        help="95 %% intervals of mAP@0.5, detection rate, false detections per image and image "
                             "accuracy over N resamples of the images (default %(default)s, about a second; "
                             "0: none)")
    parser.add_argument("--explain", action="store_true",
                        help="why each missed box and each false detection is one (below the threshold, box "
                             "mismatch, no detection; plain texture, near a labelled box), per class, under "
                             "explain in the JSON and as tables on stderr (training/explain.py)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def load_evaluation_samples(data: Path, split: str | None, classes: tuple[str, ...], line_type: str,
                            unseen: tuple[str, ...] = ()) -> list:
    from inspection.datasets import DATASET_CLASSES, LINE_DATASETS, load_samples, load_split

    if split is None:
        # VOC names of unseen classes are expected; YOLO ids past the model's classes name them in order.
        return load_samples(data, classes + tuple(c for c in unseen if c not in classes))
    dataset = data.name if data.name in DATASET_CLASSES else LINE_DATASETS[line_type]
    return load_split(data, dataset, split)


def run(args: argparse.Namespace) -> int:
    # The plots need matplotlib (the `train` extra); fail before minutes of evaluation, not after.
    require_extra("train", "evaluate (its PR-curve and confusion-matrix plots)", "matplotlib")
    from training.evaluate import check_unseen, evaluate

    detector = load_detector(args)
    manifest = detector.manifest
    check_unseen(manifest, args.unseen_class)  # before the samples: their loader would name the class unknown
    samples = load_evaluation_samples(args.data, args.split, manifest.classes, manifest.line_type,
                                      tuple(args.unseen_class))
    figures = evaluate(detector, samples, out_dir=args.json.parent, progress=not args.no_progress,
                       min_score=args.min_score, plot_prefix=f"{args.json.stem}_", unseen=args.unseen_class,
                       bootstrap=args.bootstrap, explain=args.explain)
    figures["data"] = {"folder": str(args.data), "split": args.split}
    write_json(args.json, figures)
    summary = {k: figures[k] for k in ("images", "gt_boxes", "map50", "map50_95", "detection_rate",
                                       "false_detections_per_image", "image_accuracy")}
    if "bootstrap" in figures:
        summary["ci95"] = figures["bootstrap"]["ci"]
    print(json.dumps(summary))
    if args.explain:
        from training.explain import print_explained

        print_explained(figures["explain"], sys.stderr)
    print(f"wrote {args.json} and {', '.join(figures['plots'])}", file=sys.stderr)
    return 0
