"""steel-inspect review console: `streamlit run app.py` (or `STEEL_INSPECT_DB=path streamlit run app.py`).

The pages live in `inspection/console/pages/`; this script only builds the navigation, the
sign-in form in the sidebar (`inspection.console.auth`), and runs the chosen page. It listens on
127.0.0.1 (`.streamlit/config.toml`); put a TLS reverse proxy in front to reach it from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from inspection.console.navigation import build_navigation

# A file, not an emoji or a Material icon: Streamlit fetches those favicons from fonts.gstatic.com,
# which a plant network does not reach (tests/test_console_browser.py checks no request leaves).
FAVICON = Path(__file__).parent / "inspection" / "console" / "static" / "favicon.png"
st.set_page_config(page_title="steel-inspect console", page_icon=str(FAVICON), layout="wide")
build_navigation().run()
