"""Read API for the console's review queue, analytics and line status.

- `review_queue(db, limit, coil, cls)`: queued defects not yet reviewed, highest priority first
  (the priority rule is in `review_queue`); `review_progress(db)`: queued vs reviewed;
  `queue_filters(db)`: coils and classes that still have defects waiting.
- `pareto(db, since, until, line)`: defects per class over a day range, after reviews, with shares.
- `defects_per_km(db, by, since, until)`: defects per 1,000 m by line | shift | steel_grade | customer.
- `coil_stats(db, since, until)`: per coil length, defects, defects per 1,000 m and process data
  (for defects against a process parameter, e.g. finishing temperature); `coil_days(db)`: the
  day of each coil's first defect, for trends.
- `field_precision(db)`: per class, precision estimated from reviews of *sampled* queue items only.
- `confirmations_by_model(db)`: reviews per model version (confirmed / relabelled / rejected).
- `line_status(db)`: per line current coils, recorder figures, coverage, models, recent alarms;
  `frame_megapixels(db, coil)`: the size of the coil's recent frames, to turn frames/s into Mpx/s.

Day ranges are UTC days ``YYYY-MM-DD``, inclusive; None means open-ended.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlite_utils import Database

from inspection.records import seams
from inspection.records.errors import StoreError
from inspection.records.queries import _dicts, coverage, iso

GROUPS = {"line": "c.line", "shift": "p.shift", "steel_grade": "p.steel_grade", "customer": "p.customer"}
_WAITING = "NOT EXISTS (SELECT 1 FROM reviews r WHERE r.defect_id = q.defect_id)"  # queued, not yet reviewed


def review_queue(db: Database, *, limit: int = 50, coil: str | None = None,
                 cls: str | None = None) -> list[dict[str, Any]]:
    """Queued, not yet reviewed defects, highest priority first, with what a reviewer needs to see."""
    where, args = [_WAITING], []
    if coil:
        where.append("q.coil = ?")
        args.append(coil)
    if cls:
        where.append("q.class = ?")
        args.append(cls)
    sql = ("SELECT q.defect_id, q.coil, q.class, q.priority, q.reason, d.surface, d.along_mm, d.across_mm, "
           "d.length_mm, d.width_mm, d.area_mm2, d.score, d.severity, d.crop_sha256, m.version AS "
           "model_version "
           "FROM review_queue q JOIN defects d ON d.id = q.defect_id LEFT JOIN models m ON m.id = d.model_id "
           f"WHERE {' AND '.join(where)} ORDER BY q.priority DESC, q.defect_id LIMIT ?")
    return _merge_queued(db, _dicts(db.execute(sql, [*args, limit])))


def _merge_queued(db: Database, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A queued defect cut by frame seams shows its merged size, score and severity and its ``parts``;
    it leaves the queue once any of its fragments was reviewed (the review applies to all of them)."""
    merged: dict[int, dict[str, Any]] = {}
    for coil in {r["coil"] for r in rows}:
        groups, _ = seams.coil_groups(db, coil)
        merged.update({g["id"]: g for g in groups})
    out = []
    for row in rows:
        group = merged.get(row["defect_id"])
        if group is None:
            out.append({**row, "parts": [row["defect_id"]]})
            continue
        marks = ",".join("?" * len(group["parts"]))
        if db.execute(f"SELECT 1 FROM reviews WHERE defect_id IN ({marks}) LIMIT 1", group["parts"]).fetchone():
            continue
        out.append({**row, **{k: group[k] for k in ("along_mm", "across_mm", "length_mm", "width_mm", "area_mm2",
                                                   "score", "severity", "parts")}})
    return out


