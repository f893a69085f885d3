"""Which of a batch's new defects can be a fragment of a defect cut by a frame seam (`seams`).

`seams.link_new_defects` looks for partners of every new defect with two index lookups of frames and
a materialised table: about a sixth of the write path at 20 defects per frame, when a few in a
hundred lie near a seam. A new defect can only be linked (`seams._CANDIDATES`)

- to the frame after its own when its far edge reaches that frame's position less the margin:
  ``along + length / 2 >= next.position_mm - margin``, or
- to the frame before when its near edge starts at its own frame's position plus the margin:
  ``along - length / 2 <= own.position_mm + margin``,

where ``margin`` is ``margin_px`` x its camera's mm per px along. `seam_candidates` tests that on the
rows as built, with the frames' positions read once per camera and the margin computed by SQLite
as the query computes it, plus a slack: it may keep a defect that has no partner, never drop one
that has. The query then runs on those defects only, to the same links.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlite_utils import Database

_SLACK = 1e-9  # relative and absolute (mm): float rounding of the query's own arithmetic

# the positions in `batch_rows.as_stored`'s tuples (rowid, id, then `batch_rows.DEFECT_COLUMNS`)
_ID, _COIL, _CAMERA, _FRAME, _ALONG, _LENGTH = 1, 2, 4, 6, 8, 14


def seam_candidates(db: Database, stored: Sequence[tuple], margin_px: float) -> list[int]:
    """The ids among the new defect rows `stored` (as `batch_rows.as_stored` gives them) that may
    have a partner across a seam; call in the batch's transaction, after its frames are inserted."""
    groups: dict[tuple[str, str], list[tuple]] = {}
    for row in stored:
        groups.setdefault((row[_COIL], row[_CAMERA]), []).append(row)
    kept: list[int] = []
    for (coil, camera), rows in groups.items():
        margin = _margin(db, coil, camera, margin_px)
        indexes = [row[_FRAME] for row in rows]
        positions: dict[int, Any] = dict(db.execute(
            "SELECT frame_index, position_mm FROM frames WHERE coil = ? AND camera = ? "
            "AND frame_index BETWEEN ? AND ?", (coil, camera, min(indexes), max(indexes) + 1)).fetchall())
        for row in rows:
            if margin is None:  # a coil or camera the query would not find either way: let it decide
                kept.append(row[_ID])
                continue
            half = (row[_LENGTH] or 0) / 2
            own, after = positions.get(row[_FRAME]), positions.get(row[_FRAME] + 1)
            if _reaches(row[_ALONG] - half, own, margin, below=True) or (
                    after is not None and _reaches(row[_ALONG] + half, after, margin, below=False)):
                kept.append(row[_ID])
    return kept


def _reaches(edge: float, seam: float | None, margin: float, *, below: bool) -> bool:
    """True when `edge` may be within `margin` of `seam` on the side the query tests (with slack)."""
    if seam is None:
        return below  # no position for its own frame: kept (the query decides)
    slack = _SLACK * (abs(seam) + abs(edge) + margin) + _SLACK
    return edge <= seam + margin + slack if below else edge >= seam - margin - slack


def _margin(db: Database, coil: str, camera: str, margin_px: float) -> float | None:
    """The query's margin for the camera (``:margin_px * coalesce(k.mm_per_px_along, 1.0)``), computed
    by SQLite as the query computes it; None when the coil is not recorded."""
    row = db.execute("SELECT ? * coalesce(k.mm_per_px_along, 1.0) FROM coils c LEFT JOIN cameras k "
                     "ON k.line = c.line AND k.id = ? WHERE c.id = ?", (margin_px, camera, coil)).fetchone()
    return None if row is None or row[0] is None else abs(float(row[0]))
