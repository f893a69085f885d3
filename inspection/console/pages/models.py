"""Models: the registry, read-only for inspectors (promote / rollback / shadow are CLI actions), and
what a candidate running in shadow disagreed on (`shadow_view`)."""

from __future__ import annotations

import streamlit as st

from inspection.console import shadow_view
from inspection.console.auth import page_needs
from inspection.console.models_view import registry_root, registry_snapshot
from inspection.errors import SteelInspectError
from inspection.frame import LINE_TYPES

st.title("Models")
page_needs("models", "The Models page")
st.caption(f"Registry `{registry_root()}` · read-only here; ML engineers promote and roll back with "
           "`steel-inspect models promote VERSION` / `rollback LINE_TYPE`.")
try:
    snapshot = registry_snapshot()
except SteelInspectError as exc:
    st.error(f"Cannot read the model registry: {exc}")
    st.stop()

cols = st.columns(len(LINE_TYPES))
for column, line_type in zip(cols, LINE_TYPES, strict=True):
    active = snapshot["active"][line_type]
    since = snapshot["since"][line_type]
    column.metric(f"Active {line_type} model", active or "none")
    if since:
        column.caption(f"since {since.get('time')} ({since.get('action')} by {since.get('by')}"
                       + (f": {since['reason']}" if since.get("reason") else "") + ")")

st.subheader("Versions")
versions = snapshot["versions"]
if not len(versions):
    st.info("No model is registered yet.")
else:
    st.dataframe(versions, hide_index=True, column_config={
        "map50": st.column_config.NumberColumn("mAP@0.5 (test)", format="%.3f"),
        "map50_95": st.column_config.NumberColumn("mAP@0.5:0.95", format="%.3f"),
        "detection_rate": st.column_config.NumberColumn("detection rate", format="%.3f"),
        "image_accuracy": st.column_config.NumberColumn("image accuracy", format="%.3f"),
        "false_detections_per_image": st.column_config.NumberColumn("false det./image", format="%.2f"),
    })
    choice = st.selectbox("Manifest of version", versions["version"].tolist(), index=None,
                          placeholder="choose a version to see its full manifest")
    if choice:
        st.json(snapshot["details"][choice], expanded=1)

# The registry's history keys, in the order an engineer reads an entry, with words for headers.
HISTORY_COLUMNS = {"time": "time", "action": "action", "line_type": "line type", "version": "version",
                   "previous": "previous version", "by": "by", "reason": "reason"}
st.subheader("Promotions and rollbacks")
history = snapshot["history"]
if len(history):
    st.dataframe(history.iloc[::-1], hide_index=True, column_order=tuple(HISTORY_COLUMNS),
                 column_config={key: st.column_config.TextColumn(label) for key, label in HISTORY_COLUMNS.items()})
else:
    st.caption("No promotion recorded yet.")

shadow_view.show(snapshot, LINE_TYPES)
