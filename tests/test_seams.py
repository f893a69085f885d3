"""Defects cut by a frame seam: linked when recorded, read as one (real SQLite files, real messages)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from jsonschema import Draft202012Validator, FormatChecker

from cameras.base import StripGeometry
from cameras.defects import DefectPatch, paste
from cameras.simulator import SimulatorSource, read_ground_truth
from inspection.frame import Frame, StreamKey
from inspection.records import analytics, queries
from inspection.records.audit import verify
from inspection.records.db import open_db, schema_version
from inspection.records.schema import SCHEMA_VERSION
from inspection.records.seams import merged_away
from inspection.records.store import Store
from inspection.results import Defect, FrameResult
from inspection.schemas import load_schema
from inspection.severity import DEFAULT_RULE, severity
from inspection.testing.synthetic import TEST_MODEL, coil_messages

FRAME_MM = 1024.0
LINE = "demo-hot-1"
CAMERAS = [{"id": "top-1", "surface": "top", "mm_per_px_along": 1.0},
           {"id": "bottom-1", "surface": "bottom", "mm_per_px_along": 1.0}]
T0 = 1_763_900_000 * 10**9


def piece(along: tuple[float, float], across: tuple[float, float], cls: str = "scratches",
          score: float = 0.9) -> tuple[str, float, tuple[float, float], tuple[float, float]]:
    """A defect fragment: along (mm from the coil head) and across extents."""
    return cls, score, along, across


def frame(index: int, *pieces: Any, coil: str = "C-1", camera: str = "top-1") -> FrameResult:
    """A worker's FrameResult for frame `index` (1024 mm frames, 1 mm per px) with `pieces` in it."""
    surface = "top" if camera == "top-1" else "bottom"
    position = index * FRAME_MM
    defects = []
    for cls, score, (a1, a2), (c1, c2) in pieces:
        length, width = a2 - a1, c2 - c1
        defects.append(Defect(cls, score, severity(cls, length, width, length * width, score),
                                    (c1, a1 - position, c2, a2 - position), (a1 + a2) / 2, (c1 + c2) / 2,
                                    length, width, length * width))
    t = T0 + index * 50_000_000
    return FrameResult(StreamKey(LINE, "hot", camera, surface), coil, index + 1, index, t, position, FRAME_MM,
                       *TEST_MODEL, t + 1, tuple(defects))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "line.db")
    s.register_line(LINE, "hot", 1600.0, CAMERAS)
    yield s
    s.close()


def groups(store: Store) -> set[frozenset[tuple[str, str, int, int]]]:
    """Every coil's defects as read, each a set of its fragments' natural keys."""
    keys = {r[0]: tuple(r[1:]) for r in store.db.execute(
        "SELECT id, coil, camera, frame_index, defect_index FROM defects")}
    coils = [r[0] for r in store.db.execute("SELECT id FROM coils")]
    return {frozenset(keys[i] for i in d["parts"]) for c in coils for d in queries.coil_defects(store.db, c)}


UP = piece((900.0, 1024.0), (500.0, 520.0))  # ends at the seam between frames 0 and 1
DOWN = piece((1024.0, 1100.0), (502.0, 518.0))  # starts there
A0, B0, B1 = ("C-1", "top-1", 0, 0), ("C-1", "top-1", 1, 0), ("C-1", "top-1", 1, 1)

A1 = ("C-1", "top-1", 0, 1)
# Two defects at one seam: U1 (500-560 mm across) continues as L1 (500-560), U2 (540-620) as L2 (565-620).
# L1 also overlaps U2 by 20 mm (>= 0.3 of the narrower), which used to chain all four into one box;
# one partner per fragment across a seam (largest overlap first) keeps two defects.
SIDE_BY_SIDE_FRAMES = [frame(0, piece((900, 1024), (500, 560)), piece((950, 1024), (540, 620))),
                       frame(1, piece((1024, 1100), (500, 560)), piece((1024, 1090), (565, 620)))]
SIDE_BY_SIDE = ([SIDE_BY_SIDE_FRAMES], {frozenset({A0, B0}), frozenset({A1, B1})})

