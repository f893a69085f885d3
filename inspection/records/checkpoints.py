"""Signed checkpoints of the audit chain, in the database and in an anchor file outside it.

- **In the database** (``audit_checkpoints``, append-only): every process that holds the audit key
  signs each event it appends, in the same transaction (`audit.append(..., key=)`): the row is
  ``(seq, head, key_id, hmac)`` with ``hmac = HMAC-SHA256(key, seq | head)``. Someone with the file
  but not the key can rewrite the chain with the project's own functions, but cannot sign it:
  `check_signatures` then finds a signed head that the chain no longer has, or an event after the
  first signed one that carries no signature (a forged event appended through the records API).
- **Outside it** (the anchor file, JSON lines, append-only; and the PLC heartbeat's
  ``audit_anchor``): the recorder copies the newest signed checkpoint there periodically, at every
  coil end and at stop (`AnchorLog`). Only an anchor held elsewhere shows the newest events (and
  their signatures) deleted together, or the signatures stripped from a database that was then
  rewritten from its first event. `check_anchors` compares a file with the chain; events after the
  last anchor are the unanchored tail (reported, not a failure: anchors are periodic).

Anchor file line: ``{"time": ISO 8601 UTC, "seq": n, "head": hex, "key_id": hex, "hmac": hex}``.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from inspection.errors import write_problem
from inspection.records.audit_keys import AuditKey, AuditKeyError, generate_key, load_key
from inspection.records.errors import StoreError


@dataclass(frozen=True)
class Checkpoint:
    """A signed chain head: the event `seq` had hash `head`, signed by the key `key_id`."""

    seq: int
    head: str
    key_id: str
    hmac: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _has_table(db: Database) -> bool:
    return db["audit_checkpoints"].exists()


def latest(db: Database) -> Checkpoint | None:
    """The newest signed checkpoint (O(1): the primary key's last row), None when there is none."""
    if not _has_table(db):
        return None
    row = db.execute("SELECT seq, head, key_id, hmac FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    return Checkpoint(*row) if row else None


def key_ids(db: Database) -> set[str]:
    """The ids of every key that signed something in this database."""
    if not _has_table(db):
        return set()
    return {r[0] for r in db.execute("SELECT DISTINCT key_id FROM audit_checkpoints")}


@dataclass(frozen=True)
class SignatureCheck:
    """`check_signatures`: the first problem (or None), and what the summary line says."""

    problem: str | None
    signed: int
    first: int | None  # seq of the first signed event; the events before it are covered by it


def check_signatures(db: Database, key: AuditKey, head_seq: int) -> SignatureCheck:
    """Every stored signature valid for `key` and for the chain as it is; every event from the first
    signed one to the head signed. Call on a chain `audit.verify_chain` found intact (its stored
    hashes are then the recomputed ones)."""
    if not _has_table(db) or not db.execute("SELECT 1 FROM audit_checkpoints LIMIT 1").fetchone():
        if head_seq == 0:
            return SignatureCheck(None, 0, None)
        return SignatureCheck(f"audit_checkpoints: none of the {head_seq} audit events is signed (signatures "
                              "deleted, or written by processes without the audit key)", 0, None)
    first = db.execute("SELECT min(seq) FROM audit_checkpoints").fetchone()[0]
    unsigned = db.execute("SELECT a.seq, a.kind, a.actor FROM audit_log a WHERE a.seq > ? AND NOT EXISTS "
                          "(SELECT 1 FROM audit_checkpoints c WHERE c.seq = a.seq) ORDER BY a.seq LIMIT 1",
                          (first,)).fetchone()
    stop = unsigned[0] if unsigned else None
    signed = 0
    cur = db.execute("SELECT c.seq, c.head, c.key_id, c.hmac, a.hash, a.kind, a.event FROM audit_checkpoints c "
                     "LEFT JOIN audit_log a ON a.seq = c.seq ORDER BY c.seq")
    for seq, head, key_id, mac, chain_hash, kind, event in cur:
        if stop is not None and seq > stop:
            break
        where = f"audit_checkpoints seq {seq}"
        if key_id != key.key_id:
            return SignatureCheck(f"{where}: signed with another key (key id {key_id}; the given key is "
                                  f"{key.key_id}): wrong key, or a signature made with a key of one's own",
                                  signed, first)
        if not key.check(seq, head, mac):
            return SignatureCheck(f"{where}: signature does not match its seq and head (forged or edited)",
                                  signed, first)
        if chain_hash is None:
            return SignatureCheck(f"{where}: signed, but the chain ends at seq {head_seq} (newest events deleted)",
                                  signed, first)
        if chain_hash != head:
            return SignatureCheck(f"audit_log seq {seq} ({kind}{_covers(event)}): its hash is not the one signed "
                                  "at this seq: the chain was rewritten from here", signed, first)
        signed += 1
    if unsigned:
        return SignatureCheck(f"audit_log seq {unsigned[0]} ({unsigned[1]} by {unsigned[2]}): not signed with the "
                              "audit key (forged through the records API, or written by a process without the key)",
                              signed, first)
    return SignatureCheck(None, signed, first)


def _covers(event: str | None) -> str:
    """``, covers grades rowid 4..4`` for an event's rows, to name what the rewrite touched."""
    try:
        rows = json.loads(event or "{}").get("rows") or {}
        parts = [f"{t} rowid {e[0]}..{e[1]}" for t, e in sorted(rows.items())]
    except (ValueError, AttributeError, TypeError, IndexError, KeyError):
        return ""
    return f", covers {', '.join(parts)}" if parts else ""


def _iso(time_ns: int) -> str:
    stamp = datetime.datetime.fromtimestamp(time_ns // 10**9, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


class AnchorLog:
    """The append-only anchor file the recorder writes (one JSON line per anchor, fsync-ed).

    The file is opened for appending only (``O_APPEND``); making it truly append-only is the
    operating system's job (``chattr +a``, a WORM share, or shipping it to another machine)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.last_seq = _last_seq(self.path)

    def append(self, checkpoint: Checkpoint, time_ns: int) -> bool:
        """Write `checkpoint` unless it is not newer than the last one written; True when written."""
        if checkpoint.seq <= self.last_seq:
            return False
        line = json.dumps({"time": _iso(time_ns), **checkpoint.as_dict()}, separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot append the audit anchor: {exc.strerror}") from None
        self.last_seq = checkpoint.seq
        return True


def _last_seq(path: Path) -> int:
    """The seq of the file's last complete line (0 for a new or empty file); reads only its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the audit anchor file: {write_problem(path, exc)}") from None
    for line in reversed(lines):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def read_anchors(path: str | Path) -> list[tuple[int, dict[str, Any] | str]]:
    """(line number, anchor) for each anchor line; a malformed line gives the reason instead.

    Besides the recorder's own anchor file this reads what a PLC / L2 logged of the recorder's
    messages (``plc-listen --topic heartbeat --json``): a PLC message's ``audit_anchor`` is its
    anchor, and a PLC message without one is skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreError(f"{path}: no such anchor file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: cannot read the anchor file: {exc}") from None
    out: list[tuple[int, dict[str, Any] | str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if isinstance(item, dict) and "topic" in item:  # a logged PLC message
                if not item.get("audit_anchor"):
                    continue
                item = item["audit_anchor"]
            ok = (isinstance(item, dict) and isinstance(item.get("seq"), int) and item["seq"] >= 1
                  and all(isinstance(item.get(k), str) for k in ("head", "key_id", "hmac")))
        except ValueError:
            ok = False
        out.append((n, item if ok else "not an anchor line (JSON with seq, head, key_id, hmac)"))
    return out


@dataclass(frozen=True)
class AnchorCheck:
    problem: str | None
    anchors: int
    last_seq: int
    tail: int  # events after the last anchor


def check_anchors(db: Database, path: str | Path, key: AuditKey | None, head_seq: int) -> AnchorCheck:
    """Each line of the anchor file matches the chain at its seq (and, with `key`, its signature)."""
    anchors = read_anchors(path)
    last = 0
    for n, item in anchors:
        where = f"{path} line {n}"
        if isinstance(item, str):
            return AnchorCheck(f"{where}: {item}", len(anchors), last, 0)
        seq = item["seq"]
        if key is not None and item["key_id"] != key.key_id:
            return AnchorCheck(f"{where}: anchored with another key (key id {item['key_id']}; the given key is "
                               f"{key.key_id})", len(anchors), last, 0)
        if key is not None and not key.check(seq, item["head"], item["hmac"]):
            return AnchorCheck(f"{where}: hmac does not match its seq and head (forged line)", len(anchors), last, 0)
        if seq > head_seq:
            return AnchorCheck(f"{where}: anchors seq {seq}, but the chain ends at seq {head_seq} (newest events "
                               "deleted)", len(anchors), last, 0)
        chain = db.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()
        if chain is None or chain[0] != item["head"]:
            return AnchorCheck(f"{where}: the chain's hash at seq {seq} is not the anchored head (the chain was "
                               f"rewritten at or before seq {seq})", len(anchors), last, 0)
        last = max(last, seq)
    return AnchorCheck(None, len(anchors), last, head_seq - last)


def ensure_key(path: str | Path, database: str | Path | None = None) -> tuple[AuditKey, bool]:
    """A writer's audit key, made on a first start when the file is missing; (key, made now).

    A new key is refused when `database` already holds signatures: they were made with a key that
    is lost (or moved), and a new one could not vouch for them; restore that file instead."""
    path = Path(path)
    if path.exists():
        return load_key(path), False
    if database is not None and Path(database).is_file():
        try:
            conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
            try:
                ids = {r[0] for r in conn.execute("SELECT DISTINCT key_id FROM audit_checkpoints")}
            finally:
                conn.close()
        except sqlite3.DatabaseError:  # no such table (older schema), or not a database: nothing signed
            ids = set()
        if ids:
            raise AuditKeyError(f"{path}: audit key file missing, but {database} holds events signed with key id "
                                f"{sorted(ids)[0]}: restore that key file (a new key could not vouch for them)")
    return generate_key(path), True