def review_progress(db: Database) -> dict[str, int]:
    """Queued items reviewed and waiting, and the detections of queued coils never queued (sampled out:
    the review budget left them to the grade alone; seam fragments count one by one)."""
    queued = db.execute("SELECT count(*) FROM review_queue").fetchone()[0]
    done = db.execute("SELECT count(*) FROM review_queue q WHERE EXISTS "
                      "(SELECT 1 FROM reviews r WHERE r.defect_id = q.defect_id)").fetchone()[0]
    not_queued = db.execute(
        "SELECT count(*) FROM defects d WHERE d.coil IN (SELECT DISTINCT coil FROM review_queue) "
        "AND NOT EXISTS (SELECT 1 FROM review_queue q WHERE q.defect_id = d.id)").fetchone()[0]
    return {"queued": queued, "reviewed": done, "waiting": queued - done, "not_queued": not_queued}


def queue_filters(db: Database) -> tuple[list[str], list[str]]:
    """(coils, classes) that still have queued, unreviewed defects, each sorted."""
    coils = [r[0] for r in db.execute(f"SELECT DISTINCT coil FROM review_queue q WHERE {_WAITING} ORDER BY coil")]
    classes = [r[0] for r in db.execute(f"SELECT DISTINCT class FROM review_queue q WHERE {_WAITING} "
                                        "ORDER BY class")]
    return coils, classes


def _day_where(since: str | None, until: str | None, column: str = "k.day") -> tuple[list[str], list[Any]]:
    where, args = [], []
    for value, op in ((since, ">="), (until, "<=")):
        if value:
            try:
                time.strptime(value, "%Y-%m-%d")
            except ValueError:
                raise StoreError(f"date: expected YYYY-MM-DD, got {value!r}") from None
            where.append(f"{column} {op} ?")
            args.append(value)
    return where, args


def _review_moves(db: Database, since: str | None, until: str | None) -> dict[str, int]:
    """Per class, how reviews change the raw counts (rejects -1; relabels -1 old, +1 new)."""
    where, args = _day_where(since, until, "k.day")
    # Drive from the (few) reviews: CROSS JOIN pins the loop order, so SQLite never walks the
    # defects of every coil in the range (millions of rows) to find the reviewed ones.
    sql = ("SELECT d.id, d.coil, d.class, r.action, r.new_class FROM reviews r CROSS JOIN defects d "
           "ON d.id = r.defect_id WHERE r.coil IN (SELECT k.coil FROM coil_class_counts k "
           f"{'WHERE ' + ' AND '.join(where) if where else ''}) ORDER BY r.id")
    reviews = db.execute(sql, args).fetchall()
    # coil_class_counts counts a defect cut by frame seams once, under its merged class: a review of
    # any of its fragments moves that one count.
    merged: dict[int, tuple[int, str]] = {}
    for coil in sorted({r[1] for r in reviews}):
        rows, alias = seams.coil_groups(db, coil)
        by_head = {m["id"]: m["class"] for m in rows}
        merged.update({part: (head, by_head[head]) for part, head in alias.items()})
    state: dict[int, tuple[str, str | None, bool]] = {}
    for fragment_id, _coil, fragment_class, action, new_class in reviews:
        defect_id, cls = merged.get(fragment_id, (fragment_id, fragment_class))
        _, label, _ = state.get(defect_id, (cls, None, False))
        if action == "relabel":
            label = new_class
        state[defect_id] = (cls, label, action == "reject")
    moves: dict[str, int] = {}
    for cls, label, rejected in state.values():
        moves[cls] = moves.get(cls, 0) - 1
        if not rejected:
            moves[label or cls] = moves.get(label or cls, 0) + 1
    return moves


def pareto(db: Database, since: str | None = None, until: str | None = None,
           line: str | None = None) -> list[dict[str, Any]]:
    """Defect counts per (effective) class over a day range, largest first, with cumulative share."""
    where, args = _day_where(since, until)
    if line:
        where.append("k.coil IN (SELECT id FROM coils WHERE line = ?)")
        args.append(line)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT k.class, sum(k.n) FROM coil_class_counts k {clause} GROUP BY k.class"
    counts = dict(db.execute(sql, args).fetchall())
    if not line:
        for cls, delta in _review_moves(db, since, until).items():
            counts[cls] = counts.get(cls, 0) + delta
    total = sum(v for v in counts.values() if v > 0) or 1
    out, running = [], 0
    for cls, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if n <= 0:
            continue
        running += n
        out.append({"class": cls, "count": n, "share": n / total, "cumulative": running / total})
    return out


