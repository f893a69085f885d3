"""The read API of a line database, for the console and the coil report (pure reads).

Coil level: `coils` (filtered list), `filter_choices` (values for its filters), `coil_ids`,
`coil_row`, `coil_defects` (with the effective class after reviews), `coil_map`, `coverage`,
`current_grade`, `grade_history`, `coil_reviews`, `platform_data`, `coil_alarms`, `provenance`,
`grade_input`; `change_marks` tells a cached reader when to read again. Analytics and review: see
`analytics` (Pareto, rates per 1,000 m, field precision, confirmations per model, review queue,
line status).

Effective class of a defect after reviews (reviews are applied in order): ``relabel`` sets the
class, ``reject`` marks it a false alarm, ``confirm`` accepts the current class (and undoes an
earlier reject). A rejected defect is not counted by grading or analytics.

A defect cut by frame seams is recorded as linked fragments (`seams`); `coil_defects` returns it
once, merged, with the fragment ids in ``parts``, and a review of any fragment applies to it.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
import time
from typing import Any

from sqlite_utils import Database

from inspection.records import seams
from inspection.records.batch_rows import STORED_NAMES
from inspection.records.grading import GradeDefect, GradeInput
from inspection.results import UNKNOWN


def day_of(time_ns: int) -> str:
    """UTC day ``YYYY-MM-DD`` of a nanosecond timestamp."""
    return time.strftime("%Y-%m-%d", time.gmtime(time_ns / 1e9))


def iso(time_ns: int | None) -> str | None:
    if time_ns is None:
        return None
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time_ns / 1e9))
        + f".{time_ns // 1_000_000 % 1000:03d}Z"
    )


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def change_marks(db: Database) -> tuple[int, int, int]:
    """(audit log head seq, review queue size, review queue max rowid).

    Together they change whenever anything a reader shows can have changed: every mutating event
    appends to the audit log, and the review queue, which is derived and not audited, is counted.
    """
    row = db.execute(
        "SELECT (SELECT coalesce(max(seq), 0) FROM audit_log),"
        " (SELECT count(*) FROM review_queue), (SELECT coalesce(max(rowid), 0) FROM review_queue)"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def coil_row(db: Database, coil: str) -> dict[str, Any] | None:
    """The coil's own row (``id``, ``line``, ``line_type``, ``first_seen_ns``); None for an unknown coil."""
    rows = _dicts(db.execute("SELECT id, line, line_type, first_seen_ns FROM coils WHERE id=?", (coil,)))
    return rows[0] if rows else None


def coil_ids(db: Database, limit: int = 500) -> list[str]:
    """Coil ids newest first (ties by id)."""
    return [r[0] for r in db.execute("SELECT id FROM coils ORDER BY first_seen_ns DESC, id LIMIT ?", (limit,))]


_FILTER_SQL = {
    "line": "SELECT DISTINCT line FROM coils",
    "heat": "SELECT DISTINCT heat FROM platform_coils",
    "order_no": "SELECT DISTINCT order_no FROM platform_coils",
    "customer": "SELECT DISTINCT customer FROM platform_coils",
    "steel_grade": "SELECT DISTINCT steel_grade FROM platform_coils",
    "grade": "SELECT DISTINCT grade FROM grades",
}


def filter_choices(db: Database) -> dict[str, list[str]]:
    """Values to offer for the `coils` filters: line, heat, order_no, customer, steel_grade, grade.

    Each list is sorted as text, without NULLs (a coil without plant data has none to offer).
    """
    return {key: sorted(str(r[0]) for r in db.execute(sql).fetchall() if r[0] is not None)
            for key, sql in _FILTER_SQL.items()}


def coil_reviews(db: Database, coil: str) -> list[dict[str, Any]]:
    """Every review of the coil's defects, oldest first (reviews are append-only).

    Keys: ``review``, ``defect``, ``detected_as`` (the class the model gave), ``action``, ``new_class``,
    ``reviewer``, ``reason``, ``time_ns``.
    """
    return _dicts(db.execute(
        "SELECT r.id AS review, r.defect_id AS defect, d.class AS detected_as, r.action, r.new_class, "
        "r.reviewer, r.reason, r.time_ns FROM reviews r JOIN defects d ON d.id = r.defect_id "
        "WHERE r.coil = ? ORDER BY r.id", (coil,)))


