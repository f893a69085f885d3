"""Coil detail: defect map (top | bottom), selected crop and review, gallery, grade, plant data, report."""

from __future__ import annotations

import streamlit as st

from inspection.console import data, forms, widgets
from inspection.console.context import page_database, sources
from inspection.console.defect_map import map_chart, periodic_members, picked_id
from inspection.console.navigation import SELECTED_COIL_KEY, selected_coil

SELECTED_DEFECT_KEY = "selected_defect"

st.title("Coil detail")
path, token = page_database()
known = data.coil_ids(path, token)
current = selected_coil()
if current and current not in known:
    known = [current, *known]
coil = st.selectbox("Coil", known, index=known.index(current) if current in known else None,
                    placeholder="choose a coil", key="detail_coil_box")
if coil is None:
    st.info("Choose a coil here, or open one from the Coils page.")
    st.stop()
if coil != st.session_state.get(SELECTED_COIL_KEY):
    st.session_state[SELECTED_COIL_KEY] = coil
    st.session_state.pop(SELECTED_DEFECT_KEY, None)
st.query_params["coil"] = coil

header = data.coil_header(path, token, coil)
if header is None:
    st.error(f"Coil {coil!r} is not in this database.")
    st.stop()
defects = data.coil_defects(path, token, coil)
alarms = data.coil_alarms(path, token, coil)
grades = data.grade_history(path, token, coil)
defects["periodic"] = periodic_members(defects, alarms)
classes = widgets.class_names(header["line_type"], defects)

widgets.coil_summary(header, defects, grades, data.coil_coverage(path, token, coil))

# -- defect map ---------------------------------------------------------------------------
length_m, width_mm = widgets.map_extent(header, defects)
hide_rejected = st.toggle("Hide rejected false alarms", key="hide_rejected")
shown = defects[defects["review_status"] != "rejected"] if hide_rejected else defects
selected = st.session_state.get(SELECTED_DEFECT_KEY)


def _picked(chart_key: str) -> None:
    defect = picked_id(st.session_state.get(chart_key))
    if defect is not None:
        st.session_state[SELECTED_DEFECT_KEY] = defect


left, right = st.columns(2)
for column, surface in ((left, "top"), (right, "bottom")):
    chart = map_chart(shown, alarms, surface, classes, length_m, width_mm, selected)
    column.altair_chart(chart, on_select=lambda k=f"map_{surface}": _picked(k), key=f"map_{surface}",
                        selection_mode="pick", width="stretch")
periodic = alarms[alarms["kind"] == "periodic"]
for alarm in periodic.itertuples():
    st.warning(f"Periodic defect: {alarm.message}", icon=":material/autorenew:")

# -- selected defect and review actions -------------------------------------------------------
st.subheader("Selected defect")
widgets.defect_picker(defects, SELECTED_DEFECT_KEY)
defect_id = st.session_state.get(SELECTED_DEFECT_KEY)
if defect_id is not None and defect_id in set(defects["id"]):
    row = defects.set_index("id").loc[defect_id]
    crop_col, form_col = st.columns([1, 2])
    with crop_col:
        widgets.crop_image(sources().crops_dir, row["crop_sha256"], width=320)
        widgets.defect_facts(defect_id, row)
    with form_col:
        forms.review_form(path, coil, defect_id, row, classes, form_key="detail_review")
else:
    st.caption("Click a point on the map, pick a defect in the gallery, or enter its id above.")

# -- gallery ------------------------------------------------------------------------------
st.subheader("Crop gallery")
widgets.gallery(defects, classes, sources().crops_dir, SELECTED_DEFECT_KEY)

# -- grade, plant data, report ---------------------------------------------------------------
grade_col, plant_col = st.columns(2)
with grade_col:
    widgets.grade_panel(grades)
    forms.pending_overrides_panel(path, coil, data.pending_overrides(path, token, coil))
    forms.override_form(path, coil)
    reviews = data.coil_reviews(path, token, coil)
    with st.expander(f"Reviews of this coil ({len(reviews)})"):
        if len(reviews):
            st.dataframe(reviews, hide_index=True)
        else:
            st.caption("No review yet.")
with plant_col:
    widgets.plant_panel(header["platform"])
    forms.report_downloads(path, token, coil)
