"""The line's own class thresholds, chosen on the val split's line frames.

A model's thresholds are chosen on dataset images (`training.thresholds`; `steel-inspect thresholds`
for flips). On strip the same thresholds let other things through: fragments beside a real defect,
spots of plain texture, and the line's own rules (one class per defect, seam merging) act on what
passes. So a line sets its own per class (`[worker.class_thresholds.<line type>]`), and until now
they were chosen by hand from `bench e2e --variant` runs. This benchmark chooses them:

1. **Choice runs**: the line once per choice seed (`--seed`, default 11 and 12: two val samples, so
   one sample's luck weighs half) in replay with every class at the lowest threshold worth looking
   at (`--floor`, default the model's per-class floor), so each record keeps its score.
2. **Choice**: from the line's present thresholds (the config's, else the model's), for each class
   in turn, the threshold on the grid (floor, floor + `--step`, ... up to `--top`) at which the
   pooled records that would remain cost least, `--defect-worth` x defects missed + false defects
   (a record ``unknown`` is judged by its best guess's class), among the thresholds that cost no
   choice sample more than before: a move must hold on each sample, the rule the demo's
   hand-chosen thresholds followed, so one sample's luck moves nothing. A class moves only for a
   lower cost, and of equal costs the smaller move wins; so a threshold rises where each real defect
   it loses removes more than `--defect-worth` false ones (5 by default) and falls where each defect
   it wins costs fewer. The classes go round again until none changes (a defect one class's record
   no longer finds may still be found by another's).
3. **Check**: the line on a sample the choice has not seen (`--check-seed`, default 13), once with the
   config's thresholds and once with the chosen ones, side by side. These two runs are the
   measurement; the choice samples' figures at the chosen and the present thresholds are only
   predicted from the floor runs' records (removing records afterwards need not be what the line's
   duplicate and seam rules make without them; on 250 cold frames it was, class by class: README).

Prints the `[worker.class_thresholds.<line type>]` table to paste into the line config. Choose on
val, as here; `bench e2e --split test` then reports.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspection.arguments import non_negative_int, positive_float, positive_int, unit_float
from inspection.errors import SteelInspectError
from inspection.results import UNKNOWN

HELP = "choose the line's own class thresholds on two val samples of line frames, and check them on a third"
FIGURES = ("ground_truth_defects", "found", "detection_rate", "class_accuracy", "false_defects",
           "false_defects_per_m", "recorded_defects", "strip_m_inspected")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--model", default=None, help="model name or version (default: the config's)")
    parser.add_argument("--frames", type=positive_int, default=100, help="frames per camera and run (default 100)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"),
                        help="dataset split the pasted defects come from (default val: choose on val, report on test)")
    parser.add_argument("--seed", type=non_negative_int, nargs="+", default=[11, 12],
                        help="the samples the choice is made on (default 11 12)")
    parser.add_argument("--check-seed", type=non_negative_int, default=13,
                        help="a sample the choice is checked on, config against chosen (default 13)")
    parser.add_argument("--floor", type=unit_float, default=None,
                        help="lowest threshold tried and the choice run's (default: the model's per-class floor)")
    parser.add_argument("--top", type=unit_float, default=0.6, help="highest threshold tried (default 0.6)")
    parser.add_argument("--step", type=unit_float, default=0.05, help="threshold grid step (default 0.05)")
    parser.add_argument("--defect-worth", type=positive_float, default=5.0,
                        help="false defects one real defect found is worth (default 5)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a line config key for every run (VALUE read as TOML)")
    parser.add_argument("--defects-per-100m", type=positive_float, default=40.0, help="simulated defect density")
    parser.add_argument("--seam-share", type=unit_float, default=0.25,
                        help="share of pasted defects placed across a frame seam (default 0.25: `bench e2e`'s frames)")
    parser.add_argument("--iou", type=unit_float, default=0.3)
    parser.add_argument("--dir", type=Path, help="keep each run's database and ground truth here")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from inspection.benchmarks._e2e_variants import trade
    from inspection.benchmarks._line import hardware
    from inspection.benchmarks.e2e import _settings, compare
    from inspection.commands.thresholds import toml_table
    from inspection.line.process import StopFlag

    manifest, line_type, current = _model(args)
    floor = args.floor if args.floor is not None else _model_floor(manifest)
    grid = _grid(floor, args.top, args.step)
    classes = list(manifest.classes)
    key = f"worker.class_thresholds.{line_type}"
    seeds = list(dict.fromkeys(args.seed))
    if args.check_seed in seeds:
        raise SteelInspectError(f"--check-seed {args.check_seed} is one of the choice's seeds: check on another sample")
    stop = StopFlag()
    with tempfile.TemporaryDirectory(prefix="steel-line-thresholds-") as tmp:
        root = args.dir or Path(tmp)
        samples = [Sample.of(*_line_run(args, root / f"choice-{seed}", seed, {key: dict.fromkeys(classes, floor)},
                                        stop), seed, args.iou) for seed in seeds]
        pooled = Sample.pool(samples)
        present = {c: round(current.get(c, float(t)), 4)
                   for c, t in zip(classes, manifest.class_thresholds, strict=True)}
        chosen, table = choose(samples, grid, present, worth=args.defect_worth)
        low = pooled.at({})
        print(f"choice runs (seeds {', '.join(map(str, seeds))}, every class at {floor:g}): {low['found']}/"
              f"{low['ground_truth_defects']} found, {low['false_defects']} false", file=sys.stderr)
        check_config = compare(*_line_run(args, root / "check-config", args.check_seed, {}, stop), args.iou)
        check_chosen = compare(*_line_run(args, root / "check-chosen", args.check_seed, {key: chosen}, stop), args.iou)
    figures = {
        "model": manifest.version, "line_type": line_type, "split": args.split, "floor": floor, "grid": grid,
        "defect_worth": args.defect_worth, "chosen": chosen, "config_thresholds": current,
        "model_thresholds": {c: round(float(t), 4) for c, t in zip(classes, manifest.class_thresholds, strict=True)},
        "per_class": table,
        "choice_samples": {"seeds": seeds, "floor": _short(low),
                           # predicted from the floor runs' records; the check runs below are the measurement
                           "present_predicted": _short(pooled.at(present)),
                           "chosen_predicted": _short(pooled.at(chosen))},
        "check_sample": {"seed": args.check_seed, "config": _short(check_config),
                         "chosen": _short(check_chosen),
                         "chosen_against_config": trade(check_config, check_chosen),
                         # the choice's own measure on the unseen sample: lower is better
                         "cost": {"config": _cost(check_config, args.defect_worth),
                                  "chosen": _cost(check_chosen, args.defect_worth)}},
        "frames_per_camera": args.frames, "overrides": _settings(args.set), "hardware": hardware(),
        "command": "steel-inspect bench line_thresholds " + " ".join(_argv(args)),
    }
    _print_summary(figures, sys.stderr)
    print(toml_table(line_type, chosen), end="", file=sys.stderr)
    return figures


@dataclass(frozen=True)
class Sample:
    """A choice run's records and ground truth (coils named by seed, so two samples' coils never meet
    when pooled), and what the line would have recorded at given class thresholds (`at`)."""

    rows: list[dict[str, Any]]
    truth: list[dict[str, Any]]
    fragments: int
    inspected_mm: float
    iou_min: float

    @classmethod
    def of(cls, database: Path, truth: list[dict[str, Any]], seed: int, iou_min: float) -> Sample:
        from inspection.benchmarks._matching import read_rows

        rows, fragments, inspected_mm = read_rows(database)
        return cls([{**r, "coil": f"{seed}/{r['coil']}"} for r in rows],
                   [{**t, "coil": f"{seed}/{t['coil']}"} for t in truth], fragments, inspected_mm, iou_min)

    @classmethod
    def pool(cls, samples: list[Sample]) -> Sample:
        return cls([r for s in samples for r in s.rows], [t for s in samples for t in s.truth],
                   sum(s.fragments for s in samples), sum(s.inspected_mm for s in samples), samples[0].iou_min)

    def at(self, thresholds: dict[str, float]) -> dict[str, Any]:
        """`e2e.compare`'s figures for the records that reach `thresholds` (a class not named: all of its)."""
        from inspection.benchmarks._matching import by_coil_camera
        from inspection.benchmarks.e2e import compare_records

        kept = [r for r in self.rows if r["score"] >= thresholds.get(_judged_as(r), 0.0) - 1e-9]
        return compare_records(by_coil_camera(kept), self.fragments, self.inspected_mm, self.truth, self.iou_min)


