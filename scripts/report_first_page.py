"""Render the first page of a coil's PDF report to PNG (the README's picture of the report).

    .venv/bin/python scripts/report_first_page.py [--config F] [--db PATH] [--coil ID] [--out PNG] [--dpi N]

Default coil: the newest in the database; default output: inspection/console/screenshots/report-page1.png. Needs
the `console` extra and poppler's `pdftoppm` (apt-get install -y poppler-utils).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from inspection.config import REPO_DIR, load_config
from inspection.records import queries, report
from inspection.records.db import open_db
from inspection.records.grading import load_rules

SCREENSHOTS = REPO_DIR / "inspection" / "console" / "screenshots"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--db", type=Path, help="database (default: the config's)")
    parser.add_argument("--coil", help="coil id (default: the newest)")
    parser.add_argument("--out", type=Path, default=SCREENSHOTS / "report-page1.png")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    if not shutil.which("pdftoppm"):
        print("report_first_page: pdftoppm not found: apt-get install -y poppler-utils", file=sys.stderr)
        return 2
    config = load_config(args.config)
    database = args.db or config.database
    crops = database.parent / "crops" if args.db and (database.parent / "crops").is_dir() else config.crops_dir
    db = open_db(database, readonly=True)
    try:
        coil = args.coil or next(iter(queries.coil_ids(db, 1)), None)
        if coil is None:
            print(f"report_first_page: no coil in {database}", file=sys.stderr)
            return 2
        data = report.collect(db, coil, load_rules(config.records.rules))
    finally:
        db.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pdf = report.write(data, "pdf", Path(tmp) / "report.pdf", crops_dir=crops)
        subprocess.run(["pdftoppm", "-r", str(args.dpi), "-png", "-singlefile", "-f", "1", "-l", "1", str(pdf),
                        str(args.out.with_suffix(""))], check=True, timeout=120)
    print(f"wrote {args.out} (coil {coil})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