CASES = {
    "touching": ([[frame(0, UP), frame(1, DOWN)]], {frozenset({A0, B0})}),
    "within the margin (5 mm short of the seam on both sides)": (
        [[frame(0, piece((900, 1019), (500, 520))), frame(1, piece((1029, 1100), (500, 520)))]],
        {frozenset({A0, B0})}),
    "gap bigger than the margin": (
        [[frame(0, piece((900, 1010), (500, 520))), frame(1, DOWN)]], {frozenset({A0}), frozenset({B0})}),
    "no overlap across": (
        [[frame(0, UP), frame(1, piece((1024, 1100), (530, 550)))]], {frozenset({A0}), frozenset({B0})}),
    "overlap across below the share": (  # 2 mm of a 10 mm wide lower part < 0.3
        [[frame(0, UP), frame(1, piece((1024, 1100), (518, 528)))]], {frozenset({A0}), frozenset({B0})}),
    "different classes still merged": (
        [[frame(0, piece((900, 1024), (500, 520), "scratches")), frame(1, piece((1024, 1100), (500, 520),
                                                                              "inclusion"))]],
        {frozenset({A0, B0})}),
    "lower frame arrives first": ([[frame(1, DOWN)], [frame(0, UP)]], {frozenset({A0, B0})}),
    "re-sent frames add nothing": ([[frame(0, UP), frame(1, DOWN)], [frame(1, DOWN), frame(0, UP)]],
                                   {frozenset({A0, B0})}),
    "two lower parts (a fork) both join": (
        [[frame(0, piece((900, 1024), (500, 560))),
          frame(1, piece((1024, 1100), (500, 515)), piece((1024, 1080), (540, 560)))]],
        {frozenset({A0, B0, B1})}),
    "a lower part seen as a fork of the wider upper part joins too": (  # 15 mm wholly inside 60 mm
        [[frame(0, piece((900, 1024), (500, 560))),
          frame(1, piece((1024, 1100), (545, 560)), piece((1024, 1080), (500, 540)))]],
        {frozenset({A0, B0, B1})}),
    "two defects side by side each keep their own parts": SIDE_BY_SIDE,
    "different cameras never": ([[frame(0, UP), frame(1, DOWN, camera="bottom-1")]],
                                {frozenset({A0}), frozenset({("C-1", "bottom-1", 1, 0)})}),
    "different coils never": ([[frame(0, UP), frame(1, DOWN, coil="C-2")]],
                              {frozenset({A0}), frozenset({("C-2", "top-1", 1, 0)})}),
    "across a coil boundary never": (  # the last frame of C-1 and the first of C-2
        [[frame(0, UP), frame(0, piece((0, 60), (500, 520)), coil="C-2")]],
        {frozenset({A0}), frozenset({("C-2", "top-1", 0, 0)})}),
}


@pytest.mark.parametrize("batches, expected", CASES.values(), ids=CASES.keys())
def test_fragments_are_linked_when_they_meet_at_a_seam(store: Store, batches: list[list[FrameResult]],
                                                       expected: set[frozenset[tuple[str, str, int, int]]]) -> None:
    for batch in batches:
        store.apply_batch(batch)
    assert groups(store) == expected
    links = store.db.execute("SELECT count(*) FROM defect_links").fetchone()[0]
    raw = store.db.execute("SELECT count(*) FROM defects").fetchone()[0]
    assert raw - len(expected) == merged_away(store.db, 0) <= links
    assert verify(store.db).ok


def test_linking_is_driven_by_the_new_rows_through_the_natural_key_indexes(store: Store) -> None:
    from inspection.records.seams import _CANDIDATES

    for only in ("", " AND d.id IN (SELECT value FROM json_each(:only))"):  # all new rows, or those near seams
        plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + _CANDIDATES.format(only=only),
                                                   {"before": 0, "margin_px": 6.0, "min_overlap": 0.3,
                                                    "only": "[1, 2]"})]
        scanned = [step for step in plan if step.startswith("SCAN ")]
        # new rows, their pairs (and the list of the new rows near seams)
        assert scanned and all(step.split()[1] in ("n", "p", "json_each") for step in scanned), plan
        assert sum("sqlite_autoindex_defects_1" in step for step in plan) == 2, plan


