"""`steel-inspect report --coil ID --format pdf|csv|json [--out PATH]`: the coil report."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write a coil report (PDF for customers, CSV, JSON)",
                              description=__doc__)
    p.add_argument("--coil", required=True, help="coil id")
    p.add_argument("--format", choices=("pdf", "csv", "json"), default="pdf",
                   help="output format (default pdf)")
    p.add_argument("--out", type=Path, help="output file (default: coil-<ID>.<format> in the current folder)")
    p.add_argument("--config", type=Path, help="line config (default: the demo line)")
    p.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config
    from inspection.records import report
    from inspection.records.db import open_db

    db = open_db(args.db or load_config(args.config).database, readonly=True)
    try:
        data = report.collect(db, args.coil)
    finally:
        db.close()
    out = report.write(data, args.format, args.out or Path(f"coil-{args.coil}.{args.format}"))
    print(f"wrote {out}")
    return 0
