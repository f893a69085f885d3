"""`steel-inspect camera`: run one camera process that sends frames and coil events over ZeroMQ.

Without ``--config`` it uses the demo line, without ``--camera`` that config's first camera.
The camera binds its configured endpoint (workers connect); ``--connect ENDPOINT`` makes it
connect to a worker that binds, ``--bind ENDPOINT`` binds somewhere else. With ``--frames N``
it stops after N frames, closing the current coil with a ``coil_end``. SIGTERM / Ctrl-C stop
it the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from inspection.config import CAMERA_SOURCES

log = logging.getLogger("inspection.camera")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "camera",
        help="run one camera process (frames and coil events over ZeroMQ)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="line config TOML (default: the demo line)")
    parser.add_argument("--camera", help="camera id in the config (default: its first camera)")
    parser.add_argument("--source", choices=CAMERA_SOURCES, help="override the configured source")
    parser.add_argument("--frames", type=int, metavar="N", help="stop after N frames (ends the coil cleanly)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--connect", metavar="ENDPOINT", help="connect to this ZeroMQ address (a worker binds it)")
    where.add_argument("--bind", metavar="ENDPOINT", help="bind this ZeroMQ address instead of the configured one")
    parser.add_argument(
        "--folder",
        type=Path,
        help="folder of images or a video file (folder source); the image folder of the pylon emulator (pylon source)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="as fast as possible, with backpressure, instead of paced at the line speed",
    )
    parser.add_argument("--seed", type=int, help="simulator seed (default: the config's)")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        metavar="FILE",
        help="simulator ground truth JSON lines (default: ground_truth/<camera>.jsonl beside the line database)",
    )
    parser.add_argument("--coils", type=int, metavar="N", help="simulator: stop after N coils")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config, log_config

    line = load_config(args.config)
    log_config(line, log)
    camera = line.camera(args.camera)
    if args.frames is not None and args.frames <= 0:
        from inspection.errors import SourceError

        raise SourceError(f"--frames: expected a positive number, got {args.frames}")
    overrides = source_overrides(camera.source if args.source is None else args.source, args)
    endpoint = f"connect:{args.connect}" if args.connect else (f"bind:{args.bind}" if args.bind else camera.endpoint)
    stats = run_camera(str(line.path), camera.id, endpoint=endpoint, max_frames=args.frames, **overrides)
    print(json.dumps(stats, sort_keys=True))
    return 0


def source_overrides(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {"source": args.source, "seed": args.seed}
    if args.fast:
        overrides["realtime"] = False
    if kind == "folder":
        overrides["folder"] = args.folder
    elif kind == "pylon":
        overrides["image_folder"] = args.folder
    if kind == "simulator":
        overrides["ground_truth"] = args.ground_truth
        overrides["max_coils"] = args.coils
    return overrides


def run_camera(
    config_path: str | None,
    camera_id: str | None,
    *,
    endpoint: str | None = None,
    max_frames: int | None = None,
    install_signals: bool = True,
    config_overrides: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One camera process: build the source and sender, pump until done or stopped, close both.

    Also the target of the demo's and the pipeline's camera child processes (arguments are plain
    values; the child reads the config itself).
    """
    from cameras import open_source
    from cameras.pump import pump
    from inspection.config import load_config
    from inspection.process import StopFlag
    from inspection.transport import FrameSender

    stop = StopFlag(install=install_signals)
    line = load_config(config_path, config_overrides)
    camera = line.camera(camera_id)
    source = open_source(line, camera, **overrides)
    with source:
        live = camera.live and source.live
        log.info("camera %s applied: %s", camera.id, json.dumps(source.describe(), default=str, sort_keys=True))
        # At exit the workers get time to take what is queued, the coil_end included (bounded, so a
        # dead worker cannot hang the camera): replay waits up to 60 s, a live camera 10 s.
        sender = FrameSender(endpoint or camera.endpoint, live=live, hwm=camera.send_hwm, stopping=stop.is_set,
                             linger_ms=10_000 if live else 60_000)
        try:
            stats = pump(source, sender, max_frames=max_frames, stopping=stop.is_set)
        finally:
            sender.close()
    result = {
        "camera": camera.id,
        "endpoint": str(sender.endpoint),
        "live": live,
        **stats.as_dict(),
        "events_lost": sender.events_lost,
    }
    log.info("camera %s done: %s", camera.id, json.dumps(result, sort_keys=True))
    return result