def choose(samples: list[Sample], grid: list[float], reference: dict[str, float], *, worth: float
           ) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """From the line's present thresholds (`reference`, every class of the model), class after class
    until none changes: the threshold on `grid` at which the pooled samples cost least (`worth` x
    missed + false), among those that cost no sample more than the class's threshold so far (a move
    must hold on each sample, the rule the demo's thresholds were chosen by: one sample's luck moves
    nothing); a class moves only for a lower cost. Also, per class, what each threshold would give on
    the pooled samples with the others at their choice."""
    pooled = Sample.pool(samples)
    classes = list(reference)
    chosen = dict(reference)
    for _ in range(len(classes) + 1):  # converges in two or three passes; bounded all the same
        changed = False
        for cls in classes:
            # the pooled cost is the samples' sum: their coils never meet, so misses and false ones just add up
            now = [_cost(s.at(chosen), worth) for s in samples]
            best, best_cost = chosen[cls], sum(now)
            # nearest first, so that of equal costs the smallest move wins
            for t in sorted(set(grid) | {reference[cls]}, key=lambda t, now=chosen[cls]: (abs(t - now), t)):
                costs = [_cost(s.at({**chosen, cls: t}), worth) for s in samples]
                holds = all(c <= n for c, n in zip(costs, now, strict=True))
                if holds and sum(costs) < best_cost:
                    best, best_cost = t, sum(costs)
            changed |= best != chosen[cls]
            chosen[cls] = best
        if not changed:
            break
    table = {}
    for cls in classes:
        table[cls] = []
        for t in sorted(set(grid) | {reference[cls]}):
            f = pooled.at({**chosen, cls: t})
            table[cls].append({"threshold": t, "found": f["found"], "false_defects": f["false_defects"],
                               "cost": _cost(f, worth)})
    return chosen, table


