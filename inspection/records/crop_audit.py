"""`audit verify` for the crop files: each file must still hash to the ``crop_sha256`` its defects
recorded, and a missing file must have been deleted by a recorded retention prune.

Crops are content-addressed (`crops.CropStore`), so a file's name is its sha256: an overwritten
file no longer hashes to its name. `crops.prune` deletes the files its retention policy does not
keep and writes a ``crops_pruned`` audit event; a missing crop is accepted when one of those events,
replayed against the evidence recorded before it (the same rule as `crops.keep_set`: coil first
seen within the retention, an open claim on the coil, a review of the defect), would have deleted
it. Anything else missing was deleted behind the system's back.

The defects are read in crop order and one crop at a time (memory does not grow with the number
of defects); every file present is read and hashed, which is the cost of this check.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from sqlite_utils import Database

from inspection.records.crops import CropStore

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class CropVerdict:
    """What `check_crops` found: the first problem (or None), files hashed, missing files explained."""

    problem: str | None
    checked: int
    pruned: int


class _Prunes:
    """The ``crops_pruned`` events (seq, time_ns, retention_days, rowid bounds) and the evidence
    their policy depends on, to answer: did a prune delete this crop?"""

    def __init__(self, db: Database, prunes: list[tuple[int, int, int, dict[str, int]]]) -> None:
        self.prunes = prunes
        self.defect_bounds = [p[3]["defects"] for p in prunes]  # never decreases along the chain
        self.first_seen = dict(db.execute("SELECT id, first_seen_ns FROM coils").fetchall())
        self.reviewed = dict(db.execute("SELECT defect_id, min(rowid) FROM reviews GROUP BY defect_id").fetchall())
        self.claims: dict[str, list[tuple[int, str, str]]] = {}
        for rowid, coil, claim_no, action in db.execute("SELECT rowid, coil, claim_no, action FROM claims "
                                                        "ORDER BY rowid"):
            self.claims.setdefault(coil, []).append((rowid, claim_no, action))

    def _kept(self, defect_id: int, coil: str, prune: tuple[int, int, int, dict[str, int]]) -> bool:
        _, time_ns, days, bounds = prune
        if self.first_seen.get(coil, 0) >= time_ns - days * DAY_NS:
            return True
        if self.reviewed.get(defect_id, bounds["reviews"] + 1) <= bounds["reviews"]:
            return True
        state: dict[str, str] = {}
        for rowid, claim_no, action in self.claims.get(coil, ()):
            if rowid <= bounds["claims"]:
                state[claim_no] = action
        return "open" in state.values()

    def deleted_by(self, defects: list[tuple[int, str]]) -> int | None:
        """The seq of the first prune that deleted a crop used by `defects` [(id, coil)], or None."""
        first = bisect.bisect_left(self.defect_bounds, min(d for d, _ in defects))
        for prune in self.prunes[first:]:
            existing = [(d, c) for d, c in defects if d <= prune[3]["defects"]]
            if existing and not any(self._kept(d, c, prune) for d, c in existing):
                return prune[0]
        return None


def _sha256_file(path: object) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:  # type: ignore[call-overload]
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    except OSError as exc:  # e.g. the crops "folder" is a file: not readable as a crop at all
        raise CropFolderError(f"{path}: cannot read the crop: {exc.strerror or exc}") from None
    return digest.hexdigest()


class CropFolderError(Exception):
    """A crop file could not be read for another reason than being absent."""


def check_crops(db: Database, crops: CropStore,
                prunes: Iterable[tuple[int, int, int, dict[str, int]]]) -> CropVerdict:
    """Every crop the defects name: intact, or deleted by a recorded prune; stops at the first problem."""
    if crops.root.exists() and not crops.root.is_dir():
        return CropVerdict(f"crops folder {crops.root}: is not a folder, so no crop can be checked", 0, 0)
    explain = _Prunes(db, list(prunes))
    checked = pruned = 0
    rows = db.execute("SELECT crop_sha256, id, coil FROM defects WHERE crop_sha256 IS NOT NULL "
                      "ORDER BY crop_sha256, id")
    for sha, group in itertools.groupby(rows, key=lambda r: r[0]):
        defects = [(d, c) for _, d, c in group]
        path = crops.path(sha)
        try:
            actual = _sha256_file(path)
            if actual is None:  # committed, but its move into place failed: staged until the recorder's next start
                actual = _sha256_file(crops.staged(sha))
        except CropFolderError as exc:
            return CropVerdict(f"crop file {exc} (defect id {defects[0][0]}, coil {defects[0][1]})", checked, pruned)
        if actual is None:
            if explain.deleted_by(defects) is None:
                return CropVerdict(f"crop file {path} (defect id {defects[0][0]}, coil {defects[0][1]}): missing, "
                                   "and no recorded retention prune deleted it", checked, pruned)
            pruned += 1
            continue
        if actual != sha:
            return CropVerdict(f"crop file {path} (defect id {defects[0][0]}, coil {defects[0][1]}): content does "
                               f"not match its sha256 (overwritten; it hashes to {actual[:16]}...)", checked, pruned)
        checked += 1
    return CropVerdict(None, checked, pruned)
