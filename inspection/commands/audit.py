"""`steel-inspect audit verify`: check a line database against tampering.

Runs ``PRAGMA integrity_check``, walks the audit hash chain and the digest of every evidence row,
checks every event's signature with the audit key (``--key``, default: the config's
``[records] audit_key``, or ``keys/audit.hmac_key`` beside a ``--db`` given alone), optionally an
anchor file kept elsewhere (``--anchor``), the lines / cameras / plant data tables, the derived
tables (rebuilt and compared) and the crop files (by their sha256). Exit 0: intact; 1: a check
failed (one line names the first bad table, row or file); 2: bad input (no such file, not a
database, unusable key file).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="verify the tamper-evident audit log of a line database",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True
    v = sub.add_parser("verify", help="exit 0 only when the chain, its signatures and every recorded row are intact")
    v.add_argument("--config", type=Path, help="line config (default: the demo line)")
    v.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    v.add_argument("--key", type=Path, metavar="FILE",
                   help="audit key file (default: the config's records.audit_key, or keys/audit.hmac_key beside --db)")
    v.add_argument("--anchor", type=Path, metavar="FILE",
                   help="anchor file to compare with the chain (e.g. a copy kept on another machine)")
    crops = v.add_mutually_exclusive_group()
    crops.add_argument("--crops", type=Path, metavar="DIR",
                       help="crops folder (default: the config's line.crops_dir, or crops beside --db)")
    crops.add_argument("--no-crops", action="store_true", help="do not read and hash the crop files")
    v.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from inspection.commands._audit_key import audit_key_path
    from inspection.config import load_config
    from inspection.records.audit_keys import KEY_FILE_NAME, load_key
    from inspection.records.crops import CropStore
    from inspection.records.verify_db import verify_database

    # A --db given alone is verified with what sits beside it (the defaults of a config whose
    # database it is); with --config, the config says where the key and the crops are.
    config = load_config(args.config) if args.config or not args.db else None
    path = args.db or config.database
    if args.key:
        key, note = load_key(args.key), ""
    else:
        default = audit_key_path(config, args.db, args.config is not None) if config else \
            path.parent / "keys" / KEY_FILE_NAME
        key = load_key(default) if default.exists() else None
        note = f"no audit key at {default}; --key FILE"
    crops = None
    if not args.no_crops:
        own = config is not None and (args.db is None or args.db == config.database)
        crops = CropStore(args.crops or (config.crops_dir if own else path.parent / "crops"))
    report = verify_database(path, key=key, key_note=note, anchor=args.anchor, crops=crops)
    if report.ok:
        print(f"{path}: audit intact: {report.events} events, head {report.head}")
        for line in report.lines:
            print(f"  {line}")
        return 0
    after = f" after {report.events} intact events" if not report.chain_intact else ""
    print(f"{path}: AUDIT BROKEN{after}: {report.problem}")
    return 1
