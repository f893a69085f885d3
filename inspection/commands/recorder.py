"""`steel-inspect recorder`: run a line's recorder (the single writer of its database) with its PLC output.

It is the same process `steel-inspect run` starts: it binds the config's ``endpoints.results``,
publishes to ``endpoints.plc`` and honours every ``[records]`` key (``flush_ms`` included) unless an
option below overrides it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recorder", help="record worker results into the line database, grade coils, "
                              "publish to the PLC", description=__doc__)
    p.add_argument("--config", type=Path, help="line config TOML (default: the demo line)")
    p.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    p.add_argument("--crops", type=Path, help="crops folder (default: the config's line.crops_dir)")
    p.add_argument("--endpoint", help="results endpoint to bind (default: the config's endpoints.results)")
    p.add_argument("--batch", type=int, default=500, help="flush after this many messages (default 500)")
    p.add_argument("--flush-ms", type=float, default=None,
                   help="flush at least this often (default: the config's [records] flush_ms)")
    p.add_argument("--grace-s", type=float, default=30.0,
                   help="grade a coil this long after its coil_end even if frames are missing (default 30 s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.errors import ConfigError
    from inspection.line.recorder import main

    if args.batch < 1:
        raise ConfigError(f"--batch: expected at least 1 message, got {args.batch}")
    if args.flush_ms is not None and args.flush_ms <= 0:
        raise ConfigError(f"--flush-ms: expected a number of milliseconds > 0, got {args.flush_ms}")
    if args.grace_s < 0:
        raise ConfigError(f"--grace-s: expected seconds >= 0, got {args.grace_s}")
    options = {"batch_messages": args.batch, "grace_s": args.grace_s}
    if args.flush_ms is not None:
        options["flush_ms"] = args.flush_ms
    main(str(args.config) if args.config else None, db=str(args.db) if args.db else None,
         crops=str(args.crops) if args.crops else None, endpoint=args.endpoint, **options)
    return 0
