"""Defect crops on disk, content-addressed: ``<crops_dir>/<sha[:2]>/<sha>.png``.

The same bytes are stored once, writes are atomic (temp file + rename), and a re-sent frame
re-uses the file.

The recorder writes a batch's crops before the transaction that records their defects (a committed
row must never name a file that is not there), so it `stage`s them in ``<crops_dir>/.staging`` and
`commit`s them into place once the transaction has committed. A recorder killed in between leaves
staged files only: `recover` (at the recorder's start) moves those the database references into
place and deletes the others, the crops of a transaction that never committed. So a file in place
always belongs to a recorded defect, and no crash leaves orphans behind. (A crop whose defect was
committed just before the crash waits in staging until then; `get` finds it there.)

Retention (`prune`): a crop is kept while any defect that uses it is reviewed,
belongs to a coil under an open claim, or belongs to a coil first seen within the last
``retention_days``; otherwise its file is deleted. Rows keep their ``crop_sha256`` (the report
then says the crop was pruned). Each prune is written to the audit log.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from inspection.records import audit
from inspection.records.audit_keys import AuditKey
from inspection.records.db import write_transaction
from inspection.records.errors import StoreError

STAGING = ".staging"  # crops written for a transaction that has not committed yet


def crop_origin(box: tuple[float, float, float, float], width: int, height: int,
                margin: int | None = None) -> tuple[int, int] | None:
    """Top-left corner, in frame pixels, of the crop the worker cut around `box` (frame pixels):
    the box grown by `margin` on each side and clipped to the frame (`frame_inspector.crop_png`).
    With `margin` None it is read back from the crop's `width` x `height`: an axis clipped on
    neither side is the box plus twice the margin. None when the box is not a box."""
    x1, y1, x2, y2 = box
    if any(math.isnan(v) for v in box) or x2 <= x1 or y2 <= y1:
        return None
    if margin is None:
        margin = max(width - (math.ceil(x2) - int(x1)), height - (math.ceil(y2) - int(y1))) // 2
    if margin < 0:
        return None
    return max(0, int(x1) - margin), max(0, int(y1) - margin)


class CropStore:
    """Content-addressed PNG files under `root`.

    The recorder stages and commits one file per defect, thousands a second on a busy line, so the
    hot path (`stage`, `commit`) works on plain strings (a pathlib object costs microseconds, and
    there were ten per crop), makes each folder once per process instead of asking the kernel at
    every crop, and lets a rename say that nothing was staged instead of a stat before it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self._staging = os.path.join(self._root, STAGING)
        self._made: set[str] = set()  # folders this process made (or found there)

    def path(self, sha256: str) -> Path:
        return Path(self._path(sha256))

    def _path(self, sha256: str) -> str:
        return f"{self._root}/{sha256[:2]}/{sha256}.png"

    def put(self, png: bytes) -> str:
        """Store `png` (idempotent) and return its sha256."""
        sha = hashlib.sha256(png).hexdigest()
        target = self._path(sha)
        if not os.path.exists(target):
            self._write(target, png)
        return sha

    def staged(self, sha256: str) -> Path:
        return Path(self._staged(sha256))

    def _staged(self, sha256: str) -> str:
        return f"{self._staging}/{sha256}.png"

    def stage(self, png: bytes) -> str:
        """Write `png` where it waits for the transaction that records its defect (see the module
        docstring); its sha256. `StoreError` when it cannot be written (a full or missing disk)."""
        sha = hashlib.sha256(png).hexdigest()
        staged = self._staged(sha)
        if not os.path.exists(self._path(sha)) and not os.path.exists(staged):
            self._write(staged, png)
        return sha

    def commit(self, shas: Iterable[str]) -> int:
        """Move staged crops into place once their transaction committed; how many could not be
        moved (they stay staged, and `recover` moves them at the next start)."""
        failed = 0
        for sha in dict.fromkeys(shas):
            staged, target = self._staged(sha), self._path(sha)
            try:
                try:
                    os.replace(staged, target)
                except FileNotFoundError:
                    if not os.path.exists(staged):
                        continue  # nothing was staged: the crop was in place already
                    self._folder(os.path.dirname(target), known=False)  # its folder was not there
                    os.replace(staged, target)
            except OSError:
                failed += 1
        return failed

    def staged_files(self) -> list[Path]:
        folder = self.root / STAGING
        return sorted(folder.glob("*.png")) if folder.is_dir() else []

    def get(self, sha256: str) -> bytes | None:
        """The crop's bytes, or None when it was never stored or has been pruned."""
        for path in (self.path(sha256), self.staged(sha256)):
            try:
                return path.read_bytes()
            except OSError:
                continue
        return None

    def files(self) -> list[Path]:
        return sorted(self.root.glob("??/*.png")) if self.root.exists() else []

    def _folder(self, folder: str, *, known: bool = True) -> None:
        """Make `folder` unless this process made it already (`known` False: make sure again)."""
        if not known or folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)

    def _write(self, target: str, png: bytes) -> None:
        """Write atomically (temp file + rename: a crash never leaves half a crop under its name)."""
        tmp = f"{target[:-4]}.{os.getpid()}.tmp"
        folder = os.path.dirname(target)
        try:
            self._folder(folder)
            try:
                _write_new(tmp, png)
            except FileNotFoundError:  # removed since this process made it
                self._folder(folder, known=False)
                _write_new(tmp, png)
            os.replace(tmp, target)
        except OSError as exc:
            raise StoreError(f"{target}: cannot write crop: {exc}") from None


def _write_new(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class RecoverResult:
    moved: int  # staged crops of committed defects, now in place
    deleted: int  # staged crops of a transaction that never committed


def recover(db: Database, crops: CropStore, table: str = "defects") -> RecoverResult:
    """Finish what a recorder that died between a batch's transaction and `CropStore.commit` left
    staged: crops the database references (``table``'s ``crop_sha256``: the defects', or the shadow
    disagreements' in their own folder) go into place, the others are deleted."""
    if table not in ("defects", "shadow_disagreements"):  # a table name from this package, never from outside
        raise StoreError(f"recover: no crops are recorded in {table!r}")
    staged = {p.stem: p for p in crops.staged_files()}
    names = list(staged)
    referenced: set[str] = set()
    for i in range(0, len(names), 500):  # SQLite's bound-parameter limit
        chunk = names[i:i + 500]
        referenced |= {row[0] for row in db.execute(
            f"SELECT DISTINCT crop_sha256 FROM {table} WHERE crop_sha256 IN ({','.join('?' * len(chunk))})", chunk)}
    failed = crops.commit(sorted(referenced))
    deleted = 0
    for sha, path in staged.items():
        if sha not in referenced:
            path.unlink(missing_ok=True)
            deleted += 1
    return RecoverResult(len(referenced) - failed, deleted)


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
