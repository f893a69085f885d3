"""Rows of a query on the plant's SQL database: PostgreSQL (psycopg 3, the `postgres` extra) or SQLite.

`open_rows` connects, runs the query and checks its columns before any row is read; the rows then
stream in batches of `batch_rows` (a server-side cursor on PostgreSQL), so memory stays flat
however long the query runs.

Credentials never leave the connection. The source recorded with the imported rows (summary,
``platform_coils.source``, the audit log) is `describe`'s ``postgresql://host:port/database``:
no user, no password, no other parameter. Every error message is scrubbed of the password,
whichever way it came: the URL (discouraged: a command line shows in ``ps`` and shell
history), a libpq ``key=value`` string, ``[plant] password_file``, ``PGPASSWORD`` or
``~/.pgpass`` (the last two are libpq's own and never seen here).

Every PostgreSQL connection gets, unless the URL sets them itself: a connect timeout, TCP
keepalives and a TCP user timeout (a firewall that silently drops packets ends the import
instead of hanging it), a statement timeout (the server cancels a statement that runs longer:
the query, each batch), ``TimeZone = UTC`` and read-only transactions (the importer never
writes to the plant's database). A server that hangs while the link stays up honours no
timeout of its own: the connection is closed once it has had the statement timeout plus the
connect timeout to answer (`_Guard`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from inspection.records.errors import PlatformImportError

log = logging.getLogger(__name__)

REQUIRED = ("coil_id",)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_KEYWORD_STRING = re.compile(r"\s*[A-Za-z_]+\s*=")  # libpq's "host=... dbname=..." form
_PASSWORD_IN_TEXT = re.compile(r"password|://[^/@]*:[^/@]*@", re.IGNORECASE)
_INSTALL = "install the postgres extra: pip install -e '.[postgres]' (or pip install 'psycopg[binary]')"


def is_postgres(url: str) -> bool:
    """True for a postgresql:// URL or a libpq key=value string."""
    return url.startswith(POSTGRES_SCHEMES) or bool(_KEYWORD_STRING.match(url))


def describe(params: dict[str, Any]) -> str:
    """``postgresql://host:port/database`` of libpq parameters: what may be recorded and printed.

    User and password never appear, nor any other parameter. A Unix socket folder as host goes into
    the URL encoded (libpq reads it back), so the text stays one token.
    """
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = str(params.get("port") or "")
    host = quote(host, safe="") if host.startswith("/") else host
    if ":" in host and not host.startswith("[") and "," not in host:
        host = f"[{host}]"  # an IPv6 address
    netloc = host + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{params.get('dbname') or ''}"


