"""`steel-inspect crops prune`: apply the crop retention policy of a line.

Crops of reviewed defects and of coils under an open claim are always kept; the others are
deleted once their coil is older than the retention period (``records.crop_retention_days``).
The prune's audit event is signed with the line's audit key when its file exists; `audit verify`
accepts a missing crop only when a recorded prune deleted it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inspection.arguments import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("crops", help="manage stored defect crops", description=__doc__)
    sub = p.add_subparsers(dest="crops_command", metavar="ACTION")
    sub.required = True
    prune = sub.add_parser("prune", help="delete crops the retention policy no longer keeps")
    prune.add_argument("--config", type=Path, help="line config (default: the demo line)")
    prune.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    prune.add_argument("--crops", type=Path, help="crops folder (default: the config's line.crops_dir)")
    prune.add_argument("--days", type=positive_int,
                       help="retention in days (default: the config's records.crop_retention_days)")
    prune.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    prune.set_defaults(func=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    from inspection.commands._audit_key import audit_key_path, warn_unsigned
    from inspection.config import load_config
    from inspection.records.audit_keys import key_if_present
    from inspection.records.crops import CropStore, prune
    from inspection.records.db import database_errors, open_db

    config = load_config(args.config)
    key_path = audit_key_path(config, args.db, args.config is not None)
    audit_key = key_if_present(key_path)
    path = args.db or config.database
    db = open_db(path)
    try:
        days = args.days if args.days is not None else config.records.crop_retention_days
        with database_errors(path):  # a damaged page shows only when a query reaches it
            result = prune(db, CropStore(args.crops or config.crops_dir), days, dry_run=args.dry_run,
                           audit_key=audit_key)
    finally:
        db.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"crops: kept {result.kept}, {verb} {result.deleted} ({result.bytes_freed / 1e6:.1f} MB), "
          f"retention {days} days")
    if audit_key is None and not args.dry_run:
        warn_unsigned(key_path)
    return 0