def _cost(figures: dict[str, Any], worth: float) -> float:
    """`worth` x defects missed + false defects: what `choose` minimises."""
    return round(worth * (figures["ground_truth_defects"] - figures["found"]) + figures["false_defects"], 2)


def _judged_as(row: dict[str, Any]) -> str:
    """The class whose threshold a record passed: its own, or an `unknown` one's best guess."""
    if row["class"] == UNKNOWN and row.get("guesses"):
        return str(row["guesses"][0][0])
    return str(row["class"])


def _model(args: argparse.Namespace) -> tuple[Any, str, dict[str, float]]:
    """The model the line would run, its line type and the config's class thresholds for it."""
    from inspection.benchmarks.e2e import _settings
    from inspection.config import load_config
    from inspection.registry import Registry

    config = load_config(args.config, {**({"model.name": args.model} if args.model else {}), **_settings(args.set)})
    name = config.model.name or config.type
    manifest = Registry(config.model.registry).resolve(name)
    if manifest.line_type != config.type:
        raise SteelInspectError(f"model {manifest.version} is a {manifest.line_type} model and the line is "
                                f"{config.type}: add --set 'line.type=\"{manifest.line_type}\"'")
    current = dict(config.worker.class_thresholds.get(config.type, {}))
    return manifest, config.type, current


def _model_floor(manifest: Any) -> float:
    """The model's per-class floor (`operating_point_val.per_class_floor`), else its lowest threshold."""
    floor = (manifest.data.get("operating_point_val") or {}).get("per_class_floor")
    return float(floor) if floor is not None else float(min(manifest.class_thresholds))


