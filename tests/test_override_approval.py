"""A grade override that releases a held coil as prime needs a second person (records layer, real SQLite).

Until another person approves it the override is pending: stored and audited, but the coil's
effective grade (console, coil list, reports, PLC) stays what it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from inspection.records import queries
from inspection.records.audit import verify
from inspection.records.errors import StoreError
from inspection.records.grading import needs_second_person
from inspection.records.store import Store
from inspection.testing.synthetic import coil_messages

CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "line.db")
    s.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    s.apply_batch(coil_messages("C-1", length_m=20, defects_per_frame=0.0))
    assert s.grade_coil("C-1", "coil_end").grade == "prime"
    yield s
    s.close()


def _grade(store: Store, coil: str = "C-1") -> str:
    return queries.current_grade(store.db, coil)["grade"]


@pytest.mark.parametrize(("effective", "automatic", "target", "needed"), [
    ("hold", "hold", "prime", True),
    ("hold", "prime", "prime", True),  # held by an override
    ("secondary", "hold", "prime", True),  # hold -> secondary -> prime by one person: still two
    ("hold", "hold", "secondary", False),
    ("reject", "reject", "prime", False),
    (None, None, "prime", False),
])
def test_which_overrides_need_a_second_person(effective: str | None, automatic: str | None, target: str,
                                              needed: bool) -> None:
    assert needs_second_person(effective, automatic, target) is needed


def test_hold_to_prime_waits_for_a_different_person(store: Store) -> None:
    store.override_grade("C-1", "bo", "hold", "surface stains to check in daylight")
    assert _grade(store) == "hold"
    outcome = store.override_grade("C-1", "bo", "prime", "checked: stains wipe off")
    assert outcome.pending and outcome.grade_id is None
    assert _grade(store) == "hold"  # not in effect: every reader sees the hold
    assert [c["grade"] for c in queries.coils(store.db)] == ["hold"]
    pending = queries.pending_overrides(store.db, "C-1")
    assert [(p["override_id"], p["grade"], p["requested_by"]) for p in pending] == [
        (outcome.override_id, "prime", "bo")]
    for same_person in ("bo", "BO", " bo "):
        with pytest.raises(StoreError, match="needs a second person: bo made it"):
            store.approve_override(outcome.override_id, same_person)
    assert _grade(store) == "hold"
    grade_id = store.approve_override(outcome.override_id, "cy")
    current = queries.current_grade(store.db, "C-1")
    assert (current["id"], current["grade"], current["by"]) == (grade_id, "prime", "bo")
    assert current["reasons"] == ["override by bo: checked: stains wipe off", "second person: approved by cy"]
    assert queries.pending_overrides(store.db) == []
    with pytest.raises(StoreError, match="approved by cy already"):
        store.approve_override(outcome.override_id, "di")
    audit = store.db.execute("SELECT kind, actor FROM audit_log WHERE kind LIKE 'override%' "
                             "OR (kind = 'grade' AND actor = 'cy') ORDER BY seq").fetchall()
    assert audit == [("override_requested", "bo"), ("override_approved", "cy"), ("grade", "cy")]
    assert verify(store.db).ok


def test_an_automatic_hold_needs_two_even_through_another_grade(store: Store, tmp_path: Path) -> None:
    held = Store(tmp_path / "line.db", coverage_min=1.01)  # same database, a gate no coil passes: hold
    held.grade_coil("C-1", "coverage", force=True)
    held.close()
    assert _grade(store) == "hold"
    assert not store.override_grade("C-1", "bo", "secondary", "edge marks only").pending
    assert _grade(store) == "secondary"
    assert store.override_grade("C-1", "bo", "prime", "customer accepts").pending  # the rules still say hold
    assert _grade(store) == "secondary"


def test_a_declined_or_superseded_override_never_takes_effect(store: Store) -> None:
    store.override_grade("C-1", "bo", "hold", "check")
    first = store.override_grade("C-1", "bo", "prime", "fine after all")
    store.decline_override(first.override_id, "cy", "not before the lab result")
    with pytest.raises(StoreError, match="declined by cy already"):
        store.approve_override(first.override_id, "di")
    second = store.override_grade("C-1", "bo", "prime", "lab result fine")
    store.override_grade("C-1", "cy", "downgrade", "lab result: scale pits")  # a later override wins
    with pytest.raises(StoreError, match="superseded by a later override"):
        store.approve_override(second.override_id, "di")
    assert _grade(store) == "downgrade" and queries.pending_overrides(store.db) == []
    plain = store.override_grade("C-1", "cy", "secondary", "re-inspected").override_id
    with pytest.raises(StoreError, match="needs no second person"):
        store.approve_override(plain, "di")
    with pytest.raises(StoreError, match="no override #999"):
        store.approve_override(999, "di")
    assert verify(store.db).ok


def test_approvals_are_append_only_evidence(store: Store) -> None:
    store.override_grade("C-1", "bo", "hold", "check")
    pending = store.override_grade("C-1", "bo", "prime", "fine")
    store.approve_override(pending.override_id, "cy")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE override_approvals SET by = 'bo'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM override_approvals")
