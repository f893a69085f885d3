"""`steel-inspect users add|list|disable|enable|passwd|role|log`: the review console's users.

Users live in the line database (``--db``, or the line config's ``line.database``). Roles:
inspector (reviews defects), quality_engineer (reviews, overrides grades, approves another
person's hold -> prime override), ml_engineer (Models page), admin (everything). Passwords have at
least 10 characters; they are asked for twice on the terminal, or read as one line from standard
input with ``--password-stdin`` (scripts). ``passwd`` also lifts a lockout. Each change is an audit
event (with the machine's user name as actor), never with the password or its hash.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from inspection.arguments import positive_int
from inspection.errors import SteelInspectError

if TYPE_CHECKING:
    from sqlite_utils import Database

ROLE_CHOICES = ("inspector", "quality_engineer", "ml_engineer", "admin")  # = records.users.ROLES (a test says so)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("users", help="users and roles of the review console", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="users_command", metavar="ACTION")
    sub.required = True
    add = _action(sub, "add", "add a user (asks for the password)", run_add)
    add.add_argument("--role", required=True, choices=ROLE_CHOICES, help="what the user may do")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _action(sub, "list", "name, role, disabled, locked", run_list, name=False)
    _action(sub, "disable", "the user can no longer sign in; open sessions are refused at their next action",
            run_disable)
    _action(sub, "enable", "a disabled user may sign in again", run_enable)
    passwd = _action(sub, "passwd", "set a new password (asks for it); also lifts a lockout", run_passwd)
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    role = _action(sub, "role", "change a user's role", run_role)
    role.add_argument("role", choices=ROLE_CHOICES, help="the new role")
    log = _action(sub, "log", "the latest sign-in attempts (failures and lockouts included)", run_log, name=False)
    log.add_argument("--limit", type=positive_int, default=50, metavar="N", help="how many (default 50)")


def _action(sub: argparse._SubParsersAction, action: str, help_text: str, func: object, *,
            name: bool = True) -> argparse.ArgumentParser:
    parser = sub.add_parser(action, help=help_text, description=help_text)
    if name:
        parser.add_argument("name", help="user name (2-64 letters, digits, '.', '_', '-')")
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    parser.set_defaults(func=func)
    return parser


def run_add(args: argparse.Namespace) -> int:
    from inspection.records import users

    users.check_name(args.name)  # before asking for a password that would be thrown away
    password = _new_password(args)
    with _database(args, create=True) as (path, db):
        user = users.add_user(db, args.name, args.role, password, actor=_actor())
    print(f"{path}: user {user.name} added ({user.role})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    import time

    from inspection.records import users

    with _database(args) as (path, db):
        rows = users.list_users(db)
    if not rows:
        print(f"{path}: no users (steel-inspect users add NAME --role ROLE)")
        return 0
    now = time.time_ns()
    table = [("name", "role", "disabled", "locked", "failed", "created")]
    table += [(u.name, u.role, users.iso_utc(u.disabled_ns) if u.disabled else "no",
               f"until {users.iso_utc(u.locked_until_ns)}" if u.locked(now) else "no", str(u.failed_attempts),
               users.iso_utc(u.created_ns)) for u in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def run_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def run_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    from inspection.records import users

    with _database(args) as (path, db):
        users.set_disabled(db, args.name, disabled, actor=_actor())
    print(f"{path}: user {args.name} {'disabled' if disabled else 'enabled'}")
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    from inspection.records import users

    with _database(args) as (_, db):
        if users.get_user(db, args.name) is None:  # say so before asking for a password
            raise users.UserError(f"no user {args.name!r}")
    password = _new_password(args)
    with _database(args) as (path, db):
        users.set_password(db, args.name, password, actor=_actor())
    print(f"{path}: new password set for {args.name} (lockout lifted)")
    return 0


def run_role(args: argparse.Namespace) -> int:
    from inspection.records import users

    with _database(args) as (path, db):
        users.set_role(db, args.name, args.role, actor=_actor())
    print(f"{path}: user {args.name} is now {args.role}")
    return 0


def run_log(args: argparse.Namespace) -> int:
    from inspection.records import users

    with _database(args) as (path, db):
        events = users.login_events(db, args.limit)
    if not events:
        print(f"{path}: no sign-in attempt recorded")
    for event in events:
        print(f"{event['time']}  {event['outcome']:<12}  {event['name']}")
    return 0


@contextlib.contextmanager
def _database(args: argparse.Namespace, *, create: bool = False) -> Iterator[tuple[Path, Database]]:
    """The line database for a users command; every way it can fail is one `SteelInspectError` line
    (a missing, corrupt, read-only or locked file included)."""
    import sqlite3

    from inspection.commands._audit_key import audit_key_path
    from inspection.config import load_config
    from inspection.records import audit
    from inspection.records.audit_keys import key_if_present
    from inspection.records.db import open_db

    config = load_config(args.config)
    path = Path(args.db or config.database)
    key = key_if_present(audit_key_path(config, args.db, args.config is not None))
    if not create and not path.is_file():
        raise SteelInspectError(f"{path}: no such database (--db, or the config's line.database)")
    try:
        db = audit.sign_with(open_db(path), key)  # user changes are audit events: signed like the rest
    except (OSError, sqlite3.Error) as exc:
        raise SteelInspectError(f"{path}: cannot open the line database: {exc}") from None
    try:
        yield path, db
    except sqlite3.Error as exc:
        raise SteelInspectError(f"{path}: {exc}") from None
    finally:
        db.close()


def _new_password(args: argparse.Namespace) -> str:
    from inspection.passwords import check_new_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise SteelInspectError("no terminal to ask for the password on: pass it with --password-stdin")
        password = getpass.getpass("Password (at least 10 characters): ")
        check_new_password(password)
        if getpass.getpass("Password again: ") != password:
            raise SteelInspectError("password: the two entries differ")
    check_new_password(password)
    return password


def _actor() -> str:
    """Who ran the command, for the audit event: the machine's account (the CLI has no sign-in)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
