"""Inspector actions on a line database (the console's writes): reviews, grade overrides, alarms,
claims. Part of `store.Store` (mixed in); each call is one write transaction with its audit row.

- ``add_review(defect_id, reviewer, action, new_class=None, reason=None)``: append-only; action is
  confirm | relabel (needs new_class) | reject; a graded coil is regraded in the same transaction.
- ``override_grade(coil, reviewer, grade, reason)``: reason mandatory; stands until the next override.
  One that needs a second person (`grading.needs_second_person`: hold -> prime) is stored pending
  (an ``override_approvals`` "requested" row, no ``grades`` row) and takes effect only through
  ``approve_override(override_id, approver)`` by someone else; ``decline_override`` closes it.
- ``add_alarm(kind, message, coil=..., surface=, class_=, across_mm=, pitch_mm=, roll_diameter_mm=,
  count=, details=)``; the recorder keeps the alarm's severity in ``details``. ``add_alarms``: many
  `alarms.Alarm` in one insert and one audit event (a batch's severe-defect alarms).
- ``open_claim`` / ``close_claim(coil, claim_no, by, reason=None)``: crops of claimed coils are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inspection.records import alarms, audit, queries
from inspection.records.db import write_transaction
from inspection.records.errors import StoreError
from inspection.records.grading import ALL_GRADES, needs_second_person

REVIEW_ACTIONS = ("confirm", "relabel", "reject")


@dataclass(frozen=True)
class OverrideOutcome:
    """What `override_grade` stored: the override's id and its ``grades`` row, None while pending."""

    override_id: int
    grade_id: int | None

    @property
    def pending(self) -> bool:
        return self.grade_id is None


