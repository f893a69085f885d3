"""Forms that act: review a defect, override a grade, approve another person's override, download the report.

Each action needs a signed-in user whose role allows it (`auth`); otherwise it is refused with a
message and nothing is written. After a write the page reruns, and the changed audit head
invalidates every cached read, so the new state shows at once.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from inspection.console import actions
from inspection.console.context import read_db, sources
from inspection.console.widgets import flash
from inspection.errors import SteelInspectError
from inspection.records import report
from inspection.records.grading import ALL_GRADES, load_rules

ACTION_LABELS = {"confirm": "Confirm", "relabel": "Relabel", "reject": "Reject as false alarm"}
SHORTCUTS = {"confirm": "A", "relabel": "L", "reject": "X"}  # C and R are reserved by Streamlit
DONE = {"confirm": "confirmed", "reject": "rejected as false alarm"}


def review_form(path: str, coil: str, defect_id: int, row: pd.Series, classes: list[str], form_key: str,
                shortcuts: bool = False) -> None:
    """Confirm / relabel / reject one defect; reruns the page once the review is recorded."""
    # Relabel starts at the defect's own class: a form sent without a choice must not relabel it as
    # whatever class happens to come first in the list.
    current = row["effective_class"]
    options = classes if current in classes else [current, *classes]
    with st.form(form_key, clear_on_submit=True):
        new_class = st.selectbox("New class (for relabel)", options, index=options.index(current),
                                 key=f"{form_key}_class")
        reason = st.text_input("Reason (optional)", key=f"{form_key}_reason")
        cols = st.columns(3)
        pressed = {action: cols[i].form_submit_button(
                       ACTION_LABELS[action], type="primary" if action == "confirm" else "secondary",
                       shortcut=SHORTCUTS[action] if shortcuts else None, key=f"{form_key}_{action}")
                   for i, action in enumerate(ACTION_LABELS)}
    action = next((a for a, hit in pressed.items() if hit), None)
    if action is None:
        return
    if action == "relabel" and new_class == current:
        st.error(f"Relabel refused: the defect is already {current}; choose its new class, or Confirm.",
                 icon=":material/block:")
        return
    try:
        review_id = actions.review(path, defect_id, action, new_class, reason)
    except (SteelInspectError, sqlite3.OperationalError) as exc:  # refused, or the database stayed locked
        st.error(str(exc), icon=":material/block:")
        return
    what = f"relabelled as {new_class}" if action == "relabel" else DONE[action]
    flash(f"Defect #{defect_id} of coil {coil} {what} (review #{review_id}).")
    st.rerun()


def override_form(path: str, coil: str) -> None:
    with st.expander("Override the grade"), st.form("override_form", clear_on_submit=True):
        grade = st.selectbox("New grade", ALL_GRADES, key="override_grade")
        reason = st.text_area("Reason (required)", key="override_reason",
                              placeholder="why the automatic grade does not stand")
        submitted = st.form_submit_button("Override grade")
    if not submitted:
        return
    if not reason.strip():
        st.error("Override refused: a grade override needs a reason.", icon=":material/block:")
        return
    try:
        outcome = actions.override_grade(path, coil, grade, reason)
    except (SteelInspectError, sqlite3.OperationalError) as exc:  # refused, or the database stayed locked
        st.error(str(exc), icon=":material/block:")
        return
    if outcome.pending:
        flash(f"Coil {coil}: override to {grade} recorded as pending (#{outcome.override_id}): a held coil "
              "becomes prime only when a second quality engineer or admin approves it.")
    else:
        flash(f"Coil {coil}: grade overridden to {grade}.")
    st.rerun()


def pending_overrides_panel(path: str, coil: str, pending: list[dict[str, Any]]) -> None:
    """Each override of the coil that waits for a second person, with Approve / Decline."""
    for item in pending:
        override_id = item["override_id"]
        st.warning(f"Pending override #{override_id} to **{item['grade']}** by {item['requested_by']} "
                   f"({item['time']}): {item['reason']}  \nNot in effect: a second quality engineer or admin "
                   "must approve it.", icon=":material/group:")
        cols = st.columns(2)
        approve = cols[0].button("Approve", key=f"approve_override_{override_id}", type="primary")
        decline = cols[1].button("Decline", key=f"decline_override_{override_id}")
        if not (approve or decline):
            continue
        try:
            if approve:
                actions.approve_override(path, override_id)
            else:
                actions.decline_override(path, override_id)
        except (SteelInspectError, sqlite3.OperationalError) as exc:
            st.error(str(exc), icon=":material/block:")
            return
        flash(f"Coil {coil}: override #{override_id} to {item['grade']} "
              + ("approved: it is in effect now." if approve else "declined: it never took effect."))
        st.rerun()


def report_downloads(path: str, token: Any, coil: str) -> None:
    """The coil report (records `report` module) as PDF, CSV or JSON, built only when downloaded."""
    st.subheader("Coil report")
    cols = st.columns(3)
    for column, fmt, mime in ((cols[0], "pdf", "application/pdf"), (cols[1], "csv", "text/csv"),
                              (cols[2], "json", "application/json")):
        column.download_button(
            f"Download {fmt.upper()}", data=lambda f=fmt: coil_report(path, token, coil, f),
            file_name=f"coil-{coil}.{fmt}", mime=mime, key=f"report_{fmt}", on_click="ignore")


@st.cache_data(show_spinner=False, max_entries=8)
def coil_report(path: str, token: Any, coil: str, fmt: str) -> bytes:
    """The report file's bytes, rendered by the records report module into a temporary folder (with
    the console's crops, and the line's rule set deciding which defects count)."""
    src = sources()
    with read_db(path) as db:
        content = report.collect(db, coil, load_rules(src.line.records.rules) if src.line else None)
    with tempfile.TemporaryDirectory(prefix="coil-report-") as tmp:
        return report.write(content, fmt, Path(tmp) / f"coil.{fmt}", crops_dir=src.crops_dir).read_bytes()
