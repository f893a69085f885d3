"""`steel-inspect import-plant`: import MES / ERP coil, order and process data into a line database.

Columns are documented in `inspection.records.platform`, the SQL source (PostgreSQL or SQLite,
credentials, timeouts) in `inspection.records.plant_sql`. The line config's [plant] section gives
the plant's time zone (for times without an offset), the password file, the timeouts and the
batch size. Bad rows are reported with their line number and skipped; the exit status is 0 when
every row was imported, 1 when some were skipped, 2 when the source could not be read at all.
The import's audit events are signed with the line's audit key when its file exists.
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
    src.add_argument("--sql-url", metavar="URL",
                     help="sqlite:///path or postgresql://host:port/database (no password here: use "
                          "[plant] password_file, PGPASSWORD or ~/.pgpass)")
    query = p.add_mutually_exclusive_group()
    query.add_argument("--query", help="SQL query returning the documented columns (with --sql-url)")
    query.add_argument("--query-file", type=Path, metavar="FILE", help="the same query, read from a file")
    p.add_argument("--config", type=Path, help="line config (default: the demo line)")
    p.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from inspection.commands._audit_key import audit_key_path, warn_unsigned
    from inspection.config import load_config
    from inspection.records import plant_sql, platform
    from inspection.records.audit_keys import key_if_present
    from inspection.records.db import database_errors, open_db
    from inspection.records.errors import PlatformImportError

    query = _query(args)
    if args.sql_url and not query:
        raise PlatformImportError("--sql-url needs --query or --query-file")
    if query and not args.sql_url:
        raise PlatformImportError("--query needs --sql-url")
    config = load_config(args.config)
    plant = config.plant
    key_path = audit_key_path(config, args.db, args.config is not None)
    audit_key = key_if_present(key_path)
    if args.csv:
        rows, source = platform.read_csv(args.csv), str(args.csv)
    elif args.json:
        rows, source = platform.read_json(args.json), str(args.json)
    else:  # opened (connected, query run, columns checked) before the line database is touched
        rows = plant_sql.open_rows(args.sql_url, query, batch_rows=plant.batch_rows,
                                   connect_timeout_s=plant.connect_timeout_s,
                                   statement_timeout_s=plant.statement_timeout_s, password_file=plant.password_file)
        source = rows.source  # host, port and database only: never a user or password
    try:
        db_path = args.db or config.database
        db = open_db(db_path)
        try:
            with database_errors(db_path):
                report = platform.import_rows(db, rows, source, timezone=ZoneInfo(plant.timezone),
                                              batch_rows=plant.batch_rows, audit_key=audit_key)
        finally:
            db.close()
    finally:
        if isinstance(rows, plant_sql.SqlRows):
            rows.close()
    print(report.summary())
    if audit_key is None:
        warn_unsigned(key_path)
    return 1 if report.skipped else 0


def _query(args: argparse.Namespace) -> str | None:
    from inspection.records.errors import PlatformImportError

    if args.query_file is None:
        return args.query
    try:
        return args.query_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformImportError(f"{args.query_file}: cannot read the query: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
