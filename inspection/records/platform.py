"""Plant (MES / ERP) data: import coils, orders and process data from CSV, JSON or a SQL database.

Columns (CSV header, JSON keys or SQL result columns; only ``coil_id`` is required, names are
case-insensitive; units are part of the name):

=================  =======================================================================
coil_id            the coil id the line uses (the same id the cameras report)
heat               heat (cast) number              slab_id       slab the coil was rolled from
steel_grade        e.g. S235JR, S355MC, DC04, DX51D
thickness_mm       0.1 .. 30                       width_mm      300 .. 2500
length_m           1 .. 20000                      weight_t      0.1 .. 60
order_no           customer order                  customer      customer name
country            the customer's country (kept with the customer; needs ``customer``)
product_spec       product / order specification (e.g. the grading rule set to apply)
produced_at        a time: ISO 8601 text (2026-11-23T06:14:00Z, 2026-11-23 07:14) or an SQL timestamp
shift              shift id (e.g. A, B, C, D)      line          line id
finishing_temp_c   300 .. 1200                     coiling_temp_c 200 .. 900
speed_m_per_s      0 .. 40
=================  =======================================================================

Numbers may use a decimal comma (``20,94``) where that is unambiguous: not ``1,500``, which may
be 1.5 or 1500 (``0,800`` and ``1500,5`` are fine). A time without an offset (SQL ``timestamp
without time zone``, most MES tables) is the plant's local time, ``[plant] timezone`` of the line
config; every time is stored in UTC. In the hour the clocks go back a local time happens twice: it
is read as the first (summer-time) one; a time in the hour the clocks skip is read with the
offset before the change; both are counted in a warning.

Any other column is kept as text in ``process_data.extra`` and reported once as a warning. A
source without a ``coil_id`` column is refused before any row is read. A row with no coil id or a
malformed / out-of-range value is skipped and reported with its line number (CSV: the file line;
JSON Lines: the line; JSON array: the item number; SQL: the row number).

Imports upsert: nothing already imported is deleted, a re-import updates the given fields.
Rows are written `batch_rows` at a time, each batch one transaction with its audit row (source,
counts, sha256 of the batch's rows, ``last`` on the final one), so memory stays flat and the
recorder waits at most one batch for the write lock; an import stopped midway keeps the batches
it committed, and running it again completes it. SQL sources: `plant_sql`. Sample:
``tests/data/mes_extract_sample.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from inspection.frame import IDENT_PATTERN
from inspection.records import audit, plant_sql
from inspection.records.audit_keys import AuditKey
from inspection.records.db import write_transaction
from inspection.records.errors import PlatformImportError

TEXT = ("heat", "slab_id", "steel_grade", "order_no", "customer", "country", "product_spec", "shift", "line")
NUMBERS = {"thickness_mm": (0.1, 30.0), "width_mm": (300.0, 2500.0), "length_m": (1.0, 20000.0),
           "weight_t": (0.1, 60.0), "finishing_temp_c": (300.0, 1200.0), "coiling_temp_c": (200.0, 900.0),
           "speed_m_per_s": (0.0, 40.0)}
COLUMNS = ("coil_id", *TEXT, *NUMBERS, "produced_at")
# the tables an import upserts (the digest of each, whole, goes into the import's last audit event)
PLATFORM_TABLES = ("platform_coils", "process_data", "customers", "steel_grades", "heats", "orders")
_COIL_COLS = ("heat", "slab_id", "steel_grade", "thickness_mm", "width_mm", "length_m", "weight_t",
              "order_no",
              "customer", "product_spec", "produced_at", "shift", "line")
BATCH_ROWS = 5000
MAX_LISTED_SKIPS = 1000  # a report lists this many skipped rows and counts the rest
_DECIMAL_COMMA = re.compile(r"([+-]?)(\d+),(\d+)")


@dataclass
class ImportReport:
    source: str
    rows: int = 0
    imported: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why): the first MAX_LISTED_SKIPS
    warnings: list[str] = field(default_factory=list)
    more_skipped: int = 0  # skipped beyond those listed
    batches: int = 0  # transactions committed

    @property
    def skipped_count(self) -> int:
        return len(self.skipped) + self.more_skipped

    def skip(self, where: str, why: str) -> None:
        if len(self.skipped) < MAX_LISTED_SKIPS:
            self.skipped.append((where, why))
        else:
            self.more_skipped += 1

    def summary(self) -> str:
        lines = [f"{self.source}: {self.rows} rows read, {self.imported} imported, {self.skipped_count} skipped"]
        lines += [f"  skipped {where}: {why}" for where, why in self.skipped]
        if self.more_skipped:
            lines.append(f"  ... and {self.more_skipped} more skipped rows")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def read_csv(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a CSV file with a header row; a header without ``coil_id`` is refused before any row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            _check_columns(str(path), reader.fieldnames or [])
            for row in reader:
                yield f"line {reader.line_num}", row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PlatformImportError(f"{path}: cannot read CSV: {exc}") from None


def _check_columns(source: str, names: Sequence[str]) -> None:
    present = {str(n).strip().lower() for n in names if n is not None}
    for column in plant_sql.REQUIRED:
        if column not in present:
            shown = ", ".join(str(n) for n in names) or "none: the file is empty"
            raise PlatformImportError(f"{source}: no {column} column (its columns: {shown})")


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


def read_sql(url: str, query: str, **options: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of `query` on ``sqlite:///path`` or PostgreSQL (``postgresql://...``, psycopg 3), streamed.

    `options` are `plant_sql.open_rows`'s (batch_rows, timeouts, password_file). The CLI opens the
    source itself (`plant_sql.open_rows`) to check it before the line database is touched.
    """
    with plant_sql.open_rows(url, query, **options) as rows:
        yield from rows


