"""The coil defect map on the coil page: a canvas drawn by a small custom component
(`static/defect_map/`: plain HTML and JavaScript modules, no build step, nothing fetched from
outside the machine) instead of a Vega-Lite chart.

Why: on a coil of 5,000 defects the Vega-Lite maps were most of the time a fresh browser needed to
open the coil page (`bench console`): 1.5 MB of Vega and Arrow scripts to load and compile, then a
scenegraph of every point to build. The canvas draws the same points in milliseconds.

A click on a marker (or Enter on the defect chosen with the arrow keys) returns ``{"id", "at"}``;
`at` (the browser's clock) makes a second click on the same defect a new value, so it selects again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

MAP_KEY = "defect_map"
HEIGHT = 760  # css px: the legend and two panels of about 370 px, as the two Vega-Lite maps were
_COMPONENT = components.declare_component("defect_map", path=str(Path(__file__).parent / "static" / "defect_map"))


def defect_map(meta: dict[str, Any], points: bytes, selected: int | None, hide_rejected: bool) -> Any:
    """Draw the map (both surfaces); returns the component's value: the last click, or None."""
    # The key keeps one component instance across reruns: new arguments redraw the canvas in
    # place instead of loading a new frame. `height` sizes the frame before its script has run.
    return _COMPONENT(meta=meta, points=points, selected=selected, hide_rejected=hide_rejected, height=HEIGHT,
                      key=MAP_KEY, default=None)


def take_click(selected_key: str, seen_key: str = "defect_map_seen") -> None:
    """A click the map reported since the last run becomes the selection (a click is handled once:
    the map keeps reporting its last value on every rerun, and the id box or the gallery may have
    selected another defect since)."""
    value = st.session_state.get(MAP_KEY)
    defect = clicked_id(value)
    if defect is None or value == st.session_state.get(seen_key):
        return
    st.session_state[seen_key] = value
    st.session_state[selected_key] = defect


def clicked_id(value: Any) -> int | None:
    """The defect id in a map value (``{"id": 4711, "at": ...}``), if it is one."""
    if isinstance(value, dict) and isinstance(value.get("id"), int) and not isinstance(value["id"], bool):
        return value["id"]
    return None