def review_states(db: Database, coil: str, alias: dict[int, int] | None = None) -> dict[int, dict[str, Any]]:
    """defect id -> {"status", "class" (effective or None), "reviewer", "reviews"} for reviewed defects.

    `alias` maps fragment ids to the id of their merged defect: the reviews of all its fragments
    apply to it, in review order.
    """
    alias = alias or {}
    states: dict[int, dict[str, Any]] = {}
    for defect_id, reviewer, action, new_class in db.execute(
        "SELECT defect_id, reviewer, action, new_class FROM reviews WHERE coil=? ORDER BY id", (coil,)
    ):
        s = states.setdefault(
            alias.get(defect_id, defect_id), {"status": "unreviewed", "class": None, "reviewer": None, "reviews": 0}
        )
        s["reviews"] += 1
        s["reviewer"] = reviewer
        if action == "relabel":
            s["class"], s["status"] = new_class, "relabelled"
        elif action == "reject":
            s["status"] = "rejected"
        else:
            s["status"] = "relabelled" if s["class"] else "confirmed"
    return states


_DEFECT_COLUMNS = ("d.id, d.surface, d.camera, d.frame_seq, d.frame_index, d.defect_index, d.along_mm, d.across_mm, "
                   "d.x1, d.y1, d.x2, d.y2, d.length_mm, d.width_mm, d.area_mm2, d.class, d.score, d.severity, "
                   "d.crop_sha256, d.captured_ns, m.version AS model_version, m.sha256 AS model_sha256")
# what grading, the review queue, the roll-mark search and the seam merge read: half the columns,
# no join, for the recorder's read of a whole coil at every finalisation
LEAN_NAMES = ("id", "surface", "frame_index", "defect_index", "along_mm", "across_mm", "length_mm", "width_mm",
              "class", "score", "severity")
_LEAN_COLUMNS = ", ".join(f"d.{name}" for name in LEAN_NAMES)


def coil_defects(db: Database, coil: str, *, include_rejected: bool = True,
                 merge_seams: bool = True, lean: bool = False) -> list[dict[str, Any]]:
    """The coil's defects in along order, with ``effective_class``, ``review_status``, ``model_version``
    and ``parts`` (fragment ids; ``[id]`` for a defect inside one frame); a defect of class
    ``unknown`` has ``guesses`` (the model's best classes, ``[[class, score], ...]``).

    A defect cut by frame seams is one row (see `seams.merge_fragments`); `merge_seams` False gives
    the fragments as recorded, each with its own reviews. `lean` reads only id, surface, frame and
    defect index, position, size, class, score and severity (`_LEAN_COLUMNS`).
    """
    join = "" if lean else " LEFT JOIN models m ON m.id = d.model_id"
    rows = _dicts(db.execute(f"SELECT {_LEAN_COLUMNS if lean else _DEFECT_COLUMNS} FROM defects d{join} "
                             "WHERE d.coil=? ORDER BY d.along_mm, d.id", (coil,)))
    return _with_reviews(db, coil, rows, include_rejected=include_rejected, merge_seams=merge_seams)


def lean_coil_defects(db: Database, coil: str, stored_rows: list[tuple]) -> list[dict[str, Any]]:
    """`coil_defects(db, coil, lean=True)` from the coil's defect rows already at hand, as ``SELECT
    rowid, * FROM defects`` gives them (the recorder keeps those it committed: `coil_rows`); the
    links, reviews and guesses are read as `coil_defects` reads them. The same rows in the same order
    as the query's."""
    ordered = sorted(stored_rows, key=_ALONG_THEN_ID)
    if (not seams.coil_links(db, coil) and UNKNOWN not in map(_CLASS_OF, ordered)
            and not review_states(db, coil)):
        # Nothing to merge, review or guess (the common coil): each row whole in one display.
        return list(map(_plain_dict, ordered))
    return _with_reviews(db, coil, list(map(_lean_dict, ordered)), include_rejected=True, merge_seams=True)


