"""Review queue: one crop at a time, highest priority first, with keyboard shortcuts."""

from __future__ import annotations

import streamlit as st

from inspection.console import data, forms, stats, widgets
from inspection.console.auth import missing_permission
from inspection.console.context import page_database, sources
from inspection.console.navigation import open_coil

SKIPPED_KEY = "queue_skipped"
REASONS = {"unknown": "the model could not name it", "high_severity": "critical severity",
           "low_confidence": "low confidence", "sample": "random sample (estimates precision)",
           "disagreement": "the shadow model missed it or named it otherwise"}

st.title("Review queue")
path, token = page_database()
widgets.show_flash()
progress = stats.review_progress(path, token)
done, queued = progress["reviewed"], progress["queued"]
figures = st.columns(3)
figures[0].metric("Reviewed", f"{done} of {queued}", help="queued defects an inspector has reviewed")
figures[1].metric("Waiting", progress["waiting"], help="queued defects not reviewed yet")
figures[2].metric("Not queued", progress["not_queued"],
                  help="detections of these coils left out of the queue (sampled out): unknown and critical "
                       "defects are always queued, the rest only as a random sample and, first where a shadow "
                       "model disagreed, the most uncertain detections, within [records] review_budget_per_hour")
st.progress(done / queued if queued else 1.0, text=f"{done / queued:.0%} of the queue reviewed" if queued else
            "nothing queued")

coils, classes = stats.queue_filters(path, token)
cols = st.columns(2)
coil = cols[0].selectbox("Coil", coils, index=None, placeholder="all coils", key="queue_coil")
cls = cols[1].selectbox("Class", classes, index=None, placeholder="all classes", key="queue_class")
skipped: set[int] = st.session_state.setdefault(SKIPPED_KEY, set())
queue = stats.review_queue(path, token, 200 + len(skipped), coil, cls)
waiting = queue[~queue["defect_id"].isin(skipped)]
if not len(waiting):
    if skipped:
        st.info(f"Nothing left but the {len(skipped)} defect(s) you skipped.")
        if st.button("Bring skipped defects back"):
            skipped.clear()
            st.rerun()
    else:
        st.success("The review queue is empty.", icon=":material/task_alt:")
    st.stop()

item = waiting.iloc[0]
defect_id = int(item["defect_id"])
if (hint := missing_permission("review", "A review")) is not None:
    st.warning(hint)
st.caption(f"Shortcuts: **A** confirm · **L** relabel (pick the class first) · **X** reject · **S** skip. "
           f"{len(waiting)} shown in this view.")
crop_col, info_col = st.columns([1, 2])
with crop_col:
    widgets.crop_image(sources().crops_dir, item["crop_sha256"], width=300)
with info_col:
    st.markdown(
        f"### #{defect_id} {item['class']} · score {item['score']:.2f} · severity {item['severity']}\n"
        f"Coil **{item['coil']}** · {item['surface']} · {item['along_mm'] / 1000:.2f} m along · "
        f"{item['across_mm']:.0f} mm across · model {item['model_version'] or '?'}  \n"
        f"Queued for: {REASONS.get(item['reason'], item['reason'])} (priority {item['priority']:.2f})")
    defects = data.coil_defects(path, token, str(item["coil"]))
    header = data.coil_header(path, token, str(item["coil"]))
    classes_all = widgets.class_names(header["line_type"] if header else "hot", defects)
    row = defects.set_index("id").loc[defect_id]
    forms.review_form(path, str(item["coil"]), defect_id, row, classes_all, form_key="queue_review",
                      shortcuts=True)
    nav = st.columns(2)
    if nav[0].button("Skip", shortcut="S", key="queue_skip"):
        skipped.add(defect_id)
        st.rerun()
    if nav[1].button("Open the coil", key="queue_open"):
        open_coil(str(item["coil"]))
