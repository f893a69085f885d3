"""steel-inspect review console: `streamlit run app.py` (or `STEEL_INSPECT_DB=path streamlit run app.py`).

This file is both halves of the console. Imported as a module (by the server `streamlit run`
starts, which finds `app` here), it is an `st.App`: Streamlit's server plus two routes that set and
expire the sign-in cookie (`inspection/console/session_cookie.py`), since a script run cannot set
an HttpOnly cookie. Run as the script (`__main__`: every page view, and AppTest), it builds the
navigation and the sign-in sidebar (`inspection.console.navigation`) and runs the chosen page.
It listens on 127.0.0.1 (`.streamlit/config.toml`); put a TLS reverse proxy in front to reach it
from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

if __name__ == "__main__":
    from inspection.console.navigation import build_navigation

    # A file, not an emoji or a Material icon: Streamlit fetches those favicons from fonts.gstatic.com,
    # which a plant network does not reach (tests/test_console_browser.py checks no request leaves).
    FAVICON = Path(__file__).parent / "inspection" / "console" / "static" / "favicon.png"
    st.set_page_config(page_title="steel-inspect console", page_icon=str(FAVICON), layout="wide")
    build_navigation().run()
else:
    from inspection.console.session_cookie import routes

    app = st.App(Path(__file__).resolve(), routes=routes())