def test_three_frame_chain_arriving_out_of_order_is_one_defect(store: Store) -> None:
    long = [piece((900, 1024), (500, 508), score=0.6), piece((1024, 2048), (501, 509), score=0.95),
            piece((2048, 2100), (500, 508), "crazing", 0.7)]
    results = [store.apply_batch([frame(i, long[i])], want_rows=True) for i in (2, 0, 1)]
    assert [r.seam_links for r in results] == [0, 0, 2]
    [merged] = queries.coil_defects(store.db, "C-1")
    ids = {r.defect_rows[0]["frame_index"]: r.defect_rows[0]["id"] for r in results}
    assert merged["parts"] == [ids[0], ids[1], ids[2]]
    assert merged["id"] == ids[0] and merged["frame_index"] == 0  # the head: first frame
    assert (merged["along_mm"], merged["length_mm"]) == (1500.0, 1200.0)
    assert (merged["across_mm"], merged["width_mm"]) == (504.5, 9.0)
    assert merged["area_mm2"] == 1200.0 * 9.0
    assert (merged["class"], merged["score"]) == ("scratches", 0.95)  # of the best-scoring fragment
    assert merged["severity"] == 3  # 1200 mm of scratch is critical whatever each fragment was
    # the fragment that joined the chain continues the earliest recorded one (frame 2, published first)
    assert results[2].defect_rows[0]["merged_into"] == ids[2]
    raw = queries.coil_defects(store.db, "C-1", merge_seams=False)
    assert sorted(d["id"] for d in raw) == sorted(ids.values()) and all(len(d["parts"]) == 1 for d in raw)


def test_grading_counts_a_cut_defect_once_with_its_merged_severity(store: Store, tmp_path: Path) -> None:
    # a 300 mm scratch in the coil's body cut into two 150 mm halves: each half is major, the whole is critical
    seam = 30 * FRAME_MM
    upper, lower = piece((seam - 150, seam), (800, 806)), piece((seam, seam + 150), (800, 806))
    assert severity("scratches", 150, 6, 900, 0.9, DEFAULT_RULE) == 2
    coil = [m for m in coil_messages("C-1", length_m=61.44, defects_per_frame=0.0)
            if not (isinstance(m, FrameResult) and m.source.camera == "top-1" and m.index in (29, 30))]
    unlinked = Store(tmp_path / "unlinked.db", seam_margin_px=None)  # what was recorded before linking
    unlinked.register_line(LINE, "hot", 1600.0, CAMERAS)
    results = {}
    for s in (unlinked, store):
        s.apply_batch([*coil, frame(30, lower)])
        s.apply_batch([frame(29, upper)])
        results[s] = s.grade_coil("C-1", "test")
    before, after = results[unlinked], results[store]
    assert (before.counted, after.counted) == (2, 1)
    assert [g.severity for g in queries.grade_input(unlinked.db, "C-1").defects] == [2, 2]
    assert [g.severity for g in queries.grade_input(store.db, "C-1").defects] == [3]
    assert (before.grade, after.grade) == ("prime", "reject"), (before, after)
    unlinked.close()
    [link] = store.db.execute("SELECT severity, seam_mm FROM defect_links").fetchall()
    assert link == (3, seam)
    [d] = queries.coil_defects(store.db, "C-1")
    assert (d["severity"], d["length_mm"], len(d["parts"])) == (3, 300.0, 2)
    assert queries.coils(store.db)[0]["defects"] == 1


def test_class_counts_equal_a_recount_of_merged_defects(store: Store) -> None:
    seam = {"C-0": [frame(1, piece((2000, 2048), (100, 130), "patches", 0.8), coil="C-0"),
                    frame(2, piece((2048, 2090), (105, 125), "inclusion", 0.95), coil="C-0")],
            "C-1": [frame(4, piece((4100, 5120), (900, 910)), coil="C-1"),
                    frame(5, piece((5120, 6144), (901, 911), score=0.4), coil="C-1"),
                    frame(6, piece((6144, 6200), (900, 909)), coil="C-1")]}
    for coil, fragments in seam.items():
        taken = {f.index for f in fragments}  # the synthetic coil leaves these frame slots to the fragments
        store.apply_batch([m for m in coil_messages(coil, length_m=30, defects_per_frame=1.5, seed=len(coil))
                           if not (isinstance(m, FrameResult) and m.source.camera == "top-1" and m.index in taken)])
        for fragment in reversed(fragments):  # one batch each, last frame first
            store.apply_batch([fragment])
    assert store.db.execute("SELECT count(*) FROM defect_links").fetchone()[0] == 3
    for coil in seam:
        recount = Counter((d["class"], d["surface"], d["severity"]) for d in queries.coil_defects(store.db, coil))
        stored = {(c, s, v): n for c, s, v, n in store.db.execute(
            "SELECT class, surface, severity, n FROM coil_class_counts WHERE coil=?", (coil,))}
        assert stored == dict(recount)
    pareto = {p["class"]: p["count"] for p in analytics.pareto(store.db)}
    assert sum(pareto.values()) == sum(len(queries.coil_defects(store.db, c)) for c in seam)


