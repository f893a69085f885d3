"""Cached reads for the Review queue, Analytics and Line pages (`inspection.records.analytics`).

Same caching rule as `data`: keyed on the database path and the change token. The line status
is read uncached (it is refreshed every few seconds and is small). The console runs no SQL
itself: records returns rows, and this module makes them DataFrames.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from inspection.console.context import read_db
from inspection.records import analytics

Token = tuple[int, ...]
QUEUE_COLUMNS = ("defect_id", "coil", "class", "priority", "reason", "surface", "along_mm", "across_mm",
                 "length_mm", "width_mm", "area_mm2", "score", "severity", "crop_sha256", "model_version")


@st.cache_data(show_spinner=False, max_entries=32)
def review_queue(path: str, token: Token, limit: int, coil: str | None, cls: str | None) -> pd.DataFrame:
    with read_db(path) as db:
        rows = analytics.review_queue(db, limit=limit, coil=coil or None, cls=cls or None)
    return pd.DataFrame(rows, columns=list(QUEUE_COLUMNS))


@st.cache_data(show_spinner=False, max_entries=32)
def review_progress(path: str, token: Token) -> dict[str, int]:
    with read_db(path) as db:
        return analytics.review_progress(db)


@st.cache_data(show_spinner=False, max_entries=32)
def queue_filters(path: str, token: Token) -> tuple[list[str], list[str]]:
    """Coils and classes that still have queued, unreviewed defects."""
    with read_db(path) as db:
        return analytics.queue_filters(db)


@st.cache_data(show_spinner=False, max_entries=32)
def pareto(path: str, token: Token, since: str | None, until: str | None, line: str | None) -> pd.DataFrame:
    with read_db(path) as db:
        rows = analytics.pareto(db, since, until, line)
    return pd.DataFrame(rows, columns=["class", "count", "share", "cumulative"])


@st.cache_data(show_spinner=False, max_entries=32)
def coil_stats(path: str, token: Token, since: str | None, until: str | None) -> pd.DataFrame:
    """Per coil length, defects, defects per 1,000 m, plant and process data, and the coil's day."""
    with read_db(path) as db:
        rows = analytics.coil_stats(db, since, until)
        days = analytics.coil_days(db)
    frame = pd.DataFrame(rows, columns=["coil", "line", "shift", "steel_grade", "customer", "heat",
                                        "length_m", "defects", "finishing_temp_c", "coiling_temp_c",
                                        "speed_m_per_s", "defects_per_km"])
    frame["day"] = pd.to_datetime(frame["coil"].map(days))
    return frame


@st.cache_data(show_spinner=False, max_entries=32)
def field_precision(path: str, token: Token) -> pd.DataFrame:
    with read_db(path) as db:
        rows = analytics.field_precision(db)
    return pd.DataFrame(rows, columns=["class", "confirmed", "relabelled", "rejected", "reviewed",
                                       "precision"])


@st.cache_data(show_spinner=False, max_entries=32)
def confirmations_by_model(path: str, token: Token) -> pd.DataFrame:
    with read_db(path) as db:
        rows = analytics.confirmations_by_model(db)
    return pd.DataFrame(rows, columns=["model_version", "model_sha256", "confirmed", "relabelled", "rejected",
                                       "reviewed", "confirmed_share"])


def line_status(path: str) -> dict[str, Any]:
    """Uncached: the Line page polls it."""
    with read_db(path) as db:
        status = analytics.line_status(db, alarms=15)
        for line in status["lines"]:
            line["megapixels_per_frame"] = analytics.frame_megapixels(db, line["current_coil"])
        status["critical"] = analytics.latest_critical(db)
    return status
