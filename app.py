"""steel-inspect review console: `streamlit run app.py` (or `STEEL_INSPECT_DB=path streamlit run app.py`).

The pages live in `inspection/console/pages/`; this script only builds the navigation, the
reviewer identity in the sidebar, and runs the chosen page.
"""

from __future__ import annotations

import streamlit as st

from inspection.console.navigation import build_navigation

st.set_page_config(page_title="steel-inspect console", page_icon=":material/view_agenda:", layout="wide")
build_navigation().run()
