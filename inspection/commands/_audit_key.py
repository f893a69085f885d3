"""Where a command finds the line's audit key, and what a command that writes a database says
when it has none."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from inspection.records.audit_keys import KEY_FILE_NAME


def audit_key_path(config: Any, db: Path | None, config_given: bool) -> Path:
    """The config's audit key; for a ``--db`` given without ``--config``, the one beside it (where a
    config whose database it is keeps it by default: ``keys/audit.hmac_key``)."""
    if config_given or db is None:
        return config.audit_key_path
    return db.parent / "keys" / KEY_FILE_NAME


def warn_unsigned(path: Path) -> None:
    """After a command wrote audit events without the key (said once its work is done, so that an
    error stays the only line it prints): `audit verify` with the key reports such events."""
    print(f"warning: no audit key at {path}: the audit events just written are not signed "
          "(steel-inspect keys generate makes the key)", file=sys.stderr)
