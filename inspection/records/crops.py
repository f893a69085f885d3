"""Defect crops on disk, content-addressed: ``<crops_dir>/<sha[:2]>/<sha>.png``.

The same bytes are stored once, writes are atomic (temp file + rename), and a re-sent frame
re-uses the file. Retention (`prune`): a crop is kept while any defect that uses it is reviewed,
belongs to a coil under an open claim, or belongs to a coil first seen within the last
``retention_days``; otherwise its file is deleted. Rows keep their ``crop_sha256`` (the report
then says the crop was pruned). Each prune is written to the audit log.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from inspection.records import audit
from inspection.records.audit_keys import AuditKey
from inspection.records.db import write_transaction
from inspection.records.errors import StoreError


class CropStore:
    """Content-addressed PNG files under `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.png"

    def put(self, png: bytes) -> str:
        """Store `png` (idempotent) and return its sha256."""
        sha = hashlib.sha256(png).hexdigest()
        target = self.path(sha)
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(png)
                os.replace(tmp, target)
            except OSError as exc:
                raise StoreError(f"{target}: cannot write crop: {exc}") from None
        return sha

    def get(self, sha256: str) -> bytes | None:
        """The crop's bytes, or None when it was never stored or has been pruned."""
        try:
            return self.path(sha256).read_bytes()
        except OSError:
            return None

    def files(self) -> list[Path]:
        return sorted(self.root.glob("??/*.png")) if self.root.exists() else []


@dataclass(frozen=True)
class PruneResult:
    kept: int
    deleted: int
    bytes_freed: int


def keep_set(db: Database, retention_days: int, now_ns: int | None = None) -> set[str]:
    """sha256 of every crop the retention policy keeps."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    cutoff = now_ns - retention_days * 86_400 * 10**9
    claimed = """SELECT coil FROM claims c WHERE id = (SELECT max(id) FROM claims WHERE coil = c.coil
                 AND claim_no = c.claim_no) AND action = 'open'"""
    sql = f"""
        SELECT DISTINCT d.crop_sha256 FROM defects d WHERE d.crop_sha256 IS NOT NULL AND (
            d.coil IN (SELECT id FROM coils WHERE first_seen_ns >= :cutoff)
            OR d.coil IN ({claimed})
            OR d.id IN (SELECT defect_id FROM reviews))"""
    return {row[0] for row in db.execute(sql, {"cutoff": cutoff})}


def prune(
    db: Database,
    crops: CropStore,
    retention_days: int,
    *,
    actor: str = "crops-prune",
    now_ns: int | None = None,
    dry_run: bool = False,
    audit_key: AuditKey | None = None,
) -> PruneResult:
    """Delete crop files the retention policy does not keep; audit what was done (signed with
    `audit_key`). `audit verify` accepts a missing crop only when one of these events, replayed
    against the evidence recorded before it, would have deleted it (`crop_audit`)."""
    if retention_days < 0:
        raise StoreError(f"retention_days: expected >= 0, got {retention_days}")
    now_ns = time.time_ns() if now_ns is None else now_ns
    # the evidence the decision saw (rows recorded while files are deleted are not in it)
    upto = {t: audit.max_rowid(db, t) for t in ("coils", "defects", "reviews", "claims")}
    keep = keep_set(db, retention_days, now_ns)
    kept = deleted = freed = 0
    for path in crops.files():
        if path.stem in keep:
            kept += 1
            continue
        size = path.stat().st_size
        if not dry_run:
            path.unlink(missing_ok=True)
        deleted += 1
        freed += size
    if not dry_run:
        with write_transaction(db):
            audit.append(
                db,
                "crops_pruned",
                actor,
                {"retention_days": retention_days, "deleted": deleted, "kept": kept, "bytes_freed": freed,
                 "upto": upto},
                now_ns,
                key=audit_key,
            )
    return PruneResult(kept, deleted, freed)