def test_a_review_of_the_lower_fragment_applies_to_the_whole_defect(store: Store) -> None:
    store.apply_batch([frame(0, piece((900, 1024), (500, 520), "patches", 0.9)),
                       frame(1, piece((1024, 1100), (500, 520), "crazing", 0.6))])
    lower = store.db.execute("SELECT id FROM defects WHERE frame_index = 1").fetchone()[0]
    assert [p["class"] for p in analytics.pareto(store.db)] == ["patches"]
    store.add_review(lower, "anna", "reject", reason="roll mark, not a defect")
    [d] = queries.coil_defects(store.db, "C-1")
    assert d["review_status"] == "rejected" and d["id"] != lower
    assert queries.coil_defects(store.db, "C-1", include_rejected=False) == []
    assert queries.grade_input(store.db, "C-1").defects == []
    assert analytics.pareto(store.db) == []  # the one merged count is removed once, not twice
    store.add_review(lower, "bert", "relabel", new_class="inclusion")
    assert [p["class"] for p in analytics.pareto(store.db)] == ["inclusion"]
    assert queries.coil_defects(store.db, "C-1")[0]["effective_class"] == "inclusion"


def test_review_queue_holds_a_cut_defect_once(store: Store) -> None:
    store.apply_batch([frame(0, piece((900, 1024), (500, 520), score=0.3)),
                       frame(1, piece((1024, 1100), (500, 520), score=0.35))])
    store.enqueue_reviews("C-1")
    [merged] = queries.coil_defects(store.db, "C-1")
    assert [r[0] for r in store.db.execute("SELECT defect_id FROM review_queue")] == [merged["id"]]
    # the reviewer sees the whole defect (200 mm, both fragments), not its upper half
    [queued] = analytics.review_queue(store.db)
    assert queued["defect_id"] == merged["id"] and queued["parts"] == merged["parts"] and len(queued["parts"]) == 2
    assert (queued["along_mm"], queued["length_mm"], queued["severity"]) == (1000.0, 200.0, merged["severity"])
    # a review of the lower fragment settles the whole defect: it leaves the queue
    store.add_review(merged["parts"][1], "anna", "confirm")
    assert analytics.review_queue(store.db) == []


def test_links_are_append_only_audited_evidence(store: Store, tmp_path: Path) -> None:
    store.apply_batch([frame(0, UP), frame(1, DOWN)])
    assert verify(store.db).ok
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE defect_links SET severity = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM defect_links")
    event = store.db.execute("SELECT event FROM audit_log WHERE kind='batch' ORDER BY seq DESC").fetchone()[0]
    assert '"defect_links":[1,1,1,' in event
    store.close()
    conn = sqlite3.connect(tmp_path / "line.db")  # someone with file access removes the link
    with conn:
        conn.execute("DROP TRIGGER defect_links_no_delete")
        conn.execute("DELETE FROM defect_links")
    conn.close()
    verdict = verify(open_db(tmp_path / "line.db"))
    assert not verdict.ok and "defect_links" in verdict.problem


