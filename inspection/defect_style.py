"""How defects and grades look wherever they are drawn: one colour per class, per grade, and the
defect map's axes.

The console's coil map (a canvas, `inspection.console.map_data` and `static/defect_map/`) and the PDF coil report
(matplotlib, `inspection.records.report`) both read this module, so a class has the same colour
and the map the same orientation on screen and on paper. Pure data: no plotting library here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Vega's "tableau10": the console's colours before this table existed (a hot line's classes kept theirs).
TABLEAU10 = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6",
             "#9d755d", "#bab0ac")

# Fixed per class name, never per position in a list: a class keeps its colour whatever else the
# coil holds. Hot and cold classes never share a map, so the two sets reuse the palette; the same
# kind of defect on both (inclusion / inclusions, pitted_surface / pits, scratches / linear) shares
# a colour.
CLASS_COLOURS: dict[str, str] = {
    # hot strip (NEU-DET)
    "crazing": "#4c78a8",
    "inclusion": "#f58518",
    "patches": "#e45756",
    "pitted_surface": "#72b7b2",
    "rolled-in_scale": "#54a24b",
    "scratches": "#eeca3b",
    # cold strip (CR7-DET)
    "inclusions": "#f58518",
    "dents": "#4c78a8",
    "oil spots": "#ff9da6",
    "pits": "#72b7b2",
    "punching": "#e45756",
    "linear": "#eeca3b",
    "macular": "#9d755d",
    # a defect the model could not name
    "unknown": "#b279a2",
}

GRADE_COLOURS: dict[str, str] = {"prime": "#2ca02c", "secondary": "#bcbd22", "downgrade": "#ff7f0e",
                                 "reject": "#d62728", "hold": "#7f7f7f"}
NOT_GRADED_COLOUR = "#c7c7c7"


def class_colour(name: str) -> str:
    """The class's colour (``#rrggbb``); a class outside the table gets a stable one from the palette
    (by a hash of its name, so it is the same in every process and on every page)."""
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return TABLEAU10[digest[0] % len(TABLEAU10)]


def rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` as (r, g, b) in 0..255."""
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@dataclass(frozen=True)
class MapAxis:
    """One axis of the coil defect map: the field it plots and its title."""

    field: str
    title: str


# The coil map: length along x (the strip runs left to right, head at 0), width across y (drive
# side at 0, at the bottom). A coil is far longer than wide, so length goes on the long axis.
MAP_X = MapAxis("along_m", "along the strip (m from head)")
MAP_Y = MapAxis("across_mm", "across (mm from drive side)")
SEVERITY_AREAS = (30, 90, 220)  # marker area (px^2 on screen) for severity 1 (minor), 2 (major), 3 (critical)
