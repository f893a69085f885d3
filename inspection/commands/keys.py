"""`steel-inspect keys generate`: the CURVE key pairs of a line's ZeroMQ links, each camera's
Ed25519 signing pair (``cameras/<id>.sign``, ``.sign_pub``), and its audit key.

One pair per camera, one for the workers, one for the recorder and one for a PLC client, in the
folder the line config names (``[security] keys_dir``; default ``keys`` beside the database) or
``--dir``. Pairs that exist are kept: only missing ones are made, and when none is missing the
command refuses (exit 2) unless ``--force`` replaces them all (every machine of the line then needs
its new files). Secret files are created 0600. The layout, and what each machine needs, is in
`inspection/keys.py`. `run` and `demo` make the keys themselves on a first start.

The audit key (HMAC-SHA256, ``[records] audit_key``, default ``audit.hmac_key`` in the same folder;
see `inspection/records/audit_keys.py`) is made when missing and never replaced, not even with
``--force``: the signatures in the database could no longer be checked.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="CURVE keys of the line's ZeroMQ links", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    generate = sub.add_parser("generate", help="make the line's key pairs (never overwrites without --force)")
    generate.add_argument("--config", type=Path, help="line config (default: the demo line)")
    generate.add_argument("--dir", type=Path, metavar="D", help="key folder (default: the config's keys_dir)")
    generate.add_argument("--force", action="store_true", help="replace every existing pair")
    generate.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from inspection.config import load_config
    from inspection.keys import SIGN_SUFFIX, line_pairs, public_path, sign_keys, sign_public_path
    from inspection.records.audit_keys import KEY_FILE_NAME
    from inspection.records.checkpoints import ensure_key
    from inspection.security import generate_for

    config = load_config(args.config)
    folder = args.dir or config.keys_dir
    audit_path = args.dir / KEY_FILE_NAME if args.dir else config.audit_key_path
    audit_missing = not audit_path.exists()
    cameras = [c.id for c in config.cameras]
    wanted = [*line_pairs(folder, cameras), *sign_keys(folder, cameras)]
    curve_missing = args.force or not all(p.exists() for p in wanted)
    if audit_missing:  # refused when the database holds signatures of a key that is lost
        ensure_key(audit_path, config.database)
        print(f"{audit_path}  (audit key, HMAC-SHA256, mode 0600)")
    made = generate_for(config, args.dir, force=args.force) if curve_missing or not audit_missing else []
    for secret in made:
        public = sign_public_path(secret) if secret.suffix == SIGN_SUFFIX else public_path(secret)
        print(f"{public}  (secret: {secret.name}, mode 0600)")
    print(f"keys: {len(made)} key pair(s) written to {folder}", end="")
    print("" if config.security.curve else " (note: this line's config has [security] curve = false)", end="")
    print(f"; audit key {'made' if audit_missing else 'kept'}: {audit_path}")
    return 0
