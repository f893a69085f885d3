"""`steel-inspect demo`: the demo line with everything on: simulated cameras over the top and
bottom of a hot strip, inference workers, the recorder with PLC output, and the review console.

Before the line starts, a matching MES extract for the simulated coils is written beside the
line database and imported, so the demo's coils carry orders, customers, steel grades, heats
and process data. The console (`streamlit run app.py`) is served on http://127.0.0.1:PORT (the
config's ``[console] address``) and reads the same database. On a database without users the
demo adds the console user ``inspector`` (quality engineer) and prints its random password once
(it is also in ``console-login`` beside the database, mode 0600); more users: `steel-inspect
users add`. Ctrl-C stops everything cleanly; with ``--max-frames`` the line stops by itself and the
console stays up for review until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from inspection.arguments import non_negative_int, port
from inspection.commands.run import add_pipeline_arguments, pipeline_options, preflight
from inspection.records.audit_keys import AuditKey

log = logging.getLogger("inspection.demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the demo line: cameras, workers, recorder, PLC output and the review console",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_arguments(parser)
    parser.add_argument("--port", type=port, default=8501,
                        help="console port on the config's [console] address, 127.0.0.1 by default (default 8501)")
    parser.add_argument("--no-console", action="store_true", help="run the line without the console")
    parser.add_argument("--mes-coils", type=non_negative_int, default=50, metavar="N",
                        help="write and import MES data for the first N simulated coils (default 50; 0: none)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config, log_config
    from inspection.line.pipeline import run_pipeline
    from inspection.line.process import StopFlag
    from inspection.records.checkpoints import ensure_key
    from inspection.records.db import open_db

    if not args.no_console:
        from inspection.extras import require_extra

        require_extra("console", "the demo's review console", "streamlit")
    config = load_config(args.config)
    log_config(config, log)
    preflight(config)
    options = pipeline_options(args)
    db = Path(args.db or config.database)
    open_db(db).close()  # the database and its folder (the MES extract goes there), or one line saying why not
    # the line's first start makes the audit key here: the import and the demo user are signed too
    audit_key, _ = ensure_key(config.audit_key_path, db)
    if args.mes_coils > 0:
        import_mes(config, db, args.mes_coils, args.seed, audit_key)
    stop = StopFlag()
    if not args.no_console:
        announce_login(db, audit_key)
    console = None if args.no_console else start_console(db, args.port, config.console.address)
    try:
        summary = run_pipeline(config, stop=stop, **options)
        print(json.dumps(summary, indent=2, sort_keys=True))
        if console is not None and not stop.is_set():
            log.info("the line stopped; the console stays up at http://%s:%d: Ctrl-C quits",
                     config.console.address, args.port)
            while not stop.wait(1.0) and console.poll() is None:
                pass
    finally:
        if console is not None:
            console.terminate()
            try:
                console.wait(10)
            except subprocess.TimeoutExpired:
                console.kill()
    return 0 if all(code == 0 for code in summary["exit_codes"].values()) else 1


def import_mes(config, db: Path, coils: int, seed: int | None,  # noqa: ANN001 - LineConfig
               audit_key: AuditKey | None = None) -> None:
    """Write the MES extract for the coils this run will simulate and import it into the line database."""
    from cameras.mes import write_mes_extract
    from inspection.line.pipeline import next_coil_number
    from inspection.records import platform
    from inspection.records.db import open_db

    path = write_mes_extract(config, db.parent / "mes_extract.json", coils, seed, next_coil_number(db, config.type))
    database = open_db(db)
    try:
        report = platform.import_rows(database, platform.read_json(path), str(path), actor="demo",
                                      audit_key=audit_key)
    finally:
        database.close()
    log.info("MES import %s: %d rows read, %d imported, %d skipped", path, report.rows, report.imported,
             len(report.skipped))
    for where, problem in report.skipped[:5]:
        log.warning("MES import: skipped %s: %s", where, problem)


def announce_login(db: Path, audit_key: AuditKey | None = None) -> None:
    """Make the demo's console user on a database without users and print its password once, to the
    terminal (stderr, not the log: a password must not end up in log files)."""
    from inspection.demo_user import ensure_demo_user

    login = ensure_demo_user(db, audit_key)
    if login.password is not None:
        print(f"\n  console sign-in: user {login.name!r} (quality engineer), password {login.password}\n"
              f"  shown once; also in {login.file} (mode 0600). More users: "
              f"steel-inspect users add NAME --role ROLE --db {db}\n", file=sys.stderr, flush=True)
    else:
        where = f"; the demo user's password is in {login.file}" if login.file.is_file() else ""
        log.info("console: %d user(s) in %s (steel-inspect users list --db %s)%s", login.users, db, db, where)


def start_console(db: Path, port: int, address: str = "127.0.0.1") -> subprocess.Popen:
    """`streamlit run app.py` on ADDRESS:PORT for this database (a child process)."""
    from inspection.console.launch import console_command, warn_if_exposed

    warn_if_exposed(address, log)
    log_path = db.parent / "console.log"
    with open(log_path, "ab") as log_file:  # Streamlit's own output, kept out of the summary on stdout
        console = subprocess.Popen(console_command(port, address),
                                   env={**os.environ, "STEEL_INSPECT_DB": str(db.resolve())},
                                   stdout=log_file, stderr=subprocess.STDOUT)
    log.info("console: http://%s:%d (database %s, log %s)", address, port, db, log_path)
    return console
