"""`steel-inspect recorder`: run a line's recorder (the single writer of its database) with its PLC output.

It is the same process `steel-inspect run` starts: it binds the config's ``endpoints.results``,
publishes to ``endpoints.plc`` and honours every ``[records]`` key (``flush_ms`` included) unless an
option below overrides it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspection.arguments import endpoint, non_negative_float, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("recorder", help="record worker results into the line database, grade coils, "
                              "publish to the PLC", description=__doc__)
    p.add_argument("--config", type=Path, help="line config TOML (default: the demo line)")
    p.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    p.add_argument("--crops", type=Path, help="crops folder (default: the config's line.crops_dir)")
    p.add_argument("--endpoint", type=endpoint,
                   help="results endpoint to bind (default: the config's endpoints.results)")
    p.add_argument("--batch", type=positive_int, default=500, help="flush after this many messages (default 500)")
    p.add_argument("--flush-ms", type=positive_float, default=None,
                   help="flush at least this often (default: the config's [records] flush_ms)")
    p.add_argument("--grace-s", type=non_negative_float, default=30.0,
                   help="grade a coil this long after its coil_end even if frames are missing (default 30 s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.line.recorder import main

    options = {"batch_messages": args.batch, "grace_s": args.grace_s}
    if args.flush_ms is not None:
        options["flush_ms"] = args.flush_ms
    main(str(args.config) if args.config else None, db=str(args.db) if args.db else None,
         crops=str(args.crops) if args.crops else None, endpoint=args.endpoint, **options)
    return 0