# a stored defect row: rowid, then the table's columns (`batch_rows.STORED_NAMES`)
_LEAN_OF_STORED = operator.itemgetter(*map(STORED_NAMES.index, LEAN_NAMES))
_ID, _ALONG, _CLASS = map(STORED_NAMES.index, ("id", "along_mm", "class"))


def _lean_dict(row: tuple) -> dict[str, Any]:
    """The `LEAN_NAMES` of a stored row as a dict display: twice as fast as zip, for 10,000 rows a coil."""
    id_, surface, frame_index, defect_index, along_mm, across_mm, length_mm, width_mm, cls, score, severity = (
        _LEAN_OF_STORED(row))
    return {"id": id_, "surface": surface, "frame_index": frame_index, "defect_index": defect_index,
            "along_mm": along_mm, "across_mm": across_mm, "length_mm": length_mm, "width_mm": width_mm,
            "class": cls, "score": score, "severity": severity}


def _plain_dict(row: tuple) -> dict[str, Any]:
    """`_with_reviews`' row for a defect of a coil without links, reviews or unknown defects: the
    same keys in the same order (``parts``, then the review's), built at once."""
    id_, surface, frame_index, defect_index, along_mm, across_mm, length_mm, width_mm, cls, score, severity = (
        _LEAN_OF_STORED(row))
    return {"id": id_, "surface": surface, "frame_index": frame_index, "defect_index": defect_index,
            "along_mm": along_mm, "across_mm": across_mm, "length_mm": length_mm, "width_mm": width_mm,
            "class": cls, "score": score, "severity": severity, "parts": [id_], "effective_class": cls,
            "review_status": "unreviewed", "reviewer": None}


_ALONG_THEN_ID = operator.itemgetter(_ALONG, _ID)  # ORDER BY d.along_mm, d.id on stored rows
_CLASS_OF = operator.itemgetter(_CLASS)


def _with_reviews(db: Database, coil: str, rows: list[dict[str, Any]], *, include_rejected: bool,
                  merge_seams: bool) -> list[dict[str, Any]]:
    """`coil_defects`' rows (dicts in along order) merged across seams, with their reviews and guesses."""
    alias: dict[int, int] = {}
    links = seams.coil_links(db, coil) if merge_seams else []
    if links:
        rows, alias = seams.merge_fragments(rows, links)
        rows.sort(key=lambda r: (r["along_mm"], r["id"]))
    else:  # nothing to merge (most coils): the fresh rows as they are, in the query's order
        for r in rows:
            r["parts"] = [r["id"]]
    states = review_states(db, coil, alias)
    guesses = defect_guesses(db, coil) if any(r["class"] == UNKNOWN for r in rows) else {}
    out = []
    for r in rows:
        if r["class"] == UNKNOWN:
            r["guesses"] = guesses.get(r["id"], [])
        s = states.get(r["id"])
        r["effective_class"] = s["class"] if s and s["class"] else r["class"]
        r["review_status"] = s["status"] if s else "unreviewed"
        r["reviewer"] = s["reviewer"] if s else None
        if include_rejected or r["review_status"] != "rejected":
            out.append(r)
    return out


def first_defect_ids(db: Database, coil: str, limit: int) -> list[int]:
    """The ids of a coil's first `limit` defects (by id)."""
    return [i for (i,) in db.execute("SELECT id FROM defects WHERE coil = ? ORDER BY id LIMIT ?", (coil, limit))]