def normalise(raw: Any, timezone: tzinfo = UTC, notes: Counter[str] | None = None
              ) -> tuple[dict[str, Any], dict[str, str]]:
    """(known fields, extra text fields) of one row; raises ValueError naming the bad field.

    A time without an offset is read in `timezone`; `notes` counts those that fell into a
    daylight-saving change (``"ambiguous"``, ``"nonexistent"``).
    """
    if isinstance(raw, str):
        raise ValueError(raw)
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object, got {type(raw).__name__}")
    row = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
    out: dict[str, Any] = {}

    coil = str(row.get("coil_id") or "").strip()
    if not coil:
        raise ValueError("coil_id: missing")
    if not re.fullmatch(IDENT_PATTERN, coil):
        raise ValueError(f"coil_id: not a valid coil id: {coil!r}")
    out["coil_id"] = coil
    for key in TEXT:
        value = row.get(key)
        text = str(value).strip() if value is not None else ""
        out[key] = text or None  # a padded CHAR column of blanks is no value
    for key, (lo, hi) in NUMBERS.items():
        value = row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            out[key] = None
            continue
        number = _number(key, value)
        if not lo <= number <= hi:
            raise ValueError(f"{key}: {number:g} outside {lo:g}..{hi:g}")
        out[key] = number
    out["produced_at"] = _utc_iso(row.get("produced_at"), timezone, notes)
    extra = {k: str(v) for k, v in row.items() if k not in COLUMNS and v not in (None, "")}
    return out, extra


def _number(key: str, value: Any) -> float:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    comma = _DECIMAL_COMMA.fullmatch(text)
    if comma:
        sign, whole, fraction = comma.groups()
        # "1,500" may be 1.5 or 1500 (a thousands separator); "0,800" and "1500,5" cannot be.
        if len(fraction) == 3 and len(whole) <= 3 and not whole.startswith("0"):
            raise ValueError(f"{key}: ambiguous: {text!r} may be {whole}.{fraction} or {whole}{fraction} "
                             "(a thousands separator): write it without the comma or with a point")
        text = f"{sign}{whole}.{fraction}"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{key}: not a number: {value!r}") from None


