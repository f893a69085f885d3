"""`steel-inspect report --coil ID --format pdf|csv|json [--out PATH]`: the coil report.

Written to ``--out`` (a file, or a folder to put ``coil-<ID>.<format>`` in), else into the line's
reports folder: ``[records] reports_dir`` of the config, by default ``reports`` beside the database.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write a coil report (PDF for customers, CSV, JSON)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coil", required=True, help="coil id")
    p.add_argument("--format", choices=("pdf", "csv", "json"), default="pdf",
                   help="output format (default pdf)")
    p.add_argument("--out", type=Path, help="output file or folder (default: coil-<ID>.<format> in the reports "
                                            "folder: [records] reports_dir, else 'reports' beside the database)")
    p.add_argument("--config", type=Path, help="line config (default: the demo line)")
    p.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config
    from inspection.records import report
    from inspection.records.db import database_errors, open_db
    from inspection.records.grading import load_rules

    config = load_config(args.config)
    database = args.db or config.database
    # crops as the console finds them: beside a database given on its own, else the config's folder
    crops = database.parent / "crops" if args.db and (database.parent / "crops").is_dir() else config.crops_dir
    rules = load_rules(config.records.rules)
    db = open_db(database, readonly=True)
    try:
        with database_errors(database):  # a damaged page shows only when a query reaches it
            data = report.collect(db, args.coil, rules)
    finally:
        db.close()
    out = args.out or report.default_path(config.records.reports_dir or database.parent / "reports", args.coil,
                                          args.format)
    print(f"wrote {report.write(data, args.format, out, crops_dir=crops)}")
    return 0
