"""The console's pages and the links between them (`open_coil` from any page)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from inspection.console.auth import login_sidebar
from inspection.console.context import ConsoleError, sources

PAGES_DIR = Path(__file__).resolve().parent / "pages"
# (file, title, icon, url path); the first is the default page.
PAGES = (
    ("line.py", "Line", ":material/monitor_heart:", "line"),
    ("coils.py", "Coils", ":material/table_rows:", "coils"),
    ("coil_detail.py", "Coil detail", ":material/scatter_plot:", "coil"),
    ("review_queue.py", "Review queue", ":material/fact_check:", "review"),
    ("analytics.py", "Analytics", ":material/bar_chart:", "analytics"),
    ("models.py", "Models", ":material/model_training:", "models"),
)
SELECTED_COIL_KEY = "selected_coil"


def _page(name: str) -> st.Page:
    for file, title, icon, url in PAGES:
        if file == name:
            return st.Page(PAGES_DIR / file, title=title, icon=icon, url_path=url,
                           default=file == PAGES[0][0])
    raise KeyError(name)


def build_navigation() -> st.navigation:
    """The navigation object; the sidebar also carries the sign-in and the database in use."""
    navigation = st.navigation([_page(file) for file, *_ in PAGES])
    login_sidebar()
    try:
        st.sidebar.caption(f"Database: `{sources().database}`")
    except ConsoleError as exc:
        st.sidebar.error(str(exc))
    return navigation


def open_coil(coil: str) -> None:
    """Go to the coil detail page for `coil` (also reachable as `/coil?coil=ID`)."""
    st.session_state[SELECTED_COIL_KEY] = coil
    st.switch_page(_page("coil_detail.py"))


def selected_coil() -> str | None:
    """The coil to show: `?coil=` in the URL wins over the one picked on another page."""
    coil = st.query_params.get("coil")
    if coil:
        st.session_state[SELECTED_COIL_KEY] = coil
    return st.session_state.get(SELECTED_COIL_KEY)
