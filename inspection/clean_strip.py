"""The clean-strip check: what a model records on defect-free strip, run through the line as it runs.

The other gates look at dataset images (val mAP@0.5 when a model is made, test-split recall in
`models promote`), and every one of those images holds a defect: a model that marks plain strip
passes them. On a line clean strip is almost all there is, and one `unknown` record grades a clean
coil secondary (the standard rule set's UNKNOWN limit). hot-20261204-6 passed both gates, the demo
then graded its coils worse, and it was rolled back on that one demo run: nothing measured whether
it marked clean strip more than the model before it (it did not: README, "What clean strip shows").

So before a model goes live, the line config's own pipeline (first stage, tiles, the line's class
thresholds, the unknown rule, seam merging, the recorder's grading) runs the active model and the
candidate one after the other on the same simulated defect-free strip (the same seed, so the same
frames), and counts what each recorded: records, and `unknown` records, per 100 m of strip surface
(each camera's length counts), by class, and the grades of the coils that ended. The candidate is
refused when it records more than `[model] promote_max_clean_strip_ratio` times the active model's
count, of either kind, by more than chance explains (`findings`). `[model] promote_clean_strip_frames`
sets the strip's length in frames per camera (0 turns the check off).

Each line runs with ``realtime`` off (no frame dropped), with the frames' texture generated anew
(`simulator.fresh_texture`, as the demo does), in a scratch folder with its own database and sockets.
The simulator's texture is not a plant's strip: with `[model] promote_clean_strip_folder` (or `bench
clean_strip --folder`) every camera replays the plant's own defect-free frames instead (the folder camera
source, `cameras.replay`: a subfolder named after a camera's id is that camera's, else each camera
replays the folder itself), cut into coils of the simulator's coil length, at most
`promote_clean_strip_frames` frames per camera.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspection.results import UNKNOWN

log = logging.getLogger(__name__)

SIGNIFICANCE = 0.05  # a count is refused when chance alone would give it less often than this
SEED = 21  # the simulator's seed for the check: apart from the demo's (7) and bench e2e's (11, 12)

# What the line config is run with: strip without defects, texture made afresh for every frame.
CLEAN_SIMULATOR: dict[str, Any] = {"simulator.defects_per_100m": 0.0, "simulator.coil_mix": [],
                                   "simulator.fresh_texture": True, "simulator.seam_share": 0.0}


def camera_folders(config_path: Path | None, frames_folder: Path,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config overrides that make every camera of the line replay the plant's own clean frames from
    `frames_folder` (its subfolder named after the camera's id, else the folder itself), cut into coils
    of the simulator's coil length; `SourceError` naming the folder when one holds no image file."""
    from cameras.replay import list_images
    from inspection.config import load_config

    line = load_config(config_path, overrides)
    settings: dict[str, Any] = {}
    for i, camera in enumerate(line.cameras):
        own = Path(frames_folder) / camera.id
        folder = own if own.is_dir() else Path(frames_folder)
        list_images(folder)  # before any line starts: an empty or missing folder is said at once
        settings[f"cameras.{i}.source"] = "folder"
        settings[f"cameras.{i}.options"] = {"folder": str(folder), "coil_length_m": line.simulator.coil_length_m}
    return settings


def measure(config_path: Path | None, models: dict[str, str], *, line_type: str, frames: int,
            registry: Path | None = None, seed: int = SEED, folder: Path | None = None,
            overrides: dict[str, Any] | None = None, frames_folder: Path | None = None,
            stop: Any = None) -> dict[str, dict[str, Any]]:
    """The figures of each model (label -> a version, hot/cold, or a model folder) on the same clean
    strip, the line at `config_path` (None: the demo line) set to `line_type`, with `overrides` (config
    keys, as `bench e2e --set` gives them) on top; `frames_folder`: the plant's own defect-free frames
    instead of the simulator's strip."""
    from inspection.benchmarks._line import run_line, scratch_line
    from inspection.line.process import StopFlag

    stop = stop or StopFlag()
    out: dict[str, dict[str, Any]] = {}
    if frames_folder is not None:
        overrides = {**(overrides or {}), **camera_folders(config_path, frames_folder, overrides)}
    with tempfile.TemporaryDirectory(prefix="steel-clean-strip-") as tmp:
        for i, (label, name) in enumerate(models.items(), start=1):
            # a folder per run, named by its place (a model may be given as a path, which is no folder name)
            where = Path(folder or tmp) / f"{i}-{Path(str(name)).name}"
            where.mkdir(parents=True, exist_ok=True)
            settings = {**CLEAN_SIMULATOR, "line.type": line_type, "model.name": str(name), "model.shadow": "off",
                        **({"model.registry": str(registry)} if registry else {}), **(overrides or {})}
            line = scratch_line(config_path, where, **settings)
            log.info("clean strip: %s (%s), %d frames per camera, seed %d", label, name, frames, seed)
            run_line(line, stop, max_frames=frames, camera_overrides={"realtime": False, "seed": seed})
            out[label] = {"model": str(name), **read_figures(line.database)}
            log.info("clean strip: %s recorded %d defects (%d unknown) on %.0f m", label,
                     out[label]["records"], out[label]["unknown"], out[label]["strip_m"])
    return out


