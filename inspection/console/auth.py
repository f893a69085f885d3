"""Who is signed in to the console: the sign-in form, sessions that expire, role checks.

Users, roles and passwords are the line database's (`inspection.records.users`; managed with
`steel-inspect users`). A session is a `Session` in Streamlit's server-side session state under a
key no widget has, so a browser cannot set it. A reload or a new tab (a new Streamlit session)
gets it back from the browser's HttpOnly cookie and the session's row in the line database
(`browser_session`). It ends on "Sign out" (in every tab), after the line config's
``[console] session_idle_min`` without a script run started by the user, or when the user is
disabled or given a new password. Every action calls `require`, which re-reads the user and the
session's row from the database: someone disabled, or given another role, since signing in is
refused at once.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from inspection.config import ConsoleConfig
from inspection.console import browser_session
from inspection.console.context import ConsoleError, audit_key, read_db, sources
from inspection.errors import SteelInspectError
from inspection.records import audit, users
from inspection.records.db import open_db

SESSION_KEY = "_console_session"  # not a widget key: only this module sets it
NOTICE_KEY = "_console_session_notice"
ENDED = ("Your session was ended (signed out in another tab, a new password, or by an admin): "
         "sign in again.")
NO_USERS = "No users: create one with `steel-inspect users add NAME --role ROLE`; until then every action is refused."
ROLE_NAMES = {"inspector": "inspector", "quality_engineer": "quality engineer", "ml_engineer": "ML engineer",
              "admin": "admin"}


@dataclass(frozen=True)
class Session:
    """A signed-in user: name as stored, role when signing in (re-read for every action), times; `key`
    names its row in the database (`records.sessions`), `synced_ns` when that row last saw activity."""

    name: str
    role: str
    signed_in_ns: int
    last_seen_ns: int
    key: str | None = None
    synced_ns: int = 0


def idle_expired(session: Session, now_ns: int, idle_min: float) -> bool:
    """True when `session` saw no action for longer than `idle_min` minutes."""
    return now_ns - session.last_seen_ns > idle_min * 60e9


def settings() -> ConsoleConfig:
    """The line config's ``[console]`` section (defaults when the console runs without a config)."""
    try:
        line = sources().line
    except ConsoleError:
        line = None
    return line.console if line is not None else ConsoleConfig()


def current_session(*, touch: bool = True, now_ns: int | None = None) -> Session | None:
    """The signed-in session, or None; resumed from the browser's cookie in a new tab or after a
    reload; an idle one is ended here (with a notice for the sidebar and for the refusal of the
    action that found it expired). `touch` counts this run as activity."""
    session = st.session_state.get(SESSION_KEY)
    idle_min = settings().session_idle_min
    if not isinstance(session, Session):
        session = _resumed(idle_min)
        if session is None:
            return None
    now = time.time_ns() if now_ns is None else now_ns
    if idle_expired(session, now, idle_min):
        sign_out(_idle_notice(idle_min))
        return None
    if touch:
        session = replace(session, last_seen_ns=now)
        if session.key is not None and now - session.synced_ns > browser_session.TOUCH_EVERY_NS:
            browser_session.touch(str(sources().database), session.key, now)
            session = replace(session, synced_ns=now)
        st.session_state[SESSION_KEY] = session
    return session


def _idle_notice(idle_min: float) -> str:
    return f"Your session ended after {idle_min:g} min without an action: sign in again."


def _resumed(idle_min: float) -> Session | None:
    """The session of the browser's cookie (a reload, a new tab), put in this Streamlit session."""
    try:
        database = str(sources().database)
    except ConsoleError:
        return None
    found = browser_session.resume(database, int(idle_min * 60e9))
    if found is None or found.user is None:
        return None
    if found.outcome == "expired":
        st.session_state[NOTICE_KEY] = _idle_notice(idle_min)
    elif found.outcome == "disabled":
        st.session_state[NOTICE_KEY] = _disabled(found.user.name)
    if found.outcome != "ok":
        return None
    now = found.last_seen_ns or time.time_ns()
    session = Session(found.user.name, found.user.role, now, now, key=found.digest, synced_ns=now)
    st.session_state[SESSION_KEY] = session
    return session


def sign_out(notice: str | None = None) -> None:
    """End the session: in this tab, in the database (so in every tab and browser that holds its
    token) and the browser's cookie at the next run."""
    session = st.session_state.pop(SESSION_KEY, None)
    try:
        database = str(sources().database)
    except ConsoleError:
        database = None
    if database is not None:
        browser_session.end(database, session.key if isinstance(session, Session) else None)
    if notice:
        st.session_state[NOTICE_KEY] = notice


