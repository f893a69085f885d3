"""Cached reads for the console: the records read API (`inspection.records.queries`) as DataFrames.

Every function takes the database path and the change token (`context.change_token`), so the
`st.cache_data` key changes exactly when the data can have changed, and a widget interaction
that changes nothing re-uses the cached result. Connections are read-only (`context.read_db`).
The console runs no SQL itself: records returns rows, and this module makes them DataFrames.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

from inspection.console import map_data
from inspection.console.context import read_db
from inspection.records import queries

Token = tuple[int, ...]
DEFECT_COLUMNS = ("id", "surface", "camera", "frame_index", "along_mm", "across_mm", "length_mm", "width_mm",
                  "area_mm2", "class", "score", "severity", "crop_sha256", "captured_ns", "model_version",
                  "effective_class", "review_status", "reviewer", "x1", "y1", "x2", "y2", "parts")


@st.cache_data(show_spinner=False, max_entries=64)
def filter_options(path: str, token: Token) -> dict[str, list[str]]:
    """Distinct values for the coil filters."""
    with read_db(path) as db:
        return queries.filter_choices(db)


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
        return queries.coil_ids(db, limit)


@st.cache_data(show_spinner=False, max_entries=32)
def coil_defects(path: str, token: Token, coil: str) -> pd.DataFrame:
    """Every defect of `coil` with its effective class and review status after reviews."""
    with read_db(path) as db:
        rows = queries.coil_defects(db, coil)
    return pd.DataFrame(rows, columns=list(DEFECT_COLUMNS))


@st.cache_data(show_spinner=False, max_entries=16)
def coil_map(path: str, token: Token, coil: str, classes: tuple[str, ...], length_m: float,
             width_mm: float) -> tuple[dict[str, Any], bytes]:
    """The coil's defect map, packed (`map_data.pack`). Cached on the coil and the change token: a
    click on the map reruns the page's fragment, and must not pack 5,000 points again."""
    defects = coil_defects(path, token, coil)
    return map_data.pack(defects, coil_alarms(path, token, coil), list(classes), length_m, width_mm,
                         version=f"{coil}:{'.'.join(map(str, token))}")


@st.cache_data(show_spinner=False, max_entries=32)
def coil_header(path: str, token: Token, coil: str) -> dict[str, Any] | None:
    """The coil row, its size, its plant data (MES / process), or None when the coil is unknown."""
    with read_db(path) as db:
        row = queries.coil_row(db, coil)
        if row is None:
            return None
        header: dict[str, Any] = {"coil": row["id"], "line": row["line"], "line_type": row["line_type"],
                                  "first_seen_ns": row["first_seen_ns"]}
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
        rows = queries.coil_reviews(db, coil)
    frame = pd.DataFrame(rows, columns=["review", "defect", "detected_as", "action", "new_class", "reviewer",
                                        "reason", "time_ns"])
    frame["time"] = pd.to_datetime(frame.pop("time_ns"), unit="ns", utc=True)
    return frame


@st.cache_data(show_spinner=False, max_entries=32)
def pending_overrides(path: str, token: Token, coil: str) -> list[dict[str, Any]]:
    """The coil's overrides that wait for a second person (not in effect yet)."""
    with read_db(path) as db:
        return queries.pending_overrides(db, coil)
