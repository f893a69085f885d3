"""`steel-inspect ensemble MODEL MODEL [...]`: several registered models as one version, measured and registered.

The members' graphs go side by side into one ONNX file, so the line, the registry and every record
treat the ensemble as one model; the detector fuses what the members found in each image
(`inspection.ensemble`). The first model is the primary: its classes, operating thresholds and
manifest fields carry over. Members must be fp32 detectors of the same classes (name an int8 copy's
source instead). Measured like `quantize` (val, test, defect-free background, unknown types; bare
speed beside the primary in one run). Registered but not made live unless --activate is given: then
the usual gates decide (val mAP@0.5 against the active model, the clean-strip check). Each member is
one more model run per image: a GPU line affords it, a CPU line may fall behind. The weights are
stored as fp16 by default (three detectors fit the repository's 20 MB per file), cast to fp32 when
the model loads.
"""

from __future__ import annotations

import argparse

from inspection.commands._derived import add_common_options, clean_strip_gate, datasets_folder, print_summary
from inspection.config import default_models_dir
from inspection.errors import SteelInspectError
from inspection.extras import require_extra


class EnsembleCommandError(SteelInspectError):
    """`steel-inspect ensemble` cannot start: missing extra or data folder."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ensemble", help="register several models as one, their detections fused",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", metavar="MODEL",
                        help="registered fp32 models (versions or paths), at least two; the first is the primary")
    parser.add_argument("--activate", action="store_true",
                        help="let the gates make the ensemble live (default: registered only)")
    parser.add_argument("--weights", choices=("fp16", "fp32"), default="fp16",
                        help="how the file stores the weights: fp16 (default) halves it, cast to fp32 when loaded, "
                             "so every computation stays fp32; fp32 keeps the members' files bit for bit")
    add_common_options(parser)
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    require_extra("train", "ensemble", "onnx")
    from training.ensemble import ensemble_version

    datasets = datasets_folder(args.datasets, EnsembleCommandError)
    summary = ensemble_version(args.members, models_dir=args.models or default_models_dir(), datasets_dir=datasets,
                               register=not args.no_register, activate=args.activate,
                               clean_strip=clean_strip_gate(args) if args.activate else None,
                               fp16_weights=args.weights == "fp16")
    print_summary(summary, args.json)
    return 0