def test_a_database_at_m003_migrates_and_links(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = open_db(path, stop_before="m004_seam_links")
    assert schema_version(old) == 3 and "defect_links" not in old.table_names()
    old.execute("INSERT INTO defects (coil, surface, camera, frame_seq, frame_index, defect_index, along_mm, "
                "across_mm, class, score, severity, captured_ns) VALUES ('OLD', 'top', 'top-1', 1, 0, 0, 5.0, "
                "5.0, 'patches', 0.9, 1, 1)")
    old.conn.commit()
    old.close()
    readonly = open_db(path, readonly=True)  # the console may look before the recorder migrated it
    assert [d["parts"] for d in queries.coil_defects(readonly, "OLD")] == [[1]]
    readonly.close()
    with Store(path) as store:
        assert schema_version(store.db) == SCHEMA_VERSION == 12
        store.register_line(LINE, "hot", 1600.0, CAMERAS)
        assert store.apply_batch([frame(0, UP), frame(1, DOWN)]).seam_links == 1


def test_linking_can_be_turned_off_and_options_are_checked(tmp_path: Path) -> None:
    with Store(tmp_path / "off.db", seam_margin_px=None) as store:
        store.register_line(LINE, "hot", 1600.0, CAMERAS)
        assert store.apply_batch([frame(0, UP), frame(1, DOWN)]).seam_links == 0
        assert len(queries.coil_defects(store.db, "C-1")) == 2
    with Store(tmp_path / "wide.db", seam_margin_px=20.0) as store:  # 15 mm short of the seam: linked now
        store.register_line(LINE, "hot", 1600.0, CAMERAS)
        assert store.apply_batch([frame(0, piece((900, 1009), (500, 520))), frame(1, DOWN)]).seam_links == 1
    from inspection.records.errors import StoreError

    with pytest.raises(StoreError, match="seam_min_overlap"):
        Store(tmp_path / "bad.db", seam_min_overlap=1.5)
    with pytest.raises(StoreError, match="seam_one_to_one: expected true or false, got 'yes'"):
        Store(tmp_path / "bad2.db", seam_one_to_one="yes")


def test_without_one_partner_per_fragment_side_by_side_defects_chain_into_one(tmp_path: Path) -> None:
    """`seam_one_to_one = false` is the linking before 2026-12-02: every pair that meets the margin and
    overlap rule is linked, so the side-by-side defects of SIDE_BY_SIDE become one."""
    with Store(tmp_path / "all.db", seam_one_to_one=False) as store:
        store.register_line(LINE, "hot", 1600.0, CAMERAS)
        assert store.apply_batch(SIDE_BY_SIDE_FRAMES).seam_links == 3
        assert groups(store) == {frozenset({A0, A1, B0, B1})}


def test_plc_defect_messages_carry_merged_into_and_one_severe_alarm(store: Store) -> None:
    """The recorder judges the severe alarm on the whole defect (two major halves, one critical
    defect), stores it once, and the PLC gets both fragments and that one alarm."""
    from inspection.commands.plc_listen import PlcListener
    from inspection.plc import PlcPublisher, publish
    from inspection.records.events import DefectRecorded
    from inspection.records.recorder import Recorder

    upper, lower = piece((874, 1024), (800, 806)), piece((1024, 1174), (800, 806))  # two majors, one critical
    context = zmq.Context()
    try:
        with PlcPublisher("tcp://127.0.0.1:*", LINE, context=context, heartbeat_s=3600) as publisher, \
                PlcListener(publisher.endpoint, ["defect", "alarm"], context=context) as listener:
            events: list = []

            def emit(event: object) -> None:
                events.append(event)
                publish(publisher, event)

            recorder = Recorder(store, LINE, on_event=emit)
            while listener.receive(0.05) is None:  # slow joiner: probe until the subscription is up
                publisher.alarm({"kind": "worker", "coil": None, "severity": 1, "message": "probe", "details": {}})
            for message in (frame(1, lower), frame(0, upper)):
                recorder.add([message])
                recorder.flush()
            rows = [e.row for e in events if isinstance(e, DefectRecorded)]
            received = []
            while (parts := listener.receive(2.0)) is not None:
                received.append(json.loads(parts[1]))
    finally:
        context.destroy(linger=0)
    received = [m for m in received if m.get("message") != "probe"]
    validators = {t: Draft202012Validator(load_schema(t), format_checker=FormatChecker()) for t in ("defect", "alarm")}
    for message in received:
        validators[message["topic"]].validate(message)
    defects = [m for m in received if m["topic"] == "defect"]
    alarms = [m for m in received if m["topic"] == "alarm"]
    assert [d["defect_id"] for d in defects] == [rows[0]["id"], rows[1]["id"]]
    assert "merged_into" not in defects[0] and defects[1]["merged_into"] == rows[0]["id"]
    assert [d["severity"] for d in defects] == [2, 2]  # each fragment as recorded ...
    assert [(a["kind"], a["severity"], a["details"]["merged_into"]) for a in alarms] == [
        ("severe_defect", 3, rows[0]["id"])]  # ... the whole defect alarmed once
    stored = store.db.execute("SELECT id, kind FROM alarms").fetchall()
    assert stored == [(alarms[0]["alarm_id"], "severe_defect")]  # decided and stored by the recorder


# -- the simulator's defects across frame seams ------------------------------------------------------
SIM_KEY = StreamKey("test-line", "hot", "cam-1", "top")


class _OnePatch:
    """A defect library that always returns the same 50 x 60 px patch with one labelled box."""

    source = "procedural"

    def __init__(self) -> None:
        image = np.full((60, 50), 128, np.uint8)
        image[8:52, 20:30] = 40  # a dark bar, the labelled defect
        self.patch = DefectPatch(image, np.array([[18, 6, 32, 54]], np.float32), ("scratches",), "bar", None,
                                 None, "procedural")

    def sample(self, rng: np.random.Generator) -> DefectPatch:
        return self.patch


def simulate(tmp_path: Path, name: str, *, rate: float = 2000.0, seam_share: float | None = None,
             library: Any = None, coil_mm: float = 1100.0) -> tuple[list[Frame], list[dict[str, Any]]]:
    """Frames and ground truth of 2 coils of 256-row frames (the last frame of a coil is short)."""
    geo = StripGeometry(400, 256, 1.0, 1.0, 0.0, 5.0, coil_mm)
    options = {} if seam_share is None else {"seam_share": seam_share}
    gt = tmp_path / f"{name}.jsonl"
    source = SimulatorSource(SIM_KEY, geo, strip_width_mm=380.0, seed=9, defects_per_100m=rate, realtime=False,
                             ground_truth=gt, max_coils=2, datasets_dir=None, **options)
    with source:
        if library is not None:
            source.library = library
        frames = [m for m in source if isinstance(m, Frame)]
    return frames, read_ground_truth(gt)


def test_simulator_seam_share_zero_changes_nothing(tmp_path: Path) -> None:
    frames, truth = simulate(tmp_path, "without")
    same_frames, same_truth = simulate(tmp_path, "zero", seam_share=0.0)
    assert len(frames) == len(same_frames) == 10 and len(truth) > 10
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(frames, same_frames, strict=True))
    assert same_truth == truth and not any("group" in t for t in truth)


