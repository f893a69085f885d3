"""The defect rows of a batch (`Store.apply_batch`) as positional tuples, the recorder's hottest rows.

A dict per defect, bound by name, cost about a fifth of the write path: the dict itself, then a
lookup per column and row when SQLite binds it. A tuple in `DEFECT_COLUMNS` order is bound by
position; the columns and the values in them are the ones the named rows had
(`tests/test_batch_rows.py` reads every stored defect back by column name against its message).
"""

from __future__ import annotations

from collections.abc import Sequence

from inspection.records import audit
from inspection.results import FrameResult

DEFECT_COLUMNS = ("coil", "surface", "camera", "frame_seq", "frame_index", "defect_index", "along_mm", "across_mm",
                  "x1", "y1", "x2", "y2", "length_mm", "width_mm", "area_mm2", "class", "score", "severity",
                  "model_id", "crop_sha256", "captured_ns")
# INSERT OR IGNORE: a re-sent defect is a duplicate, not an error (its natural key is unique)
DEFECT_INSERT = (f"INSERT OR IGNORE INTO defects ({', '.join(DEFECT_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(DEFECT_COLUMNS))})")
# an unknown defect's guesses, keyed by the id its natural key got (re-sent: ignored like the defect)
GUESSES_INSERT = ("INSERT OR IGNORE INTO defect_guesses (defect_id, coil, guesses) SELECT id, coil, ? "
                  "FROM defects WHERE coil = ? AND camera = ? AND frame_index = ? AND defect_index = ?")


def defect_rows(m: FrameResult, model_id: int | None, crops: Sequence[str | None]) -> list[tuple]:
    """The rows of `m`'s defects in `DEFECT_COLUMNS` order; `crops`: each defect's crop sha256 or None."""
    coil, surface, camera, seq, index, captured = (m.coil, m.source.surface, m.source.camera, m.seq, m.index,
                                                   m.captured_ns)
    return [(coil, surface, camera, seq, index, i, d.along_mm, d.across_mm, *d.box, d.length_mm, d.width_mm,
             d.area_mm2, d.cls, d.score, d.severity, model_id, crop, captured)
            for i, (d, crop) in enumerate(zip(m.defects, crops, strict=True))]


def guess_rows(m: FrameResult) -> list[tuple]:
    """`GUESSES_INSERT`'s parameters for `m`'s defects that carry guesses (class ``unknown``)."""
    return [(audit.canonical_json([list(g) for g in d.guesses]), m.coil, m.source.camera, m.index, i)
            for i, d in enumerate(m.defects) if d.guesses]
