"""Store and queries on real SQLite files: idempotency, migrations, reviews, overrides, queue, analytics."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from inspection.records import analytics, queries
from inspection.records.audit import verify
from inspection.records.db import open_db, schema_version
from inspection.records.errors import StoreError
from inspection.records.schema import SCHEMA_VERSION
from inspection.records.store import Store
from inspection.results import CoilEvent
from inspection.testing.synthetic import coil_messages

CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "line.db")
    s.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    yield s
    s.close()


def _count(store: Store, table: str) -> int:
    return store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_same_batch_twice_is_recorded_once(store: Store) -> None:
    messages = coil_messages("C-1", length_m=30, defects_per_frame=1.0, seed=1)
    expected = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    first = store.apply_batch(messages)
    snapshot = store.db.execute("SELECT * FROM defects ORDER BY id").fetchall()
    second = store.apply_batch(messages)
    assert (first.new_defects, first.duplicate_defects) == (expected, 0)
    assert (second.new_defects, second.duplicate_defects, second.new_frames) == (0, expected, 0)
    assert store.db.execute("SELECT * FROM defects ORDER BY id").fetchall() == snapshot
    assert sum(r["defects"] for r in queries.coils(store.db)) == expected  # derived counts not doubled
    assert second.audit_seq is None  # nothing changed, nothing audited
    assert verify(store.db).ok


def test_migrations_from_empty_and_from_previous_version(tmp_path: Path) -> None:
    fresh = open_db(tmp_path / "fresh.db")
    assert schema_version(fresh) == SCHEMA_VERSION
    old = open_db(tmp_path / "old.db", stop_before="m002_platform")
    assert schema_version(old) == 1 and "platform_coils" not in old.table_names()
    old.execute("INSERT INTO coils (id, line, line_type, first_seen_ns) VALUES ('OLD-1', 'l', 'hot', 1)")
    old.close()
    upgraded = open_db(tmp_path / "old.db")
    assert schema_version(upgraded) == SCHEMA_VERSION
    assert upgraded.execute("SELECT id FROM coils").fetchall() == [("OLD-1",)]
    assert {"platform_coils", "claims", "orders"} <= set(upgraded.table_names())
    assert open_db(tmp_path / "old.db") is not None  # re-applying is a no-op
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        upgraded.execute("DELETE FROM coils")


def test_review_regrades_and_history_shows_each_step(store: Store) -> None:
    messages = coil_messages("C-2", length_m=60, defects_per_frame=0.0, seed=2)
    store.apply_batch(messages)
    assert store.grade_coil("C-2", "coil_end").grade == "prime"
    from inspection.frame import StreamKey
    from inspection.results import Defect, FrameResult
    from inspection.testing.synthetic import TEST_MODEL

    # a re-sent frame cannot add defects (natural key), so put one critical defect in a new frame slot
    src = StreamKey("demo-hot-1", "hot", "top-1", "top")
    hole = Defect("punching", 0.9, 3, (10, 10, 30, 30), 30_000.0, 800.0, 20.0, 20.0, 300.0)
    store.apply_batch([FrameResult(src, "C-2", 999, 58, 1, 58 * 1024.0, 1024.0, *TEST_MODEL, 2, (hole,))])
    graded = store.grade_coil("C-2", "late-frames")
    assert graded.grade == "reject" and any(r.startswith("HOLE") for r in graded.reasons)
    defect_id = store.db.execute("SELECT id FROM defects WHERE coil='C-2'").fetchone()[0]
    store.add_review(defect_id, "anna", "reject", reason="reflection")
    assert queries.current_grade(store.db, "C-2")["grade"] == "prime"
    store.add_review(defect_id, "bert", "confirm")  # confirm after reject: counts again
    assert queries.current_grade(store.db, "C-2")["grade"] == "reject"
    store.add_review(defect_id, "bert", "relabel", new_class="patches", reason="not a hole")
    history = queries.grade_history(store.db, "C-2")
    assert [(g["grade"], g["trigger"].split(":")[0]) for g in history] == [
        ("prime", "coil_end"),
        ("reject", "late-frames"),
        ("prime", "review"),
        ("reject", "review"),
        ("reject", "review"),
    ]
    # still reject, but no longer for a hole: one critical defect in 59 m exceeds 1 per 100 m
    assert not any(r.startswith("HOLE") for r in history[-1]["reasons"])
    assert any(r.startswith("CRIT-100M") for r in history[-1]["reasons"])
    defect = queries.coil_defects(store.db, "C-2")[0]
    assert (defect["class"], defect["effective_class"], defect["review_status"]) == (
        "punching",
        "patches",
        "relabelled",
    )
    assert _count(store, "reviews") == 3
    assert verify(store.db).ok


def test_an_unknown_defect_keeps_its_guesses_is_graded_conservatively_and_reviewed_first(store: Store) -> None:
    from inspection.frame import StreamKey
    from inspection.results import Defect, FrameResult
    from inspection.testing.synthetic import TEST_MODEL

    store.apply_batch(coil_messages("C-U", length_m=60, defects_per_frame=0.0, seed=2))
    assert store.grade_coil("C-U", "coil_end").grade == "prime"
    src = StreamKey("demo-hot-1", "hot", "top-1", "top")
    unnamed = Defect("unknown", 0.45, 2, (10, 10, 40, 40), 30_000.0, 800.0, 30.0, 30.0, 900.0,
                     guesses=(("patches", 0.45), ("inclusion", 0.3)))
    frame = FrameResult(src, "C-U", 999, 58, 1, 58 * 1024.0, 1024.0, *TEST_MODEL, 2, (unnamed,))
    store.apply_batch([frame])
    store.apply_batch([frame])  # re-sent: neither the defect nor its guesses are recorded twice
    assert _count(store, "defect_guesses") == 1
    defect = queries.coil_defects(store.db, "C-U")[0]
    assert defect["class"] == "unknown" and defect["guesses"] == [["patches", 0.45], ["inclusion", 0.3]]
    graded = store.grade_coil("C-U", "late-frames")
    assert graded.grade == "downgrade" and any(r.startswith("UNKNOWN-MAJOR") for r in graded.reasons)
    store.enqueue_reviews("C-U")
    first = analytics.review_queue(store.db, coil="C-U", limit=1)[0]
    assert (first["defect_id"], first["reason"]) == (defect["id"], "unknown")
    store.add_review(defect["id"], "anna", "relabel", new_class="patches", reason="a patch after all")
    assert queries.current_grade(store.db, "C-U")["grade"] == "prime"  # one minor patch: within every limit
    assert verify(store.db).ok  # the guesses are covered by the audit chain


def test_a_coil_stopped_short_of_its_plant_length_is_held_with_its_real_coverage(store: Store) -> None:
    """The cameras sent every frame of the 40 m they saw and a clean coil_end, so by frames the coil
    looked complete and was graded; the plant says it is 120 m long: a third was inspected."""
    from inspection.records import platform

    store.apply_batch(coil_messages("C-SHORT", length_m=40, defects_per_frame=0.0, seed=3))
    store.apply_batch(coil_messages("C-FULL", length_m=119.5, defects_per_frame=0.0, seed=4))
    assert store.grade_coil("C-SHORT", "coil_end").grade == "prime"  # without the plant's length
    report = platform.import_rows(store.db, [(f"row {i}", {"coil_id": c, "length_m": 120.0})
                                             for i, c in enumerate(("C-SHORT", "C-FULL"))], "mes.json")
    assert report.imported == 2
    short = queries.coverage(store.db, "C-SHORT")
    assert short["complete"] is True and short["planned_length_mm"] == 120_000.0
    assert 0.32 < short["share"] < 0.35 and all(c["cut_short"] for c in short["cameras"])
    graded = store.grade_coil("C-SHORT", "coil_end", force=True)
    assert graded.grade == "hold" and "coverage 3" in graded.reasons[0]
    full = queries.coverage(store.db, "C-FULL")  # within the tolerance of the plant's length: complete
    assert full["share"] == 1.0 and not any(c["cut_short"] for c in full["cameras"])


def test_override_needs_reason_and_wins_over_automatic_grades(store: Store) -> None:
    store.apply_batch(coil_messages("C-3", length_m=20, defects_per_frame=0.0))
    store.grade_coil("C-3", "coil_end")
    with pytest.raises(StoreError, match="reason"):
        store.override_grade("C-3", "anna", "secondary", "  ")
    with pytest.raises(StoreError, match="grade"):
        store.override_grade("C-3", "anna", "excellent", "why not")
    store.override_grade("C-3", "anna", "secondary", "customer complaint on similar coils")
    store.grade_coil("C-3", "manual", force=True)
    assert queries.current_grade(store.db, "C-3")["grade"] == "secondary"
    assert queries.coils(store.db, grade="secondary")[0]["coil"] == "C-3"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reviewer": "", "action": "confirm"}, "reviewer"),
        ({"reviewer": "anna", "action": "approve"}, "action"),
        ({"reviewer": "anna", "action": "relabel"}, "new_class"),
        ({"reviewer": "anna", "action": "confirm", "new_class": "x"}, "new_class"),
    ],
)
def test_bad_reviews_are_refused_and_nothing_is_written(store: Store, kwargs: dict, match: str) -> None:
    store.apply_batch(coil_messages("C-4", length_m=10, defects_per_frame=2.0))
    defect_id = store.db.execute("SELECT min(id) FROM defects").fetchone()[0]
    audit_rows = _count(store, "audit_log")
    with pytest.raises(StoreError, match=match):
        store.add_review(defect_id, **kwargs)
    with pytest.raises(StoreError, match="no defect"):
        store.add_review(10**9, "anna", "confirm")
    assert _count(store, "reviews") == 0 and _count(store, "audit_log") == audit_rows


def test_review_queue_precision_and_model_confirmations(store: Store) -> None:
    store.apply_batch(coil_messages("C-5", length_m=80, defects_per_frame=1.5, seed=5))
    queued = store.enqueue_reviews("C-5", budget=20)
    queue = analytics.review_queue(store.db, limit=1000)
    assert len(queue) == queued > 0
    assert [q["priority"] for q in queue] == sorted((q["priority"] for q in queue), reverse=True)
    samples = [q for q in queue if q["reason"] == "sample"]
    assert {q["class"] for q in samples} == {
        r[0] for r in store.db.execute("SELECT DISTINCT class FROM defects")
    }
    for i, q in enumerate(samples):
        store.add_review(q["defect_id"], "anna", "reject" if i % 2 else "confirm")
    precision = {p["class"]: p for p in analytics.field_precision(store.db)}
    assert sum(p["reviewed"] for p in precision.values()) == len(samples)
    assert sum(p["confirmed"] for p in precision.values()) == (len(samples) + 1) // 2
    by_model = analytics.confirmations_by_model(store.db)
    assert by_model[0]["model_version"] == "hot-test-1" and by_model[0]["reviewed"] == len(samples)
    assert analytics.review_progress(store.db)["reviewed"] == len(samples)
    assert all(
        q["defect_id"] not in {s["defect_id"] for s in samples}
        for q in analytics.review_queue(store.db, limit=1000)
    )


def test_pareto_follows_reviews_and_rates_per_km(store: Store) -> None:
    store.apply_batch(coil_messages("C-6", length_m=50, defects_per_frame=1.0, seed=6))
    before = {
        p["class"]: p["count"] for p in analytics.pareto(store.db, since="2025-01-01", until="2030-01-01")
    }
    defect_id, cls = store.db.execute("SELECT id, class FROM defects LIMIT 1").fetchone()
    store.add_review(defect_id, "anna", "reject")
    after = {p["class"]: p["count"] for p in analytics.pareto(store.db)}
    assert after[cls] == before[cls] - 1
    assert analytics.pareto(store.db, since="2031-01-01") == []
    total = _count(store, "defects")
    per_line = analytics.defects_per_km(store.db, by="line")
    assert per_line[0]["defects"] == total
    assert per_line[0]["defects_per_1000m"] == pytest.approx(total / per_line[0]["length_m"] * 1000)
    with pytest.raises(StoreError, match="by"):
        analytics.defects_per_km(store.db, by="colour")


def test_defect_free_coils_count_their_length_per_km(store: Store) -> None:
    store.apply_batch(coil_messages("C-7", length_m=50, defects_per_frame=1.0, seed=7))
    store.apply_batch(coil_messages("C-8", length_m=50, defects_per_frame=0.0, seed=8))
    stats = {r["coil"]: r for r in analytics.coil_stats(store.db)}
    assert stats["C-8"]["defects"] == 0 and stats["C-8"]["length_m"] == pytest.approx(stats["C-7"]["length_m"])
    [line] = analytics.defects_per_km(store.db, by="line")
    assert line["coils"] == 2
    assert line["defects_per_1000m"] == pytest.approx(_count(store, "defects") / line["length_m"] * 1000)
    assert line["length_m"] == pytest.approx(2 * stats["C-7"]["length_m"])


def test_coverage_counts_and_line_status(store: Store) -> None:
    store.apply_batch(coil_messages("C-7", length_m=20, skip_frames=[2], camera_dropped=1, seed=7))
    cov = queries.coverage(store.db, "C-7")
    top = next(c for c in cov["cameras"] if c["camera"] == "top-1")
    assert (top["frames"], top["inspected"], top["dropped_camera"], top["complete"]) == (19, 17, 1, False)
    assert cov["share"] == pytest.approx(17 / 19) and not cov["complete"]
    store.set_status({"recorder:demo-hot-1": {"frames_per_s": 12.5}})
    status = analytics.line_status(store.db)
    assert status["lines"][0]["current_coil"] == "C-7"
    assert status["lines"][0]["recorder"]["frames_per_s"] == 12.5


def test_reader_sees_data_while_writer_holds_the_database(store: Store, tmp_path: Path) -> None:
    store.apply_batch(coil_messages("C-8", length_m=10, defects_per_frame=1.0))
    reader = open_db(tmp_path / "line.db", readonly=True)
    with pytest.raises(sqlite3.OperationalError):
        reader.execute("INSERT INTO lines (id, type, created_ns) VALUES ('x', 'hot', 0)")
    assert reader.execute("SELECT count(*) FROM defects").fetchone()[0] == _count(store, "defects")


def test_review_queue_puts_unknown_and_critical_defects_first_and_keeps_to_the_budget(store: Store) -> None:
    from inspection.frame import StreamKey
    from inspection.records.review_queue import UNKNOWN_PRIORITY
    from inspection.results import Defect, FrameResult
    from inspection.testing.synthetic import TEST_MODEL

    store.apply_batch(coil_messages("C-Q", length_m=120, defects_per_frame=2.0, seed=7))
    src = StreamKey("demo-hot-1", "hot", "top-1", "top")
    unnamed = Defect("unknown", 0.9, 1, (10, 10, 40, 40), 30_000.0, 800.0, 30.0, 30.0, 900.0)
    store.apply_batch([FrameResult(src, "C-Q", 999, 200, 1, 200 * 1024.0, 1024.0, *TEST_MODEL, 2, (unnamed,))])
    defects = queries.coil_defects(store.db, "C-Q")
    critical = {d["id"] for d in defects if d["severity"] >= 3}
    assert critical and len(defects) > 100
    queued = store.enqueue_reviews("C-Q", budget=6)
    queue = analytics.review_queue(store.db, coil="C-Q", limit=1000)
    assert len(queue) == queued
    # every critical defect is queued, whatever the budget; the budget bounds the rest
    assert critical <= {q["defect_id"] for q in queue}
    assert sum(1 for q in queue if q["reason"] in ("sample", "low_confidence")
               and q["defect_id"] not in critical) <= 6
    assert {q["reason"] for q in queue} >= {"unknown", "high_severity", "sample", "low_confidence"}
    # order by what a defect is, not why it was queued: no sample ahead of a critical defect
    assert queue[0]["reason"] == "unknown" and queue[0]["priority"] >= UNKNOWN_PRIORITY
    first_other = next(i for i, q in enumerate(queue) if q["defect_id"] not in critical and q["reason"] != "unknown")
    assert all(q["defect_id"] in critical for q in queue[1:first_other])
    assert all(q["defect_id"] not in critical for q in queue[first_other:])
    coverage = queries.review_coverage(store.db, "C-Q")
    assert coverage == {"defects": len(defects), "queued": queued, "not_queued": len(defects) - queued,
                        "reviewed": 0}


def test_review_budget_follows_the_coil_duration(tmp_path: Path) -> None:
    # one item per second of strip: the synthetic frames are 50 ms apart
    with Store(tmp_path / "line.db", review_budget_per_hour=3600.0) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"},
                                                           {"id": "bottom-1", "surface": "bottom"}])
        store.apply_batch(coil_messages("C-B", length_m=205, defects_per_frame=0.0, seed=1))
        assert queries.coil_duration_s(store.db, "C-B") == pytest.approx(199 * 0.05)
        assert store.review_budget("C-B") == 10
        assert store.review_budget("no-such-coil") == 1  # at least one item per coil
    with pytest.raises(StoreError, match="review_budget_per_hour"):
        Store(tmp_path / "other.db", review_budget_per_hour=-1.0)


def test_a_camera_without_its_coil_end_counts_the_length_it_inspected(store: Store) -> None:
    """The bottom camera lags: the top one has ended the coil, the bottom one's last 4 frames and its
    coil_end are still on the way when the grace timeout grades the coil. Its coverage is the length the
    bottom camera inspected over the length the top one reported, not 0 %; held all the same."""
    messages = coil_messages("C-LAG", length_m=40, defects_per_frame=0.0, seed=5)
    bottom = [m for m in messages if m.source.camera == "bottom-1"]
    late = bottom[-5:]  # 4 frames and the coil_end
    store.apply_batch([m for m in messages if m not in late])
    lagging = queries.coverage(store.db, "C-LAG")
    cams = {c["camera"]: c for c in lagging["cameras"]}
    assert lagging["complete"] is False and cams["bottom-1"]["ended"] is False
    assert cams["top-1"]["share"] == 1.0 and lagging["share"] == pytest.approx(35 / 39)
    graded = store.grade_coil("C-LAG", "grace-timeout", force=True)
    assert graded.grade == "hold" and "coverage 89.74%" in graded.reasons[0]
    store.apply_batch(late)
    caught_up = queries.coverage(store.db, "C-LAG")
    assert caught_up["complete"] is True and caught_up["share"] == 1.0
    assert store.grade_coil("C-LAG", "coil_end", force=True).grade == "prime"


def test_without_any_coil_end_or_plant_length_the_coverage_stays_zero(store: Store) -> None:
    """Nobody has said how long the coil is: no share can be claimed."""
    messages = coil_messages("C-NOEND", length_m=20, defects_per_frame=0.0, seed=6)
    store.apply_batch([m for m in messages if not (isinstance(m, CoilEvent) and m.kind == "coil_end")])
    assert queries.coverage(store.db, "C-NOEND")["share"] == 0.0
