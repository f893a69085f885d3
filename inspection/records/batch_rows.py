"""The defect rows of a batch (`Store.apply_batch`) as positional tuples, the recorder's hottest rows.

A dict per defect, bound by name, cost about a fifth of the write path: the dict itself, then a
lookup per column and row when SQLite binds it. A tuple in `DEFECT_COLUMNS` order is bound by
position; the columns and the values in them are the ones the named rows had
(`tests/test_batch_rows.py` reads every stored defect back by column name against its message).

The rows are built as SQLite stores them and returns them (``SELECT rowid, * FROM defects``: the
rowid they are expected at, twice, then the columns; the insert binds the columns only), so the
batch's audit digest, the recorder's events and the rows it keeps per coil are taken from them
instead of reading the rows back (that read was a third of the write path): a REAL column gets a
float (``+ 0.0`` turns an int sent on the wire into the float SQLite stores, and -0.0 into the 0.0
it stores), severity an int. `as_stored` refuses (None: read back instead) rows holding a value of
another type, and an insert that did not add exactly these rows at the rowids expected.
"""

from __future__ import annotations

import operator
from collections.abc import Container, Sequence
from itertools import chain, count
from typing import Any

from inspection.records import audit
from inspection.results import FrameResult

DEFECT_COLUMNS = ("coil", "surface", "camera", "frame_seq", "frame_index", "defect_index", "along_mm", "across_mm",
                  "x1", "y1", "x2", "y2", "length_mm", "width_mm", "area_mm2", "class", "score", "severity",
                  "model_id", "crop_sha256", "captured_ns")
# `SELECT rowid, * FROM defects`: the rowid, then the table's columns (id, the rowid again, first)
STORED_NAMES = ("id", "id", *DEFECT_COLUMNS)
# INSERT OR IGNORE: a re-sent defect is a duplicate, not an error (its natural key is unique). The
# parameters are a stored row: ?1 and ?2, its expected rowid, are not bound to a column (SQLite
# gives the rowid; `as_stored` checks it is the one expected).
DEFECT_INSERT = (f"INSERT OR IGNORE INTO defects ({', '.join(DEFECT_COLUMNS)}) "
                 f"VALUES ({', '.join(f'?{i + 3}' for i in range(len(DEFECT_COLUMNS)))})")
# an unknown defect's guesses, keyed by the id its natural key got (re-sent: ignored like the defect)
GUESSES_INSERT = ("INSERT OR IGNORE INTO defect_guesses (defect_id, coil, guesses) SELECT id, coil, ? "
                  "FROM defects WHERE coil = ? AND camera = ? AND frame_index = ? AND defect_index = ?")
# What SQLite hands back for these columns (bool, numpy scalars, str subclasses... are not: they
# would hash differently from what it stores, so a batch holding one is read back instead).
_STORED_TYPES = frozenset({int, float, str, type(None)})


def defect_rows(m: FrameResult, model_id: int | None, crops: Sequence[str | None], first_id: int) -> list[tuple]:
    """The stored rows of `m`'s defects (`STORED_NAMES` order), expected at rowids `first_id`, ...;
    `crops`: each defect's crop sha256 or None. REAL columns ``+ 0.0`` and severity ``int`` (see the
    module docstring): the values SQLite keeps."""
    coil, surface, camera, seq, index, captured = (m.coil, m.source.surface, m.source.camera, m.seq, m.index,
                                                   m.captured_ns)
    rows = []
    for (i, (d, crop)), rowid in zip(enumerate(zip(m.defects, crops, strict=True)), count(first_id), strict=False):
        x1, y1, x2, y2 = d.box
        rows.append((rowid, rowid, coil, surface, camera, seq, index, i, d.along_mm + 0.0, d.across_mm + 0.0,
                     x1 + 0.0, y1 + 0.0, x2 + 0.0, y2 + 0.0, d.length_mm + 0.0, d.width_mm + 0.0, d.area_mm2 + 0.0,
                     d.cls, d.score + 0.0, int(d.severity), model_id, crop, captured))
    return rows


def as_stored(rows: list[tuple], inserted: int, last: int) -> list[tuple] | None:
    """`rows` (`defect_rows`), which ``SELECT rowid, * FROM defects`` now returns as they are; None
    when that cannot be vouched for: the insert added `inserted` rows and the table's highest rowid
    is now `last` (anything but all of them, at the rowids expected, is read back), or a value is
    not of a type SQLite returns as it is."""
    if not rows or inserted != len(rows) or last != rows[-1][0] or rows[0][0] != last - len(rows) + 1:
        return None
    if not _STORED_TYPES.issuperset(map(type, chain.from_iterable(rows))):
        return None
    return rows


_COUNT_KEY = operator.itemgetter(*map(STORED_NAMES.index, ("coil", "class", "surface", "severity")))
_CAPTURED = operator.itemgetter(STORED_NAMES.index("captured_ns"))


def class_counts(rows: Sequence[tuple], skip: Container[str]) -> list[tuple]:
    """(coil, class, surface, severity, first captured_ns, count) of the new rows, coils in `skip`
    left out, in the order of those keys: what `Store._count_classes`' GROUP BY adds, counted with
    a hash instead of SQLite's sort of the batch (a twentieth of the write path)."""
    counts: dict[tuple, list[int]] = {}
    for key, captured in zip(map(_COUNT_KEY, rows), map(_CAPTURED, rows), strict=True):
        found = counts.get(key)
        if found is None:
            counts[key] = [captured, 1]
        else:
            found[1] += 1
            if captured < found[0]:
                found[0] = captured
    return [(*key, first, n) for key, (first, n) in sorted(counts.items()) if key[0] not in skip]


def row_dict(stored: tuple) -> dict[str, Any]:
    """A stored row by column name, as a read gives it (``dict(zip(STORED_NAMES, row))``): a dict
    display, twice as fast as zip for the 20,000 rows a second the recorder hands its outputs."""
    (_, id_, coil, surface, camera, frame_seq, frame_index, defect_index, along_mm, across_mm, x1, y1, x2, y2,
     length_mm, width_mm, area_mm2, cls, score, severity, model_id, crop_sha256, captured_ns) = stored
    return {"id": id_, "coil": coil, "surface": surface, "camera": camera, "frame_seq": frame_seq,
            "frame_index": frame_index, "defect_index": defect_index, "along_mm": along_mm, "across_mm": across_mm,
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "length_mm": length_mm, "width_mm": width_mm,
            "area_mm2": area_mm2, "class": cls, "score": score, "severity": severity, "model_id": model_id,
            "crop_sha256": crop_sha256, "captured_ns": captured_ns}


def audit_entry(stored: list[tuple]) -> list[Any]:
    """The ``rows`` entry of the batch's audit event for these stored rows (as `Store._new_rows` makes it)."""
    return [stored[0][0], stored[-1][0], len(stored), audit.sha256_rows(stored)]


def guess_rows(m: FrameResult) -> list[tuple]:
    """`GUESSES_INSERT`'s parameters for `m`'s defects that carry guesses (class ``unknown``)."""
    return [(audit.canonical_json([list(g) for g in d.guesses]), m.coil, m.source.camera, m.index, i)
            for i, d in enumerate(m.defects) if d.guesses]
