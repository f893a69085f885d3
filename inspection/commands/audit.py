"""`steel-inspect audit verify`: check the line database's audit hash chain and evidence digests."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="verify the tamper-evident audit log of a line database",
                              description=__doc__)
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION")
    sub.required = True
    v = sub.add_parser("verify", help="exit 0 only when the chain and every recorded row are intact")
    v.add_argument("--config", type=Path, help="line config (default: the demo line)")
    v.add_argument("--db", type=Path, help="database path (default: the config's line.database)")
    v.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from inspection.config import load_config
    from inspection.records.audit import verify
    from inspection.records.db import open_db

    path = args.db or load_config(args.config).database
    db = open_db(path, readonly=True)
    try:
        verdict = verify(db)
    finally:
        db.close()
    if verdict.ok:
        print(f"{path}: audit intact: {verdict.events} events, head {verdict.head}")
        return 0
    print(f"{path}: AUDIT BROKEN after {verdict.events} intact events: {verdict.problem}")
    return 1
