"""The coil defect map: length along x across, one chart per surface, selectable points.

Colour is the class a defect counts under (after relabels), size is severity, rejected false
alarms are drawn hollow and faint, the selected defect gets a black ring, and periodic defects
(roll marks) are marked by a dashed line at their position across with pitch and roll diameter
in the tooltip, their member defects by a diamond. All points are drawn: nothing is downsampled.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from inspection.defect_style import MAP_X, MAP_Y, SEVERITY_AREAS, class_colour

SELECTION = "pick"
SEVERITY_SIZES = SEVERITY_AREAS  # marker area for severity 1 (minor), 2 (major), 3 (critical)


def periodic_members(defects: pd.DataFrame, alarms: pd.DataFrame) -> pd.Series:
    """True for defects that belong to a periodic alarm (the ids the recorder's finding listed)."""
    member_ids: set[int] = set()
    periodic = alarms[alarms["kind"] == "periodic"] if len(alarms) else alarms
    for details in periodic["details"] if len(periodic) else []:
        if isinstance(details, dict):
            member_ids.update(int(i) for i in details.get("defect_ids", []))
    return defects["id"].isin(member_ids)


def map_chart(defects: pd.DataFrame, alarms: pd.DataFrame, surface: str, classes: list[str],
              length_m: float, width_mm: float, selected: int | None) -> alt.LayerChart:
    """The map of one surface; clicking a point selects it (selection parameter `pick` on `id`)."""
    # Only the columns the chart uses travel to the browser (the spec carries its data as Arrow):
    # categories, small numbers, and the opacity and the selection ring as values computed here, not
    # as per-point expressions the browser's Vega interpreter evaluates for thousands of points.
    on_surface = defects[defects["surface"] == surface]
    rejected = on_surface["review_status"] == "rejected"
    points = pd.DataFrame({
        "id": on_surface["id"].astype("int32"), "along_m": (on_surface["along_mm"] / 1000.0).round(3),
        "across_mm": on_surface["across_mm"].round(1),
        "effective_class": pd.Categorical(on_surface["effective_class"]),
        "severity": on_surface["severity"].astype("int8"), "score": on_surface["score"].round(3),
        "status": pd.Categorical(on_surface["review_status"]),
        "shape": pd.Categorical(on_surface["periodic"].map({True: "periodic", False: "single"})),
        "opacity": rejected.map({True: 0.25, False: 0.85}).astype("float32"),
        "ring": pd.Categorical((on_surface["id"] == selected).map({True: "black", False: None}),
                               categories=["black"])})
    pick = alt.selection_point(name=SELECTION, fields=["id"], on="click", clear="dblclick")
    # Axes and class colours come from `inspection.defect_style`, which the PDF report draws with too.
    x = alt.X(f"{MAP_X.field}:Q", title=MAP_X.title, scale=alt.Scale(domain=[0, length_m]))
    y = alt.Y(f"{MAP_Y.field}:Q", title=MAP_Y.title, scale=alt.Scale(domain=[0, width_mm]))
    base = alt.Chart(points).mark_point(filled=True).encode(
        x=x, y=y,
        color=alt.Color("effective_class:N", title="class", scale=alt.Scale(domain=classes,
                                                                            range=[class_colour(c) for c in classes])),
        size=alt.Size("severity:Q", title="severity",
                      scale=alt.Scale(domain=[1, 3], range=list(SEVERITY_SIZES)),
                      legend=alt.Legend(values=[1, 2, 3], format="d")),
        shape=alt.Shape("shape:N", title="pattern", scale=alt.Scale(domain=["single", "periodic"],
                                                                   range=["circle", "diamond"])),
        opacity=alt.Opacity("opacity:Q", scale=None, legend=None),
        stroke=alt.Stroke("ring:N", scale=None, legend=None),
        strokeWidth=alt.value(2),
        tooltip=[alt.Tooltip("id:Q", title="defect"), alt.Tooltip("effective_class:N", title="class"),
                 alt.Tooltip("score:Q", format=".2f"), "severity:Q",
                 alt.Tooltip("along_m:Q", title="along (m)", format=".2f"),
                 alt.Tooltip("across_mm:Q", title="across (mm)", format=".0f"),
                 alt.Tooltip("status:N", title="review")],
    ).add_params(pick)
    layers: list[Any] = [base]
    periodic = alarms[(alarms["kind"] == "periodic") & (alarms["surface"].fillna(surface) == surface)] \
        if len(alarms) else alarms
    if len(periodic):
        rules = alt.Chart(periodic).mark_rule(strokeDash=[6, 4], color="black", opacity=0.6).encode(
            y="across_mm:Q",
            tooltip=[alt.Tooltip("class:N", title="periodic"), alt.Tooltip("pitch_mm:Q", format=".0f"),
                     alt.Tooltip("roll_diameter_mm:Q", title="roll diameter (mm)", format=".0f"),
                     alt.Tooltip("count:Q", title="repeats")],
        )
        layers.append(rules)
    # Canvas, not SVG: thousands of markers as DOM nodes make the page slow to draw and to scroll.
    return alt.layer(*layers).properties(height=380, title=f"{surface} surface ({len(points)} defects)",
                                         usermeta={"embedOptions": {"renderer": "canvas"}})


def picked_id(state: Any) -> int | None:
    """The defect id a chart selection event carries, if any."""
    try:
        values = state["selection"][SELECTION]
    except (KeyError, TypeError):
        return None
    if isinstance(values, list) and values and isinstance(values[0], dict) and "id" in values[0]:
        return int(values[0]["id"])
    return None