def strip_words(frames_folder: Path | None) -> str:
    """What the check runs on, in words (the figures' "strip")."""
    return f"frames of {frames_folder}" if frames_folder else "simulated strip"


def read_figures(db: Path) -> dict[str, Any]:
    """Records, `unknown` records and coil grades in a line's database (every record there is false:
    the strip had no defect)."""
    from inspection.benchmarks._matching import read_records
    from inspection.records import line_reads
    from inspection.records.db import open_db

    by_key, _, inspected_mm = read_records(db)
    classes = Counter(cls for records in by_key.values() for cls, _ in records)
    con = open_db(db, readonly=True)
    try:
        grades = Counter(line_reads.grades_of_ended_coils(con))
    finally:
        con.close()
    metres = inspected_mm / 1000.0
    records, unknown = sum(classes.values()), classes.get(UNKNOWN, 0)
    return {"strip_m": round(metres, 1), "records": records, "unknown": unknown,
            "records_per_100m": _per_100m(records, metres), "unknown_per_100m": _per_100m(unknown, metres),
            "by_class": dict(sorted(classes.items())), "coils_graded": dict(sorted(grades.items()))}


def findings(active: dict[str, Any], candidate: dict[str, Any], *, max_ratio: float,
             significance: float = SIGNIFICANCE) -> list[str]:
    """Why the candidate may not replace the active model on clean strip (empty when it may).

    False records on clean strip are rare events, and the two counts of one model on two strips
    differ by chance alone (30 and 21 records of two models on 1,220 m here). So a count is refused
    only when the candidate's is higher than `max_ratio` times the active model's by more than
    chance explains: the exact conditional test of two Poisson counts (given both counts' sum, the
    candidate's share is binomial), one-sided at `significance`."""
    if not active["strip_m"] or not candidate["strip_m"]:
        return [f"clean strip: no strip inspected (active {active['strip_m']} m, candidate {candidate['strip_m']} m)"]
    out = []
    for key, what in (("records", "defects"), ("unknown", "`unknown` defects")):
        p = excess_p_value(active[key], candidate[key], active["strip_m"], candidate["strip_m"], max_ratio)
        if p < significance:
            out.append(f"clean strip: {candidate[key]} {what} on {candidate['strip_m']:.0f} m against the active "
                       f"model's {active[key]} on {active['strip_m']:.0f} m, more than {max_ratio:g}x "
                       f"(one-sided p {p:.3f} < {significance:g})")
    return out


def excess_p_value(count_a: int, count_b: int, metres_a: float, metres_b: float, ratio: float) -> float:
    """The chance of `count_b` or more of the two counts' sum falling to B if B's rate were `ratio` times
    A's: the one-sided p-value of "B records more than `ratio` x A per metre"."""
    total = count_a + count_b
    if count_b == 0:
        return 1.0
    share = ratio * metres_b / (ratio * metres_b + metres_a)
    if share >= 1.0:
        return 1.0
    # the binomial tail in logs: a model that floods the strip gives counts whose terms overflow a float
    logs = [math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) + k * math.log(share)
            + (total - k) * math.log1p(-share) for k in range(count_b, total + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _per_100m(count: int, metres: float) -> float | None:
    return round(100.0 * count / metres, 3) if metres > 0 else None


@dataclass(frozen=True)
class Gate:
    """The check as a line config sets it (`[model] promote_clean_strip_frames`, `..._ratio`)."""

    config_path: Path | None  # None: the demo line
    frames: int  # per camera; 0: the check is off
    max_ratio: float
    frames_folder: Path | None = None  # the plant's own clean frames (None: simulated strip)

    @classmethod
    def from_config(cls, config_path: Path | None, model: Any = None) -> Gate:
        """The gate of the line at `config_path`; `model`: its `[model]` section when already loaded."""
        if model is None:
            from inspection.config import load_config

            model = load_config(config_path).model
        return cls(config_path, model.promote_clean_strip_frames, model.promote_max_clean_strip_ratio,
                   model.promote_clean_strip_folder)

    def compare(self, active: str, candidate: str, *, line_type: str, registry: Path | None = None) -> dict[str, Any]:
        """Both models' figures (`active`, `candidate`: each a version or a model folder), the settings they
        were measured with, and `findings`: what the check finds against the candidate (empty: it passes)."""
        figures = measure(self.config_path, {"active": active, "candidate": candidate}, line_type=line_type,
                          frames=self.frames, registry=registry, frames_folder=self.frames_folder)
        return {**figures, "frames_per_camera": self.frames, "strip": self.strip, "seed": SEED,
                "max_ratio": self.max_ratio,
                "config": str(self.config_path) if self.config_path else "demo line",
                "findings": findings(figures["active"], figures["candidate"], max_ratio=self.max_ratio)}

    @property
    def strip(self) -> str:
        return strip_words(self.frames_folder)

    def summary(self, figures: dict[str, Any]) -> str:
        """One line for the promotion's output and reason: both models' counts on the strip."""
        a, b = figures["active"], figures["candidate"]
        where = f", {self.strip}" if self.frames_folder else ""
        return (f"clean strip ({b['strip_m']:.0f} m{where}): {b['records']} defects, {b['unknown']} `unknown` "
                f"against the active model's {a['records']}, {a['unknown']}")