def _utc_iso(value: Any, timezone: tzinfo, notes: Counter[str] | None) -> str | None:
    """A time as UTC ISO 8601; one without an offset is local time in `timezone`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):  # an SQL date column: the plant's midnight
        stamp = datetime(value.year, value.month, value.day)
    else:
        try:
            stamp = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"produced_at: not an ISO 8601 time: {value!r}") from None
    if stamp.tzinfo is None:
        stamp = _localise(stamp, timezone, notes)
    return stamp.astimezone(UTC).isoformat()


def _localise(naive: datetime, timezone: tzinfo, notes: Counter[str] | None) -> datetime:
    first, second = naive.replace(tzinfo=timezone, fold=0), naive.replace(tzinfo=timezone, fold=1)
    if first.utcoffset() != second.utcoffset() and notes is not None:
        # fold=0 is the earlier reading: the first of a repeated hour, the old offset in a skipped one
        skipped = first.astimezone(UTC).astimezone(timezone).replace(tzinfo=None) != naive
        notes["nonexistent" if skipped else "ambiguous"] += 1
    return first


def import_rows(db: Database, rows: Iterable[tuple[str, Any]], source: str, *, actor: str = "import",
                timezone: tzinfo = UTC, batch_rows: int = BATCH_ROWS,
                audit_key: AuditKey | None = None) -> ImportReport:
    """Validate and upsert rows, `batch_rows` per transaction; bad rows are reported and skipped.

    The last batch's audit event carries the digest of each plant table as the import leaves it
    (``state``: `audit verify` compares it with the tables); with `audit_key` every event is signed."""
    report = ImportReport(source=source)
    batch: list[tuple[dict[str, Any], dict[str, str]]] = []
    unknown: set[str] = set()
    notes: Counter[str] = Counter()
    read, skipped = 0, 0  # since the last commit
    for where, raw in rows:
        report.rows, read = report.rows + 1, read + 1
        try:
            fields, extra = normalise(raw, timezone, notes)
        except ValueError as exc:
            report.skip(where, str(exc))
            skipped += 1
            continue
        unknown |= set(extra)
        batch.append((fields, extra))
        if len(batch) >= batch_rows:
            _commit(db, batch, report, actor, read=read, skipped=skipped, last=False, key=audit_key)
            batch, read, skipped = [], 0, 0
    _commit(db, batch, report, actor, read=read, skipped=skipped, last=True, key=audit_key)
    if unknown:
        report.warnings.append(f"unknown column(s) kept as extra process data: {', '.join(sorted(unknown))}")
    zone = getattr(timezone, "key", str(timezone))
    if notes["ambiguous"]:
        report.warnings.append(f"{notes['ambiguous']} time(s) fell in the hour the clocks went back in {zone}: "
                               "read as the first (summer-time) one")
    if notes["nonexistent"]:
        report.warnings.append(f"{notes['nonexistent']} time(s) fell in the hour the clocks skipped in {zone}: "
                               "read with the offset before the change")
    return report


def _commit(db: Database, batch: list[tuple[dict[str, Any], dict[str, str]]], report: ImportReport,
            actor: str, *, read: int, skipped: int, last: bool, key: AuditKey | None = None) -> None:
    now = time.time_ns()
    digest = hashlib.sha256(audit.canonical_json([[f, e] for f, e in batch]).encode()).hexdigest()
    with write_transaction(db):
        _upsert(db, batch, report.source, now)
        # whole-table digests once per import, not per batch: a streamed import stays linear
        state = {"state": {t: audit.table_state(db, t) for t in PLATFORM_TABLES}} if last else {}
        audit.append(db, "platform_import", actor, {
            "source": report.source, "batch": report.batches + 1, "last": last, "rows_read": read,
            "imported": len(batch), "skipped": skipped, "sha256": digest, **state}, now, key=key)
    report.batches += 1
    report.imported += len(batch)


def _upsert(db: Database, batch: list[tuple[dict[str, Any], dict[str, str]]], source: str, now: int) -> None:
    """One statement per table for the whole batch (executemany keeps the rows' order: a coil
    given twice ends as its later row says)."""
    coils = [f for f, _ in batch]
    cols = ["coil_id", *_COIL_COLS, "source", "imported_ns"]
    # Re-imports update only what the new row gives: NULLs do not erase earlier values.
    updates = ", ".join(f"{c} = coalesce(excluded.{c}, {c})" for c in (*_COIL_COLS, "source", "imported_ns"))
    conn = db.conn
    conn.executemany(f"INSERT INTO platform_coils ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                     f"ON CONFLICT(coil_id) DO UPDATE SET {updates}",
                     [(f["coil_id"], *(f[c] for c in _COIL_COLS), source, now) for f in coils])
    conn.executemany(
        "INSERT INTO process_data (coil_id, finishing_temp_c, coiling_temp_c, speed_m_per_s, extra) "
        "VALUES (?,?,?,?,?) ON CONFLICT(coil_id) DO UPDATE SET "
        "finishing_temp_c = coalesce(excluded.finishing_temp_c, finishing_temp_c), "
        "coiling_temp_c = coalesce(excluded.coiling_temp_c, coiling_temp_c), "
        "speed_m_per_s = coalesce(excluded.speed_m_per_s, speed_m_per_s), "
        "extra = coalesce(excluded.extra, extra)",
        [(f["coil_id"], f["finishing_temp_c"], f["coiling_temp_c"], f["speed_m_per_s"],
          json.dumps(extra, sort_keys=True) if extra else None) for f, extra in batch])
    conn.executemany("INSERT INTO customers (name, country) VALUES (?,?) ON CONFLICT(name) DO UPDATE SET "
                     "country = coalesce(excluded.country, country)",
                     [(f["customer"], f["country"]) for f in coils if f["customer"]])
    conn.executemany("INSERT OR IGNORE INTO steel_grades (name, standard, family) VALUES (?,?,?)",
                     [(f["steel_grade"], *_grade_family(f["steel_grade"])) for f in coils if f["steel_grade"]])
    conn.executemany("INSERT INTO heats (heat, steel_grade) VALUES (?,?) ON CONFLICT(heat) DO UPDATE SET "
                     "steel_grade = coalesce(excluded.steel_grade, steel_grade)",
                     [(f["heat"], f["steel_grade"]) for f in coils if f["heat"]])
    conn.executemany("INSERT INTO orders (order_no, customer, product_spec, steel_grade) VALUES (?,?,?,?) "
                     "ON CONFLICT(order_no) DO UPDATE SET customer = coalesce(excluded.customer, customer), "
                     "product_spec = coalesce(excluded.product_spec, product_spec), "
                     "steel_grade = coalesce(excluded.steel_grade, steel_grade)",
                     [(f["order_no"], f["customer"], f["product_spec"], f["steel_grade"])
                      for f in coils if f["order_no"]])


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
