"""Plant data import from PostgreSQL: wall time and peak memory of `steel-inspect import-plant`.

A throw-away PostgreSQL cluster (`inspection.testing.pg_cluster`) gets a ``mes_coil`` table of
``--rows`` coils (padded ids, numeric and legacy text columns with decimal commas, local
timestamps, an unknown column); then the real command runs as a child process, reading it over
TCP with a password from ``[plant] password_file``, into a fresh line database. Its wall time, CPU
time and peak resident memory (the child's own ``ru_maxrss``) are reported per row count, beside
the same for ``steel-inspect --version`` (start-up alone): with streaming the peak stays flat as
the rows grow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inspection.arguments import positive_int
from inspection.config import DEMO_CONFIG
from inspection.testing import pg_cluster

HELP = "plant import: import-plant from a throw-away PostgreSQL, time and peak memory per row count"
PASSWORD = "bench-only-password"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=positive_int, nargs="+", default=[10_000, 100_000], help="coils per run")
    parser.add_argument("--batch-rows", type=positive_int, default=5000, help="[plant] batch_rows for the import")


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        cluster = pg_cluster.start_cluster()
    except pg_cluster.ClusterUnavailable as exc:
        return {"status": "no PostgreSQL", "reason": str(exc)}
    figures: dict[str, Any] = {"batch_rows": args.batch_rows, "cpus": os.cpu_count(), "load_average": None,
                               "startup": _startup(), "runs": []}
    try:
        cluster.sql(f"CREATE ROLE mes LOGIN PASSWORD '{PASSWORD}'")
        with tempfile.TemporaryDirectory(prefix="bench-plant-") as tmp:
            work = Path(tmp)
            config = _config(work, args.batch_rows)
            (work / "query.sql").write_text(pg_cluster.MES_QUERY, encoding="utf-8")
            for n, rows in enumerate(args.rows):
                dbname = f"mes{n}"
                cluster.sql(f"CREATE DATABASE {dbname} OWNER mes")
                started = time.perf_counter()
                pg_cluster.fill_mes(cluster, dbname, rows)
                cluster.sql(["ALTER TABLE mes_coil OWNER TO mes", "ANALYZE mes_coil"], dbname)
                fill_s = time.perf_counter() - started
                figures["runs"].append({"rows": rows, "fill_s": round(fill_s, 2),
                                        **_import(cluster.url(dbname), config, work, n)})
    finally:
        cluster.stop()
    figures["load_average"] = [round(x, 1) for x in os.getloadavg()]  # wall times mean little on a busy machine
    return figures


def _config(work: Path, batch_rows: int) -> Path:
    secret = work / "mes.password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    text = DEMO_CONFIG.read_text(encoding="utf-8").partition("[plant]")[0]
    path = work / "line.toml"
    path.write_text(text + f'[plant]\ntimezone = "Europe/Berlin"\npassword_file = "{secret}"\n'
                           f"batch_rows = {batch_rows}\n", encoding="utf-8")
    return path


def _import(url: str, config: Path, work: Path, n: int) -> dict[str, Any]:
    db = work / f"line{n}.db"
    user_url = url.replace("postgresql://", "postgresql://mes@", 1)  # the password comes from the config's file
    argv = [sys.executable, "-m", "inspection", "import-plant", "--sql-url", user_url, "--query-file",
            str(work / "query.sql"), "--config", str(config), "--db", str(db)]
    with open(work / "out.txt", "w+") as out, open(work / "err.txt", "w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err)
        # wait4: this child's own peak memory (RUSAGE_CHILDREN would mix in initdb and pg_ctl)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        summary, problems = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"import-plant failed ({child.returncode}): {problems.strip()[-500:]}")
    rows = int(summary.split(" rows read")[0].rsplit(" ", 1)[-1])
    return {"import_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "rows_per_s": round(rows / wall), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "summary": summary.splitlines()[0], "db_mb": round(db.stat().st_size / 2**20, 1)}


def _startup() -> dict[str, Any]:
    """The same figures for `steel-inspect --version`: what any command costs before it does anything."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "inspection", "--version"], stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0
    return {"wall_s": round(time.perf_counter() - started, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