def defect_guesses(db: Database, coil: str) -> dict[int, list[list[Any]]]:
    """defect id -> the model's guesses for the coil's unknown defects (none before m005)."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='defect_guesses'").fetchone():
        return {}  # a database the recorder has not migrated yet (read-only readers never migrate)
    return {d: json.loads(g) for d, g in db.execute("SELECT defect_id, guesses FROM defect_guesses WHERE coil=?",
                                                     (coil,))}


def coil_duration_s(db: Database, coil: str) -> float:
    """Seconds from the coil's first captured frame to its last (0 for a coil without frames)."""
    first, last = db.execute("SELECT min(captured_ns), max(captured_ns) FROM frames WHERE coil=?", (coil,)).fetchone()
    return (last - first) / 1e9 if first is not None else 0.0


def review_coverage(db: Database, coil: str) -> dict[str, int]:
    """How much of the coil an expert sees: its defects (seam-merged, rejected included), those
    queued for review, those not queued (sampled out), and those reviewed."""
    defects = coil_defects(db, coil)
    queued = {r[0] for r in db.execute("SELECT defect_id FROM review_queue WHERE coil=?", (coil,))}
    queued_defects = sum(1 for d in defects if d["id"] in queued)
    return {"defects": len(defects), "queued": queued_defects, "not_queued": len(defects) - queued_defects,
            "reviewed": sum(1 for d in defects if d["review_status"] != "unreviewed")}


def coil_map(db: Database, coil: str) -> list[dict[str, Any]]:
    """Points for the defect map: along (m) x across (mm), per surface, effective class, severity."""
    return [
        {
            "id": d["id"],
            "surface": d["surface"],
            "along_m": d["along_mm"] / 1000.0,
            "across_mm": d["across_mm"],
            "class": d["effective_class"],
            "severity": d["severity"],
            "score": d["score"],
            "rejected": d["review_status"] == "rejected",
            "crop_sha256": d["crop_sha256"],
        }
        for d in coil_defects(db, coil)
    ]


LENGTH_TOLERANCE = 0.02  # the plant measures a coil's length otherwise than the line's encoder does


