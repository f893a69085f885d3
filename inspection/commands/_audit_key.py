"""Where a command finds the line's audit key, and the key of a command that writes a database."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from inspection.records.audit_keys import KEY_FILE_NAME, AuditKey, key_if_present


def audit_key_path(config: Any, db: Path | None, config_given: bool) -> Path:
    """The config's audit key; for a ``--db`` given without ``--config``, the one beside it (where a
    config whose database it is keeps it by default: ``keys/audit.hmac_key``)."""
    if config_given or db is None:
        return config.audit_key_path
    return db.parent / "keys" / KEY_FILE_NAME


def writer_key(path: Path) -> AuditKey | None:
    """The audit key at `path` when the file exists; otherwise None and one warning line: the
    events written then are unsigned, which `audit verify` with the key reports."""
    key = key_if_present(path)
    if key is None:
        print(f"warning: no audit key at {path}: this command's audit events are not signed "
              "(steel-inspect keys generate makes the key)", file=sys.stderr)
    return key
