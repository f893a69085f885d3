"""The write API of a line database: `Store` (its inspector actions live in `actions`).

Every mutating call runs in one write transaction together with its audit row (`audit.append`), so
evidence and its audit entry commit or vanish together.

- `Store.apply_batch(messages)`: the recorder's path; idempotent (natural keys + INSERT OR IGNORE);
  a re-sent frame or coil event that differs from its record is reported (`duplicates`), never added.
  Fragments of a defect cut by a frame seam are linked in the same transaction (`seams`), and the
  severe-defect alarms the recorder decides on the new rows are stored in it (`alarms`).
- `Store.grade_coil(coil, trigger)`: grade from the effective defects; history row when it changes.
- `Store.add_review(defect_id, reviewer, action, new_class, reason)`: append-only; regrades the coil.
- `Store.override_grade(coil, reviewer, grade, reason)`: an inspector's grade, reason mandatory;
  hold -> prime waits for `Store.approve_override` by a second person (see `actions`).
- `Store.add_alarm`, `Store.open_claim` / `close_claim`, `Store.enqueue_reviews`, `Store.set_status`,
  `Store.register_line`.
- `Store.record_shadow(messages)`: shadow mode's disagreements, in tables of their own (`shadow`).

Effective grade of a coil: its latest ``override`` row if it has any, else its latest ``auto`` row
(a pending override has no row until it is approved, so it is never effective before that).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspection.frame import CoilEvent
from inspection.records import audit, batch_rows, queries, seam_filter, seams
from inspection.records import crops as crops_module
from inspection.records import duplicates as duplicates_module
from inspection.records.actions import REVIEW_ACTIONS, InspectorActions, OverrideOutcome
from inspection.records.alarms import Alarm
from inspection.records.audit_keys import AuditKey
from inspection.records.crops import CropStore
from inspection.records.db import open_db, write_transaction
from inspection.records.errors import StoreError
from inspection.records.grading import GradeResult, RuleSet, grade, load_rules
from inspection.records.review_queue import select_for_review
from inspection.records.shadow import ShadowRecords
from inspection.results import FrameDropped, FrameResult, ResultMessage

__all__ = ["REVIEW_ACTIONS", "BatchResult", "OverrideOutcome", "Store"]
_BATCH_TABLES = ("models", "coils", "coil_events", "frames", "defects", "defect_links", "defect_guesses",
                 "frame_seals")


def _insert(table: str, columns: str) -> str:
    """INSERT OR IGNORE (re-sent messages are duplicates, not errors) with named parameters."""
    names = columns.split()
    return f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"


# The order is the order of the foreign keys: a coil before its events, frames and defects (the
# defects' rows, the most numerous, are positional: `batch_rows`).
_BATCH_INSERTS = {
    "coils": _insert("coils", "id line line_type first_seen_ns"),
    "coil_events": _insert("coil_events", "coil camera surface kind seq time_ns length_mm frames dropped"),
    "frames": _insert("frames", "coil camera frame_index seq status position_mm length_mm model_id defects reason "
                                "captured_ns recorded_ns"),
    "frame_seals": _insert("frame_seals", "coil camera frame_index digest sig"),
}


def _coil_row(coil: str, source: Any, time_ns: int) -> dict[str, Any]:
    return {"id": coil, "line": source.line, "line_type": source.line_type, "first_seen_ns": time_ns}


def _coil_event_row(m: CoilEvent) -> dict[str, Any]:
    return {"coil": m.coil, "camera": m.source.camera, "surface": m.source.surface, "kind": m.kind, "seq": m.seq,
            "time_ns": m.time_ns, "length_mm": m.length_mm, "frames": m.frames, "dropped": m.dropped}


def _frame_row(m: FrameDropped | FrameResult, now: int) -> dict[str, Any]:
    inspected = isinstance(m, FrameResult)
    return {"coil": m.coil, "camera": m.source.camera, "frame_index": m.index, "seq": m.seq,
            "status": "inspected" if inspected else "dropped",
            "position_mm": m.position_mm if inspected else None, "length_mm": m.length_mm if inspected else None,
            "model": (m.model_version, m.model_sha256) if inspected else None,
            "defects": len(m.defects) if inspected else 0, "reason": None if inspected else m.reason,
            "captured_ns": m.captured_ns, "recorded_ns": now}


@dataclass
class BatchResult:
    """What one `apply_batch` changed (duplicates are messages already recorded)."""

    messages: int = 0
    new_defects: int = 0
    duplicate_defects: int = 0
    new_frames: int = 0
    duplicate_frames: int = 0
    coil_starts: list[str] = field(default_factory=list)
    coil_ends: list[str] = field(default_factory=list)
    # only when asked for; a new fragment of a defect cut by a frame seam has ``merged_into`` (the
    # id of the defect's earliest recorded fragment, or None if it is that one) and ``group_severity``
    defect_rows: list[dict[str, Any]] = field(default_factory=list)
    # the new defects as stored (`batch_rows.STORED_NAMES`), when built rather than read back
    stored_rows: list[tuple] = field(default_factory=list)
    seam_links: int = 0  # defect_links rows added
    audit_seq: int | None = None
    crops_written: int = 0
    crops_failed: int = 0  # defects recorded without their crop: the file could not be written
    crop_error: str | None = None
    alarms: list[tuple[int, Alarm]] = field(default_factory=list)  # (alarm id, alarm) stored with the batch
    # re-sent frames and coil events that differ from what is recorded (`duplicates`; the first stays)
    conflicts: list[dict[str, Any]] = field(default_factory=list)


class Store(InspectorActions, ShadowRecords):
    """Writer of one line database (the recorder, and the console through the same API)."""

    def __init__(
        self,
        path: str | Path,
        *,
        rules: RuleSet | None = None,
        coverage_min: float = 0.995,
        crops: CropStore | None = None,
        actor: str = "recorder",
        clock: Callable[[], int] = time.time_ns,
        seam_margin_px: float | None = seams.DEFAULT_MARGIN_PX,
        seam_min_overlap: float = seams.DEFAULT_MIN_OVERLAP,
        seam_one_to_one: bool = True,
        review_budget_per_hour: float = 60.0,
        audit_key: AuditKey | None = None,
    ) -> None:
        """`seam_margin_px` None turns seam linking off (fragments stay separate defects); with
        `audit_key` every audit event this store appends is signed (`audit.append`)."""
        self.seam_rule = (None if seam_margin_px is None
                          else seams.SeamRule(margin_px=seam_margin_px, min_overlap=seam_min_overlap,
                                              one_to_one=seam_one_to_one))
        self.path = Path(path)
        self.db = open_db(self.path)
        self.rules = rules or load_rules(None)
        self.coverage_min = coverage_min
        if review_budget_per_hour < 0:
            raise StoreError(f"review_budget_per_hour: expected >= 0, got {review_budget_per_hour}")
        self.review_budget_per_hour = review_budget_per_hour
        self.crops = crops
        self.actor = actor
        self.clock = clock
        self.audit_key = audit_key
        audit.sign_with(self.db, audit_key)
        self._models: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _audit(self, kind: str, event: dict[str, Any], actor: str | None = None) -> int:
        return audit.append(self.db, kind, actor or self.actor, event, self.clock())

    def register_line(
        self, line_id: str, line_type: str, strip_width_mm: float, cameras: Sequence[dict[str, Any]]
    ) -> None:
        """Record the line and its cameras (upsert; the audit row keeps what was applied)."""
        with write_transaction(self.db):
            self.db.execute(
                "INSERT INTO lines (id, type, strip_width_mm, created_ns) VALUES (?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET type=excluded.type, strip_width_mm=excluded.strip_width_mm",
                (line_id, line_type, strip_width_mm, self.clock()),
            )
            for cam in cameras:
                self.db.execute(
                    "INSERT OR REPLACE INTO cameras (line, id, surface, width_px, mm_per_px_across, "
                    "mm_per_px_along, offset_mm) VALUES (?,?,?,?,?,?,?)",
                    (
                        line_id,
                        cam["id"],
                        cam["surface"],
                        cam.get("width_px"),
                        cam.get("mm_per_px_across"),
                        cam.get("mm_per_px_along"),
                        cam.get("offset_mm"),
                    ),
                )
            self._audit(
                "line_registered",
                {
                    "line": line_id,
                    "type": line_type,
                    "strip_width_mm": strip_width_mm,
                    "cameras": list(cameras),
                    # what the tables hold now (an upsert keeps cameras of earlier registrations)
                    "state": {t: audit.table_state(self.db, t) for t in ("lines", "cameras")},
                },
            )

    # -- the recorder's path ------------------------------------------------------------------
    def apply_batch(self, messages: Sequence[ResultMessage], *, want_rows: bool = False,
                    alarms: Callable[[list[dict[str, Any]]], Sequence[Alarm]] | None = None) -> BatchResult:
        """Record a batch of worker messages in one transaction; re-sent messages are ignored.

        `alarms` decides, from the new defect rows (as in ``defect_rows``), the alarms to store in
        the same transaction (`add_alarms`): a defect is never committed without the alarm it
        raised. Crops are staged before the transaction and moved into place after it (`crops`); a
        crop that cannot be written leaves its defect without one (``crops_failed`` in the result)."""
        want_rows = want_rows or alarms is not None
        result = BatchResult(messages=len(messages))
        staged: list[str] = []
        now = self.clock()
        rows: dict[str, list[dict[str, Any]]] = {"coils": [], "coil_events": [], "frames": [], "frame_seals": []}
        framed: list[FrameDropped | FrameResult] = []
        events: list[CoilEvent] = []
        frame_crops: list[list[str | None]] = []  # per frame message, its defects' staged crops
        for m in messages:
            if isinstance(m, CoilEvent):
                events.append(m)
                rows["coil_events"].append(_coil_event_row(m))
                (result.coil_starts if m.kind == "coil_start" else result.coil_ends).append(m.coil)
                rows["coils"].append(_coil_row(m.coil, m.source, m.time_ns))
            elif isinstance(m, FrameDropped | FrameResult):
                framed.append(m)
                rows["coils"].append(_coil_row(m.coil, m.source, m.captured_ns))
                rows["frames"].append(_frame_row(m, now))
                if not isinstance(m, FrameResult):
                    frame_crops.append([])
                elif self.crops is None:  # nothing to stage (a line without a crop folder)
                    frame_crops.append([None] * len(m.defects))
                else:
                    frame_crops.append([self._stage(d.crop_png, staged, result) for d in m.defects])
            else:
                raise StoreError(f"apply_batch: unknown message type {type(m).__name__}")
        all_defects = sum(len(c) for c in frame_crops)
        defect_rows: list[tuple] = []  # as stored (`batch_rows.STORED_NAMES`), at the rowids expected
        guess_rows: list[tuple] = []
        with write_transaction(self.db):
            before = {t: audit.max_rowid(self.db, t) for t in _BATCH_TABLES}
            for table in ("coils", "coil_events", "frames"):
                if table == "frames":  # a model is recorded once, then named by its id
                    for row in rows["frames"]:
                        model = row.pop("model")
                        row["model_id"] = self._model_id(*model, now) if model else None
                self.db.conn.executemany(_BATCH_INSERTS[table], rows[table])
            # Only a frame recorded now brings its defects and seal: a re-sent frame (a retry, or
            # someone reporting a frame already recorded) must not add defects to the first record.
            fresh, duplicates = self._split_new_frames(framed, before["frames"])
            for i in fresh:
                m = framed[i]
                if isinstance(m, FrameResult) and m.defects:
                    defect_rows += batch_rows.defect_rows(m, self._model_id(m.model_version, m.model_sha256, now),
                                                          frame_crops[i], before["defects"] + 1 + len(defect_rows))
                    guess_rows += batch_rows.guess_rows(m)
                if m.capture is not None:
                    rows["frame_seals"].append({"coil": m.coil, "camera": m.source.camera, "frame_index": m.index,
                                                "digest": m.capture.digest, "sig": m.capture.sig})
            inserted = self.db.conn.executemany(batch_rows.DEFECT_INSERT, defect_rows).rowcount
            # the batch's defects as stored, for its audit digest and the recorder, without reading them back
            built = (batch_rows.as_stored(defect_rows, inserted, audit.max_rowid(self.db, "defects"))
                     if defect_rows else None)
            self.db.conn.executemany(_BATCH_INSERTS["frame_seals"], rows["frame_seals"])
            self.db.conn.executemany(batch_rows.GUESSES_INSERT, guess_rows)
            result.conflicts = duplicates_module.frame_conflicts(self.db, duplicates)
            if events:
                result.conflicts += duplicates_module.event_conflicts(self.db, self._old_events(events,
                                                                                               before["coil_events"]))
            linked = seams.LinkResult()
            if self.seam_rule is not None and audit.max_rowid(self.db, "defects") > before["defects"]:
                # the rows as built say which new defects may lie near a seam: only those are looked at
                near = (None if built is None
                        else seam_filter.seam_candidates(self.db, built, self.seam_rule.margin_px))
                linked = seams.link_new_defects(self.db, before["defects"], self.seam_rule, self.rules.severity,
                                                now, only=near)
            result.seam_links = linked.links
            covered: dict[str, Any] = {}
            for table in _BATCH_TABLES:
                as_dicts = table != "defects" or want_rows
                if table == "defects" and built is not None:
                    entry, fetched = batch_rows.audit_entry(built), built
                    if as_dicts:
                        fetched = list(map(batch_rows.row_dict, built))
                else:
                    entry, fetched = self._new_rows(table, before[table], as_dicts=as_dicts)
                if entry:
                    covered[table] = entry
                if table == "defects":
                    result.new_defects = len(fetched)
                    if fetched:
                        # seams.recount_classes already rewrote the coils that got links
                        self._count_classes(before["defects"], skip=linked.coils, built=built)
                    result.stored_rows = built or []
                    if want_rows:
                        for row in fetched:
                            merged_into, group_severity = linked.merged.get(row["id"], (None, None))
                            if group_severity is not None:
                                row["merged_into"], row["group_severity"] = merged_into, group_severity
                        result.defect_rows = fetched
                elif table == "frames":
                    result.new_frames = len(fetched)
            result.duplicate_defects = all_defects - result.new_defects
            result.duplicate_frames = len(rows["frames"]) - result.new_frames
            if covered:
                result.audit_seq = self._audit("batch", {"messages": len(messages), "rows": covered})
            if alarms is not None and result.defect_rows:
                decided = alarms(result.defect_rows)
                result.alarms = list(zip(self.add_alarms(decided), decided, strict=True))
        if staged and self.crops is not None:  # committed: the crops go into place (see `crops`)
            self.crops.commit(staged)
        return result

    def _split_new_frames(self, framed: list[FrameDropped | FrameResult], before: int) -> tuple[list[int], list[Any]]:
        """(indexes of the messages whose frame this batch recorded, the other messages): the first
        message of a frame in the batch is the one INSERT OR IGNORE kept."""
        if not framed:
            return [], []
        new = set(self.db.execute("SELECT coil, camera, frame_index FROM frames WHERE rowid > ?", (before,)))
        fresh, duplicates = [], []
        for i, m in enumerate(framed):
            key = (m.coil, m.source.camera, m.index)
            if key in new:
                new.discard(key)
                fresh.append(i)
            else:
                duplicates.append(m)
        return fresh, duplicates

    def _old_events(self, events: list[CoilEvent], before: int) -> list[CoilEvent]:
        """The coil events of a batch that this batch did not record (already recorded before)."""
        new = set(self.db.execute("SELECT coil, camera, kind FROM coil_events WHERE rowid > ?", (before,)))
        old = []
        for e in events:
            key = (e.coil, e.source.camera, e.kind)
            if key in new:
                new.discard(key)
            else:
                old.append(e)
        return old

    def _stage(self, png: bytes | None, staged: list[str], result: BatchResult) -> str | None:
        """The crop's sha256 once written to staging; None (the defect is recorded without it) when
        it cannot be written: a full crop disk must not stop the records."""
        if self.crops is None or not png:
            return None
        try:
            sha = self.crops.stage(png)
        except StoreError as exc:
            result.crops_failed += 1
            result.crop_error = str(exc)
            return None
        staged.append(sha)
        result.crops_written += 1
        return sha

    def recover_crops(self) -> crops_module.RecoverResult | None:
        """Crops a recorder that died left staged: into place if recorded, deleted if not (`crops.recover`);
        the defects' and the shadow disagreements' together."""
        if self.crops is None:
            return None
        found = crops_module.recover(self.db, self.crops)
        shadow = self.recover_shadow_crops()
        if shadow is None:
            return found
        return crops_module.RecoverResult(found.moved + shadow.moved, found.deleted + shadow.deleted)

    def _model_id(self, version: str, sha: str, now: int) -> int:
        key = (version, sha)
        if key not in self._models:
            self.db.execute(
                "INSERT OR IGNORE INTO models (version, sha256, first_seen_ns) VALUES (?,?,?)",
                (version, sha, now),
            )
            self._models[key] = self.db.execute(
                "SELECT id FROM models WHERE version=? AND sha256=?", key
            ).fetchone()[0]
        return self._models[key]

    def _new_rows(self, table: str, before: int, *,
                  as_dicts: bool = True) -> tuple[list[Any] | None, list[Any]]:
        """Audit entry and rows of `table` inserted after rowid `before` (dicts, or raw tuples)."""
        cur = self.db.execute(f"SELECT rowid, * FROM [{table}] WHERE rowid > ? ORDER BY rowid", (before,))
        raw = cur.fetchall()
        if not raw:
            return None, []
        entry = [raw[0][0], raw[-1][0], len(raw), audit.sha256_rows(raw)]
        if not as_dicts:
            return entry, raw
        names = [col[0] for col in cur.description]
        return entry, [dict(zip(names, r, strict=True)) for r in raw]

    def _count_classes(self, before: int, skip: set[str], built: list[tuple] | None = None) -> None:
        if built is not None:  # counted from the rows as built; the same rows as the query's below
            self.db.conn.executemany(
                "INSERT INTO coil_class_counts (coil, class, surface, severity, day, n) "
                "VALUES (?, ?, ?, ?, date(? / 1000000000, 'unixepoch'), ?) "
                "ON CONFLICT(coil, class, surface, severity) DO UPDATE SET n = n + excluded.n",
                batch_rows.class_counts(built, skip))
            return
        # Derived per-coil counts, aggregated by SQLite itself over the rows this batch added.
        skipped = sorted(skip)
        self.db.execute(
            "INSERT INTO coil_class_counts (coil, class, surface, severity, day, n) "
            "SELECT coil, class, surface, severity, date(min(captured_ns) / 1000000000, 'unixepoch'), "
            "count(*) "
            f"FROM defects WHERE id > ? AND coil NOT IN ({','.join('?' * len(skipped))}) "
            "GROUP BY coil, class, surface, severity "
            "ON CONFLICT(coil, class, surface, severity) DO UPDATE SET n = n + excluded.n", (before, *skipped))

    # -- grading -------------------------------------------------------------------------------
    def grade_coil(self, coil: str, trigger: str, *, force: bool = False,
                   defects: list[dict[str, Any]] | None = None) -> GradeResult:
        """Grade `coil` from its effective defects; a history row is added when the result changes.
        `defects`: the coil's `queries.coil_defects` rows, read by the caller in the transaction
        this call joins (so no review can slip in between the read and the grade)."""
        with write_transaction(self.db):
            result = grade(queries.grade_input(self.db, coil, defects), self.rules, self.coverage_min)
            last = self.db.execute(
                "SELECT grade, reasons FROM grades WHERE coil=? AND source='auto' ORDER BY id DESC LIMIT 1",
                (coil,),
            ).fetchone()
            if (
                force
                or last is None
                or (last[0], json.loads(last[1])) != (result.grade, list(result.reasons))
            ):
                self._insert_grade(
                    coil,
                    result.grade,
                    "auto",
                    trigger,
                    list(result.reasons),
                    result.coverage,
                    result.counted,
                    None,
                )
        return result

    def _insert_grade(
        self,
        coil: str,
        grade_name: str,
        source: str,
        trigger: str,
        reasons: list[str],
        coverage: float | None,
        counted: int | None,
        by: str | None,
        actor: str | None = None,
    ) -> int:
        r = self.rules
        return self._insert_audited(
            "grades", {"coil": coil, "grade": grade_name, "source": source, "trigger": trigger,
                       "reasons": audit.canonical_json(reasons), "rule_set": r.name, "rule_version": r.version,
                       "rule_sha256": r.sha256, "coverage": coverage, "defects_counted": counted, "by": by,
                       "time_ns": self.clock()},
            "grade", {"coil": coil, "grade": grade_name, "source": source, "trigger": trigger}, actor=actor or by)

    def _insert_audited(self, table: str, row: dict[str, Any], kind: str, event: dict[str, Any],
                        actor: str | None = None) -> int:
        """Insert one evidence row and the audit event that covers it (in the caller's transaction);
        returns the row's id. Column names come from this module, never from outside."""
        before = audit.max_rowid(self.db, table)
        self.db.execute(f"INSERT INTO [{table}] ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        tuple(row.values()))
        entry, _ = self._new_rows(table, before)
        self._audit(kind, {**event, "rows": {table: entry}}, actor=actor)
        return entry[0]

    def review_budget(self, coil: str) -> int:
        """Sample and uncertain items the coil may add to the queue: the hourly budget times the
        coil's duration (first to last frame), at least one."""
        hours = queries.coil_duration_s(self.db, coil) / 3600.0
        return max(1, round(self.review_budget_per_hour * hours))

    def enqueue_reviews(self, coil: str, *, seed: int = 0, budget: int | None = None,
                        defects: list[dict[str, Any]] | None = None) -> int:
        """Put the coil's defects that need an expert into the review queue (see `review_queue`);
        `budget` (default `review_budget`) bounds the sampled and uncertain items; `defects` as for
        `grade_coil`.

        The queue is derived, but the event says when it was filled, with which seed and budget:
        `audit verify` rebuilds it from the evidence recorded before this event and compares."""
        with write_transaction(self.db):
            budget = self.review_budget(coil) if budget is None else budget
            picked = select_for_review(self.db, coil, seed=seed, budget=budget, defects=defects)
            self.db.conn.executemany(
                "INSERT OR IGNORE INTO review_queue (defect_id, coil, class, priority, reason, created_ns) "
                "VALUES (?,?,?,?,?,?)",
                [(d, coil, c, p, r, self.clock()) for d, c, p, r in picked],
            )
            if picked:
                self._audit("review_queue", {"coil": coil, "seed": seed, "budget": budget, "queued": len(picked)})
        return len(picked)

    def set_status(self, values: dict[str, Any]) -> None:
        """Live figures for the console (derived, not evidence: not audited)."""
        now = self.clock()
        with write_transaction(self.db):
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO status (key, value, updated_ns) VALUES (?,?,?)",
                [(k, json.dumps(v), now) for k, v in values.items()],
            )
