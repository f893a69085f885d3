"""`steel-inspect classifier VERSION`: a registered model with a crop classifier that names its detections again.

Trains an ImageNet-initialised EfficientNet-Lite0 on crops of the train split's defects (the model's
own dataset), chooses on val how much it counts against the detector's own class scores, appends it
to the model's ONNX graph (`training.classifier`, `training.relabel`), chooses the per-class thresholds
and the unknown rule again on val, evaluates val and test (the source model on test in the same run),
measures speed beside the source, and registers the result as a new version; the val gate decides
whether it becomes active. Boxes and scores stay the source's: only the class of a detection changes,
unless `--verify`: then the classifier also learns a background class from the source's own false
detections and rescores each detection it looks at, and the thresholds chosen again decide what is found.
The unknown rule's novelty of each detection the classifier looks at becomes its crop features' distance
to the nearest train crop's (a bank of them goes into the graph, up to 5 MB; `training.classifier`), which
tells never-learned defect types apart far better than the detector's own; `--detector-novelty` keeps
the detector's.
Needs the `train` extra. About 100-200 s per epoch per thread on the cold set (2-core EPYC).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspection.arguments import positive_int
from inspection.commands._derived import add_common_options, clean_strip_gate, datasets_folder, print_summary
from inspection.config import default_models_dir
from inspection.errors import SteelInspectError
from inspection.extras import require_extra


class ClassifierCommandError(SteelInspectError):
    """`steel-inspect classifier` cannot start: missing extra, data folder or a bad option."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("classifier", help="append a crop classifier to a model, measure and register it",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="the model to extend: a version, hot/cold (the active one), or a path")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 12)")
    parser.add_argument("--crop", type=int, choices=(64, 96, 128), default=None,
                        help="side in pixels of the square crop the classifier sees (default 96; its cost per "
                             "detection grows with the square of it)")
    parser.add_argument("--verify", action="store_true",
                        help="also learn a background class from the model's own false detections and rescore "
                             "each detection by it (what is recorded may change, not only its class)")
    parser.add_argument("--detector-novelty", action="store_true",
                        help="keep the detector's own novelty for the unknown rule instead of the crop "
                             "features' distance to the train crops (no feature bank in the graph)")
    parser.add_argument("--bank-line-views", type=int, choices=range(0, 5), default=0, metavar="N",
                        help="the feature bank also holds the crops of the model's detections that find a defect "
                             "in N line views of each train image (the defect pasted into strip, as the line "
                             "shows it; 0-4, default 0); the bank keeps at most 16,000 crops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-images", type=positive_int, default=None,
                        help="use at most N images per split (smoke)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (default 1, as `train`: the line and other jobs share the cores)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the trained classifier is kept (default var/classifier/VERSION)")
    parser.add_argument("--reuse", action="store_true",
                        help="load the classifier kept in --out when it was trained on the same dataset with the "
                             "same recipe, seed and images, instead of training again: it may come from "
                             "another detector of that dataset (e.g. --out var/classifier/OLD_VERSION), "
                             "except with --verify, which learns from its own source's false detections")
    parser.add_argument("--classifier-from", metavar="VERSION", default=None,
                        help="take the crop classifier of this registered version (read back from its ONNX file "
                             "and checked against it) instead of training one, e.g. to give a live model's "
                             "classifier the feature bank")
    add_common_options(parser)
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    require_extra("train", "classifier", "onnx", "torch", "torchvision")
    import torch

    from training.relabel import relabel_version

    if args.bank_line_views and args.detector_novelty:
        raise ClassifierCommandError("--bank-line-views fills the feature bank, which --detector-novelty leaves out")
    datasets = datasets_folder(args.datasets, ClassifierCommandError)
    torch.set_num_threads(args.threads)
    summary = relabel_version(args.version, models_dir=args.models or default_models_dir(), datasets_dir=datasets,
                              epochs=args.epochs, crop=args.crop, seed=args.seed, max_images=args.max_images,
                              register=not args.no_register, out_dir=args.out, reuse=args.reuse,
                              verify=args.verify, novelty_bank=not args.detector_novelty,
                              classifier_from=args.classifier_from, bank_line_views=args.bank_line_views,
                              clean_strip=clean_strip_gate(args))
    print_summary(summary, args.json)
    return 0