def test_simulator_cuts_defects_at_seams_and_they_reassemble(tmp_path: Path) -> None:
    library = _OnePatch()
    frames, truth = simulate(tmp_path, "seams", seam_share=1.0, library=library, rate=600.0)
    background, _ = simulate(tmp_path, "background", rate=0.0)  # same seed: the same strip, no defects
    by_group: dict[str, list[dict[str, Any]]] = {}
    for t in truth:
        by_group.setdefault(t.get("group", f"whole-{len(by_group)}"), []).append(t)
    cut = {g: rows for g, rows in by_group.items() if not g.startswith("whole")}
    assert len(cut) >= 3
    index = {(f.coil, f.index): i for i, f in enumerate(frames)}
    patch = library.patch
    for group, (upper, lower) in cut.items():
        assert group == f"{upper['coil']}/cam-1/{upper['frame_index']}/{upper['defect']}/0"
        assert (lower["coil"], lower["frame_index"]) == (upper["coil"], upper["frame_index"] + 1)  # same coil
        k = index[(upper["coil"], upper["frame_index"])]
        rows = frames[k].pixels.shape[0]
        assert upper["box_px"][3] == rows and lower["box_px"][1] == 0  # clipped at the seam
        assert upper["along_mm"][1] == lower["along_mm"][0] == frames[k + 1].position_mm
        assert upper["across_mm"] == lower["across_mm"] and upper["class"] == lower["class"] == "scratches"
        # the whole box: the patch's box placed once across both frames
        x = int(upper["box_px"][0] - patch.boxes[0][0])
        y = int(round(lower["box_px"][3] - patch.boxes[0][3])) + rows  # patch top, in frame k's rows
        assert upper["box_px"][1] == pytest.approx(y + patch.boxes[0][1])
        # pixels: frames k and k+1 put together are the background with the patch pasted once
        both = np.concatenate([frames[k].pixels, frames[k + 1].pixels])
        expected = np.concatenate([background[k].pixels, background[k + 1].pixels])
        paste(expected, patch, x, y)
        h, w = patch.image.shape
        assert np.array_equal(both[y:y + h, x:x + w], expected[y:y + h, x:x + w])


