"""`steel-inspect doctor`: which execution providers can really start here, and why not.

Prints one line per finding (onnxruntime build, NVIDIA driver and GPUs, TensorRT libraries, each
provider: starts / cannot start and the missing library names / fails and ONNX Runtime's error,
the engine cache). `--require-gpu` exits 1 when no GPU provider starts, for install scripts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("doctor", help="which execution providers (TensorRT, CUDA, CPU) can start here, and why",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="line config (default: the demo line): its model and engine cache")
    p.add_argument("--model", help="model for the session check: hot, cold, a version or a path "
                                   "(default: the config's model, if one is registered)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the findings to this file")
    p.add_argument("--require-gpu", action="store_true", help="exit 1 unless a GPU provider starts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config
    from inspection.doctor import lines, report
    from inspection.errors import SteelInspectError
    from inspection.registry import Registry

    config = load_config(args.config)
    try:
        model = Registry(config.model.registry).resolve(args.model or config.model.name)
    except SteelInspectError:
        if args.model:  # asked for by name: a wrong name is an error, not a finding
            raise
        model = None  # nothing registered: libraries and driver are still checked
    found = report(model, config.worker.gpu_engine_cache)
    print("\n".join(lines(found)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 1 if args.require_gpu and not found["gpu_ready"] else 0
