"""Shadow mode in the records: where a candidate model disagreed with the active one (`inspection.shadow`).

`ShadowRecords.record_shadow` (mixed into `store.Store`) writes the workers' ``shadow_result``
messages into ``shadow_frames`` and ``shadow_disagreements`` (schema ``m009_shadow``) in one
transaction with one ``shadow`` audit event, idempotently (natural keys + INSERT OR IGNORE, like
`Store.apply_batch`). It is a transaction of its own, after the batch that recorded the frames: the
shadow's rows never touch frames, defects, counts, grades or anything the PLC hears of.

Crops of disagreements live in their own content-addressed folder, ``<crops_dir>/shadow``
(`shadow_crop_store`), staged and committed like the defects' (`crops`): retention pruning and the
crop check of `audit verify` cover the defects' folder only, so shadow crops are neither pruned nor
checked by them (see the README's notes).

`disputed_defects` is what the review queue reads (`review_queue`): the recorded defects the shadow
model missed or named otherwise. Console reads are in `shadow_reads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from inspection.records import audit
from inspection.records import crops as crops_module
from inspection.records.crops import CropStore
from inspection.records.db import write_transaction
from inspection.records.errors import StoreError
from inspection.shadow_results import ShadowResult

SHADOW_CROPS = "shadow"  # the folder of disagreement crops inside the line's crop folder
DISPUTED_KINDS = ("active_only", "other_class")  # a recorded defect the shadow model sees otherwise
_TABLES = ("models", "shadow_frames", "shadow_disagreements")


def _insert(table: str, columns: str) -> str:
    names = columns.split()
    return f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"


_FRAMES = _insert("shadow_frames", "coil camera surface frame_index active_model_id shadow_model_id active_defects "
                                   "shadow_defects disagreements shadow_ms captured_ns recorded_ns")
_ITEMS = _insert("shadow_disagreements", "coil camera surface frame_index item active_model_id shadow_model_id kind "
                                         "active_index active_class active_score shadow_class shadow_score iou "
                                         "x1 y1 x2 y2 along_mm across_mm crop_sha256 captured_ns")


def shadow_crop_store(crops: CropStore | str | Path | None) -> CropStore | None:
    """The disagreement crops beside a line's crop store (or crop folder)."""
    if crops is None:
        return None
    root = crops.root if isinstance(crops, CropStore) else Path(crops)
    return CropStore(root / SHADOW_CROPS)


def has_tables(db: Database) -> bool:
    """A database the recorder has migrated to m009 (read-only readers never migrate)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shadow_disagreements'"
                      ).fetchone() is not None


@dataclass
class ShadowWrite:
    """What one `record_shadow` added (re-sent messages add nothing)."""

    messages: int = 0
    new_frames: int = 0
    new_disagreements: int = 0
    audit_seq: int | None = None
    crops_failed: int = 0
    crop_error: str | None = None


class ShadowRecords:
    """Methods of `Store` for shadow mode; they use the host's db, clock, audit, models and crops."""

    db: Database
    crops: CropStore | None
    clock: Any

    def record_shadow(self, messages: Sequence[ShadowResult]) -> ShadowWrite:
        """Record shadow results in one transaction with their audit event (see the module docstring)."""
        result = ShadowWrite(messages=len(messages))
        if not messages:
            return result
        store = shadow_crop_store(self.crops)
        now = self.clock()
        staged: list[str] = []
        frames, items = [], []
        for m in messages:
            where = {"coil": m.coil, "camera": m.source.camera, "surface": m.source.surface, "frame_index": m.index,
                     "active": (m.active_version, m.active_sha256), "shadow": (m.shadow_version, m.shadow_sha256),
                     "captured_ns": m.captured_ns}
            frames.append({**where, "active_defects": m.active_defects, "shadow_defects": m.shadow_defects,
                           "disagreements": len(m.disagreements), "shadow_ms": m.shadow_ms, "recorded_ns": now})
            for i, d in enumerate(m.disagreements):
                x1, y1, x2, y2 = d.box
                items.append({**where, "item": i, "kind": d.kind, "active_index": d.active_index,
                              "active_class": d.active_class, "active_score": d.active_score,
                              "shadow_class": d.shadow_class, "shadow_score": d.shadow_score, "iou": d.iou,
                              "x1": x1, "y1": y1, "x2": x2, "y2": y2, "along_mm": d.along_mm,
                              "across_mm": d.across_mm, "crop_sha256": _stage(store, d.crop_png, staged, result)})
        with write_transaction(self.db):
            before = {t: audit.max_rowid(self.db, t) for t in _TABLES}
            for row in (*frames, *items):  # a model is recorded once, then named by its id
                row["active_model_id"] = self._model_id(*row.pop("active"), now)  # type: ignore[attr-defined]
                row["shadow_model_id"] = self._model_id(*row.pop("shadow"), now)  # type: ignore[attr-defined]
            self.db.conn.executemany(_FRAMES, frames)
            self.db.conn.executemany(_ITEMS, items)
            covered = {t: entry for t in _TABLES if (entry := audit.rows_since(self.db, t, before[t])) is not None}
            result.new_frames = covered["shadow_frames"][2] if "shadow_frames" in covered else 0
            result.new_disagreements = covered["shadow_disagreements"][2] if "shadow_disagreements" in covered else 0
            if covered:
                result.audit_seq = self._audit("shadow", {"messages": len(messages),  # type: ignore[attr-defined]
                                                          "rows": covered})
        if staged and store is not None:
            store.commit(staged)
        return result

    def recover_shadow_crops(self) -> crops_module.RecoverResult | None:
        """Disagreement crops a recorder that died mid-write left staged (`crops.recover`)."""
        store = shadow_crop_store(self.crops)
        if store is None or not has_tables(self.db):
            return None
        return crops_module.recover(self.db, store, table="shadow_disagreements")


def _stage(store: CropStore | None, png: bytes | None, staged: list[str], result: ShadowWrite) -> str | None:
    """The crop's sha256 once staged; None when it cannot be written (the row is kept without it)."""
    if store is None or not png:
        return None
    try:
        sha = store.stage(png)
    except StoreError as exc:
        result.crops_failed += 1
        result.crop_error = str(exc)
        return None
    staged.append(sha)
    return sha


def disputed_defects(db: Database, coil: str, *, upto: int | None = None,
                     defects_upto: int | None = None) -> set[int]:
    """Ids of the coil's recorded defects (fragments, as recorded) that a shadow model missed or named
    otherwise; `upto` / `defects_upto` bound the rowids read (what was recorded when a queue was filled)."""
    if not has_tables(db):
        return set()
    limit = 1 << 62
    rows = db.execute(
        "SELECT DISTINCT d.id FROM shadow_disagreements s JOIN defects d ON d.coil = s.coil AND d.camera = s.camera "
        "AND d.frame_index = s.frame_index AND d.defect_index = s.active_index AND d.model_id = s.active_model_id "
        f"WHERE s.coil = ? AND s.kind IN ({', '.join('?' * len(DISPUTED_KINDS))}) AND s.id <= ? AND d.id <= ?",
        (coil, *DISPUTED_KINDS, limit if upto is None else upto, limit if defects_upto is None else defects_upto))
    return {row[0] for row in rows}
