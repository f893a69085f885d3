"""What the coil defect map draws, packed for the browser (`static/defect_map/`).

Colour is the class a defect counts under (after relabels), size is severity, rejected false
alarms are drawn hollow and faint, periodic defects (roll marks) get a dashed line at their
position across (pitch and roll diameter in its tooltip) and their member defects a diamond.
All points are drawn: nothing is downsampled.

The points travel as one little-endian byte string of columns (`POINT_COLUMNS`, in this order),
not as JSON or Arrow: the browser views it with typed arrays, so 5,000 defects are 100 KB to
receive and nothing to parse, and no Arrow decoder (the heaviest script Streamlit loads) is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from inspection.defect_style import MAP_X, MAP_Y, SEVERITY_AREAS, class_colour

# (name, numpy dtype): the byte layout static/defect_map/data.js decodes, column after column.
POINT_COLUMNS = (("id", "<i4"), ("x", "<f4"), ("y", "<f4"), ("score", "<f4"),
                 ("cls", "u1"), ("severity", "u1"), ("status", "u1"), ("flags", "u1"))
BYTES_PER_POINT = sum(int(dtype[-1]) for _, dtype in POINT_COLUMNS)
STATUSES = ("unreviewed", "confirmed", "relabelled", "rejected")
PERIODIC_FLAG, BOTTOM_FLAG = 1, 2  # bits of `flags`


def periodic_members(defects: pd.DataFrame, alarms: pd.DataFrame) -> pd.Series:
    """True for defects that belong to a periodic alarm (the ids the recorder's finding listed)."""
    member_ids: set[int] = set()
    periodic = alarms[alarms["kind"] == "periodic"] if len(alarms) else alarms
    for details in periodic["details"] if len(periodic) else []:
        if isinstance(details, dict):
            member_ids.update(int(i) for i in details.get("defect_ids", []))
    return defects["id"].isin(member_ids)


def pack(defects: pd.DataFrame, alarms: pd.DataFrame, classes: list[str], length_m: float, width_mm: float,
         version: str) -> tuple[dict[str, Any], bytes]:
    """(meta, points) of the map of both surfaces: meta is small JSON (classes and their colours,
    extent, axis titles, periodic lines), points the packed columns. `version` changes whenever the
    points can have changed, so the browser decodes them again only then."""
    names = list(classes) + sorted(set(defects["effective_class"]) - set(classes))
    statuses = list(STATUSES) + sorted(set(defects["review_status"]) - set(STATUSES))
    if len(names) > 255 or len(statuses) > 255:
        raise ValueError(f"defect map: {len(names)} classes / {len(statuses)} review states, at most 255 each")
    flags = (periodic_members(defects, alarms).to_numpy(np.uint8) * PERIODIC_FLAG
             + (defects["surface"] == "bottom").to_numpy(np.uint8) * BOTTOM_FLAG)
    columns = {
        "id": defects["id"], "x": defects["along_mm"] / 1000.0, "y": defects["across_mm"],
        "score": defects["score"], "cls": defects["effective_class"].map(names.index),
        "severity": defects["severity"].clip(1, 3), "status": defects["review_status"].map(statuses.index),
        "flags": flags,
    }
    points = b"".join(np.ascontiguousarray(np.asarray(columns[name], dtype=dtype)).tobytes()
                      for name, dtype in POINT_COLUMNS)
    present = set(defects["effective_class"])
    meta = {"n": len(defects), "version": version, "length_m": float(length_m), "width_mm": float(width_mm),
            "classes": names, "colours": [class_colour(c) for c in names],
            "legend_classes": [c for c in names if c in present], "statuses": statuses,
            "severity_areas": list(SEVERITY_AREAS), "x_title": MAP_X.title, "y_title": MAP_Y.title,
            "periodic": periodic_lines(alarms)}
    return meta, points


def periodic_lines(alarms: pd.DataFrame) -> list[dict[str, Any]]:
    """One dashed line per periodic alarm; an alarm without a surface is drawn on both."""
    if not len(alarms):
        return []
    lines = []
    for alarm in alarms[alarms["kind"] == "periodic"].to_dict("records"):
        lines.append({"surface": alarm["surface"] if isinstance(alarm["surface"], str) else None,
                      "across_mm": float(alarm["across_mm"]), "cls": str(alarm["class"]),
                      "pitch_mm": _number(alarm["pitch_mm"]), "roll_diameter_mm": _number(alarm["roll_diameter_mm"]),
                      "count": int(alarm["count"]) if pd.notna(alarm["count"]) else 0})
    return lines


def _number(value: Any) -> float | None:
    return float(value) if value is not None and pd.notna(value) else None
