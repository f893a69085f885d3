"""What `audit.verify` checks beyond the evidence rows: the upserted tables and the derived tables.

- **Upserted tables** (``lines``, ``cameras``, the plant data; `schema.STATE_TABLES`) change in
  place, so no row digest can cover them. Each event that changes them records the digest of the
  whole table afterwards (``state``); the newest one must match the table as it is. A mismatch in
  ``lines`` or ``cameras`` is named by row, replaying the registrations (their events hold the
  configuration applied); in the plant tables by table.
- **Derived tables** are rebuilt in memory from the evidence and compared:
  ``coil_class_counts`` (what `Store._count_classes` and `seams.recount_classes` write: a defect cut
  by frame seams counts once, under its merged class and severity; the stored ``day`` must lie
  between the first and last capture day of the defects it counts, since a batch that arrives out of
  order may have set it from a later one), and ``review_queue``, re-picked by `review_queue.
  pick_for_review` from the defects, seam links and shadow disagreements recorded before each
  ``review_queue`` event, with that event's seed and budget.

Rows queued before ``review_queue`` events existed cannot be rebuilt (the budget they were picked
with is not recorded) and are reported as not covered; a table whose newest change recorded no
``state`` digest (an older version's event, or an import that stopped before its last batch) is
reported as not covered (a note, not a failure) until the next registration or import records one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from inspection.records import audit, seams
from inspection.records.platform import PLATFORM_TABLES
from inspection.records.review_queue import pick_for_review
from inspection.records.schema import STATE_TABLES
from inspection.records.shadow import disputed_defects
from inspection.records.user_audit import USER_KINDS, UserFacts

_STATE_KINDS = {"line_registered": ("lines", "cameras"), "platform_import": PLATFORM_TABLES}
_PRUNE_BOUNDS = ("coils", "defects", "reviews", "claims")
_LINE_COLUMNS = {"lines": ("type", "strip_width_mm"),  # created_ns is not in the event: the digest covers it
                 "cameras": ("surface", "width_px", "mm_per_px_across", "mm_per_px_along", "offset_mm")}


@dataclass
class ChainFacts:
    """What the chain walk learns for the later checks (`observe` is an `audit.Observer`)."""

    # table -> (seq, kind, digest) of the newest event that changed it; digest None: that event
    # recorded none (an older version's event, or an import batch before its last one)
    state: dict[str, tuple[int, str, list[Any] | None]] = field(default_factory=dict)
    registrations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # seq, coil, seed, budget, and the defects / defect_links / shadow_disagreements rowids recorded before the fill
    queue_fills: list[tuple[int, str, int, int, int, int, int]] = field(default_factory=list)
    prunes: list[tuple[int, int, int, dict[str, int]]] = field(default_factory=list)  # seq, time, days, bounds
    users: UserFacts = field(default_factory=UserFacts)  # checked by `user_audit.check_users`
    notes: list[str] = field(default_factory=list)

    def observe(self, seq: int, time_ns: int, kind: str, event: dict[str, Any],
                covered: dict[str, tuple[int, int]]) -> str | None:
        try:
            if kind in _STATE_KINDS:
                return self._state(seq, kind, event)
            if kind in USER_KINDS:
                return self.users.observe(seq, kind, event)
            if kind == "review_queue":
                self.queue_fills.append((seq, str(event["coil"]), int(event["seed"]), int(event["budget"]),
                                         covered.get("defects", (0, 0))[1], covered.get("defect_links", (0, 0))[1],
                                         covered.get("shadow_disagreements", (0, 0))[1]))
            elif kind == "crops_pruned":  # the rowids its decision saw (older events: the chain's)
                upto = event.get("upto") or {t: covered.get(t, (0, 0))[1] for t in _PRUNE_BOUNDS}
                self.prunes.append((seq, time_ns, int(event["retention_days"]),
                                    {t: int(upto[t]) for t in _PRUNE_BOUNDS}))
        except (KeyError, TypeError, ValueError):
            return f"audit_log seq {seq} ({kind}): event fields are malformed"
        return None

    def _state(self, seq: int, kind: str, event: dict[str, Any]) -> str | None:
        if kind == "line_registered":
            self.registrations.append((seq, event))
        state = event.get("state")
        for table in _STATE_KINDS[kind]:
            self.state[table] = (seq, kind, None)
        if state is None:
            return None
        if not isinstance(state, dict):
            return f"audit_log seq {seq} ({kind}): state is not a table map"
        for table, digest in state.items():
            if table not in STATE_TABLES or not (isinstance(digest, list) and len(digest) == 2):
                return f"audit_log seq {seq} ({kind}): malformed state entry for {table!r}"
            self.state[table] = (seq, kind, digest)
        return None


def check_state_tables(db: Database, facts: ChainFacts) -> str | None:
    """The first upserted table whose content is not the one its newest event recorded."""
    for table in STATE_TABLES:
        if not db[table].exists():
            continue
        current = audit.table_state(db, table)
        recorded = facts.state.get(table)
        if recorded is None:
            if current[0] == 0:
                continue
            return f"{table}: {current[0]} rows, but no audit event recorded them (inserted behind the system's back)"
        seq, kind, digest = recorded
        if digest is None:
            facts.notes.append(f"{table}: not covered since audit seq {seq} ({kind} without a state digest: "
                               "written by an older version, or an import that stopped before its last batch)")
            continue
        if current != digest:
            row = _line_row_problem(db, facts, table) if table in ("lines", "cameras") else None
            return row or (f"{table}: content differs from what audit seq {seq} ({kind}) recorded "
                           f"({digest[0]} rows then, {current[0]} now): edited behind the system's back")
    return None


def _line_row_problem(db: Database, facts: ChainFacts, table: str) -> str | None:
    """Name the first ``lines`` / ``cameras`` row that differs from the registrations replayed."""
    columns = _LINE_COLUMNS[table]
    expected: dict[tuple[Any, ...], tuple[int, dict[str, Any]]] = {}
    for seq, event in facts.registrations:  # what `Store.register_line` wrote, in order (upserts)
        if table == "lines":
            expected[(event.get("line"),)] = (seq, {"type": event.get("type"),
                                                    "strip_width_mm": event.get("strip_width_mm")})
            continue
        for cam in event.get("cameras") or []:
            if isinstance(cam, dict):
                expected[(event.get("line"), cam.get("id"))] = (seq, {c: cam.get(c) for c in columns})
    keys = STATE_TABLES[table]
    cur = db.execute(f"SELECT {keys}, {', '.join(columns)} FROM [{table}] ORDER BY {keys}")
    width = len(keys.split(","))
    seen = set()
    for row in cur.fetchall():
        key, values = tuple(row[:width]), dict(zip(columns, row[width:], strict=True))
        seen.add(key)
        where = f"{table} ({', '.join(map(str, key))})"
        if key not in expected:
            return f"{where}: no audit event registered this row (inserted behind the system's back)"
        seq, wanted = expected[key]
        for column in columns:
            if values[column] != wanted[column]:
                return (f"{where}: {column} is {values[column]!r}, registered as {wanted[column]!r} at audit "
                        f"seq {seq} (edited behind the system's back)")
    missing = sorted(set(expected) - seen, key=str)
    if missing:
        first = missing[0]
        return f"{table} ({', '.join(map(str, first))}): registered at audit seq {expected[first][0]}, missing"
    return None


def check_derived(db: Database, facts: ChainFacts) -> str | None:
    """The first row of ``coil_class_counts`` or ``review_queue`` that the evidence does not give."""
    return _check_class_counts(db) or _check_review_queue(db, facts)


def _has(db: Database, table: str) -> bool:
    return db[table].exists()


def rebuilt_class_counts(db: Database) -> dict[tuple[str, str, str, int], list[int]]:
    """(coil, class, surface, severity) -> [n, first capture ns, last capture ns], from the defects."""
    linked = ("WHERE id NOT IN (SELECT upper_id FROM defect_links UNION SELECT lower_id FROM defect_links)"
              if _has(db, "defect_links") else "")
    counts: dict[tuple[str, str, str, int], list[int]] = {}
    for coil, cls, surface, severity, n, first, last in db.execute(
            "SELECT coil, class, surface, severity, count(*), min(captured_ns), max(captured_ns) FROM defects "
            f"{linked} GROUP BY coil, class, surface, severity"):
        counts[(coil, cls, surface, severity)] = [n, first, last]
    if linked:
        for (coil,) in db.execute("SELECT DISTINCT coil FROM defect_links").fetchall():
            merged, _ = seams.coil_groups(db, coil)
            for m in merged:
                entry = counts.setdefault((coil, m["class"], m["surface"], m["severity"]),
                                          [0, m["captured_ns"], m["captured_ns"]])
                entry[0] += 1
                entry[1], entry[2] = min(entry[1], m["captured_ns"]), max(entry[2], m["captured_ns"])
    return counts


def _day(time_ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time_ns // 1_000_000_000))  # as SQLite's date(ns / 1e9)


def _check_class_counts(db: Database) -> str | None:
    expected = rebuilt_class_counts(db)
    stored = {(c, k, s, v): (day, n) for c, day, k, s, v, n in db.execute(
        "SELECT coil, day, class, surface, severity, n FROM coil_class_counts")}
    for key in sorted(set(expected) | set(stored), key=lambda k: (str(k[0]), str(k[1]), str(k[2]), k[3])):
        where = f"coil_class_counts (coil {key[0]}, class {key[1]}, {key[2]}, severity {key[3]})"
        if key not in stored:
            return f"{where}: missing, the defects give n = {expected[key][0]} (row deleted)"
        day, n = stored[key]
        if key not in expected:
            return f"{where}: n = {n}, but no such defect is recorded (row added or edited)"
        want, first, last = expected[key]
        if n != want:
            return f"{where}: n = {n}, the defects give {want} (edited)"
        if not _day(first) <= str(day) <= _day(last):
            return f"{where}: day {day}, the defects were captured {_day(first)}..{_day(last)} (edited)"
    return None


def _defects_upto(db: Database, coil: str, defects_upto: int,
                  links_upto: int) -> tuple[list[tuple[int, str, float, int]], dict[int, int]]:
    """(id, class, score, severity) of the coil's defects merged across seams, as they stood when the
    evidence ended at these rowids (tuples: a coil may have thousands, and only linked ones merge), and
    fragment id -> merged id for the linked ones."""
    rows = db.execute("SELECT id, class, score, severity FROM defects WHERE coil = ? AND id <= ?",
                      (coil, defects_upto)).fetchall()
    if not _has(db, "defect_links"):
        return rows, {}
    links = [tuple(r) for r in db.execute(
        "SELECT upper_id, lower_id, severity FROM defect_links WHERE coil = ? AND id <= ? ORDER BY id",
        (coil, links_upto))]
    if not links:
        return rows, {}
    merged, alias = seams.coil_groups(db, coil, links)
    return [r for r in rows if r[0] not in alias] + [(m["id"], m["class"], m["score"], m["severity"])
                                                     for m in merged], alias


def rebuilt_review_queue(db: Database, facts: ChainFacts) -> dict[int, tuple[str, str, float, str, str]]:
    """defect_id -> (coil, class, priority, reason, what picked it), as the events filled the queue
    (a later fill keeps the rows of an earlier one, as INSERT OR IGNORE does)."""
    expected: dict[int, tuple[str, str, float, str, str]] = {}
    for seq, coil, seed, budget, defects_upto, links_upto, shadow_upto in facts.queue_fills:
        defects, alias = _defects_upto(db, coil, defects_upto, links_upto)
        disputed = ({alias.get(d, d) for d in disputed_defects(db, coil, upto=shadow_upto, defects_upto=defects_upto)}
                    if shadow_upto else set())
        for d, cls, priority, reason in pick_for_review(coil, defects, budget=budget, seed=seed, disputed=disputed):
            expected.setdefault(d, (coil, cls, priority, reason, f"audit seq {seq}"))
    return expected


def _check_review_queue(db: Database, facts: ChainFacts) -> str | None:
    expected = rebuilt_review_queue(db, facts)
    stored = {d: (coil, cls, priority, reason) for d, coil, cls, priority, reason in db.execute(
        "SELECT defect_id, coil, class, priority, reason FROM review_queue")}
    filled = {fill[1] for fill in facts.queue_fills}
    legacy = {d for d, row in stored.items() if row[0] not in filled}
    if legacy:  # the budget they were picked with was not recorded: they cannot be rebuilt
        coils = len({stored[d][0] for d in legacy})
        facts.notes.append(f"review_queue: {len(legacy)} rows of {coils} coils queued without a review_queue "
                           "event (an older version): not rebuilt")
        stored = {d: row for d, row in stored.items() if d not in legacy}
    for d in sorted(set(expected) | set(stored)):
        if d not in stored:
            coil, _, _, reason, origin = expected[d]
            return f"review_queue defect_id {d} (coil {coil}): picked ({reason}, {origin}) but not queued (deleted)"
        coil, cls, priority, reason = stored[d]
        if d not in expected:
            return (f"review_queue defect_id {d} (coil {coil}): queued, but the review rule does not pick it "
                    "from the evidence (added behind the system's back)")
        want = expected[d]
        if (coil, cls, reason) != want[:2] + (want[3],) or not math.isclose(priority, want[2], abs_tol=1e-9):
            return (f"review_queue defect_id {d} (coil {coil}): stored ({cls}, priority {priority:.4f}, {reason}) "
                    f"differs from the rebuild ({want[1]}, priority {want[2]:.4f}, {want[3]}; {want[4]}) (edited)")
    return None
