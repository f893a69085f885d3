"""`steel-inspect run`: the line pipeline (cameras, K inference workers, recorder + PLC output).

Without ``--config`` it runs the demo line. Every part is its own process, supervised: a
crashed worker or recorder is restarted (at once, then after a doubling delay; given up on after
5 restarts within 5 minutes), logged and counted. SIGTERM / Ctrl-C (or ``--max-frames``) stop the
line cleanly: cameras end their coils (a simulated coil the stop cut gets no coil_end, so the
recorder holds it instead of grading a stub as a whole coil), workers drain, the recorder flushes
and grades. At the end a JSON
summary is printed: frames sent, received, inspected, dropped and lost (sent but in no record,
per coil too); restarts and crashes; defects; coils and their grades; throughput;
capture-to-record latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from inspection.arguments import non_negative_int, positive_int

if TYPE_CHECKING:
    from inspection.config import LineConfig

log = logging.getLogger("inspection.run")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the line pipeline: cameras, inference workers, recorder, PLC output",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the summary to this file")
    parser.set_defaults(func=run)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config TOML (default: the demo line)")
    parser.add_argument("--db", type=Path, help="line database (default: the config's line.database)")
    parser.add_argument("--max-frames", type=positive_int, metavar="N", help="each camera stops after N frames")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="K",
                        help="inference worker processes (default 1)")
    parser.add_argument("--fast", action="store_true",
                        help="simulated cameras run as fast as the line can take (backpressure) instead of paced")
    parser.add_argument("--seed", type=non_negative_int, help="simulator seed (default: the config's)")


def preflight(config: LineConfig) -> None:
    """What a line's children would refuse, checked before any starts: the model (manifest and sha256)
    and the rule set, so a bad one is one line naming its file here, not a worker that dies at start.
    (`run_pipeline` checks the database, the endpoints and the keys.)"""
    from inspection.records.grading import load_rules
    from inspection.registry import Registry

    Registry(config.model.registry).resolve(config.model.name)
    load_rules(config.records.rules)


def pipeline_options(args: argparse.Namespace) -> dict:
    overrides = {}
    if args.fast:
        overrides["realtime"] = False
    if args.seed is not None:
        overrides["seed"] = args.seed
    return {"db": args.db, "workers": args.workers, "max_frames": args.max_frames, "camera_overrides": overrides,
            "verbose": args.verbose}


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config, log_config
    from inspection.line.pipeline import run_pipeline

    config = load_config(args.config)
    log_config(config, log)
    preflight(config)
    summary = run_pipeline(config, **pipeline_options(args))
    text = json.dumps(summary, indent=2, sort_keys=True)
    print(text)
    for crash in summary.get("crashes", []):  # the operator's last look: what died, and what came back
        after = ("not restarted" if crash["restart_in_s"] is None
                 else f"restart scheduled {crash['restart_in_s']:.1f} s later")
        log.warning("%s died %.1f s into the run (exit status %s), %s", crash["process"], crash["at_s"],
                    crash["status"], after)
    if summary.get("frames_lost"):
        log.warning("%d frame(s) sent by the cameras are in no record (held by a process that died or "
                    "malformed): their coils are held", summary["frames_lost"])
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if all(code == 0 for code in summary["exit_codes"].values()) else 1