def test_simulator_seam_share_is_configured_and_checked(tmp_path: Path) -> None:
    from cameras import open_source
    from inspection.config import load_config
    from inspection.errors import ConfigError, SourceError

    line = load_config(None, {"simulator.seam_share": 0.25, "line.database": str(tmp_path / "l.db")})
    assert open_source(line, line.cameras[0]).seam_share == 0.25
    assert open_source(line, line.cameras[0], seam_share=0.5).seam_share == 0.5
    with pytest.raises(ConfigError, match="simulator.seam_share"):
        load_config(None, {"simulator.seam_share": 1.5})
    with pytest.raises(SourceError, match="seam_share"):
        simulate(tmp_path, "bad", seam_share=-0.1)


def test_e2e_compare_counts_a_cut_defect_once_and_reports_splits(store: Store) -> None:
    from inspection.benchmarks import _intervals
    from inspection.benchmarks.e2e import compare

    store.apply_batch([frame(0, piece((900, 1024), (500, 520), "patches")),
                       frame(1, piece((1024, 1100), (501, 519), "crazing", 0.5)),
                       frame(3, piece((3100, 3140), (100, 140), "inclusion"))])

    def row(index: int, along: tuple[float, float], across: tuple[float, float], cls: str, **extra: Any) -> dict:
        return {"coil": "C-1", "camera": "top-1", "frame_index": index, "class": cls, "along_mm": list(along),
                "across_mm": list(across), **extra}

    truth = [row(0, (898, 1024), (499, 521), "patches", group="C-1/top-1/0/0/0"),
             row(1, (1024, 1101), (499, 521), "patches", group="C-1/top-1/0/0/0"),
             row(3, (3100, 3140), (100, 140), "inclusion"), row(5, (5500, 5600), (10, 50), "crazing")]
    merged = compare(store.path, truth, 0.3)
    raw = compare(store.path, truth, 0.3, merge_seams=False)
    assert (merged["ground_truth_defects"], merged["seam_defects"]) == (3, 1)
    assert (merged["recorded_defects"], merged["recorded_fragments"], raw["recorded_defects"]) == (2, 3, 3)
    assert (merged["detection_rate"], merged["seam_detection_rate"], merged["seam_split"]) == (
        pytest.approx(2 / 3, abs=1e-4), 1.0, 0)
    assert merged["class_accuracy"] == 1.0  # the merged defect has the best-scoring fragment's class
    # 2 of 3 found, 2 of 2 named right, no false defect: the Wilson and Poisson intervals of those counts
    assert merged["intervals_95"]["detection_rate"] == _intervals.wilson(2, 3)
    assert merged["intervals_95"]["class_accuracy"] == _intervals.wilson(2, 2)
    low, high = merged["intervals_95"]["false_defects_per_m"]
    assert low == 0.0 and high == pytest.approx(3.6889 / merged["strip_m_inspected"], rel=0.05)  # m rounded
    assert merged["wrong_class"] == {}
    truth[2]["class"] = "scratches"  # the inclusion record now names a true scratch wrong
    assert compare(store.path, truth, 0.3)["wrong_class"] == {"scratches": {"inclusion": 1}}
    assert raw["seam_split"] == 1  # fragment by fragment, the cut defect is found twice


def test_lean_coil_defects_are_the_full_rows_cut_down(store: Store) -> None:
    """The recorder's finalisation reads a coil lean (`coil_defects(lean=True)`): the same defects,
    merged across seams and reviewed alike, with the columns it uses."""
    store.apply_batch([frame(0, UP, piece((100, 140), (10, 40), "inclusion")), frame(1, DOWN),
                       frame(2, piece((2100, 2160), (300, 330), "unknown", 0.4)),
                       frame(4, piece((4100, 4130), (700, 720), "patches"))])
    ids = {r[1]: r[0] for r in store.db.execute("SELECT id, class FROM defects")}
    store.add_review(ids["inclusion"], "anna", "reject", reason="dust")
    store.add_review(ids["patches"], "bert", "relabel", new_class="crazing")
    for include_rejected in (True, False):
        full = queries.coil_defects(store.db, "C-1", include_rejected=include_rejected)
        lean = queries.coil_defects(store.db, "C-1", include_rejected=include_rejected, lean=True)
        assert len(full) == len(lean) and [{k: f[k] for k in r} for f, r in zip(full, lean, strict=True)] == lean
    assert {"parts", "effective_class", "review_status", "score", "length_mm"} <= set(lean[0])
    assert any(len(r["parts"]) == 2 for r in lean) and any(r["class"] == "unknown" for r in lean)


