"""Re-sent results: a retry is silent, a conflicting duplicate is found (the recorder alarms on it).

`Store.apply_batch` records each frame and coil event once (natural keys, INSERT OR IGNORE) and keeps
the first record. A message whose frame or event is already recorded is compared here with what
was recorded: identical, it is a retry (a worker or a restarted recorder sending again) and nothing
is said; different (another seq, capture time, placement, status, model, defects, pixel digest or
signature; for a coil event another seq, time, length or count), it is a conflict: someone reports
a frame or coil the recorder already has from another source, which is worth an alarm, never a
silent ignore. Called only for the duplicates of a batch, so a batch of new frames costs nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inspection.frame import CoilEvent
from inspection.results import FrameDropped, FrameResult

_FRAME_SQL = ("SELECT f.seq, f.status, f.captured_ns, f.position_mm, f.length_mm, m.version, m.sha256, f.defects "
              "FROM frames f LEFT JOIN models m ON m.id = f.model_id "
              "WHERE f.coil = ? AND f.camera = ? AND f.frame_index = ?")
_FRAME_FIELDS = ("seq", "status", "captured_ns", "position_mm", "length_mm", "model", "model", "defects")
_DEFECTS_SQL = ("SELECT class, score, severity, x1, y1, x2, y2, along_mm, across_mm, length_mm, width_mm, area_mm2 "
                "FROM defects WHERE coil = ? AND camera = ? AND frame_index = ? ORDER BY defect_index")
_SEAL_SQL = "SELECT digest, sig FROM frame_seals WHERE coil = ? AND camera = ? AND frame_index = ?"
_EVENT_SQL = ("SELECT surface, seq, time_ns, length_mm, frames, dropped FROM coil_events "
              "WHERE coil = ? AND camera = ? AND kind = ?")
_EVENT_FIELDS = ("surface", "seq", "time_ns", "length_mm", "frames", "dropped")


def frame_conflicts(db: Any, messages: Sequence[FrameResult | FrameDropped]) -> list[dict[str, Any]]:
    """The messages (frames already recorded) that differ from their record, each as a conflict."""
    found = []
    for m in messages:
        key = (m.coil, m.source.camera, m.index)
        recorded = db.execute(_FRAME_SQL, key).fetchone()
        if recorded is None:  # cannot be: it was a duplicate of this batch's transaction
            continue
        differs = sorted({name for name, old, new in zip(_FRAME_FIELDS, recorded, _frame_values(m), strict=True)
                          if old != new})
        if (not differs and isinstance(m, FrameResult) and m.defects
                and [tuple(r) for r in db.execute(_DEFECTS_SQL, key)] != [_defect_values(d) for d in m.defects]):
            differs.append("defects")
        seal = db.execute(_SEAL_SQL, key).fetchone()
        if seal is not None and m.capture is not None:
            differs += [name for name, old, new in zip(("digest", "sig"), seal, (m.capture.digest, m.capture.sig),
                                                       strict=True) if old != new]
        if differs:
            found.append({"kind": "frame_result" if isinstance(m, FrameResult) else "frame_dropped",
                          "camera": m.source.camera, "coil": m.coil, "seq": m.seq, "index": m.index,
                          "recorded_seq": recorded[0], "differs": differs})
    return found


def event_conflicts(db: Any, events: Sequence[CoilEvent]) -> list[dict[str, Any]]:
    """The coil events (already recorded for their coil, camera and kind) that differ from their record."""
    found = []
    for e in events:
        recorded = db.execute(_EVENT_SQL, (e.coil, e.source.camera, e.kind)).fetchone()
        if recorded is None:
            continue
        new = (e.source.surface, e.seq, e.time_ns, e.length_mm, e.frames, e.dropped)
        differs = [name for name, old, value in zip(_EVENT_FIELDS, recorded, new, strict=True) if old != value]
        if differs:
            found.append({"kind": e.kind, "camera": e.source.camera, "coil": e.coil, "seq": e.seq,
                          "recorded_seq": recorded[1], "differs": differs})
    return found


def _frame_values(m: FrameResult | FrameDropped) -> tuple[Any, ...]:
    if isinstance(m, FrameResult):
        return (m.seq, "inspected", m.captured_ns, m.position_mm, m.length_mm, m.model_version, m.model_sha256,
                len(m.defects))
    return m.seq, "dropped", m.captured_ns, None, None, None, None, 0


def _defect_values(d: Any) -> tuple[Any, ...]:
    return (d.cls, d.score, d.severity, *d.box, d.along_mm, d.across_mm, d.length_mm, d.width_mm, d.area_mm2)
