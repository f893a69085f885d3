"""The audit key: a secret HMAC-SHA256 key kept in a file, never in the line database.

The audit chain (`audit`) is a plain sha256 chain: anyone with the database file and this code can
edit a row and recompute every digest and link. What they cannot do without this key is sign the
result: every process that writes the database and holds the key signs each audit event it
appends (`checkpoints`), and `audit verify` checks those signatures with the key.

File format (text, 0600, made by ``steel-inspect keys generate``, `run` and `demo` on first start,
and the recorder when none exists)::

    # steel-inspect audit key (HMAC-SHA256) ...comment lines...
    <64 hex digits: 32 random bytes>

A key file that group or others can read is refused (as ssh refuses such a key). The key is never
logged or put in an error message; its ``key_id`` (a hash of it) is stored beside each signature
so that a wrong key is told apart from a forged signature.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from inspection.errors import SteelInspectError

KEY_BYTES = 32
KEY_FILE_NAME = "audit.hmac_key"  # not *.key: in a CURVE key folder that suffix means a public key
_MAC_CONTEXT = "steel-inspect audit v1"


class AuditKeyError(SteelInspectError):
    """The audit key file is missing, unreadable, malformed or readable by others."""


@dataclass(frozen=True)
class AuditKey:
    """A loaded audit key; `repr` shows the file and the key id, never the secret."""

    path: Path
    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """16 hex digits naming the key (a hash of it: safe to store and print)."""
        return hashlib.sha256(b"steel-inspect audit key id\0" + self.secret).hexdigest()[:16]

    def mac(self, seq: int, head: str) -> str:
        """HMAC-SHA256 (hex) of the chain head ``seq | head``: O(1), whatever the chain's length."""
        return hmac.new(self.secret, f"{_MAC_CONTEXT}|{seq}|{head}".encode("ascii"), hashlib.sha256).hexdigest()

    def check(self, seq: int, head: str, mac: str) -> bool:
        return hmac.compare_digest(self.mac(seq, head), str(mac))


def load_key(path: str | Path) -> AuditKey:
    """The key in `path`; `AuditKeyError` naming the file when it cannot be used."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise AuditKeyError(f"{path}: audit key file missing (steel-inspect keys generate makes it)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"{path}: cannot read the audit key: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditKeyError(f"{path}: readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 it, "
                            "and make a new key if others may have read it")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        secret = bytes.fromhex(lines[0]) if len(lines) == 1 else b""
    except ValueError:
        secret = b""
    if len(secret) != KEY_BYTES:
        raise AuditKeyError(f"{path}: not an audit key file (expected one line of {2 * KEY_BYTES} hex digits)")
    return AuditKey(path, secret)


def generate_key(path: str | Path) -> AuditKey:
    """Write a new random key to `path`, created 0600 from the start; refuses to overwrite one
    (every signature made with the old key could no longer be checked)."""
    path = Path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditKeyError(f"{path}: an audit key exists already: refusing to replace it") from None
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot write the audit key: {exc.strerror}") from None
    secret = secrets.token_bytes(KEY_BYTES)
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"# steel-inspect audit key (HMAC-SHA256), made {stamp}. Secret: whoever holds it can sign\n"
                "# audit events. Keep it on the line's machines only, out of backups of the database.\n"
                f"{secret.hex()}\n")
    return AuditKey(path, secret)


def key_if_present(path: str | Path | None) -> AuditKey | None:
    """The key at `path` when the file exists (a writer then signs), None when it does not; a file
    that exists but cannot be used is an error, never silently ignored."""
    if path is None or not Path(path).exists():
        return None
    return load_key(path)