def _random_frames(seed: int, step_mm: float, cameras: tuple[str, ...]) -> list[FrameResult]:
    """Frames every `step_mm` (less than `FRAME_MM`: overlapping frames) with defects of which many end
    within a hair of a seam plus or minus the margin (6 px at 1 or 0.5 mm per px)."""
    rng = np.random.default_rng(seed)
    frames = []
    for camera in cameras:
        surface = "top" if camera == "top-1" else "bottom"
        for index in range(24):
            position = index * step_mm
            defects = []
            for _ in range(int(rng.integers(0, 12))):
                length, width = float(rng.uniform(1, 150)), float(rng.uniform(2, 40))
                across = float(rng.uniform(0, 1500))
                kind = rng.integers(3)
                if kind == 0:  # anywhere in the frame
                    start = position + float(rng.uniform(0, FRAME_MM - length))
                else:  # an edge near this frame's seam or the next one's, at the margin give or take a hair
                    across = float(rng.choice([200.0, 700.0, 1200.0]) + rng.uniform(-5, 5))  # in lanes: partners
                    seam = position if kind == 1 else (index + 1) * step_mm
                    edge = seam + float(rng.choice([-6.0, -3.0, 0.0, 3.0, 6.0])) + float(rng.choice([-1e-9, 0, 1e-9]))
                    start = edge if kind == 1 else edge - length
                    start = min(max(start, position), position + FRAME_MM - length)
                cls = str(rng.choice(["scratches", "patches"]))
                score = float(rng.uniform(0.3, 0.99))
                defects.append(Defect(cls, score, severity(cls, length, width, length * width, score),
                                      (across, start - position, across + width, start - position + length),
                                      start + length / 2, across + width / 2, length, width, length * width))
            t = T0 + index * 50_000_000
            frames.append(FrameResult(StreamKey(LINE, "hot", camera, surface), "C-R", index + 1, index, t, position,
                                      FRAME_MM, *TEST_MODEL, t + 1, tuple(defects)))
    return frames


@pytest.mark.parametrize("seed", range(4))
def test_looking_only_at_defects_near_seams_links_what_looking_at_all_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """`seam_filter.seam_candidates` leaves out the new defects that cannot reach a seam: the same
    links (and audit chain) as the query over every new defect, frames overlapping or not, arriving
    out of order, on a camera registered at 0.5 mm per px and one not registered."""
    from inspection.records import seam_filter

    rng = np.random.default_rng(100 + seed)
    frames = _random_frames(seed, float(rng.choice([FRAME_MM, 896.0])), ("top-1", "side-9"))
    order = rng.permutation(len(frames))
    batches = [[frames[i] for i in order[k:k + 5]] for k in range(0, len(frames), 5)]
    heads, links, looked = [], [], []
    real = seam_filter.seam_candidates

    def counting(db: Any, rows: list[tuple], margin: float) -> list[int]:
        kept = real(db, rows, margin)
        looked.append((len(kept), len(rows)))
        return kept

    cameras = [{"id": "top-1", "surface": "top", "mm_per_px_along": 0.5}]
    for name, filtered in (("all", False), ("near", True)):
        if not filtered:
            monkeypatch.setattr(seam_filter, "seam_candidates", lambda *a, **k: None)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(seam_filter, "seam_candidates", counting)
        s = Store(tmp_path / f"{name}.db", clock=iter(range(10**18, 10**18 + 10**6)).__next__)
        s.register_line(LINE, "hot", 1600.0, cameras)
        for batch in batches:
            s.apply_batch(batch)
        links.append(s.db.execute("SELECT coil, camera, upper_id, lower_id, seam_mm, severity FROM defect_links "
                                  "ORDER BY id").fetchall())
        heads.append(s.db.execute("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone())
        assert verify(s.db).ok
        s.close()
    assert links[0] == links[1] and len(links[0]) > 5
    kept, new = map(sum, zip(*looked, strict=True))
    assert 0 < kept < new  # some defects were left out, and not the ones that link
    assert heads[0] == heads[1]
