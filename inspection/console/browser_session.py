"""The database and browser side of a console session, so that a sign-in survives a reload or a new tab.

`auth` keeps the signed-in `Session` in Streamlit's session state, which a reload or a new tab does
not have. So a sign-in also creates a row in the line database (`records.sessions`, only the
token's sha256) and gives the browser the token as an HttpOnly cookie (`session_cookie`); the
first run of a new Streamlit session presents that cookie and resumes (`resume`). The row is the
authority: sign-out, disabling the user or a new password delete it, and every tab holding the
token is signed out at its next run (`auth` checks `is_open`).
"""

from __future__ import annotations

import logging
import sqlite3

import streamlit as st
from sqlite_utils import Database

from inspection.console import session_cookie
from inspection.errors import SteelInspectError
from inspection.records import sessions
from inspection.records.db import open_db

CLAIM_KEY = "_console_cookie_claim"  # a claim code the page still has to send (not a widget key)
CLEAR_KEY = "_console_cookie_clear"
TRIED_KEY = "_console_cookie_tried"
# The database's last-seen time trails the tab's by at most this much, so a reload after a long
# working session is not taken for an idle one, while a run does not write to the database each time.
TOUCH_EVERY_NS = 60 * 10**9
_log = logging.getLogger(__name__)


def cookie_token() -> str | None:
    """The session token the browser sent when this Streamlit session's page was loaded, if any."""
    return st.context.cookies.get(session_cookie.COOKIE) or None


def start(db: Database, name: str, idle_ns: int) -> str:
    """A database session for `name`, who just signed in on `db` (a writable connection); the
    browser gets its cookie at the next run (`emit_scripts`). Returns the stored digest."""
    token = sessions.start(db, name, idle_ns=idle_ns)
    st.session_state[CLAIM_KEY] = session_cookie.offer(token)
    st.session_state.pop(CLEAR_KEY, None)
    return sessions.digest(token)


def resume(database: str, idle_ns: int) -> sessions.Resumed | None:
    """The session of the browser's cookie, tried once per Streamlit session (cookies are those of
    the page load: a second try would find the same answer); None without a cookie."""
    if st.session_state.get(TRIED_KEY):
        return None
    st.session_state[TRIED_KEY] = True
    token = cookie_token()
    if token is None:
        return None
    try:
        db = open_db(database)
    except (SteelInspectError, sqlite3.Error) as exc:  # the sidebar shows the sign-in form instead
        _log.warning("console: cannot resume a session from %s: %s", database, exc)
        return None
    try:
        return sessions.resume(db, token, idle_ns=idle_ns)
    except sqlite3.Error as exc:  # e.g. the recorder held the write lock too long
        _log.warning("console: cannot resume a session from %s: %s", database, exc)
        return None
    finally:
        db.close()


def is_open(db: Database, key: str | None) -> bool:
    """False once the session's row is gone (signed out elsewhere, user disabled, new password)."""
    return key is None or sessions.is_open(db, key)


def touch(database: str, key: str, now_ns: int) -> None:
    """Move the session's last-seen time on (best effort: a failed write only shortens the session)."""
    try:
        db = open_db(database)
        try:
            sessions.touch(db, key, now_ns)
        finally:
            db.close()
    except (SteelInspectError, sqlite3.Error) as exc:
        _log.warning("console: cannot record session activity in %s: %s", database, exc)


def end(database: str, key: str | None) -> None:
    """End the session in the database and have the browser drop its cookie at the next run."""
    st.session_state.pop(CLAIM_KEY, None)
    st.session_state[CLEAR_KEY] = True
    if key is None:
        return
    try:
        db = open_db(database)
        try:
            sessions.end(db, key)
        finally:
            db.close()
    except (SteelInspectError, sqlite3.Error) as exc:  # the cookie is still expired by the browser
        _log.warning("console: cannot end a session in %s: %s", database, exc)


def emit_scripts() -> None:
    """Put the cookie's JavaScript in the page: the claim after a sign-in (until the server has
    answered it), the clear after a sign-out (once)."""
    code = st.session_state.get(CLAIM_KEY)
    if code is not None:
        if session_cookie.pending(code):
            st.sidebar.html(session_cookie.claim_script(code), unsafe_allow_javascript=True)
        else:
            st.session_state.pop(CLAIM_KEY, None)
    if st.session_state.pop(CLEAR_KEY, False):
        st.sidebar.html(session_cookie.clear_script(), unsafe_allow_javascript=True)
