"""The console's only writes: reviews and grade overrides, through the records write API.

`inspection.records.store.Store` appends the row and its audit entry in one transaction and
regrades the coil after a review; the console never writes SQL itself. The Store grades with
the line config's rule set and coverage gate, the same ones the recorder uses.
"""

from __future__ import annotations

from pathlib import Path

from inspection.console.context import require_reviewer, sources
from inspection.records.grading import load_rules
from inspection.records.store import Store


def _store(path: str | Path) -> Store:
    line = sources().line
    if line is None:
        return Store(path, actor="console")
    return Store(path, rules=load_rules(line.records.rules), coverage_min=line.records.coverage_min,
                 actor="console")


def review(path: str | Path, defect_id: int, action: str, new_class: str | None = None,
           reason: str | None = None) -> int:
    """Record the signed-in reviewer's decision on one defect; returns the review id."""
    reviewer = require_reviewer()
    with _store(path) as store:
        return store.add_review(int(defect_id), reviewer, action, new_class if action == "relabel" else None,
                                (reason or "").strip() or None)


def override_grade(path: str | Path, coil: str, grade: str, reason: str) -> int:
    """Set the coil's grade by hand; the reason is mandatory (the Store refuses an empty one)."""
    reviewer = require_reviewer()
    with _store(path) as store:
        return store.override_grade(coil, reviewer, grade, reason)
