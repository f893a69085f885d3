"""`steel-inspect recorder`: run a line's recorder (the single writer of its database)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recorder", help="record worker results into the line database, grade coils",
                              description=__doc__)
    p.add_argument("--config", type=Path, help="line config TOML (default: the demo line)")
    p.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    p.add_argument("--crops", type=Path, help="crops folder (default: the config's line.crops_dir)")
    p.add_argument("--endpoint", help="bind address (default: the config's endpoints.results)")
    p.add_argument("--batch", type=int, default=500, help="flush after this many messages (default 500)")
    p.add_argument("--flush-ms", type=float, default=200.0, help="flush at least this often (default 200 ms)")
    p.add_argument("--grace-s", type=float, default=30.0,
                   help="grade a coil this long after its coil_end even if frames are missing (default 30 s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config, log_config
    from inspection.records.recorder import run_recorder

    config = load_config(args.config)
    log_config(config)
    run_recorder(config, db=args.db, crops=args.crops, endpoint=args.endpoint, batch_messages=args.batch,
                 flush_ms=args.flush_ms, grace_s=args.grace_s)
    return 0
