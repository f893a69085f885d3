"""Coil detail, built for the decision: grade, reasons and coverage first; the defect map beside the selected
defect's crop (box and millimetre scale) and its review form; then the gallery, overrides and the report."""

from __future__ import annotations

import streamlit as st

from inspection.console import data, forms, widgets
from inspection.console.context import page_database, sources
from inspection.console.defect_map import defect_map, take_click
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
classes = widgets.class_names(header["line_type"], defects)

widgets.coil_summary(header, defects, grades, data.coil_coverage(path, token, coil))
grade_col, plant_col = st.columns([1, 1])
with grade_col:
    widgets.grade_panel(grades)  # the decision first: grade, its reasons, the automatic grade under an override
    forms.pending_overrides_panel(path, coil, data.pending_overrides(path, token, coil))
with plant_col, st.expander("Plant data", expanded=True):
    widgets.plant_panel(header["platform"])
periodic = alarms[alarms["kind"] == "periodic"]
for alarm in periodic.itertuples():
    st.warning(f"Periodic defect: {alarm.message}", icon=":material/autorenew:")

# -- defect map beside the selected defect -----------------------------------------------------
length_m, width_mm = widgets.map_extent(header, defects)


@st.fragment
def map_and_selection() -> None:
    """A click on the map reruns only this part: the crop and the review form appear beside the map
    without the page (summary, gallery, plant data) being rebuilt."""
    take_click(SELECTED_DEFECT_KEY)  # before anything is drawn: the map rings, the box shows the new selection
    map_col, pick_col = st.columns([3, 2])
    with map_col:
        hide_rejected = st.toggle("Hide rejected false alarms", key="hide_rejected")
        meta, points = data.coil_map(path, token, coil, tuple(classes), length_m, width_mm)
        defect_map(meta, points, st.session_state.get(SELECTED_DEFECT_KEY), hide_rejected)
    with pick_col:
        st.subheader("Selected defect")
        widgets.defect_picker(SELECTED_DEFECT_KEY)
        defect_id = st.session_state.get(SELECTED_DEFECT_KEY)
        if defect_id is not None and defect_id not in set(defects["id"]):
            st.warning(f"No defect #{defect_id} on coil {coil}.")
        elif defect_id is not None:
            row = defects.set_index("id").loc[defect_id]
            widgets.selected_crop(sources().crops_dir, defect_id, row)
            widgets.defect_facts(defect_id, row)
            forms.review_form(path, coil, defect_id, row, classes, form_key="detail_review")
        else:
            st.caption("Click a point on the map, pick a defect in the gallery, or enter its id above.")


map_and_selection()

# -- gallery, overrides, reviews, report --------------------------------------------------------
# Closed until asked for, and only then built (on_change="rerun"): its 24 crops with captions and
# buttons were half of what a browser had to do to open a coil from a link (`bench console`).
gallery_box = st.expander(f"Crop gallery ({len(defects)} defects, page by page)", key="gallery_open",
                          on_change="rerun")
if gallery_box.open:
    with gallery_box:
        widgets.gallery(defects, classes, sources().crops_dir, SELECTED_DEFECT_KEY)
action_col, report_col = st.columns(2)
with action_col:
    forms.override_form(path, coil)
    reviews = data.coil_reviews(path, token, coil)
    reviews_box = st.expander(f"Reviews of this coil ({len(reviews)})", key="coil_reviews_open", on_change="rerun")
    if reviews_box.open:  # built only when opened (see widgets.grade_panel)
        with reviews_box:
            if len(reviews):
                st.dataframe(reviews, hide_index=True)
            else:
                st.caption("No review yet.")
with report_col:
    forms.report_downloads(path, token, coil)