def coverage(db: Database, coil: str) -> dict[str, Any]:
    """Frames received / inspected / dropped per camera, and the coil's inspected share (worst camera).

    ``complete`` is true when every camera sent coil_end and all its frames are accounted for
    (inspected, dropped by a worker or dropped by the camera). ``lost`` (per camera, and summed)
    counts the frames of a camera's coil_end that no record shows (None for a camera whose coil_end
    never arrived).

    A camera counts the frames it captured, so a coil stopped half way (the line stopped, a camera
    died) would look fully inspected. Where the plant's data gives the coil's length
    (``platform_coils.length_m``) and a camera's coil ended more than `LENGTH_TOLERANCE` short of
    it, that camera's share is its inspected length over the plant's length instead, and
    ``cut_short`` says so: the coverage gate then holds the coil instead of grading it as complete.

    A camera whose coil_end has not arrived (it lags behind the others, or died) has not said how many
    frames it captured, so its share is its inspected length over the coil's length as far as anyone
    knows it (the plant's, else the longest coil_end of the coil's other cameras), and 0 when nobody
    knows it: a coil held at its grace timeout then shows how much of it was inspected, not 0 %.
    ``length_known`` is false when nobody knows it (no coil_end, no plant data: a coil a stop cut, see
    `cameras.base`), so the share of 0 proves nothing either way and the hold says so (`grading.grade`).
    """
    line = db.execute("SELECT line FROM coils WHERE id=?", (coil,)).fetchone()
    cams = {
        r[0]: r[1]
        for r in db.execute("SELECT id, surface FROM cameras WHERE line=?", (line[0] if line else "",))
    }
    seen = db.execute(
        "SELECT camera, surface FROM coil_events WHERE coil=? UNION "
        "SELECT camera, NULL FROM frames WHERE coil=?",
        (coil, coil),
    ).fetchall()
    for cam, surface in seen:
        cams.setdefault(cam, surface)
    planned_mm = _planned_length_mm(db, coil)
    ended_mm = db.execute("SELECT max(length_mm) FROM coil_events WHERE coil=? AND kind='coil_end'",
                          (coil,)).fetchone()[0]
    known_mm = planned_mm or ended_mm
    per_camera, shares, complete = [], [], bool(cams)
    for cam in sorted(cams):
        inspected, dropped = db.execute(
            "SELECT coalesce(sum(status='inspected'), 0), coalesce(sum(status='dropped'), 0) FROM frames "
            "WHERE coil=? AND camera=?",
            (coil, cam),
        ).fetchone()
        end = db.execute(
            "SELECT frames, dropped, length_mm FROM coil_events WHERE coil=? AND camera=? "
            "AND kind='coil_end'",
            (coil, cam),
        ).fetchone()
        expected, cam_dropped = (end[0], end[1]) if end else (None, 0)
        share = (inspected / expected if expected else (1.0 if expected == 0 else 0.0)) if end else 0.0
        cut_short = bool(end and planned_mm and end[2] is not None
                         and end[2] < planned_mm * (1.0 - LENGTH_TOLERANCE))
        if end is None and known_mm:
            share = _inspected_mm(db, coil, cam) / known_mm
        elif cut_short:
            share = min(share, _inspected_mm(db, coil, cam) / planned_mm)
        done = end is not None and inspected + dropped + cam_dropped >= expected
        complete = complete and done
        # frames the camera counted in its coil_end that no record shows (inspected, or dropped by a
        # worker or by the camera): held by a process that died, or malformed on the wire
        lost = max(0, expected - inspected - dropped - cam_dropped) if end else None
        shares.append(min(share, 1.0))
        per_camera.append(
            {
                "camera": cam,
                "surface": cams[cam],
                "frames": expected,
                "received": inspected + dropped,
                "inspected": inspected,
                "dropped_worker": dropped,
                "dropped_camera": cam_dropped,
                "lost": lost,
                "share": min(share, 1.0),
                "ended": end is not None,
                "complete": done,
                "length_mm": end[2] if end else None,
                "cut_short": cut_short,
            }
        )
    return {
        "coil": coil,
        "share": min(shares) if shares else 0.0,
        "complete": complete,
        "lost": sum(c["lost"] or 0 for c in per_camera),  # cameras whose coil_end never came: unknown
        "planned_length_mm": planned_mm,
        "length_known": bool(known_mm),  # the plant's length or a camera's coil_end: else 0 % proves nothing
        "cameras": per_camera,
    }


def _inspected_mm(db: Database, coil: str, camera: str) -> float:
    return db.execute("SELECT coalesce(sum(length_mm), 0) FROM frames WHERE coil=? AND camera=? "
                      "AND status='inspected'", (coil, camera)).fetchone()[0]


def _planned_length_mm(db: Database, coil: str) -> float | None:
    """The coil's length from the plant's data (MES), in mm; None when not imported."""
    try:
        row = db.execute("SELECT length_m FROM platform_coils WHERE coil_id=?", (coil,)).fetchone()
    except sqlite3.OperationalError:  # a database from before the plant-data migration
        return None
    return float(row[0]) * 1000.0 if row and row[0] else None


def coil_length_m(db: Database, coil: str) -> float:
    length = db.execute(
        "SELECT max(length_mm) FROM coil_events WHERE coil=? AND kind='coil_end'", (coil,)
    ).fetchone()[0]
    if length is None:
        length = db.execute(
            "SELECT max(position_mm + length_mm) FROM frames WHERE coil=?", (coil,)
        ).fetchone()[0]
    return (length or 0.0) / 1000.0


def coil_width_mm(db: Database, coil: str) -> float:
    width = db.execute("SELECT width_mm FROM platform_coils WHERE coil_id=?", (coil,)).fetchone()
    if width and width[0]:
        return float(width[0])
    width = db.execute(
        "SELECT l.strip_width_mm FROM coils c JOIN lines l ON l.id = c.line WHERE c.id=?", (coil,)
    ).fetchone()
    return float(width[0]) if width and width[0] else 1000.0