def read_password_file(path: Path) -> str:
    """The password in `path` (its only line); refused when others could read the file."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformImportError(f"{path}: cannot read the MES password file: "
                                  f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PlatformImportError(f"{path}: the MES password file is open to other users "
                                  f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}")
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        raise PlatformImportError(f"{path}: expected the MES password alone on one line")
    return password


def scrub(message: str, secrets: list[str]) -> str:
    """`message` without any of `secrets` (longest first, so a password holding another is cut whole)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def first_line(exc: BaseException) -> str:
    """The first line of an error (libpq adds hints and a caret line below it)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


class _Guard:
    """Turns a database error into one line and keeps a hung server from hanging the import.

    The server cancels a slow statement itself (statement_timeout); a server that hangs, or a link
    that stays up while nothing comes back, does not. Around each blocking call a timer shuts the
    connection's socket down once the server has had its statement timeout plus the connect
    timeout: the waiting call then fails at once. shutdown() on a duplicate of the descriptor is
    safe from another thread, unlike closing the connection under libpq's feet.
    """

    def __init__(self, source: str, secrets: list[str], error_types: tuple[type[BaseException], ...],
                 statement_timeout_s: float | None = None, answer_within_s: float | None = None) -> None:
        self.source, self.secrets, self.error_types = source, secrets, error_types
        self.statement_timeout_s, self.answer_within_s = statement_timeout_s, answer_within_s
        self.fired = False

    @contextlib.contextmanager
    def waiting(self, fileno: int | None) -> Iterator[None]:
        if fileno is None or self.answer_within_s is None:
            yield
            return
        timer = threading.Timer(self.answer_within_s, self._hang_up, (fileno,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _hang_up(self, fileno: int) -> None:
        self.fired = True
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fileno)) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    def query_error(self, exc: BaseException) -> PlatformImportError:
        if self.fired:
            message = (f"{self.source}: no answer within {self.answer_within_s:g} s ([plant] statement_timeout_s + "
                       "connect_timeout_s): the server or the network hangs; the connection was closed")
        else:
            message = f"{self.source}: query failed: {first_line(exc)}"
            if "statement timeout" in message and self.statement_timeout_s:
                message += f" ([plant] statement_timeout_s = {self.statement_timeout_s:g})"
        return PlatformImportError(scrub(message, self.secrets))


class SqlRows:
    """The rows of one query as ``(where, row dict)``, fetched `batch_rows` at a time.

    Use as a context manager (or call `close`); iterating to the end closes it too.
    `batches` counts the fetches and `largest_batch` the most rows held at once.
    """

    def __init__(self, conn: Any, cursor: Any, batch_rows: int, guard: _Guard, fileno: int | None = None) -> None:
        self.source, self._conn, self._cursor = guard.source, conn, cursor
        self.batch_rows, self._guard, self._fileno = batch_rows, guard, fileno
        self.columns = [str(d[0]) for d in cursor.description or ()]
        self.batches = 0
        self.largest_batch = 0

    def check_columns(self) -> None:
        names = {c.strip().lower() for c in self.columns}
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            shown = ", ".join(self.columns) or "none"
            raise PlatformImportError(
                f"{self.source}: the query returns no {missing[0]} column (its columns: {shown}); "
                f"name the column that holds the coil id in the query: SELECT <column> AS {missing[0]}, ...")

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        n = 0
        try:
            while True:
                batch = self._fetch()
                if not batch:
                    return
                for row in batch:
                    n += 1
                    yield f"row {n}", dict(zip(self.columns, row, strict=True))
        finally:
            self.close()

    def _fetch(self) -> list[Any]:
        try:
            with self._guard.waiting(self._fileno):
                batch = self._cursor.fetchmany(self.batch_rows)
        except self._guard.error_types as exc:
            raise self._guard.query_error(exc) from None
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        return batch

    def close(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        # A read-only transaction: nothing to commit; closing a connection that already broke is not news.
        with contextlib.suppress(Exception):
            conn.close()

    def __enter__(self) -> SqlRows:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_rows(url: str, query: str, *, batch_rows: int = 5000, connect_timeout_s: int = 10,
              statement_timeout_s: float = 120.0, password_file: Path | None = None) -> SqlRows:
    """Connect, run `query` and check its columns; raises `PlatformImportError` (one line) on any failure."""
    if url.startswith("sqlite:///"):
        return _open_sqlite(url, query, batch_rows)
    if is_postgres(url):
        return _open_postgres(url, query, batch_rows=batch_rows, connect_timeout_s=connect_timeout_s,
                              statement_timeout_s=statement_timeout_s, password_file=password_file)
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", url)
    shown = f" {scheme.group(0)}..." if scheme else ""  # never the rest: it may hold a password
    raise PlatformImportError(f"--sql-url{shown}: expected a sqlite:///path or postgresql:// URL "
                              "(or a libpq key=value string)")


def _open_sqlite(url: str, query: str, batch_rows: int) -> SqlRows:
    path = url[len("sqlite:///"):]
    if not Path(path).exists():
        raise PlatformImportError(f"{url}: no such SQLite database")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    guard = _Guard(url, [], (sqlite3.Error,))
    try:
        cursor = conn.execute(_statement(query))
    except sqlite3.Error as exc:
        conn.close()
        raise guard.query_error(exc) from None
    rows = SqlRows(conn, cursor, batch_rows, guard)
    _checked(rows)
    return rows


def _open_postgres(url: str, query: str, *, batch_rows: int, connect_timeout_s: int, statement_timeout_s: float,
                   password_file: Path | None) -> SqlRows:
    try:
        import psycopg  # type: ignore[import-not-found]
        from psycopg.conninfo import conninfo_to_dict  # type: ignore[import-not-found]
    except ImportError:
        raise PlatformImportError(f"PostgreSQL driver missing: {_INSTALL}") from None
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        if _PASSWORD_IN_TEXT.search(url):  # libpq quotes the text it could not parse: it may be the password
            raise PlatformImportError("--sql-url: not a valid PostgreSQL URL or key=value string (libpq's message "
                                      "is not shown: the text holds a password); quote values with spaces "
                                      "('...') or percent-encode them in a URL") from None
        raise PlatformImportError(f"--sql-url: not a valid PostgreSQL URL or key=value string: "
                                  f"{first_line(exc)}") from None
    source = describe(params)
    if params.get("password"):
        log.warning("%s: the password is in --sql-url, where other users of this machine can see it (ps, shell "
                    "history); use [plant] password_file, PGPASSWORD or ~/.pgpass. It is not recorded.", source)
    elif password_file is not None:
        params["password"] = read_password_file(password_file)
    password = str(params.get("password") or "")
    secrets = [password, quote(password, safe=""), os.environ.get("PGPASSWORD", "")]  # as given, as in a URL
    for key, value in _connection_defaults(connect_timeout_s).items():
        params.setdefault(key, value)  # what the URL sets itself wins
    try:
        conn = psycopg.connect(**params)
    except psycopg.Error as exc:
        if "timeout expired" in first_line(exc):  # psycopg's ConnectionTimeout (its own wait, not libpq's)
            raise PlatformImportError(f"{source}: cannot connect: no answer within {params['connect_timeout']} s "
                                      "([plant] connect_timeout_s)") from None
        raise PlatformImportError(scrub(f"{source}: cannot connect: {_connect_problem(exc)}", secrets)) from None
    guard = _Guard(source, secrets, (psycopg.Error,), statement_timeout_s,
                   statement_timeout_s + max(2, int(float(params["connect_timeout"]))))
    fileno = conn.pgconn.socket
    try:
        with guard.waiting(fileno):
            conn.read_only = True  # BEGIN READ ONLY: a query that would write is refused by the server
            conn.execute("SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false)",
                         (str(max(1, round(statement_timeout_s * 1000))),))
            cursor = conn.cursor(name="steel_inspect_import")  # server-side: rows come FETCH by FETCH
            cursor.execute(_statement(query))  # DECLARE and describe: the columns are known, no row is read
    except psycopg.Error as exc:
        conn.close()
        raise guard.query_error(exc) from None
    rows = SqlRows(conn, cursor, batch_rows, guard, fileno)
    _checked(rows)
    return rows


def _connect_problem(exc: BaseException) -> str:
    problem = first_line(exc).removeprefix("connection failed: ")
    if "no password supplied" in problem or "password authentication failed" in problem:
        problem += " (the password comes from [plant] password_file, PGPASSWORD or ~/.pgpass)"
    return problem


def _connection_defaults(connect_timeout_s: int) -> dict[str, str]:
    return {
        "connect_timeout": str(connect_timeout_s),
        "application_name": "steel-inspect import-plant",  # what a DBA sees in pg_stat_activity
        # A dead peer or a firewall that drops packets: keepalives find it while we wait for rows,
        # tcp_user_timeout while what we sent stays unacknowledged (Linux; about 30 s either way).
        "keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "4",
        "tcp_user_timeout": "30000",
    }


def _statement(query: str) -> str:
    # A trailing ';' is habit from psql; a server-side cursor (DECLARE ... FOR <query>) refuses it.
    return query.strip().rstrip(";").rstrip()


def _checked(rows: SqlRows) -> None:
    try:
        rows.check_columns()
    except PlatformImportError:
        rows.close()
        raise
