"""`steel-inspect quantize VERSION`: an int8 copy of a registered model, measured and registered.

The new version is evaluated on val and test and on defect-free background, its speed is measured
beside the fp32 model in one run, and the usual gate (validation mAP@0.5 against the active model)
decides whether it becomes active. With nncf and openvino installed (the `train` extra) the version also
carries its own OpenVINO quantization (``openvino/``, measured on OpenVINO), which OpenVINO runs in
place of the ONNX Runtime file (`training.quantize_openvino`). Needs the `train` extra (the quantizer
needs the `onnx` package, and the gate shares code with training). See `training.quantize` for the recipe.
"""

from __future__ import annotations

import argparse

from inspection.arguments import non_negative_int, positive_int
from inspection.commands._derived import add_common_options, clean_strip_gate, datasets_folder, print_summary
from inspection.config import default_models_dir
from inspection.errors import SteelInspectError
from inspection.extras import require_extra


class QuantizeCommandError(SteelInspectError):
    """`steel-inspect quantize` cannot start: missing extra, data folder or a bad option."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quantize", help="make, measure and register an int8 copy of a model",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="the model to quantize: a version, hot/cold (the active one), or a path")
    parser.add_argument("--calibration-images", type=positive_int, default=120,
                        help="training-split images for the activation ranges (default 120)")
    parser.add_argument("--calibration-backgrounds", type=non_negative_int, default=4,
                        help="defect-free background frames (6 tiles each) added to the calibration (default 4)")
    parser.add_argument("--openvino", action=argparse.BooleanOptionalAction, default=None,
                        help="also make the copy's own OpenVINO quantization (NNCF), run by OpenVINO in place of "
                             "the ONNX Runtime copy (default: when nncf and openvino are installed)")
    add_common_options(parser)
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    require_extra("train", "quantize", "onnx")
    from training.quantize import quantize_version

    datasets = datasets_folder(args.datasets, QuantizeCommandError)
    summary = quantize_version(args.version, models_dir=args.models or default_models_dir(), datasets_dir=datasets,
                               calibration_images=args.calibration_images,
                               calibration_backgrounds=args.calibration_backgrounds, register=not args.no_register,
                               openvino=args.openvino, clean_strip=clean_strip_gate(args))
    print_summary(summary, args.json)
    return 0