class InspectorActions:
    """Methods of `Store` that inspectors trigger; they use the host's db, clock, audit and grading."""

    def add_review(
        self,
        defect_id: int,
        reviewer: str,
        action: str,
        new_class: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Append a review; the coil is regraded in the same transaction if it was graded."""
        reviewer = _name("reviewer", reviewer)
        if action not in REVIEW_ACTIONS:
            raise StoreError(f"action: expected one of {', '.join(REVIEW_ACTIONS)}, got {action!r}")
        if action == "relabel":
            new_class = _name("new_class", new_class)
        elif new_class is not None:
            raise StoreError(f"new_class: only a relabel takes a new class, got {new_class!r} for {action}")
        with write_transaction(self.db):
            row = self.db.execute("SELECT coil FROM defects WHERE id=?", (defect_id,)).fetchone()
            if row is None:
                raise StoreError(f"defect_id: no defect {defect_id}")
            coil = row[0]
            review_id = self._insert_audited(
                "reviews", {"defect_id": defect_id, "coil": coil, "reviewer": reviewer, "action": action,
                            "new_class": new_class, "reason": reason or None, "time_ns": self.clock()},
                "review", {"defect_id": defect_id, "coil": coil, "action": action, "new_class": new_class},
                actor=reviewer)
            if self.db.execute("SELECT 1 FROM grades WHERE coil=? LIMIT 1", (coil,)).fetchone():
                self.grade_coil(coil, f"review:{review_id}")
        return review_id

    def override_grade(self, coil: str, reviewer: str, grade_name: str, reason: str) -> OverrideOutcome:
        """An inspector's grade for `coil`; it stands until the next override. One that needs a second
        person is stored pending: not in effect until `approve_override`."""
        reviewer = _name("reviewer", reviewer)
        if grade_name not in ALL_GRADES:
            raise StoreError(f"grade: expected one of {', '.join(ALL_GRADES)}, got {grade_name!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise StoreError("reason: a grade override needs a reason")
        reason = reason.strip()
        with write_transaction(self.db):
            if not self.db.execute("SELECT 1 FROM coils WHERE id=?", (coil,)).fetchone():
                raise StoreError(f"coil: no coil {coil!r}")
            effective = queries.current_grade(self.db, coil)
            automatic = queries.automatic_grade(self.db, coil)
            override_id = self._insert_audited(
                "grade_overrides", {"coil": coil, "reviewer": reviewer, "grade": grade_name,
                                    "reason": reason, "time_ns": self.clock()},
                "grade_override", {"coil": coil, "grade": grade_name}, actor=reviewer)
            if needs_second_person(effective and effective["grade"], automatic, grade_name):
                self._insert_audited(
                    "override_approvals", {"override_id": override_id, "coil": coil, "action": "requested",
                                           "by": reviewer, "reason": None, "time_ns": self.clock()},
                    "override_requested", {"coil": coil, "override_id": override_id, "grade": grade_name},
                    actor=reviewer)
                return OverrideOutcome(override_id, None)
            grade_id = self._insert_grade(coil, grade_name, "override", f"override:{override_id}",
                                          [f"override by {reviewer}: {reason}"], None, None, reviewer)
            return OverrideOutcome(override_id, grade_id)

    def approve_override(self, override_id: int, approver: str) -> int:
        """The second person's approval of a pending override: its grade takes effect now; returns the
        ``grades`` row id. Refused when `approver` made the override (names compared without case),
        when it is not pending, or when a later override of the coil superseded it."""
        approver = _name("approver", approver)
        with write_transaction(self.db):
            override = self._pending_override(override_id)
            if override["reviewer"].casefold() == approver.casefold():
                raise StoreError(f"approval refused: override #{override_id} ({override['grade']} for coil "
                                 f"{override['coil']}) needs a second person: {override['reviewer']} made it, "
                                 "someone else must approve it")
            self._insert_audited(
                "override_approvals", {"override_id": override_id, "coil": override["coil"], "action": "approved",
                                       "by": approver, "reason": None, "time_ns": self.clock()},
                "override_approved", {"coil": override["coil"], "override_id": override_id}, actor=approver)
            return self._insert_grade(
                override["coil"], override["grade"], "override", f"override:{override_id}",
                [f"override by {override['reviewer']}: {override['reason']}",
                 f"second person: approved by {approver}"], None, None, override["reviewer"], actor=approver)

    def decline_override(self, override_id: int, by: str, reason: str | None = None) -> int:
        """Close a pending override without effect (the second person says no, or its author withdraws
        it); returns the ``override_approvals`` row id."""
        by = _name("by", by)
        with write_transaction(self.db):
            override = self._pending_override(override_id)
            return self._insert_audited(
                "override_approvals", {"override_id": override_id, "coil": override["coil"], "action": "declined",
                                       "by": by, "reason": (reason or "").strip() or None, "time_ns": self.clock()},
                "override_declined", {"coil": override["coil"], "override_id": override_id}, actor=by)

    def _pending_override(self, override_id: int) -> dict[str, Any]:
        """The override row if it waits for a second person; `StoreError` saying why not otherwise."""
        row = self.db.execute("SELECT id, coil, reviewer, grade, reason FROM grade_overrides WHERE id=?",
                              (override_id,)).fetchone()
        if row is None:
            raise StoreError(f"override: no override #{override_id}")
        override = dict(zip(("id", "coil", "reviewer", "grade", "reason"), row, strict=True))
        steps = dict(self.db.execute("SELECT action, by FROM override_approvals WHERE override_id=?",
                                     (override_id,)).fetchall())
        if "requested" not in steps:
            raise StoreError(f"override #{override_id} needs no second person: it took effect when it was made")
        for done in ("approved", "declined"):
            if done in steps:
                raise StoreError(f"override #{override_id} was {done} by {steps[done]} already")
        if self.db.execute("SELECT 1 FROM grade_overrides WHERE coil=? AND id>?",
                           (override["coil"], override_id)).fetchone():
            raise StoreError(f"override #{override_id} is superseded by a later override of coil {override['coil']}")
        return override

    def add_alarm(self, kind: str, message: str, *, coil: str | None = None, **fields: Any) -> int:
        """Record an alarm (periodic defect, critical defect, incomplete coverage)."""
        row = alarms.row(kind, message, coil, fields, self.clock())
        with write_transaction(self.db):
            return self._insert_audited("alarms", row, "alarm", {"coil": coil, "kind": kind})

    def add_alarms(self, decided: Sequence[alarms.Alarm]) -> list[int]:
        """Record alarms in one insert with one audit event (joining the caller's transaction, as
        `Store.apply_batch` does for a batch's severe-defect alarms); their ids, in order."""
        if not decided:
            return []
        now = self.clock()
        rows = [alarms.row(a.kind, a.message, a.coil, {**a.fields, "details": a.stored_details()}, now)
                for a in decided]
        with write_transaction(self.db):
            before = audit.max_rowid(self.db, "alarms")
            # bound by position (every row has `alarms.row`'s keys, in its order): no lookup per value
            self.db.conn.executemany(f"INSERT INTO alarms ({', '.join(rows[0])}) "
                                     f"VALUES ({', '.join('?' * len(rows[0]))})", [tuple(r.values()) for r in rows])
            entry, stored = self._new_rows("alarms", before, as_dicts=False)
            self._audit("alarm", {"kinds": sorted({a.kind for a in decided}),
                                  "coils": sorted({a.coil for a in decided if a.coil is not None}),
                                  "alarms": len(decided), "rows": {"alarms": entry}})
        return [r[0] for r in stored]

    def open_claim(self, coil: str, claim_no: str, by: str, reason: str | None = None) -> int:
        return self._claim(coil, claim_no, "open", by, reason)

    def close_claim(self, coil: str, claim_no: str, by: str, reason: str | None = None) -> int:
        return self._claim(coil, claim_no, "close", by, reason)

    def _claim(self, coil: str, claim_no: str, action: str, by: str, reason: str | None) -> int:
        by, claim_no = _name("by", by), _name("claim_no", claim_no)
        with write_transaction(self.db):
            return self._insert_audited(
                "claims", {"coil": coil, "claim_no": claim_no, "action": action, "by": by, "reason": reason,
                           "time_ns": self.clock()},
                "claim", {"coil": coil, "claim_no": claim_no, "action": action}, actor=by)


def _name(field_name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 100:
        raise StoreError(f"{field_name}: expected a non-empty name of at most 100 characters, got {value!r}")
    return value.strip()
