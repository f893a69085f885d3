"""Cached reads for the console: the records read API (`inspection.records.queries`) as DataFrames.

Every function takes the database path and the change token (`context.change_token`), so the
`st.cache_data` key changes exactly when the data can have changed, and a widget interaction
that changes nothing re-uses the cached result. Connections are read-only (`context.read_db`).
The few SQL reads here that `queries` lacks (filter choices, the coil row, the id list, the
coil's review list) are read-only and parameterised: candidates to move into `queries`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

from inspection.console.context import read_db
from inspection.records import queries

Token = tuple[int, ...]
DEFECT_COLUMNS = ("id", "surface", "camera", "frame_index", "along_mm", "across_mm", "length_mm", "width_mm",
                  "area_mm2", "class", "score", "severity", "crop_sha256", "captured_ns", "model_version",
                  "effective_class", "review_status", "reviewer")


@st.cache_data(show_spinner=False, max_entries=64)
def filter_options(path: str, token: Token) -> dict[str, list[str]]:
    """Distinct values for the coil filters."""
    sql = {
        "line": "SELECT DISTINCT line FROM coils",
        "heat": "SELECT DISTINCT heat FROM platform_coils",
        "order_no": "SELECT DISTINCT order_no FROM platform_coils",
        "customer": "SELECT DISTINCT customer FROM platform_coils",
        "steel_grade": "SELECT DISTINCT steel_grade FROM platform_coils",
        "grade": "SELECT DISTINCT grade FROM grades",
    }
    with read_db(path) as db:
        return {key: sorted(str(r[0]) for r in db.execute(q).fetchall() if r[0] is not None)
                for key, q in sql.items()}


@st.cache_data(show_spinner=False, max_entries=64)
def coils(path: str, token: Token, filters: tuple[tuple[str, Any], ...], limit: int = 1000) -> pd.DataFrame:
    """`queries.coils` with `filters` as (name, value) pairs; dates may be `datetime.date`."""
    kwargs = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in filters if v not in (None, "")}
    with read_db(path) as db:
        rows = queries.coils(db, limit=limit, **kwargs)
    frame = pd.DataFrame(rows, columns=["coil", "grade", "defects", "coverage", "line", "line_type",
                                        "first_seen_ns", "heat", "order_no", "customer", "steel_grade",
                                        "thickness_mm", "width_mm", "length_m", "shift"])
    frame["first_seen"] = pd.to_datetime(frame.pop("first_seen_ns"), unit="ns", utc=True)
    return frame


@st.cache_data(show_spinner=False, max_entries=64)
def coil_ids(path: str, token: Token, limit: int = 500) -> list[str]:
    with read_db(path) as db:
        rows = db.execute("SELECT id FROM coils ORDER BY first_seen_ns DESC, id LIMIT ?", (limit,)).fetchall()
    return [r[0] for r in rows]


@st.cache_data(show_spinner=False, max_entries=32)
def coil_defects(path: str, token: Token, coil: str) -> pd.DataFrame:
    """Every defect of `coil` with its effective class and review status after reviews."""
    with read_db(path) as db:
        rows = queries.coil_defects(db, coil)
    return pd.DataFrame(rows, columns=list(DEFECT_COLUMNS))


@st.cache_data(show_spinner=False, max_entries=32)
def coil_header(path: str, token: Token, coil: str) -> dict[str, Any] | None:
    """The coil row, its size, its plant data (MES / process), or None when the coil is unknown."""
    with read_db(path) as db:
        row = db.execute("SELECT id, line, line_type, first_seen_ns FROM coils WHERE id = ?",
                         (coil,)).fetchone()
        if row is None:
            return None
        header = dict(zip(("coil", "line", "line_type", "first_seen_ns"), row, strict=True))
        header["inspected_length_m"] = queries.coil_length_m(db, coil)
        header["map_width_mm"] = queries.coil_width_mm(db, coil)
        header["platform"] = queries.platform_data(db, coil)
        return header


@st.cache_data(show_spinner=False, max_entries=32)
def grade_history(path: str, token: Token, coil: str) -> pd.DataFrame:
    with read_db(path) as db:
        rows = queries.grade_history(db, coil)
    return pd.DataFrame(rows, columns=["id", "grade", "source", "trigger", "reasons", "rule_set",
                                       "rule_version", "rule_sha256", "coverage", "defects_counted", "by",
                                       "time"])


@st.cache_data(show_spinner=False, max_entries=32)
def coil_alarms(path: str, token: Token, coil: str) -> pd.DataFrame:
    with read_db(path) as db:
        rows = queries.coil_alarms(db, coil)
    return pd.DataFrame(rows, columns=["id", "kind", "surface", "class", "across_mm", "pitch_mm",
                                       "roll_diameter_mm", "count", "message", "details", "time"])


@st.cache_data(show_spinner=False, max_entries=32)
def coil_coverage(path: str, token: Token, coil: str) -> dict[str, Any]:
    with read_db(path) as db:
        return queries.coverage(db, coil)


@st.cache_data(show_spinner=False, max_entries=32)
def coil_reviews(path: str, token: Token, coil: str) -> pd.DataFrame:
    """Every review of the coil's defects, oldest first (reviews are append-only)."""
    with read_db(path) as db:
        frame = pd.read_sql_query(
            "SELECT r.id AS review, r.defect_id AS defect, d.class AS detected_as, r.action, r.new_class, "
            "r.reviewer, r.reason, r.time_ns FROM reviews r JOIN defects d ON d.id = r.defect_id "
            "WHERE r.coil = ? ORDER BY r.id", db.conn, params=(coil,))
    frame["time"] = pd.to_datetime(frame.pop("time_ns"), unit="ns", utc=True)
    return frame
