"""Display pieces shared by the console pages: coil summary, crops, gallery, grade and plant panels."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from inspection.records.crops import CropStore

GALLERY_PAGE = 24
GALLERY_COLUMNS = 6
SEVERITY_NAMES = {1: "minor", 2: "major", 3: "critical"}
FLASH_KEY = "flash_message"
PICKER_KEY = "defect_id_box"
REVIEW_STATES = ("unreviewed", "confirmed", "relabelled", "rejected")


def flash(message: str) -> None:
    """Show `message` once, on the next run (actions rerun the page to show fresh data)."""
    st.session_state[FLASH_KEY] = message


def show_flash() -> None:
    message = st.session_state.pop(FLASH_KEY, None)
    if message:
        st.success(message, icon=":material/check_circle:")


def class_names(line_type: str, defects: pd.DataFrame) -> list[str]:
    """The classes a defect of this line type can be relabelled to, plus any already recorded."""
    from inspection.datasets import DATASET_CLASSES, LINE_DATASETS

    known = list(DATASET_CLASSES.get(LINE_DATASETS.get(line_type, ""), ()))
    seen = set(defects["class"]).union(defects["effective_class"]) if len(defects) else set()
    return known + sorted(c for c in seen if c not in known)


def map_extent(header: dict[str, Any], defects: pd.DataFrame) -> tuple[float, float]:
    """(length in m, width in mm) the map spans: the coil's, stretched to every defect."""
    furthest = float(defects["along_mm"].max()) / 1000.0 if len(defects) else 0.0
    widest = float(defects["across_mm"].max()) if len(defects) else 0.0
    length = max(float(header.get("inspected_length_m") or 0.0),
                 float(header["platform"].get("length_m") or 0.0))
    return max(length, furthest, 1.0), max(float(header.get("map_width_mm") or 0.0), widest, 1.0)


def current_grade(grades: pd.DataFrame) -> pd.Series | None:
    """The effective grade: the latest override if any, else the latest automatic grade."""
    if not len(grades):
        return None
    overrides = grades[grades["source"] == "override"]
    return (overrides if len(overrides) else grades).iloc[-1]


def coil_summary(header: dict[str, Any], defects: pd.DataFrame, grades: pd.DataFrame,
                 coverage: dict[str, Any]) -> None:
    show_flash()
    latest = current_grade(grades)
    counted = defects[defects["review_status"] != "rejected"]
    cameras = coverage.get("cameras", [])
    inspected = sum(c["inspected"] for c in cameras)
    lost = sum(c["dropped_worker"] + c["dropped_camera"] for c in cameras)
    cols = st.columns(5)
    cols[0].metric("Grade", latest["grade"] if latest is not None else "-",
                   help=f"{latest['source']} grade" if latest is not None else "not graded yet")
    cols[1].metric("Defects", len(defects), help="all detections; rejected false alarms included")
    cols[2].metric("Counted", len(counted), help="after reviews: rejected false alarms do not count")
    cols[3].metric("Critical", int((counted["severity"] == 3).sum()))
    ended = bool(cameras) and all(c["ended"] for c in cameras)
    cols[4].metric("Coverage", f"{coverage.get('share', 0.0):.2%}" if ended else "in progress",
                   help=f"worst camera; {inspected} frames inspected, {lost} dropped"
                        + ("" if ended else "; the coil has not ended on every camera yet"))
    pending = int((defects["review_status"] == "unreviewed").sum())
    # Escaped: "11:06:40" looks like an :emoji: shortcode to Streamlit's Markdown, which then loads
    # its emoji table (about 260 KB of script) before the coil page is usable (`bench console`).
    first_seen = markdown_text(_time(header["first_seen_ns"]))
    st.caption(f"Line {header['line']} ({header['line_type']}) · first seen {first_seen} · "
               f"{pending} defect(s) not yet reviewed")