def sign_in(database: Path, name: str, password: str) -> users.LoginResult:
    """Check name and password against the database (counting failures, locking after too many)
    and start the session when they match."""
    config = settings()
    policy = users.LoginPolicy(attempts=config.lockout_attempts, lockout_ns=int(config.lockout_min * 60e9))
    db = audit.sign_with(open_db(database), audit_key())  # a lockout is an audit event: signed like the rest
    try:
        result = users.authenticate(db, name.strip(), password, policy=policy)
        if result.ok and result.user is not None:
            key = browser_session.start(db, result.user.name, int(config.session_idle_min * 60e9))
            now = time.time_ns()
            st.session_state[SESSION_KEY] = Session(result.user.name, result.user.role, now, now, key=key,
                                                    synced_ns=now)
            st.session_state.pop(NOTICE_KEY, None)
    finally:
        db.close()
    return result


def require(permission: str, what: str) -> str:
    """The signed-in user's name if their role allows `permission` (`users.PERMISSIONS`) now;
    `ConsoleError` with the reason (shown to the user, nothing written) otherwise."""
    session = current_session(touch=False)
    database = sources().database
    try:
        with read_db(database) as db:
            enabled = users.count_enabled(db)
            user = users.get_user(db, session.name) if session else None
            revoked = session is not None and not browser_session.is_open(db, session.key)
    except (SteelInspectError, sqlite3.DatabaseError) as exc:
        raise ConsoleError(f"Action refused: cannot read the users of {database}: {exc}") from None
    if enabled == 0:
        raise ConsoleError(f"Action refused. {NO_USERS}")
    if session is None:
        notice = st.session_state.get(NOTICE_KEY)
        raise ConsoleError(f"Action refused: {notice}" if notice else
                           f"Action refused: sign in first (sidebar). {what} is recorded with the signed-in "
                           "user's name.")
    if user is None or user.disabled:
        sign_out(_disabled(session.name))
        raise ConsoleError(f"Action refused: {_disabled(session.name)}")
    if revoked:
        sign_out(ENDED)
        raise ConsoleError(f"Action refused: {ENDED}")
    if not user.may(permission):
        allowed = " or ".join(ROLE_NAMES[r] for r in users.ROLES if r in users.PERMISSIONS[permission])
        raise ConsoleError(f"Action refused: {what} needs the role {allowed}; {user.name} is signed in as "
                           f"{ROLE_NAMES[user.role]}.")
    return user.name


def _disabled(name: str) -> str:
    return f"The account {name} is disabled: signed out (ask an admin)."


def missing_permission(permission: str, what: str) -> str | None:
    """Why the current visitor may not do `what` (for a hint before they try), or None if they may."""
    session = current_session(touch=False)
    if session is None:
        return f"Sign in (sidebar) first: {what} is refused without a signed-in user."
    if session.role not in users.PERMISSIONS[permission]:
        return f"{what} needs another role: {session.name} is signed in as {ROLE_NAMES[session.role]}."
    return None


def page_needs(permission: str, what: str) -> None:
    """Stop the page with a message unless the signed-in user may `permission` (the Models page)."""
    try:
        require(permission, what)
    except ConsoleError as exc:
        st.warning(str(exc).replace("Action refused", f"{what} is not shown"), icon=":material/lock:")
        st.stop()


def login_sidebar() -> None:
    """The sidebar: who is signed in and "Sign out", or the sign-in form; "no users" when there are none."""
    try:
        database = sources().database
    except ConsoleError:
        return  # the page says what is missing
    if not database.is_file():
        return
    session = current_session()
    try:
        with read_db(database) as db:
            enabled = users.count_enabled(db)
            user = users.get_user(db, session.name) if session else None
            revoked = session is not None and not browser_session.is_open(db, session.key)
    except (SteelInspectError, sqlite3.DatabaseError):
        return  # the page reports the unreadable database
    if enabled == 0:
        if session is not None:
            sign_out()
        st.sidebar.warning(NO_USERS, icon=":material/person_off:")
        return
    if session is not None and (user is None or user.disabled):
        sign_out(_disabled(session.name))
        session = None
    elif revoked:
        sign_out(ENDED)
        session = None
    elif session is not None and user is not None and user.role != session.role:  # changed since sign-in
        session = replace(session, role=user.role)
        st.session_state[SESSION_KEY] = session
    browser_session.emit_scripts()
    if session is not None:
        st.sidebar.caption(f"Signed in as **{session.name}** ({ROLE_NAMES.get(session.role, session.role)})")
        if st.sidebar.button("Sign out", key="sign_out", icon=":material/logout:"):
            sign_out("Signed out.")
            st.rerun()
        return
    notice = st.session_state.get(NOTICE_KEY)
    if notice:
        st.sidebar.info(notice)
    with st.sidebar.form("sign_in_form", clear_on_submit=True):
        name = st.text_input("User name", key="sign_in_name", autocomplete="username")
        password = st.text_input("Password", type="password", key="sign_in_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", key="sign_in_submit", type="primary")
    if not submitted:
        st.sidebar.caption("Reviews and grade overrides are recorded with the signed-in user's name.")
        return
    try:
        result = sign_in(database, name, password)
    except (SteelInspectError, sqlite3.OperationalError) as exc:  # e.g. the database stayed locked
        st.sidebar.error(f"Sign-in failed: {exc}")
        return
    if not result.ok:
        st.sidebar.error(result.message, icon=":material/block:")
        return
    st.rerun()
