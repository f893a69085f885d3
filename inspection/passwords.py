"""Console passwords: scrypt (stdlib `hashlib.scrypt`) with a random salt per user.

A stored hash is one ASCII string that carries everything needed to check it again::

    scrypt$<n>$<r>$<p>$<salt, base64>$<derived key, base64>

so the cost can be raised later without invalidating the hashes already stored. The default cost
(n 2**15, r 8, p 3: 32 MiB) is one of OWASP's equivalent scrypt settings (same work as n 2**17, r 8,
p 1, a quarter of the memory, which suits a plant PC); about 0.4 s per check on this machine.

A password never leaves this module except as its hash: it is not logged, stored or put in an
error message (errors say what is wrong with it, never what it is).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from functools import cache

from inspection.errors import SteelInspectError

SCHEME = "scrypt"
MIN_LENGTH = 10
MAX_LENGTH = 1024  # bounded: a megabyte "password" would only cost the server time
SALT_BYTES = 16
KEY_BYTES = 32
# What a stored hash may ask for (a hash planted in the database must not make a login take
# gigabytes or minutes): 2**10 <= n <= 2**20, memory 128 * r * n <= 256 MiB, p <= 16.
_MAX_MEMORY = 256 * 2**20


class PasswordError(SteelInspectError, ValueError):
    """A new password is refused (too short, too long), or a stored hash is malformed."""


@dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost: n (CPU / memory, a power of 2), r (block size), p (parallelism)."""

    n: int = 2**15
    r: int = 8
    p: int = 3

    def check(self) -> None:
        if not (2**10 <= self.n <= 2**20 and self.n & (self.n - 1) == 0):
            raise PasswordError(f"scrypt n: expected a power of 2 between 2**10 and 2**20, got {self.n}")
        if not (1 <= self.r <= 32 and 1 <= self.p <= 16 and 128 * self.r * self.n <= _MAX_MEMORY):
            raise PasswordError(f"scrypt r, p: expected 1..32 and 1..16 within {_MAX_MEMORY >> 20} MiB, "
                                f"got r={self.r}, p={self.p}")

    @property
    def maxmem(self) -> int:
        # hashlib refuses work above maxmem (32 MiB by default): allow what these parameters need
        return 128 * self.r * (self.n + self.p + 2) + 2**20


DEFAULT_PARAMS = ScryptParams()


def check_new_password(password: str) -> None:
    """Refuse a password a user may not choose; the message never contains the password."""
    if not isinstance(password, str):
        raise PasswordError("password: expected text")
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"password: at least {MIN_LENGTH} characters, got {len(password)}")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"password: at most {MAX_LENGTH} characters, got {len(password)}")
    if not password.strip():
        raise PasswordError("password: only spaces")


def hash_password(password: str, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """The string to store for `password` (a fresh random salt each time)."""
    check_new_password(password)
    params.check()
    salt = os.urandom(SALT_BYTES)
    key = _derive(password, salt, params)
    return f"{SCHEME}${params.n}${params.r}${params.p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the `stored` hash; False for a wrong password or a malformed hash
    (a login must fail closed, not raise)."""
    try:
        params, salt, key = parse_hash(stored)
    except PasswordError:
        return False
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    return hmac.compare_digest(_derive(password, salt, params, len(key)), key)


def burn_time(password: str) -> None:
    """Do the work of one check against a fixed hash: a login with an unknown name then takes as
    long as one with a wrong password, so timing does not tell which names exist."""
    verify_password(password[:MAX_LENGTH] if isinstance(password, str) else "", _reference_hash())


def parse_hash(stored: str) -> tuple[ScryptParams, bytes, bytes]:
    """(parameters, salt, derived key) of a stored hash; `PasswordError` when it is malformed."""
    parts = stored.split("$") if isinstance(stored, str) else []
    if len(parts) != 6 or parts[0] != SCHEME:
        raise PasswordError("password hash: expected scrypt$n$r$p$salt$key")
    try:
        params = ScryptParams(int(parts[1]), int(parts[2]), int(parts[3]))
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise PasswordError("password hash: malformed parameters, salt or key") from None
    params.check()
    if len(salt) < 8 or not 16 <= len(key) <= 64:
        raise PasswordError("password hash: salt or key of the wrong length")
    return params, salt, key


def _derive(password: str, salt: bytes, params: ScryptParams, length: int = KEY_BYTES) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=params.n, r=params.r, p=params.p,
                          maxmem=params.maxmem, dklen=length)


@cache
def _reference_hash() -> str:
    return hash_password(base64.b64encode(os.urandom(18)).decode("ascii"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