def _time(ns: Any) -> str:
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    return dt.datetime.fromtimestamp(int(ns) / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def defect_picker(state_key: str) -> None:
    """The keyboard way to select a defect: type its id (the map and the gallery set it too).

    A text box, not a select box of every defect: on a coil of 5,000 defects the options alone were
    190 KB for the browser to receive and index before the page was usable (`bench console`)."""
    current = st.session_state.get(state_key)
    # Follow a selection made on the map or in the gallery (set before the widget is created).
    st.session_state[PICKER_KEY] = f"#{current}" if current is not None else ""

    def _changed() -> None:
        typed = st.session_state[PICKER_KEY].strip().lstrip("#").strip()
        if typed.isdigit():
            st.session_state[state_key] = int(typed)
        elif not typed:
            st.session_state.pop(state_key, None)

    st.text_input("Defect id", key=PICKER_KEY, placeholder="e.g. 4711, then Enter", on_change=_changed)


def crop_image(crops_dir: Path, sha: Any, width: int = 160, caption: str | None = None) -> None:
    data = CropStore(crops_dir).get(str(sha)) if isinstance(sha, str) and sha else None
    if data is None:
        st.caption("no crop stored" if not sha else "crop pruned by retention")
    else:
        st.image(data, width=width, caption=caption)


def defect_facts(defect_id: int, row: pd.Series) -> None:
    relabel = f" (detected as {row['class']})" if row["effective_class"] != row["class"] else ""
    severity = SEVERITY_NAMES.get(row["severity"], "?")
    by = f" by {row['reviewer']}" if isinstance(row["reviewer"], str) else ""
    guesses = row.get("guesses")
    unnamed = (f"the model could not name it; its guesses: "
               f"{', '.join(f'{c} {p:.2f}' for c, p in guesses)}  \n" if isinstance(guesses, list) and guesses else "")
    st.markdown(
        f"**#{defect_id} {row['effective_class']}**{relabel}  \n{unnamed}"
        f"score {row['score']:.2f} · severity {row['severity']} ({severity})  \n"
        f"{row['surface']} · {row['along_mm'] / 1000:.3f} m along · {row['across_mm']:.0f} mm across  \n"
        f"{_size(row)} · model {row['model_version'] or '?'}  \n"
        f"review: **{row['review_status']}**{by}")


def _size(row: pd.Series) -> str:
    if pd.isna(row["length_mm"]) or pd.isna(row["width_mm"]):
        return "size n/a"
    return f"{row['length_mm']:.0f} x {row['width_mm']:.0f} mm"


def gallery(defects: pd.DataFrame, classes: list[str], crops_dir: Path, state_key: str) -> None:
    """Crops of one page at a time, filtered by class, surface and review state."""
    cols = st.columns([2, 1, 1, 1])
    chosen = cols[0].multiselect("Classes", classes, key="gallery_classes", placeholder="all classes")
    surface = cols[1].selectbox("Surface", ["both", "top", "bottom"], key="gallery_surface")
    review = cols[2].selectbox("Review", ["all", *REVIEW_STATES], key="gallery_review")
    order = cols[3].selectbox("Order", ["position", "severity", "score"], key="gallery_order")
    view = defects
    if chosen:
        view = view[view["effective_class"].isin(chosen)]
    if surface != "both":
        view = view[view["surface"] == surface]
    if review != "all":
        view = view[view["review_status"] == review]
    if order == "severity":
        view = view.sort_values(["severity", "score"], ascending=False)
    elif order == "score":
        view = view.sort_values("score")
    pages = max(1, math.ceil(len(view) / GALLERY_PAGE))
    page = st.number_input(f"Page (of {pages}; {len(view)} crops)", 1, pages, 1, key="gallery_page")
    chunk = view.iloc[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]
    grid = st.columns(GALLERY_COLUMNS)
    for i, row in enumerate(chunk.itertuples(index=False)):
        with grid[i % GALLERY_COLUMNS]:
            crop_image(crops_dir, row.crop_sha256, width=150)
            st.caption(f"#{row.id} **{row.effective_class}** {row.score:.2f} · sev {row.severity}  \n"
                       f"{row.surface} {row.along_mm / 1000:.2f} m · {row.across_mm:.0f} mm  \n"
                       f"{row.review_status}")
            st.button("Select", key=f"gallery_pick_{row.id}", on_click=st.session_state.__setitem__,
                      args=(state_key, int(row.id)))


def grade_panel(grades: pd.DataFrame) -> None:
    """The grade in effect and its reasons; under an override, the automatic grade and its reasons
    stay visible (they say what the strip has, the override only what was decided)."""
    st.subheader("Grade")
    latest = current_grade(grades)
    if latest is None:
        st.info("Not graded yet (grading runs at coil end).")
        return
    _grade_line(latest)
    if latest["source"] != "auto":
        automatic = grades[grades["source"] == "auto"]
        if len(automatic):
            st.markdown("Automatic grade, for reference:")
            _grade_line(automatic.iloc[-1])
    # Lazy (on_change="rerun"): a closed expander's table is neither built nor sent, and the table
    # grid's code is the heaviest thing the browser would load for a coil page opened from a link.
    history_box = st.expander(f"Grade history ({len(grades)} step(s))", expanded=len(grades) > 1,
                              key="grade_history_open", on_change="rerun")
    if not history_box.open:
        return
    with history_box:
        history = grades.assign(reasons=grades["reasons"].map(lambda r: "; ".join(r)),
                                by=[_who(row) for row in grades.itertuples(index=False)])
        st.dataframe(history[["time", "grade", "source", "trigger", "by", "defects_counted", "coverage",
                              "reasons"]], hide_index=True,
                     column_config={"coverage": st.column_config.NumberColumn(format="percent")})


def _who(row: Any) -> str:
    """Who made a grade: the person for an override, the rule set for an automatic grade."""
    if isinstance(row.by, str) and row.by:
        return row.by
    return f"rule set {row.rule_set} {row.rule_version}" if row.source == "auto" and row.rule_set else "automatic"


def _grade_line(row: pd.Series) -> None:
    rule = f" · rule set `{row['rule_set']}` {row['rule_version']}" if row["rule_set"] else ""
    by = f" by {row['by']}" if isinstance(row["by"], str) and row["by"] else ""
    st.markdown(f"**{row['grade']}** ({row['source']}{by}, trigger {row['trigger']}){rule}")
    for reason in row["reasons"] or ["no rule limit exceeded"]:
        st.markdown(f"- {reason}")


def selected_crop(crops_dir: Path, defect_id: int, row: pd.Series) -> None:
    """The selected defect's crop at true proportions with its box and a millimetre scale bar."""
    from inspection.records.report_figures import crop_picture

    sha = row["crop_sha256"]
    data = CropStore(crops_dir).get(str(sha)) if isinstance(sha, str) and sha else None
    # the camera's mm per pixel is not in the row: crop_picture reads it from the box and the defect's size
    picture = crop_picture(data, {**row.to_dict(), "id": defect_id}, (None, None)) if data is not None else None
    if picture is None:
        crop_image(crops_dir, sha, width=320)
    else:
        st.image(picture, width=320, caption="box in the class colour; bar in millimetres")


PLANT_FIELDS = (("Order", "order_no"), ("Customer", "customer"), ("Product spec", "product_spec"),
                ("Steel grade", "steel_grade"), ("Heat", "heat"), ("Slab", "slab_id"),
                ("Thickness (mm)", "thickness_mm"), ("Width (mm)", "width_mm"), ("Length (m)", "length_m"),
                ("Weight (t)", "weight_t"), ("Produced", "produced_at"), ("Shift", "shift"),
                ("Finishing temp (°C)", "finishing_temp_c"), ("Coiling temp (°C)", "coiling_temp_c"),
                ("Speed (m/s)", "speed_m_per_s"))


def plant_panel(platform: dict[str, Any]) -> None:
    """The coil's MES / ERP data (inside the page's "Plant data" expander), two fields per row: beside
    the grade it must not push the map a screen down (16 fields, one per row, were 3x the grade's height)."""
    rows = [(label, platform.get(key)) for label, key in PLANT_FIELDS if platform.get(key) is not None]
    rows += [(str(k), v) for k, v in (platform.get("extra") or {}).items()]
    if not rows:
        st.info("No MES / ERP data imported for this coil.")
        return
    # Markdown, not st.table or st.dataframe: both make the browser load Streamlit's Arrow decoder
    # (about 1.2 MB of script to parse after the page's title shows), the heaviest thing left on a coil
    # page opened from a link once the maps were a canvas (`bench console`); 16 rows need neither.
    st.markdown(markdown_table(rows, fields_per_row=2))
    if platform.get("source") is not None:  # a file path or DSN: too long for a cell, it would widen the table
        st.caption(f"Source: {markdown_text(platform['source'])}")


def markdown_table(rows: list[tuple[str, Any]], fields_per_row: int = 1) -> str:
    """(field, value) pairs as a Markdown table of `fields_per_row` pairs side by side, in reading
    order (left to right, then down); values escaped so that plant data stays text."""
    lines = ["|" + " Field | Value |" * fields_per_row, "|" + " --- | --- |" * fields_per_row]
    for start in range(0, len(rows), fields_per_row):
        pairs = rows[start:start + fields_per_row]
        cells = [f" {markdown_text(label)} | {markdown_text(value)} |" for label, value in pairs]
        cells += ["  |  |"] * (fields_per_row - len(cells))  # the last row's empty pairs
        lines.append("|" + "".join(cells))
    return "\n".join(lines)


def markdown_text(value: Any) -> str:
    """`value` as plain text inside Streamlit Markdown: one line, every character that would start
    markup escaped (`MARKDOWN_SPECIAL`)."""
    text = " ".join(str(value).split())  # no line breaks (inside a table row they would end it)
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIAL else c for c in text)


# Inside a table cell these would start markup: emphasis, code, links, HTML, columns, strike-through,
# LaTeX ($) and Streamlit's :emoji: and :colour[text] shortcodes (:).
MARKDOWN_SPECIAL = set("\\`*_[]<>|~$:")


def process_details(value: dict[str, Any]) -> str:
    """A process's status as a reader wants it: 'messages 1,204 · frames/s 12.5 · pending coils C1, C2'."""
    parts = []
    for key, item in value.items():
        if key in ("pid", "updated") or item in (None, "", [], {}):
            continue
        label = key.replace("_per_s", "/s").replace("_", " ")
        if isinstance(item, bool):
            text = "yes" if item else "no"
        elif isinstance(item, float):
            text = f"{item:,.1f}"
        elif isinstance(item, int):
            text = f"{item:,}"
        elif isinstance(item, list):
            text = ", ".join(str(i) for i in item[:5]) + (f" (+{len(item) - 5})" if len(item) > 5 else "")
        elif isinstance(item, dict):
            text = ", ".join(f"{k} {v}" for k, v in list(item.items())[:5])
        else:
            text = str(item)
        parts.append(f"{label} {text}")
    return " · ".join(parts)[:300]