def not_rejected(defects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`coil_defects` rows without those reviewed as false alarms (what grading and alarms count)."""
    return [d for d in defects if d["review_status"] != "rejected"]


_GRADE_FIELDS = operator.itemgetter("effective_class", "severity", "surface", "along_mm", "across_mm")
_NEW_GRADE_DEFECT = functools.partial(tuple.__new__, GradeDefect)


def grade_input(db: Database, coil: str, defects: list[dict[str, Any]] | None = None) -> GradeInput:
    """Everything grading needs, with reviews applied (rejected defects left out). `defects` are the
    coil's `coil_defects` rows (rejected ones included) when the caller has read them already:
    finalising a coil reads them once for grading, the roll-mark search and the review queue."""
    defects = coil_defects(db, coil) if defects is None else defects
    # GradeDefect(effective_class, severity, surface, along_mm, across_mm) per defect, built in C
    # (`tuple.__new__` is what a named tuple's `_make` calls): 10,000 per coil at every finalisation
    counted = list(map(_NEW_GRADE_DEFECT, map(_GRADE_FIELDS, not_rejected(defects))))
    cover = coverage(db, coil)
    return GradeInput(
        coil=coil,
        length_m=coil_length_m(db, coil),
        width_mm=coil_width_mm(db, coil),
        coverage=cover["share"],
        defects=counted,
        length_known=cover["length_known"],
    )


def grade_history(db: Database, coil: str) -> list[dict[str, Any]]:
    rows = _dicts(db.execute("SELECT * FROM grades WHERE coil=? ORDER BY id", (coil,)))
    for r in rows:
        r["reasons"] = json.loads(r["reasons"])
        r["time"] = iso(r["time_ns"])
    return rows


def current_grade(db: Database, coil: str) -> dict[str, Any] | None:
    """The effective grade: the latest override if any, else the latest automatic grade."""
    history = grade_history(db, coil)
    overrides = [g for g in history if g["source"] == "override"]
    return (overrides or history or [None])[-1]


def automatic_grade(db: Database, coil: str) -> str | None:
    """The coil's latest automatic grade (what the rules say, whatever overrides say), or None."""
    row = db.execute("SELECT grade FROM grades WHERE coil=? AND source='auto' ORDER BY id DESC LIMIT 1",
                     (coil,)).fetchone()
    return row[0] if row else None


def pending_overrides(db: Database, coil: str | None = None) -> list[dict[str, Any]]:
    """Overrides that wait for a second person (requested, neither approved nor declined, not
    superseded by a later override of their coil), oldest first; all coils when `coil` is None."""
    if not db["override_approvals"].exists():
        return []
    rows = _dicts(db.execute(
        "SELECT o.id AS override_id, o.coil, o.grade, o.reviewer AS requested_by, o.reason, o.time_ns "
        "FROM grade_overrides o JOIN override_approvals a ON a.override_id = o.id AND a.action = 'requested' "
        "WHERE (? IS NULL OR o.coil = ?) "
        "AND NOT EXISTS (SELECT 1 FROM override_approvals d WHERE d.override_id = o.id "
        "AND d.action IN ('approved', 'declined')) "
        "AND NOT EXISTS (SELECT 1 FROM grade_overrides n WHERE n.coil = o.coil AND n.id > o.id) "
        "ORDER BY o.id", (coil, coil)))
    for r in rows:
        r["time"] = iso(r["time_ns"])
    return rows


def platform_data(db: Database, coil: str) -> dict[str, Any]:
    """The plant's data for the coil (MES coil row + process data + order), empty when not imported."""
    row = _dicts(db.execute("SELECT * FROM platform_coils WHERE coil_id=?", (coil,)))
    if not row:
        return {}
    data = row[0]
    process = _dicts(
        db.execute(
            "SELECT finishing_temp_c, coiling_temp_c, speed_m_per_s, extra FROM process_data WHERE coil_id=?",
            (coil,),
        )
    )
    if process:
        extra = process[0].pop("extra")
        data.update(process[0])
        data["extra"] = json.loads(extra) if extra else {}
    return data


def coil_alarms(db: Database, coil: str) -> list[dict[str, Any]]:
    rows = _dicts(db.execute("SELECT * FROM alarms WHERE coil=? ORDER BY id", (coil,)))
    for r in rows:
        r["details"] = json.loads(r["details"]) if r["details"] else None
        r["time"] = iso(r["time_ns"])
    return rows


def coils(
    db: Database,
    *,
    coil: str | None = None,
    heat: str | None = None,
    order: str | None = None,
    customer: str | None = None,
    steel_grade: str | None = None,
    grade: str | None = None,
    line: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Coils newest first, with plant data, effective grade and defect count; filters combine (AND).

    ``coil`` matches a prefix; ``since`` / ``until`` are UTC days ``YYYY-MM-DD`` (inclusive).
    """
    where, args = [], []
    for value, sql in (
        (heat, "p.heat = ?"),
        (order, "p.order_no = ?"),
        (customer, "p.customer = ?"),
        (steel_grade, "p.steel_grade = ?"),
        (line, "c.line = ?"),
    ):
        if value:
            where.append(sql)
            args.append(value)
    if coil:
        where.append("c.id LIKE ? ESCAPE '\\'")
        args.append(coil.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if since:
        where.append("c.first_seen_ns >= ?")
        args.append(_day_ns(since))
    if until:
        where.append("c.first_seen_ns < ?")
        args.append(_day_ns(until) + 86_400 * 10**9)
    grade_sql = (
        "coalesce((SELECT g.grade FROM grades g WHERE g.coil = c.id AND g.source = 'override' "
        "ORDER BY g.id DESC LIMIT 1), (SELECT g.grade FROM grades g WHERE g.coil = c.id "
        "ORDER BY g.id DESC LIMIT 1))"
    )
    if grade:
        where.append(f"{grade_sql} = ?")
        args.append(grade)
    sql = (
        f"SELECT c.id AS coil, c.line, c.line_type, c.first_seen_ns, {grade_sql} AS grade, "
        "(SELECT g.coverage FROM grades g WHERE g.coil = c.id AND g.source = 'auto' "
        "ORDER BY g.id DESC LIMIT 1) "
        "AS coverage, (SELECT coalesce(sum(n), 0) FROM coil_class_counts k WHERE k.coil = c.id) AS defects, "
        "p.heat, p.order_no, p.customer, p.steel_grade, p.thickness_mm, p.width_mm, p.length_m, p.shift "
        "FROM coils c LEFT JOIN platform_coils p ON p.coil_id = c.id "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY c.first_seen_ns DESC LIMIT ?"
    )
    rows = _dicts(db.execute(sql, [*args, limit]))
    for r in rows:
        r["first_seen"] = iso(r["first_seen_ns"])
    return rows


def _day_ns(day: str) -> int:
    import calendar

    try:
        return calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 10**9
    except ValueError:
        from inspection.records.errors import StoreError

        raise StoreError(f"date: expected YYYY-MM-DD, got {day!r}") from None


def provenance(db: Database, coil: str) -> dict[str, Any]:
    """Models that inspected the coil, rule sets that graded it, reviewers, coverage, audit head."""
    models = _dicts(
        db.execute(
            "SELECT m.version, m.sha256, count(*) AS frames FROM frames f JOIN models m "
            "ON m.id = f.model_id WHERE f.coil=? GROUP BY m.id ORDER BY m.id",
            (coil,),
        )
    )
    rules = _dicts(
        db.execute(
            "SELECT DISTINCT rule_set, rule_version, rule_sha256 FROM grades WHERE coil=? AND source='auto'",
            (coil,),
        )
    )
    reviewers = [
        r[0]
        for r in db.execute("SELECT reviewer FROM reviews WHERE coil=? UNION "
                            "SELECT reviewer FROM grade_overrides WHERE coil=? ORDER BY reviewer",
                            (coil, coil))
    ]
    head = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    return {
        "models": models,
        "rule_sets": rules,
        "reviewers": reviewers,
        "coverage": coverage(db, coil),
        "audit_head": {"seq": head[0], "hash": head[1]} if head else None,
    }