def coil_stats(db: Database, since: str | None = None, until: str | None = None) -> list[dict[str, Any]]:
    """Per coil: length (m), defects, defects per 1,000 m, plant data and process data.

    Every coil counts, defect-free ones too (their length belongs in the per-1,000 m figures); a
    coil's day is that of its first defect, or of its first record when it has none.
    """
    day = "coalesce(k.day, date(c.first_seen_ns / 1000000000, 'unixepoch'))"
    where, args = _day_where(since, until, day)
    sql = ("SELECT c.id AS coil, c.line, p.shift, p.steel_grade, p.customer, p.heat, "
           "coalesce((SELECT max(e.length_mm) FROM coil_events e WHERE e.coil = c.id AND e.kind = "
           "'coil_end') "
           "/ 1000.0, p.length_m) AS length_m, coalesce(k.defects, 0) AS defects, x.finishing_temp_c, "
           "x.coiling_temp_c, x.speed_m_per_s "
           "FROM coils c LEFT JOIN (SELECT coil, sum(n) AS defects, min(day) AS day FROM coil_class_counts "
           "GROUP BY coil) k ON k.coil = c.id "
           "LEFT JOIN platform_coils p ON p.coil_id = c.id LEFT JOIN process_data x ON x.coil_id = c.id"
           f"{' WHERE ' + ' AND '.join(where) if where else ''}")
    rows = _dicts(db.execute(sql, args))
    for r in rows:
        r["defects_per_km"] = r["defects"] / r["length_m"] * 1000 if r["length_m"] else None
    return rows


def coil_days(db: Database) -> dict[str, str]:
    """coil -> UTC day ``YYYY-MM-DD`` of its first counted defect; coils without defects are absent."""
    return dict(db.execute("SELECT coil, min(day) FROM coil_class_counts GROUP BY coil").fetchall())


