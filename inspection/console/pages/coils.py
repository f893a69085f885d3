"""Coils: search and filter by coil, heat, order, customer, steel grade, grade, line and dates."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from inspection.console import data
from inspection.console.context import page_database
from inspection.console.navigation import open_coil

st.title("Coils")
path, token = page_database()
options = data.filter_options(path, token)

with st.container(border=True):
    row1 = st.columns(4)
    coil_text = row1[0].text_input("Coil id starts with", key="f_coil")
    line = row1[1].selectbox("Line", options["line"], index=None, placeholder="any", key="f_line")
    grade = row1[2].selectbox("Grade", options["grade"], index=None, placeholder="any", key="f_grade")
    today = dt.datetime.now(dt.UTC).date()
    dates = row1[3].date_input("Inspected between", value=(), key="f_dates",
                               max_value=today + dt.timedelta(days=1))
    row2 = st.columns(4)
    heat = row2[0].selectbox("Heat", options["heat"], index=None, placeholder="any", key="f_heat")
    order = row2[1].selectbox("Order", options["order_no"], index=None, placeholder="any", key="f_order")
    customer = row2[2].selectbox("Customer", options["customer"], index=None, placeholder="any",
                                 key="f_customer")
    steel = row2[3].selectbox("Steel grade", options["steel_grade"], index=None, placeholder="any",
                              key="f_steel")

since = dates[0] if len(dates) >= 1 else None
until = dates[1] if len(dates) == 2 else None
filters = (("coil", coil_text.strip()), ("line", line), ("grade", grade), ("heat", heat), ("order_no", order),
           ("customer", customer), ("steel_grade", steel), ("since", since), ("until", until))
table = data.coils(path, token, filters)

st.caption(f"{len(table)} coil(s){' (first 1,000 shown)' if len(table) >= 1000 else ''}. "
           "Select a row to open the coil.")
columns = ["coil", "grade", "defects", "coverage", "line", "first_seen", "heat", "order_no", "customer",
           "steel_grade", "thickness_mm", "width_mm", "length_m", "shift"]
event = st.dataframe(
    table[columns], hide_index=True, on_select="rerun", selection_mode="single-row", key="coil_table",
    column_config={
        "coverage": st.column_config.NumberColumn("coverage", format="percent",
                                                  help="inspected share of the coil (worst camera)"),
        "first_seen": st.column_config.DatetimeColumn("inspected", format="YYYY-MM-DD HH:mm"),
        "defects": st.column_config.NumberColumn("defects", help="all detections, before reviews"),
    },
)
rows = event.selection.rows if event is not None else []
if rows:
    open_coil(str(table.iloc[rows[0]]["coil"]))

with st.form("open_coil_form", border=False):
    cols = st.columns([3, 1])
    choice = cols[0].selectbox("Open coil", table["coil"].tolist(), index=None, placeholder="choose a coil",
                               label_visibility="collapsed")
    if cols[1].form_submit_button("Open coil", type="primary") and choice:
        open_coil(choice)
