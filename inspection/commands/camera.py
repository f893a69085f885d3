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
from pathlib import Path

from inspection.arguments import endpoint, non_negative_int, positive_int
from inspection.config import CAMERA_SOURCES


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
    parser.add_argument("--frames", type=positive_int, metavar="N", help="stop after N frames (ends the coil cleanly)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--connect", type=endpoint, metavar="ENDPOINT",
                       help="connect to this ZeroMQ address (a worker binds it)")
    where.add_argument("--bind", type=endpoint, metavar="ENDPOINT",
                       help="bind this ZeroMQ address instead of the configured one")
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
    parser.add_argument("--seed", type=non_negative_int, help="simulator seed (default: the config's)")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        metavar="FILE",
        help="simulator ground truth JSON lines (default: ground_truth/<camera>.jsonl beside the line database)",
    )
    parser.add_argument("--coils", type=positive_int, metavar="N", help="simulator: stop after N coils")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.line.camera import main

    endpoint = f"connect:{args.connect}" if args.connect else (f"bind:{args.bind}" if args.bind else None)
    stats = main(str(args.config) if args.config else None, args.camera, endpoint=endpoint, max_frames=args.frames,
                 source=args.source, seed=args.seed, fast=args.fast, folder=args.folder,
                 ground_truth=args.ground_truth, coils=args.coils)
    print(json.dumps(stats, sort_keys=True))
    return 0
