"""The browser's half of a console session: an HttpOnly cookie, set by a route of the console's own server.

Streamlit reads cookies (`st.context.cookies`, those sent when the page opened its WebSocket) but a
script run cannot set one: it talks to the browser over that WebSocket. A cookie written by
JavaScript (`document.cookie`) cannot be HttpOnly, so any script in the page could read the token.
So `app.py` serves the console as an `st.App` with two routes of its own, and the token travels:

1. the sign-in (a script run) creates the session (`records.sessions.start`) and leaves its token
   here under a one-time claim code (`offer`), valid for `CLAIM_S` seconds;
2. the page gets a few lines of JavaScript (`claim_script`) that POST the code to `CLAIM_PATH`;
3. the route swaps the code for the token, once (`take`), and answers
   ``Set-Cookie: steel_inspect_session=TOKEN; HttpOnly; SameSite=Strict; Path=/`` (``Secure`` too
   when the page came over HTTPS, i.e. through the TLS proxy);
4. a reload or a new tab sends the cookie with its WebSocket, and `auth` resumes the session.

Sign-out ends the session in the database first (the token is worthless from then on, wherever it
is), then `clear_script` asks `END_PATH` to expire the cookie.

The token itself never reaches JavaScript, a URL, a log or the database (only its sha256). The
routes need a custom request header: a page of another site cannot send one without a CORS
preflight, which these routes never grant, so it cannot make a browser claim or drop the cookie.
The cookie has no Max-Age (it ends when the browser closes); the idle limit is the server's.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from typing import Any

COOKIE = "steel_inspect_session"
# Relative, so a proxy that serves the console under a path prefix sends it to this server too.
CLAIM_PATH = "api/console/session"
END_PATH = "api/console/session/end"
HEADER = "X-Steel-Inspect"
CLAIM_S = 60.0
MAX_PENDING = 256  # anyone who reaches the form can sign in repeatedly: the table stays bounded

_pending: dict[str, tuple[str, float]] = {}  # sha256(code) -> (token, monotonic deadline)
_lock = threading.Lock()  # script runs and the server's event loop use it from different threads


def offer(token: str, *, now: float | None = None) -> str:
    """Keep `token` for one claim; returns the claim code the page's JavaScript sends back."""
    code = secrets.token_urlsafe(24)
    now = time.monotonic() if now is None else now
    with _lock:
        for key in [k for k, (_, deadline) in _pending.items() if deadline < now]:
            del _pending[key]
        while len(_pending) >= MAX_PENDING:
            del _pending[next(iter(_pending))]  # the oldest offer goes first
        _pending[_key(code)] = (token, now + CLAIM_S)
    return code


def pending(code: str, *, now: float | None = None) -> bool:
    """True while `code` can still be claimed (the page keeps the claim script until then)."""
    now = time.monotonic() if now is None else now
    with _lock:
        entry = _pending.get(_key(code))
    return entry is not None and entry[1] >= now


def take(code: str, *, now: float | None = None) -> str | None:
    """The token left under `code`, once; None for an unknown, used or expired code."""
    now = time.monotonic() if now is None else now
    with _lock:
        entry = _pending.pop(_key(code), None)
    if entry is None or entry[1] < now:
        return None
    return entry[0]


def claim_script(code: str) -> str:
    """HTML for `st.html(..., unsafe_allow_javascript=True)`: claims the cookie for `code`."""
    return _post_script(CLAIM_PATH, code)


def clear_script() -> str:
    """HTML that asks the server to expire the session cookie (after sign-out)."""
    return _post_script(END_PATH, "")


def _post_script(path: str, body: str) -> str:
    # json.dumps quotes the values for JavaScript; the code is URL-safe base64 in any case.
    return (f"<script>fetch({json.dumps(path)}, {{method: 'POST', credentials: 'same-origin', "
            f"headers: {{{json.dumps(HEADER)}: '1'}}, body: {json.dumps(body)}}});</script>")


def _key(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def routes() -> list[Any]:
    """The two Starlette routes for `st.App` (imported here: only the console's server needs them)."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def secure(request: Request) -> bool:
        # Behind the TLS proxy this server sees plain HTTP; the browser's Origin says what it used.
        return (request.headers.get("origin", "").startswith("https://")
                or request.headers.get("x-forwarded-proto") == "https" or request.url.scheme == "https")

    async def claim(request: Request) -> Response:
        if request.headers.get(HEADER) != "1":
            return Response("missing header", status_code=403)
        token = take((await request.body())[:200].decode("ascii", "replace"))
        if token is None:
            return Response("unknown or expired claim", status_code=410)
        response = Response(status_code=204)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/", secure=secure(request))
        return response

    async def end(request: Request) -> Response:
        if request.headers.get(HEADER) != "1":
            return Response("missing header", status_code=403)
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure(request))
        return response

    return [Route(f"/{CLAIM_PATH}", claim, methods=["POST"]), Route(f"/{END_PATH}", end, methods=["POST"])]
