"""`steel-inspect import-plant`: import MES / ERP coil, order and process data into a line database.

Columns are documented in `inspection.records.platform`. Bad rows are reported with their line
number and skipped; the exit status is 0 when every row was imported, 1 when some were skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("import-plant", help="import MES / ERP coil data (CSV, JSON, SQL)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, metavar="FILE", help="CSV file with a header row")
    src.add_argument("--json", type=Path, metavar="FILE", help="JSON array, {\"coils\": [...]} or JSON Lines")
    src.add_argument("--sql-url", metavar="URL", help="sqlite:///path or postgresql://user@host/db")
    p.add_argument("--query", help="SQL query returning the documented columns (with --sql-url)")
    p.add_argument("--config", type=Path, help="line config (default: the demo line)")
    p.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config
    from inspection.records import platform
    from inspection.records.db import open_db
    from inspection.records.errors import PlatformImportError

    if args.sql_url and not args.query:
        raise PlatformImportError("--sql-url needs --query")
    if args.query and not args.sql_url:
        raise PlatformImportError("--query needs --sql-url")
    db_path = args.db or load_config(args.config).database
    if args.csv:
        rows, source = platform.read_csv(args.csv), str(args.csv)
    elif args.json:
        rows, source = platform.read_json(args.json), str(args.json)
    else:
        rows, source = platform.read_sql(args.sql_url, args.query), args.sql_url.split("@")[-1]
    db = open_db(db_path)
    try:
        report = platform.import_rows(db, rows, source)
    finally:
        db.close()
    print(report.summary())
    return 1 if report.skipped else 0
