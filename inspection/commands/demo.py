"""`steel-inspect demo`: the demo line with everything on: simulated cameras over the top and
bottom of a hot strip, inference workers, the recorder with PLC output, and the review console.

Before the line starts, a matching MES extract for the simulated coils is written beside the
line database and imported, so the demo's coils carry orders, customers, steel grades, heats
and process data. The console (`streamlit run app.py`) is served on http://127.0.0.1:PORT and
reads the same database. Ctrl-C stops everything cleanly; with ``--max-frames`` the line stops
by itself and the console stays up for review until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from inspection.commands.run import add_pipeline_arguments, pipeline_options

log = logging.getLogger("inspection.demo")
APP = Path(__file__).resolve().parents[2] / "app.py"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the demo line: cameras, workers, recorder, PLC output and the review console",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_arguments(parser)
    parser.add_argument("--port", type=int, default=8501, help="console port on 127.0.0.1 (default 8501)")
    parser.add_argument("--no-console", action="store_true", help="run the line without the console")
    parser.add_argument("--mes-coils", type=int, default=50, metavar="N",
                        help="write and import MES data for the first N simulated coils (default 50; 0: none)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config, log_config
    from inspection.line.pipeline import run_pipeline
    from inspection.line.process import StopFlag

    if not args.no_console:
        from inspection.extras import require_extra

        require_extra("console", "the demo's review console", "streamlit")
    config = load_config(args.config)
    log_config(config, log)
    options = pipeline_options(args)
    db = Path(args.db or config.database)
    db.parent.mkdir(parents=True, exist_ok=True)
    if args.mes_coils > 0:
        import_mes(config, db, args.mes_coils, args.seed)
    stop = StopFlag()
    console = None if args.no_console else start_console(db, args.port)
    try:
        summary = run_pipeline(config, stop=stop, **options)
        print(json.dumps(summary, indent=2, sort_keys=True))
        if console is not None and not stop.is_set():
            log.info("the line stopped; the console stays up at http://127.0.0.1:%d: Ctrl-C quits", args.port)
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


def import_mes(config, db: Path, coils: int, seed: int | None) -> None:  # noqa: ANN001 - LineConfig
    """Write the MES extract for the coils this run will simulate and import it into the line database."""
    from cameras.mes import write_mes_extract
    from inspection.line.pipeline import next_coil_number
    from inspection.records import platform
    from inspection.records.db import open_db

    path = write_mes_extract(config, db.parent / "mes_extract.json", coils, seed, next_coil_number(db, config.type))
    database = open_db(db)
    try:
        report = platform.import_rows(database, platform.read_json(path), str(path), actor="demo")
    finally:
        database.close()
    log.info("MES import %s: %d rows read, %d imported, %d skipped", path, report.rows, report.imported,
             len(report.skipped))
    for where, problem in report.skipped[:5]:
        log.warning("MES import: skipped %s: %s", where, problem)


def start_console(db: Path, port: int) -> subprocess.Popen:
    """`streamlit run app.py` on 127.0.0.1:PORT for this database (a child process)."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    log_path = db.parent / "console.log"
    with open(log_path, "ab") as log_file:  # Streamlit's own output, kept out of the summary on stdout
        console = subprocess.Popen(command, env={**os.environ, "STEEL_INSPECT_DB": str(db.resolve())},
                                   stdout=log_file, stderr=subprocess.STDOUT)
    log.info("console: http://127.0.0.1:%d (database %s, log %s)", port, db, log_path)
    return console
