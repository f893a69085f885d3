"""`steel-inspect audit verify`: every check of a line database, in order, stopping at the first problem.

1. ``PRAGMA integrity_check`` (a file SQLite cannot read at all is bad input, `StoreError`);
2. the hash chain and the row digest of every evidence row (`audit.verify_chain`);
3. with the audit key: every signature, and every event from the first signed one on signed
   (`checkpoints.check_signatures`); without it, what was not checked is said;
4. with an anchor file: each anchor against the chain (`checkpoints.check_anchors`);
5. the upserted tables (lines, cameras, plant data) against their newest recorded digest, each
   console user against the digest of its newest audited change (`user_audit`), the derived tables
   rebuilt from the evidence (`rebuild`);
6. with a crop folder: every crop file by its sha256, missing ones against the recorded prunes
   (`crop_audit`);
7. the append-only triggers are still there, as the migrations wrote them.

What no check covers is listed in the report (``status``: live figures; tables this version does
not know).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from inspection.records import audit, checkpoints, crop_audit, rebuild, user_audit
from inspection.records.audit_keys import AuditKey
from inspection.records.crops import CropStore
from inspection.records.db import open_db
from inspection.records.errors import StoreError
from inspection.records.schema import APPEND_ONLY_TABLES, AUDITED_TABLES, STATE_TABLES

CHECKED_TABLES = frozenset({*AUDITED_TABLES, *STATE_TABLES, "audit_log", "audit_checkpoints", "coil_class_counts",
                            "review_queue", "users"})
NOT_EVIDENCE = {"status": "live figures", "_sqlite_migrations": "applied migrations",
                "login_events": "sign-in attempts", "console_sessions": "console sessions (token hashes)",
                "plc_publishers": "PLC publisher starts", "plc_sequence": "PLC sequence numbers"}


@dataclass
class Report:
    """`verify_database`'s answer: ``ok``, the first problem, and the summary lines of what was checked."""

    path: Path
    ok: bool = True
    problem: str | None = None
    events: int = 0
    head: str = audit.GENESIS
    chain_intact: bool = True
    lines: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> Report:
        self.ok, self.problem = False, problem
        return self


def verify_database(path: str | Path, *, key: AuditKey | None = None, key_note: str = "no audit key given",
                    anchor: str | Path | None = None, crops: CropStore | None = None) -> Report:
    """Run every check on the database at `path` (read-only); `key_note` says why `key` is None."""
    report = Report(Path(path))
    db = _open(report.path)
    try:
        integrity = [str(r[0]) for r in db.execute("PRAGMA integrity_check").fetchall()]
        if integrity != ["ok"]:
            more = f" (+{len(integrity) - 1} more)" if len(integrity) > 1 else ""
            return report.fail(f"PRAGMA integrity_check failed: {integrity[0]}{more}")
        if not db["audit_log"].exists():
            raise StoreError(f"{report.path}: not a steel-inspect line database (no audit_log table)")
        _run_checks(db, report, key, key_note, anchor, crops)
    except sqlite3.DatabaseError as exc:  # a page that integrity_check did not reach, or read mid-way
        return report.fail(f"database unreadable while verifying: {exc}")
    finally:
        db.close()
    return report


def _open(path: Path) -> Database:
    if not path.is_file():
        raise StoreError(f"{path}: no such database")
    try:
        db = open_db(path, readonly=True)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a SQLite database ({exc})") from None
    return db


def _run_checks(db: Database, report: Report, key: AuditKey | None, key_note: str, anchor: str | Path | None,
                crops: CropStore | None) -> None:
    facts = rebuild.ChainFacts()
    verdict = audit.verify_chain(db, facts.observe)
    report.events, report.head = verdict.events, verdict.head
    if not verdict.ok:
        report.chain_intact = False
        report.fail(str(verdict.problem))
        return
    report.lines.append("integrity_check ok; chain and evidence row digests intact")
    if not (_signatures(db, report, key, key_note) and _anchors(db, report, key, anchor)):
        return
    problem = (rebuild.check_state_tables(db, facts) or user_audit.check_users(db, facts.users, facts.notes)
               or rebuild.check_derived(db, facts))
    if problem:
        report.fail(problem)
        return
    report.lines.append("lines, cameras, plant data and console users match their recorded digests; "
                        "coil_class_counts and review_queue match their rebuild from the evidence")
    if crops is not None:
        found = crop_audit.check_crops(db, crops, facts.prunes)
        if found.problem:
            report.fail(found.problem)
            return
        report.lines.append(f"crops: {found.checked} files intact, {found.pruned} deleted by recorded prunes "
                            f"({crops.root})")
    else:
        report.lines.append("crops: not checked")
    problem = _triggers(db)
    if problem:
        report.fail(problem)
        return
    report.lines += facts.notes
    uncovered = sorted(t for t in db.table_names() if t not in CHECKED_TABLES and not t.startswith("sqlite_"))
    if uncovered:
        report.lines.append("not covered: " + ", ".join(f"{t} ({NOT_EVIDENCE.get(t, 'unknown table')})"
                                                        for t in uncovered))


def _signatures(db: Database, report: Report, key: AuditKey | None, key_note: str) -> bool:
    if key is None:
        signed = db.execute("SELECT count(*) FROM audit_checkpoints").fetchone()[0] \
            if db["audit_checkpoints"].exists() else 0
        report.lines.append(f"signatures: NOT checked ({key_note}; {signed} signed events in the database): "
                            "without the key a rewritten chain cannot be told from the original")
        return True
    found = checkpoints.check_signatures(db, key, report.events)
    if found.problem:
        report.fail(found.problem)
        return False
    before = f"; the {found.first - 1} events before the first signature are covered by it" \
        if found.first and found.first > 1 else ""
    report.lines.append(f"signatures: {found.signed} events signed with key {key.key_id}, head signed{before}")
    return True


def _anchors(db: Database, report: Report, key: AuditKey | None, anchor: str | Path | None) -> bool:
    if anchor is None:
        report.lines.append("anchors: not checked (--anchor FILE compares an anchor file kept elsewhere)")
        return True
    found = checkpoints.check_anchors(db, anchor, key, report.events)
    if found.problem:
        report.fail(found.problem)
        return False
    report.lines.append(f"anchors: {found.anchors} lines of {anchor} match the chain (last seq {found.last_seq}); "
                        f"unanchored tail: {found.tail} events")
    return True


def expected_trigger(table: str, op: str) -> str:
    """The SQL `schema._append_only` creates (sqlite_master keeps it as written)."""
    return (f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only evidence'); END")


def _triggers(db: Database) -> str | None:
    found = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
    for table in APPEND_ONLY_TABLES:
        if not db[table].exists():
            continue
        for op in ("UPDATE", "DELETE"):
            name = f"{table}_no_{op.lower()}"
            if name not in found:
                return f"trigger {name} missing: the append-only protection of {table} was dropped"
            if " ".join(found[name].split()) != expected_trigger(table, op):
                return f"trigger {name} was redefined: the append-only protection of {table} is not the original"
    return None
