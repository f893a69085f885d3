"""Plant (MES / ERP) data: import coils, orders and process data from CSV, JSON or any SQL database.

Columns (CSV header, JSON keys or SQL result columns; only ``coil_id`` is required, names are
case-insensitive; units are part of the name):

=================  =======================================================================
coil_id            the coil id the line uses (the same id the cameras report)
heat               heat (cast) number              slab_id       slab the coil was rolled from
steel_grade        e.g. S235JR, S355MC, DC04, DX51D
thickness_mm       0.1 .. 30                       width_mm      300 .. 2500
length_m           1 .. 20000                      weight_t      0.1 .. 60
order_no           customer order                  customer      customer name
product_spec       product / order specification (e.g. the grading rule set to apply)
produced_at        ISO 8601 time (e.g. 2026-11-23T06:14:00Z)
shift              shift id (e.g. A, B, C, D)      line          line id
finishing_temp_c   300 .. 1200                     coiling_temp_c 200 .. 900
speed_m_per_s      0 .. 40
=================  =======================================================================

Any other column is kept as text in ``process_data.extra`` and reported once as a warning. A row
with no coil id or a malformed / out-of-range value is skipped and reported with its line number
(CSV: the file line; JSON Lines: the line; JSON array: the item number; SQL: the row number).
Imports upsert: nothing already imported is deleted, a re-import updates the given fields. Each
import is one transaction with an audit row (source, counts, sha256 of the imported rows).
Sample: ``tests/data/mes_extract_sample.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from inspection.frame import IDENT_PATTERN
from inspection.records import audit
from inspection.records.db import write_transaction
from inspection.records.errors import PlatformImportError

TEXT = ("heat", "slab_id", "steel_grade", "order_no", "customer", "product_spec", "shift", "line")
NUMBERS = {"thickness_mm": (0.1, 30.0), "width_mm": (300.0, 2500.0), "length_m": (1.0, 20000.0),
           "weight_t": (0.1, 60.0), "finishing_temp_c": (300.0, 1200.0), "coiling_temp_c": (200.0, 900.0),
           "speed_m_per_s": (0.0, 40.0)}
COLUMNS = ("coil_id", *TEXT, *NUMBERS, "produced_at")
_COIL_COLS = ("heat", "slab_id", "steel_grade", "thickness_mm", "width_mm", "length_m", "weight_t",
              "order_no",
              "customer", "product_spec", "produced_at", "shift", "line")


@dataclass
class ImportReport:
    source: str
    rows: int = 0
    imported: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.source}: {self.rows} rows read, {self.imported} imported, {len(self.skipped)} "
                 f"skipped"]
        lines += [f"  skipped {where}: {why}" for where, why in self.skipped]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def read_csv(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield f"line {reader.line_num}", row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PlatformImportError(f"{path}: cannot read CSV: {exc}") from None


def read_json(path: str | Path) -> Iterator[tuple[str, Any]]:
    """A JSON array (or {"coils": [...]}) of objects, or JSON Lines (one object per line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformImportError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if data is None:  # JSON Lines: a bad line is a bad row, not a bad file
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield f"line {n}", json.loads(line)
                except ValueError as exc:
                    yield f"line {n}", f"not valid JSON: {exc.args[0]}"
        return
    if isinstance(data, dict) and isinstance(data.get("coils"), list):
        data = data["coils"]
    if not isinstance(data, list):
        raise PlatformImportError(f"{path}: expected a JSON array of coil objects or {{\"coils\": [...]}}")
    for n, item in enumerate(data, 1):
        yield f"item {n}", item


def read_sql(url: str, query: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of `query` on a database given by URL: ``sqlite:///path`` or ``postgresql://...`` (psycopg)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not Path(path).exists():
            raise PlatformImportError(f"{url}: no such SQLite database")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    elif url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # type: ignore[import-not-found]
        except ImportError:
            raise PlatformImportError(f"{url.split('@')[-1]}: PostgreSQL driver missing: install psycopg "
                                      "(pip install 'psycopg[binary]')") from None
        try:
            conn = psycopg.connect(url)
        except Exception as exc:  # noqa: BLE001 - any driver error is a connection problem for the user
            raise PlatformImportError(f"cannot connect to PostgreSQL: {exc}") from None
    else:
        raise PlatformImportError(f"{url!r}: expected a sqlite:///path or postgresql:// URL")
    try:
        cur = conn.cursor()
        cur.execute(query)
        names = [d[0] for d in cur.description or ()]
        for n, row in enumerate(cur.fetchall(), 1):
            yield f"row {n}", dict(zip(names, row, strict=True))
    except PlatformImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - sqlite3 / psycopg errors alike
        raise PlatformImportError(f"query failed: {exc}") from None
    finally:
        conn.close()


def normalise(raw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(known fields, extra text fields) of one row; raises ValueError naming the bad field."""
    if isinstance(raw, str):
        raise ValueError(raw)
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object, got {type(raw).__name__}")
    row = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
    out: dict[str, Any] = {}
    import re

    coil = str(row.get("coil_id") or "").strip()
    if not coil:
        raise ValueError("coil_id: missing")
    if not re.fullmatch(IDENT_PATTERN, coil):
        raise ValueError(f"coil_id: not a valid coil id: {coil!r}")
    out["coil_id"] = coil
    for key in TEXT:
        value = row.get(key)
        out[key] = str(value).strip() if value not in (None, "") else None
    for key, (lo, hi) in NUMBERS.items():
        value = row.get(key)
        if value in (None, ""):
            out[key] = None
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: not a number: {value!r}") from None
        if not lo <= number <= hi:
            raise ValueError(f"{key}: {number:g} outside {lo:g}..{hi:g}")
        out[key] = number
    produced = row.get("produced_at")
    if produced not in (None, ""):
        try:
            stamp = datetime.fromisoformat(str(produced).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"produced_at: not an ISO 8601 time: {produced!r}") from None
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        out["produced_at"] = stamp.astimezone(UTC).isoformat()
    else:
        out["produced_at"] = None
    extra = {k: str(v) for k, v in row.items() if k not in COLUMNS and v not in (None, "")}
    return out, extra


def import_rows(db: Database, rows: Iterable[tuple[str, Any]], source: str, *,
                actor: str = "import") -> ImportReport:
    """Validate and upsert rows; bad rows are reported and skipped, the rest commit together."""
    report = ImportReport(source=source)
    good: list[tuple[dict[str, Any], dict[str, str]]] = []
    unknown: set[str] = set()
    for where, raw in rows:
        report.rows += 1
        try:
            fields, extra = normalise(raw)
        except ValueError as exc:
            report.skipped.append((where, str(exc)))
            continue
        unknown |= set(extra)
        good.append((fields, extra))
    if unknown:
        report.warnings.append(f"unknown column(s) kept as extra process data: {', '.join(sorted(unknown))}")
    now = time.time_ns()
    with write_transaction(db):
        for f, extra in good:
            _upsert(db, f, extra, source, now)
        digest = hashlib.sha256(audit.canonical_json([[f, e] for f, e in good]).encode()).hexdigest()
        audit.append(db, "platform_import", actor, {"source": source, "rows_read": report.rows,
                                                     "imported": len(good),
                                                     "skipped": len(report.skipped), "sha256": digest}, now)
    report.imported = len(good)
    return report


def _upsert(db: Database, f: dict[str, Any], extra: dict[str, str], source: str, now: int) -> None:
    cols = ["coil_id", *_COIL_COLS, "source", "imported_ns"]
    values = [f["coil_id"], *(f[c] for c in _COIL_COLS), source, now]
    # Re-imports update only what the new row gives: NULLs do not erase earlier values.
    updates = ", ".join(f"{c} = coalesce(excluded.{c}, {c})" for c in (*_COIL_COLS, "source", "imported_ns"))
    db.execute(f"INSERT INTO platform_coils ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               f"ON CONFLICT(coil_id) DO UPDATE SET {updates}", values)
    db.execute("INSERT INTO process_data (coil_id, finishing_temp_c, coiling_temp_c, speed_m_per_s, extra) "
               "VALUES (?,?,?,?,?) ON CONFLICT(coil_id) DO UPDATE SET "
               "finishing_temp_c = coalesce(excluded.finishing_temp_c, finishing_temp_c), "
               "coiling_temp_c = coalesce(excluded.coiling_temp_c, coiling_temp_c), "
               "speed_m_per_s = coalesce(excluded.speed_m_per_s, speed_m_per_s), "
               "extra = coalesce(excluded.extra, extra)",
               (f["coil_id"], f["finishing_temp_c"], f["coiling_temp_c"], f["speed_m_per_s"],
                json.dumps(extra, sort_keys=True) if extra else None))
    if f["customer"]:
        db.execute("INSERT OR IGNORE INTO customers (name) VALUES (?)", (f["customer"],))
    if f["steel_grade"]:
        standard, family = _grade_family(f["steel_grade"])
        db.execute("INSERT OR IGNORE INTO steel_grades (name, standard, family) VALUES (?,?,?)",
                   (f["steel_grade"], standard, family))
    if f["heat"]:
        db.execute("INSERT INTO heats (heat, steel_grade) VALUES (?,?) ON CONFLICT(heat) DO UPDATE SET "
                   "steel_grade = coalesce(excluded.steel_grade, steel_grade)", (f["heat"], f["steel_grade"]))
    if f["order_no"]:
        db.execute("INSERT INTO orders (order_no, customer, product_spec, steel_grade) VALUES (?,?,?,?) "
                   "ON CONFLICT(order_no) DO UPDATE SET customer = coalesce(excluded.customer, customer), "
                   "product_spec = coalesce(excluded.product_spec, product_spec), "
                   "steel_grade = coalesce(excluded.steel_grade, steel_grade)",
                   (f["order_no"], f["customer"], f["product_spec"], f["steel_grade"]))


def _grade_family(name: str) -> tuple[str | None, str | None]:
    n = name.upper()
    if n.startswith("DX") and n.endswith("D"):
        return "EN 10346", "hot-dip coated forming steel"
    if n.startswith("DC"):
        return "EN 10130", "cold-rolled forming steel"
    if n.startswith("S") and n.endswith(("MC", "NC")):
        return "EN 10149", "hot-rolled high-strength cold-forming steel"
    if n.startswith("S"):
        return "EN 10025", "structural steel"
    return None, None


HOT_GRADES = (("S235JR", 2.0, 12.0), ("S355MC", 2.0, 10.0), ("S355J2", 3.0, 16.0), ("S420MC", 2.0, 8.0))
COLD_GRADES = (("DC01", 0.4, 2.0), ("DC04", 0.5, 2.0), ("DX51D", 0.4, 2.5), ("DX54D", 0.5, 1.5))
CUSTOMERS = ("Nordtec Automotive GmbH", "Vasco Tubes S.A.", "Baltic Profiles Oy", "Rhein Bau AG",
             "Iberia Steel Service", "Kappa Appliances s.r.o.")


def synthetic_extract(coil_ids: Sequence[str], line_type: str, seed: int = 0, *,
                      start: datetime | None = None, line: str | None = None, width_mm: float | None = None,
                      length_m: float | None = None) -> list[dict[str, Any]]:
    """A deterministic, real-looking MES extract for the simulator's coils (one row per coil id).

    Pass the simulated strip's `width_mm` and coil `length_m` so the extract matches what the
    cameras saw (grading uses the MES width for its edge zones).
    """
    rng = random.Random(f"mes:{line_type}:{seed}")
    start = start or datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    grades = HOT_GRADES if line_type == "hot" else COLD_GRADES
    rows, heat_left, heat, grade = [], 0, None, None
    for i, coil in enumerate(coil_ids):
        if heat_left == 0:  # a heat (cast) gives several slabs and coils of one grade
            heat, heat_left, slab = f"{rng.randint(2, 9)}{rng.randint(10000, 99999)}", rng.randint(3, 6), 0
            grade = rng.choice(grades)
        heat_left, slab = heat_left - 1, slab + 1
        name, t_lo, t_hi = grade
        produced = start + timedelta(minutes=6 * i, seconds=rng.randint(0, 120))
        widths = (1000, 1250, 1500, 1600, 1800) if line_type == "hot" else (1000, 1250, 1500)
        width = width_mm or rng.choice(widths)
        thickness = round(rng.uniform(t_lo, t_hi), 2)
        # A coil weighs 10..30 t; its length follows from thickness and width unless given.
        target_t = rng.uniform(10, 30)
        length = length_m or round(target_t / (thickness / 1000 * width / 1000 * 7.85), 1)
        customer = rng.choice(CUSTOMERS)
        rows.append({
            "coil_id": coil, "heat": heat, "slab_id": f"{heat}-{slab:02d}", "steel_grade": name,
            "thickness_mm": thickness, "width_mm": float(width), "length_m": length,
            "weight_t": round(thickness / 1000 * width / 1000 * length * 7.85, 2),
            "order_no": f"4500{rng.randint(100000, 999999)}", "customer": customer,
            "product_spec": f"EN 10051 / {name}" if line_type == "hot" else f"EN 10131 / {name}",
            "produced_at": produced.isoformat().replace("+00:00", "Z"),
            "shift": "ABCD"[(produced.hour // 8 + produced.toordinal()) % 4], "line": line,
            "finishing_temp_c": round(rng.gauss(880, 15), 1) if line_type == "hot" else None,
            "coiling_temp_c": round(rng.gauss(600, 20), 1) if line_type == "hot" else None,
            "speed_m_per_s": round(rng.uniform(8, 14) if line_type == "hot" else rng.uniform(12, 20), 2),
        })
    return rows
