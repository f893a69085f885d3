"""Tamper-evident audit log: a hash chain over every mutating event, plus row digests.

Each ``audit_log`` row holds ``seq`` (1, 2, ...), ``time_ns``, ``kind``, ``actor``, ``event`` (the
event as canonical JSON: sorted keys, no spaces, UTF-8) and ``prev_hash`` / ``hash`` where

    hash = sha256(prev_hash | seq | time_ns | kind | actor | event)   (hex; the first prev_hash is 64 zeros)

An event that inserted rows into an evidence table (`schema.AUDITED_TABLES`) carries
``"rows": {table: [first_rowid, last_rowid, count, sha256]}`` where sha256 is `sha256_rows` of
exactly those rows as stored (``SELECT rowid, * ... ORDER BY rowid``). `verify` walks the chain in
order and, for each event, re-reads and re-hashes its rows; it stops at the first broken link:

- an edited, inserted or deleted ``audit_log`` row breaks the chain (seq gap, prev_hash or hash);
- an edited or deleted evidence row changes its range's digest or count;
- a row inserted behind the system's back is not covered by any event.

An event that changed an upserted table (`schema.STATE_TABLES`: lines, cameras, plant data)
carries ``"state": {table: [count, sha256]}``, the digest of the table's whole content afterwards
(`table_state`); `verify` compares the newest one with the table as it is. An event that changed a
console user carries the digest of that user's row (`user_audit`), compared the same way.

The chain alone proves nothing against someone who can write the file: they can edit a row and
recompute every digest and link with these very functions. A writer that holds the audit key
(`audit_keys`) therefore signs every event it appends (`append(..., key=)`: one HMAC and one
``audit_checkpoints`` row, O(1) whatever the chain's length); `verify_db` checks the signatures,
the anchors kept outside the database (`checkpoints`), the derived tables and the crop files.

`verify` here needs no key: the chain, the row digests, the upserted tables and the derived tables
(`rebuild`). Limit: deleting the *newest* audit rows together with every row they cover cannot be
told apart from those events never having happened, except against an anchor kept elsewhere (the
anchor file, the PLC heartbeat's ``audit_anchor``).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from inspection.records.audit_keys import AuditKey
from inspection.records.schema import AUDITED_TABLES, STATE_TABLES

GENESIS = "0" * 64
# The key each open database signs its events with (`sign_with`): every writer of a connection
# (the store, user management, imports) then signs without passing the key through each call.
_SIGNERS: weakref.WeakKeyDictionary[Database, AuditKey] = weakref.WeakKeyDictionary()


def canonical_json(value: Any) -> str:
    """The one JSON spelling of `value` that every hash in this module is computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def link_hash(prev_hash: str, seq: int, time_ns: int, kind: str, actor: str, event: str) -> str:
    text = f"{prev_hash}|{seq}|{time_ns}|{kind}|{actor}|{event}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_rows(db: Database, table: str, first: int, last: int) -> tuple[int, str]:
    """(count, sha256) of the rows of `table` with rowid in [first, last], in rowid order."""
    rows = db.execute(
        f"SELECT rowid, * FROM [{table}] WHERE rowid BETWEEN ? AND ? ORDER BY rowid", (first, last)
    ).fetchall()
    return len(rows), sha256_rows(rows)


def sha256_rows(rows: list[Any]) -> str:
    """sha256 of rows (the list of tuples sqlite3 returns, rowid first) in marshal format 2.

    Format 2 has no back-references, so the bytes depend only on the values and their SQLite
    types (int, float as IEEE-754 binary, str, None); it is 8x faster than JSON, which matters at
    50,000 defects per second.
    """
    return hashlib.sha256(marshal.dumps(rows, 2)).hexdigest()


def max_rowid(db: Database, table: str) -> int:
    return db.execute(f"SELECT coalesce(max(rowid), 0) FROM [{table}]").fetchone()[0]


def rows_since(db: Database, table: str, before: int) -> list[Any] | None:
    """The audit entry for rows inserted into `table` after rowid `before`, or None if none were."""
    last = max_rowid(db, table)
    if last <= before:
        return None
    count, sha = digest_rows(db, table, before + 1, last)
    return [before + 1, last, count, sha]


def table_state(db: Database, table: str) -> list[Any]:
    """[count, sha256] of an upserted table's whole content, in primary-key order."""
    rows = db.execute(f"SELECT * FROM [{table}] ORDER BY {STATE_TABLES[table]}").fetchall()
    return [len(rows), sha256_rows(rows)]


def sign_with(db: Database, key: AuditKey | None) -> Database:
    """Sign every event appended through `db` with `key` from now on (None: stop); returns `db`."""
    if key is None:
        _SIGNERS.pop(db, None)
    else:
        _SIGNERS[db] = key
    return db