def _grid(floor: float, top: float, step: float) -> list[float]:
    if not 0.0 < floor < 1.0 or not 0.0 < step < 1.0:
        raise SteelInspectError(f"--floor {floor:g} / --step {step:g}: expected scores between 0 and 1")
    if top < floor:
        raise SteelInspectError(f"--top {top:g} is below the floor {floor:g}")
    count = int(round((top - floor) / step + 1e-9))
    return [round(floor + i * step, 4) for i in range(count + 1)]


def _line_run(args: argparse.Namespace, folder: Path, seed: int, thresholds: dict[str, Any],
              stop: Any) -> tuple[Path, list[dict[str, Any]]]:
    """The line once on `seed`'s frames with `thresholds` on top of --set; its database and ground truth."""
    from inspection.benchmarks._line import run_line, scratch_line
    from inspection.benchmarks.e2e import line_overrides, read_ground_truth

    folder.mkdir(parents=True, exist_ok=True)
    overrides = {**line_overrides(args, "windows"), **thresholds}  # `bench e2e`'s frames for the same seed
    line = scratch_line(args.config, folder, **overrides)
    run_line(line, stop, max_frames=args.frames, camera_overrides={"realtime": False, "seed": seed})
    return line.database, read_ground_truth(line, folder)


def _short(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: figures[k] for k in FIGURES}


def _print_summary(figures: dict[str, Any], out: Any) -> None:
    print(f"\n{'class':<18} {'model':>6} {'config':>7} {'chosen':>7}", file=out)
    for cls, value in figures["chosen"].items():
        config = figures["config_thresholds"].get(cls)
        print(f"{cls:<18} {figures['model_thresholds'][cls]:>6g} {'-' if config is None else f'{config:g}':>7}"
              f" {value:>7g}", file=out)
    print("\n* predicted from the floor runs' records; the check runs are measured", file=out)
    print(f"{'sample':<26} {'found':>9} {'rate':>6} {'class':>6} {'false':>6} {'per m':>6}", file=out)
    choice = "seeds " + ", ".join(map(str, figures["choice_samples"]["seeds"]))
    check = f"seed {figures['check_sample']['seed']}"
    rows = [(f"{choice}, floor", figures["choice_samples"]["floor"]),
            (f"{choice}, present*", figures["choice_samples"]["present_predicted"]),
            (f"{choice}, chosen*", figures["choice_samples"]["chosen_predicted"]),
            (f"{check}, config", figures["check_sample"]["config"]),
            (f"{check}, chosen", figures["check_sample"]["chosen"])]
    cost = figures["check_sample"]["cost"]
    verdict = ("the chosen thresholds" if cost["chosen"] < cost["config"] else
               "the config's thresholds" if cost["config"] < cost["chosen"] else "neither")
    for label, f in rows:
        print(f"{label:<26} {f['found']:>4}/{f['ground_truth_defects']:<4} {f['detection_rate'] or 0:>6.3f}"
              f" {f['class_accuracy'] or 0:>6.3f} {f['false_defects']:>6} {f['false_defects_per_m'] or 0:>6.3f}",
              file=out)
    print(f"{check}: {figures['defect_worth']:g} x missed + false = {cost['config']:g} with the config's, "
          f"{cost['chosen']:g} with the chosen: {verdict} cost less on the sample the choice did not see", file=out)


def _argv(args: argparse.Namespace) -> list[str]:
    return [*([f"--model {args.model}"] if args.model else []), f"--frames {args.frames}", f"--split {args.split}",
            f"--seed {' '.join(map(str, args.seed))}", f"--check-seed {args.check_seed}",
            *([f"--floor {args.floor:g}"] if args.floor is not None else []), f"--top {args.top:g}",
            f"--step {args.step:g}", f"--defect-worth {args.defect_worth:g}", f"--seam-share {args.seam_share:g}",
            *(f"--set {item}" for item in args.set)]