def defects_per_km(db: Database, by: str = "line", since: str | None = None,
                   until: str | None = None) -> list[dict[str, Any]]:
    """Defects per 1,000 m of strip grouped by line, shift, steel grade or customer."""
    if by not in GROUPS:
        raise StoreError(f"by: expected one of {', '.join(GROUPS)}, got {by!r}")
    groups: dict[Any, list[float]] = {}
    for r in coil_stats(db, since, until):
        key = r[by] if by != "line" else r["line"]
        g = groups.setdefault(key, [0.0, 0.0, 0])
        g[0] += r["defects"]
        g[1] += r["length_m"] or 0.0
        g[2] += 1
    return [{by: key, "coils": n, "length_m": length, "defects": defects,
             "defects_per_1000m": defects / length * 1000 if length else None}
            for key, (defects, length, n) in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def _latest_reviews(db: Database, extra_where: str = "") -> str:
    return ("SELECT r.defect_id, r.action FROM reviews r WHERE r.id = "
            f"(SELECT max(id) FROM reviews WHERE defect_id = r.defect_id) {extra_where}")


def field_precision(db: Database) -> list[dict[str, Any]]:
    """Per detected class: precision = confirmed / reviewed, over reviews of sampled queue items only."""
    sql = ("SELECT q.class, sum(l.action = 'confirm') AS confirmed, sum(l.action = 'relabel') AS relabelled, "
           f"sum(l.action = 'reject') AS rejected, count(*) AS reviewed FROM ({_latest_reviews(db)}) l "
           "JOIN review_queue q ON q.defect_id = l.defect_id AND q.reason = 'sample' GROUP BY q.class "
           "ORDER BY q.class")
    rows = _dicts(db.execute(sql))
    for r in rows:
        r["precision"] = r["confirmed"] / r["reviewed"] if r["reviewed"] else None
    return rows


def confirmations_by_model(db: Database) -> list[dict[str, Any]]:
    """Latest review outcome per reviewed defect, counted per model version that found it."""
    sql = ("SELECT m.version AS model_version, m.sha256 AS model_sha256, sum(l.action = 'confirm') AS "
           "confirmed, "
           "sum(l.action = 'relabel') AS relabelled, sum(l.action = 'reject') AS rejected, count(*) AS "
           "reviewed "
           f"FROM ({_latest_reviews(db)}) l JOIN defects d ON d.id = l.defect_id JOIN models m ON m.id "
           f"= d.model_id "
           "GROUP BY m.id ORDER BY m.id")
    rows = _dicts(db.execute(sql))
    for r in rows:
        r["confirmed_share"] = r["confirmed"] / r["reviewed"] if r["reviewed"] else None
    return rows


def line_status(db: Database, *, alarms: int = 10) -> dict[str, Any]:
    """What the Line page shows: per line the current coils, recorder figures, models, recent alarms."""
    status = {k: json.loads(v) | {"updated": iso(t)} if isinstance(json.loads(v), dict) else json.loads(v)
              for k, v, t in db.execute("SELECT key, value, updated_ns FROM status")}
    lines = []
    for line_id, line_type in db.execute("SELECT id, type FROM lines ORDER BY id").fetchall():
        current = db.execute("SELECT id FROM coils WHERE line=? ORDER BY first_seen_ns DESC LIMIT 1",
                             (line_id,)).fetchone()
        coil = current[0] if current else None
        models = _dicts(db.execute("SELECT m.version, m.sha256 FROM frames f JOIN models m ON m.id = "
                                   "f.model_id "
                                   "WHERE f.coil = ? GROUP BY m.id", (coil,))) if coil else []
        sql = "SELECT max(position_mm + length_mm) FROM frames WHERE coil=?"
        position = db.execute(sql, (coil,)).fetchone()
        lines.append({"line": line_id, "type": line_type, "current_coil": coil,
                      "position_m": (position[0] or 0.0) / 1000.0 if position else None,
                      "coverage": coverage(db, coil) if coil else None, "models": models,
                      "recorder": status.get(f"recorder:{line_id}")})
    recent = _dicts(db.execute("SELECT id, coil, kind, surface, class, pitch_mm, roll_diameter_mm, "
                               "message, time_ns "
                               "FROM alarms ORDER BY id DESC LIMIT ?", (alarms,)))
    for a in recent:
        a["time"] = iso(a["time_ns"])
    return {"lines": lines, "alarms": recent, "status": status}


def latest_critical(db: Database, limit: int = 6) -> list[dict[str, Any]]:
    """The newest critical (severity 3) or ``unknown`` defects of every line, newest first, with
    their crop: what the Line page shows live."""
    rows = _dicts(db.execute(
        "SELECT d.id, d.coil, d.surface, d.camera, d.class, d.score, d.severity, d.along_mm, d.across_mm, "
        "d.crop_sha256, d.captured_ns FROM defects d WHERE d.severity >= 3 OR d.class = 'unknown' "
        "ORDER BY d.id DESC LIMIT ?", (limit,)))
    for r in rows:
        r["time"] = iso(r["captured_ns"]) if r["captured_ns"] else None
    return rows


def frame_megapixels(db: Database, coil: str | None) -> float | None:
    """Mean megapixels of the coil's last 50 inspected frames: camera width x rows (frame length / mm per row).

    None without a coil or inspected frames. Frames are sized by their camera, so this turns the
    recorder's frames per second into megapixels per second.
    """
    if coil is None:
        return None
    row = db.execute(
        "SELECT avg(c.width_px * f.length_mm / c.mm_per_px_along) / 1e6 FROM "
        "(SELECT camera, length_mm FROM frames WHERE coil = ? AND status = 'inspected' "
        "ORDER BY id DESC LIMIT 50) f "
        "JOIN coils k ON k.id = ? JOIN cameras c ON c.line = k.line AND c.id = f.camera",
        (coil, coil)).fetchone()
    return float(row[0]) if row and row[0] is not None else None
