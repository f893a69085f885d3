"""The console's only writes: reviews, grade overrides and their second person, through the records write API.

`inspection.records.store.Store` appends the row and its audit entry in one transaction and
regrades the coil after a review; the console never writes SQL itself. The Store grades with
the line config's rule set and coverage gate, the same ones the recorder uses. Every action is
done in the name of the signed-in user whose role allows it (`auth.require`), never a typed name.
"""

from __future__ import annotations

from pathlib import Path

from inspection.console.auth import require
from inspection.console.context import audit_key, sources
from inspection.records.grading import load_rules
from inspection.records.store import OverrideOutcome, Store


def _store(path: str | Path) -> Store:
    line = sources().line
    if line is None:
        return Store(path, actor="console", audit_key=audit_key())
    # With the line's audit key the console signs its own events (an unsigned review or override
    # after the first signed event is what `audit verify` reports as forged).
    return Store(path, rules=load_rules(line.records.rules), coverage_min=line.records.coverage_min,
                 actor="console", audit_key=audit_key())


def review(path: str | Path, defect_id: int, action: str, new_class: str | None = None,
           reason: str | None = None) -> int:
    """Record the signed-in user's decision on one defect; returns the review id."""
    reviewer = require("review", "A review")
    with _store(path) as store:
        return store.add_review(int(defect_id), reviewer, action, new_class if action == "relabel" else None,
                                (reason or "").strip() or None)


def override_grade(path: str | Path, coil: str, grade: str, reason: str) -> OverrideOutcome:
    """Set the coil's grade by hand; the reason is mandatory (the Store refuses an empty one). A
    hold -> prime override comes back pending: it waits for a second person."""
    reviewer = require("override", "A grade override")
    with _store(path) as store:
        return store.override_grade(coil, reviewer, grade, reason)


def approve_override(path: str | Path, override_id: int) -> int:
    """The second person's approval: the pending override takes effect (refused for its own author)."""
    approver = require("approve", "Approving a grade override")
    with _store(path) as store:
        return store.approve_override(int(override_id), approver)


def decline_override(path: str | Path, override_id: int, reason: str | None = None) -> int:
    """Close a pending override without effect (its author may withdraw it this way too)."""
    by = require("approve", "Declining a grade override")
    with _store(path) as store:
        return store.decline_override(int(override_id), by, reason)
