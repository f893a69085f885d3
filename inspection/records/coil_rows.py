"""The defects the recorder committed for each coil not yet finalised, kept to finalise it without
reading the coil back (that read was a third of a coil's finalisation: `Recorder._finalise`).

Only committed rows are kept (`add` after `Store.apply_batch` returned), as stored
(`batch_rows.STORED_NAMES`: the very tuples the batch was inserted and digested from; rows read back
are put in that shape).

`rows` hands them out only when they are provably all of the coil's defects: defects are
append-only, so rows kept are rows stored, and the same count and id sum as the database's (one read
of the coil's natural-key index, not of its rows) means no row is missing. A recorder restarted in
the middle of a coil, a coil another writer added to or one forgotten to bound memory gives None,
and the caller reads the coil from the database as before.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from sqlite_utils import Database

from inspection.records.batch_rows import STORED_NAMES

# Rows kept in all, about 430 bytes each with their values (20 coils of 10,000 defects pending at once):
# beyond, the coil kept longest is forgotten (and read back when it is finalised)
MAX_ROWS = 200_000
_COIL = STORED_NAMES.index("coil")
_STORED = operator.itemgetter(*STORED_NAMES)  # a row read back, by column name, as stored


class CoilRows:
    """Lean defect rows per coil (see the module docstring)."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._coils: dict[str, list[tuple]] = {}  # insertion order: the coil first kept first
        self._kept = 0

    def add(self, stored: Iterable[tuple]) -> None:
        """Keep committed defect rows, as stored (`BatchResult.stored_rows`)."""
        coils = self._coils
        last_coil, kept = None, None
        n = 0
        for row in stored:
            coil = row[_COIL]
            if coil != last_coil:  # a batch comes frame by frame: one lookup per run of a coil
                kept = coils.get(coil)
                if kept is None:
                    kept = coils[coil] = []
                last_coil = coil
            kept.append(row)  # type: ignore[union-attr]
            n += 1
        self._kept += n
        while self._kept > self.max_rows and self._coils:
            self.forget(next(iter(self._coils)))

    def add_read(self, defects: Iterable[dict[str, Any]]) -> None:
        """Keep committed defect rows read back (`BatchResult.defect_rows` when it has no `stored_rows`)."""
        self.add(map(_STORED, defects))

    def rows(self, db: Database, coil: str) -> list[tuple] | None:
        """The coil's rows if they are all of its defects in `db` (else None: read the coil)."""
        kept = self._coils.get(coil)
        stored, id_sum = db.execute("SELECT count(*), coalesce(sum(id), 0) FROM defects WHERE coil = ?",
                                    (coil,)).fetchone()
        if kept is None:
            return [] if stored == 0 else None
        if len(kept) != stored or sum(r[0] for r in kept) != id_sum:
            return None
        return kept

    def forget(self, coil: str) -> None:
        """Drop a coil's rows (finalised: late frames regrade it from the database)."""
        self._kept -= len(self._coils.pop(coil, ()))

    def __contains__(self, coil: str) -> bool:
        return coil in self._coils