def append(db: Database, kind: str, actor: str, event: dict[str, Any], time_ns: int, *,
           key: AuditKey | None = None) -> int:
    """Append one event to the chain; call inside the transaction that made the change. With `key`
    (default: the one `sign_with` gave `db`) the event is signed in the same transaction (an
    ``audit_checkpoints`` row for its seq)."""
    key = key or _SIGNERS.get(db)
    head = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    text = canonical_json(event)
    digest = link_hash(prev, seq, time_ns, kind, actor, text)
    db.execute(
        "INSERT INTO audit_log (seq, time_ns, kind, actor, event, prev_hash, hash) VALUES (?,?,?,?,?,?,?)",
        (seq, time_ns, kind, actor, text, prev, digest),
    )
    if key is not None:
        db.execute("INSERT INTO audit_checkpoints (seq, head, key_id, hmac) VALUES (?,?,?,?)",
                   (seq, digest, key.key_id, key.mac(seq, digest)))
    return seq


@dataclass(frozen=True)
class Verdict:
    """Result of `verify`: ``ok``, how many events were checked, the head hash, the first problem."""

    ok: bool
    events: int
    head: str
    problem: str | None = None
    seq: int | None = None


# Called for every intact event: (seq, time_ns, kind, event, covered), where covered maps each
# evidence table to (rows covered so far, highest rowid covered so far); returns a problem or None.
Observer = Callable[[int, int, str, dict[str, Any], dict[str, tuple[int, int]]], str | None]


def verify(db: Database) -> Verdict:
    """Everything that needs neither the key nor the crop files: the chain and its row digests
    (`verify_chain`), then the upserted tables, the console users (`user_audit`) and the derived tables
    (`rebuild`)."""
    from inspection.records import rebuild, user_audit  # they read this module's digests

    facts = rebuild.ChainFacts()
    verdict = verify_chain(db, facts.observe)
    if not verdict.ok:
        return verdict
    problem = (rebuild.check_state_tables(db, facts) or user_audit.check_users(db, facts.users, facts.notes)
               or rebuild.check_derived(db, facts))
    return Verdict(False, verdict.events, verdict.head, problem) if problem else verdict


def verify_chain(db: Database, observer: Observer | None = None) -> Verdict:
    """Walk the chain and the row digests; stop at the first broken link."""
    prev, expected_seq, events = GENESIS, 1, 0
    covered: dict[str, tuple[int, int]] = {}  # table -> (rows covered, highest rowid covered)
    cursor = db.conn.execute(
        "SELECT seq, time_ns, kind, actor, event, prev_hash, hash FROM audit_log ORDER BY seq"
    )
    for seq, time_ns, kind, actor, text, prev_hash, stored in cursor:
        if seq != expected_seq:
            return Verdict(
                False,
                events,
                prev,
                f"audit_log seq {expected_seq} is missing (deleted?); next row is seq {seq}",
                expected_seq,
            )
        if prev_hash != prev:
            return Verdict(
                False,
                events,
                prev,
                f"audit_log seq {seq}: prev_hash does not match the hash of "
                f"seq {seq - 1} (row edited or re-linked)",
                seq,
            )
        if link_hash(prev_hash, seq, time_ns, kind, actor, text) != stored:
            return Verdict(
                False,
                events,
                prev,
                f"audit_log seq {seq} ({kind}): hash does not match its content (row edited)",
                seq,
            )
        event, problem = _check_rows(db, seq, kind, text, covered)
        if problem is None and observer is not None:
            problem = observer(seq, time_ns, kind, event, covered)
        if problem:
            return Verdict(False, events, prev, problem, seq)
        prev, expected_seq, events = stored, seq + 1, events + 1
    for table in AUDITED_TABLES:
        if not db[table].exists():
            continue
        count, highest = covered.get(table, (0, 0))
        actual = db.execute(f"SELECT count(*), coalesce(max(rowid), 0) FROM [{table}]").fetchone()
        if tuple(actual) != (count, highest):
            extra = db.execute(f"SELECT min(rowid) FROM [{table}] WHERE rowid > ?", (highest,)).fetchone()[0]
            where = f"first uncovered rowid {extra}" if extra else "rows missing"
            return Verdict(
                False,
                events,
                prev,
                f"{table}: {actual[0]} rows, audit covers {count} ({where}; "
                "rows added or deleted behind the system's back)",
                None,
            )
    return Verdict(True, events, prev)


def _check_rows(
    db: Database, seq: int, kind: str, text: str, covered: dict[str, tuple[int, int]]
) -> tuple[dict[str, Any], str | None]:
    try:
        event = json.loads(text)
        rows = event.get("rows", {})
    except (ValueError, AttributeError):
        return {}, f"audit_log seq {seq}: event is not a JSON object"
    if not isinstance(rows, dict):
        return event, f"audit_log seq {seq}: event rows is not a table map"
    for table, entry in sorted(rows.items()):
        if not isinstance(entry, list) or len(entry) != 4:
            return event, f"audit_log seq {seq}: rows entry for {table!r} is malformed"
        first, last, count, sha = entry
        if table not in AUDITED_TABLES:
            return event, f"audit_log seq {seq}: unknown table {table!r}"
        actual_count, actual_sha = digest_rows(db, table, first, last)
        if actual_count != count:
            return event, (
                f"{table} rowid {first}..{last} (audit seq {seq}, {kind}): {count} rows recorded, "
                f"{actual_count} found (rows deleted)"
            )
        if actual_sha != sha:
            return event, (
                f"{table} rowid {first}..{last} (audit seq {seq}, {kind}): "
                "content changed since it was recorded"
            )
        n, _ = covered.get(table, (0, 0))
        covered[table] = (n + count, last)
    return event, None
