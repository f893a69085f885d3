"""What models record on defect-free strip, run through the line: `inspection.clean_strip`, the check
`models promote` runs, as a benchmark of its own.

Each `--model` runs in turn on the same simulated clean strip (same seed, same frames); every record
is a false one. Per model: records and `unknown` records per 100 m of strip surface, by class, and the
grades of the coils that ended (one `unknown` grades a clean coil secondary under the standard rules).
With two or more models, `against_first` holds what the promotion gate would find against each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from inspection.arguments import non_negative_int, positive_int

HELP = "records and `unknown` records per 100 m of defect-free strip, through the line, model beside model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--model", nargs="+", required=True, metavar="NAME",
                        help="versions, hot/cold or model folders, run in this order on the same strip")
    parser.add_argument("--line-type", choices=("hot", "cold"), default=None,
                        help="the line type to simulate (default: the first model's)")
    parser.add_argument("--frames", type=positive_int, default=600, help="frames per camera (default 600)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="simulator seed (default: the promotion check's, 21)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a line config key for every model (VALUE read as TOML), e.g. "
                             "'worker.class_thresholds.hot={crazing=0.15}'")
    parser.add_argument("--dir", type=Path, help="keep each model's database here (DIR/1-NAME/line.db, ...)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="the plant's own defect-free frames instead of simulated strip: image files, a "
                             "subfolder per camera id or one folder every camera replays (default: the line "
                             "config's [model] promote_clean_strip_folder, else simulated strip)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.benchmarks._line import hardware
    from inspection.benchmarks.e2e import _settings
    from inspection.clean_strip import SEED, Gate, findings, measure, strip_words
    from inspection.registry import Registry

    registry = Registry()
    line_type = args.line_type or registry.resolve(args.model[0]).line_type
    seed = SEED if args.seed is None else args.seed
    models = {name: name for name in dict.fromkeys(args.model)}
    gate = Gate.from_config(args.config)
    frames_folder = args.folder or gate.frames_folder
    figures = measure(args.config, models, line_type=line_type, frames=args.frames, seed=seed, folder=args.dir,
                      overrides=_settings(args.set), frames_folder=frames_folder)
    ratio = gate.max_ratio
    first = next(iter(figures.values()))
    command = (f"steel-inspect bench clean_strip --model {' '.join(models)} --frames {args.frames} --seed {seed}"
               + (f" --folder {frames_folder}" if frames_folder else "")
               + "".join(f" --set {item}" for item in args.set))
    for name, f in figures.items():  # the figures at a glance, on stderr beside the JSON on stdout
        grades = ", ".join(f"{grade} {n}" for grade, n in f["coils_graded"].items()) or "none ended"
        print(f"{name}: {f['records']} records, {f['unknown']} `unknown` on {f['strip_m']:.0f} m of clean strip; "
              f"coils: {grades}", file=sys.stderr)
    return {"models": figures, "line_type": line_type, "frames_per_camera": args.frames, "seed": seed,
            "strip": strip_words(frames_folder),
            "against_first": {name: findings(first, f, max_ratio=ratio) for name, f in list(figures.items())[1:]},
            "max_ratio": ratio, "hardware": hardware(), "command": command}
