"""`steel-inspect unknown-rule VERSION`: a registered model's unknown rule chosen again, as a new version.

The rule that calls a detection ``unknown`` (novelty too high or class share too low,
`training.unknown`) is chosen on the model's own outputs on val: the val images and a line view of
each give the known defects, the other line type's val images the defect types it never learned. Its
budget (the share of known defects it may call unknown, at most 5 %) is the smallest that calls at
least `--unseen-target` of the never-learned types found unknown (default 0.6): every known defect
called unknown is one the line records without its class. The model files are copied unchanged;
val, test, background and the never-learned types of the test split are measured again, and the val
gate and the clean-strip check decide, as for every new version, whether it goes live. Needs the
`train` extra.
"""

from __future__ import annotations

import argparse

from inspection.commands._derived import add_common_options, clean_strip_gate, datasets_folder, print_summary
from inspection.config import default_models_dir
from inspection.errors import SteelInspectError
from inspection.extras import require_extra


class UnknownRuleCommandError(SteelInspectError):
    """`steel-inspect unknown-rule` cannot start: missing extra, data folder or a bad option."""


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("unknown-rule", help="choose a model's unknown rule again, measure and register",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="the model whose rule to choose again: a version, hot/cold (the active "
                                        "one), or a path")
    parser.add_argument("--unseen-target", type=_share, default=None,
                        help="share of the never-learned val defects found that the rule should call unknown; "
                             "its budget is the smallest that does, at most 5 %% of known defects (default 0.6)")
    add_common_options(parser)
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    require_extra("train", "unknown-rule", "torch", "onnx")
    from training.rule_again import rule_again_version

    datasets = datasets_folder(args.datasets, UnknownRuleCommandError)
    summary = rule_again_version(args.version, models_dir=args.models or default_models_dir(),
                                 datasets_dir=datasets, unseen_target=args.unseen_target,
                                 register=not args.no_register, clean_strip=clean_strip_gate(args))
    print_summary(summary, args.json)
    return 0
