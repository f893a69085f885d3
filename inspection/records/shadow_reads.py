"""What the console's Models page shows of shadow mode (`shadow`): per pair of models, how often the
candidate disagreed with the active model, on what, and a sample of the crops.

A database the recorder has not migrated to ``m009_shadow`` yet reads as having no shadow results.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from inspection.records.shadow import has_tables
from inspection.shadow_results import KINDS

_PAIR = ("FROM {table} t JOIN models am ON am.id = t.active_model_id JOIN models sm ON sm.id = t.shadow_model_id "
         "WHERE am.version = ? AND sm.version = ?")
# a stable, spread-out order (Knuth's multiplicative hash of the row id): the sample covers the whole
# run instead of its newest minutes, and shows the same crops until new rows arrive
_SPREAD = "(t.id * 2654435761) % 4294967296"


def runs(db: Database) -> list[dict[str, Any]]:
    """One row per (active, shadow) version pair, newest first: frames compared, frames with a
    disagreement, defects each model found there, mean shadow ms per frame, first / last capture,
    and disagreements per kind."""
    if not has_tables(db):
        return []
    cur = db.execute(
        "SELECT am.version AS active, sm.version AS shadow, count(*) AS frames, "
        "sum(t.disagreements > 0) AS frames_disagreeing, sum(t.active_defects) AS active_defects, "
        "sum(t.shadow_defects) AS shadow_defects, avg(t.shadow_ms) AS shadow_ms, "
        "min(t.captured_ns) AS first_ns, max(t.captured_ns) AS last_ns "
        "FROM shadow_frames t JOIN models am ON am.id = t.active_model_id JOIN models sm ON sm.id = t.shadow_model_id "
        "GROUP BY am.version, sm.version ORDER BY max(t.captured_ns) DESC, am.version, sm.version")
    names = [c[0] for c in cur.description]
    out = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    kinds: dict[tuple[str, str], dict[str, int]] = {}
    for active, shadow, kind, n in db.execute(
            "SELECT am.version, sm.version, t.kind, count(*) FROM shadow_disagreements t "
            "JOIN models am ON am.id = t.active_model_id JOIN models sm ON sm.id = t.shadow_model_id "
            "GROUP BY am.version, sm.version, t.kind"):
        kinds.setdefault((active, shadow), {})[kind] = n
    for row in out:
        found = kinds.get((row["active"], row["shadow"]), {})
        row.update({kind: found.get(kind, 0) for kind in KINDS})
        row["disagreements"] = sum(found.values())
    return out


def counts(db: Database, active: str, shadow: str) -> list[dict[str, Any]]:
    """Disagreements of one pair per kind and class (both classes for ``other_class``), most first."""
    if not has_tables(db):
        return []
    cur = db.execute(
        "SELECT t.kind, t.active_class, t.shadow_class, count(*) AS n, avg(coalesce(t.active_score, t.shadow_score)) "
        f"AS mean_score {_PAIR.format(table='shadow_disagreements')} "
        "GROUP BY t.kind, t.active_class, t.shadow_class ORDER BY t.kind, n DESC, t.active_class, t.shadow_class",
        (active, shadow))
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def sample(db: Database, active: str, shadow: str, *, per_kind: int = 8, kind: str | None = None
           ) -> list[dict[str, Any]]:
    """Up to `per_kind` disagreements of each kind (or of `kind`) of one pair, spread over the run."""
    if not has_tables(db):
        return []
    out: list[dict[str, Any]] = []
    for k in (kind,) if kind else KINDS:
        cur = db.execute(
            "SELECT t.id, t.kind, t.coil, t.camera, t.surface, t.frame_index, t.active_class, t.active_score, "
            "t.shadow_class, t.shadow_score, t.iou, t.along_mm, t.across_mm, t.crop_sha256, t.captured_ns "
            f"{_PAIR.format(table='shadow_disagreements')} AND t.kind = ? ORDER BY {_SPREAD}, t.id LIMIT ?",
            (active, shadow, k, per_kind))
        names = [c[0] for c in cur.description]
        out += [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return out
