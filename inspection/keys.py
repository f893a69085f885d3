"""The line's CURVE key folder: its layout, making the keys, and reading them back.

One key pair per role, each role in a folder of its own, so that a folder is also the list of
keys that may connect as that role::

    keys/                      the line config's [security] keys_dir (default: beside the database)
      cameras/<camera id>.key          public key of each camera (one pair per camera)
      cameras/<camera id>.key_secret   its secret key (0600)
      cameras/<camera id>.sign         the camera's Ed25519 signing key (0600, PKCS#8 PEM): it signs every
                                       frame and coil event it sends (`inspection.signing`)
      cameras/<camera id>.sign_pub     its public key (SubjectPublicKeyInfo PEM): the recorder checks with it
      workers/worker.key               the inference workers (all workers share this pair)
      workers/worker.key_secret
      recorder/recorder.key            the recorder (results in, PLC output)
      recorder/recorder.key_secret
      plc/plc.key                      a PLC / L2 client (plc-listen uses this pair)
      plc/plc.key_secret

The files are ZeroMQ certificate files as `zmq.auth.create_certificates` writes them (czmq's
format), so a PLC integrator can make a pair with any ZeroMQ library. A binding side accepts
every public key (``*.key``) in its peers' folder: to let another PLC subscribe, copy its public
``NAME.key`` into ``plc/``; another worker machine may get a pair of its own in ``workers/``.
What each machine needs: its own role's ``.key_secret`` and the public keys of its peers; a camera
machine also its ``.sign``, the recorder every camera's ``.sign_pub``.
The allow lists are read when a process starts.

Secrets stay in their files: they are never logged, put in a record or named in an error (errors
name the file); a secret file that others can read is refused, as ssh refuses such a key.
"""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from inspection.errors import SteelInspectError

PUBLIC_SUFFIX, SECRET_SUFFIX = ".key", ".key_secret"
SIGN_SUFFIX, SIGN_PUBLIC_SUFFIX = ".sign", ".sign_pub"  # a camera's Ed25519 signing pair (PEM)
ROLES = ("cameras", "workers", "recorder", "plc")  # the folders; a role's default pair is named below
PAIR_NAMES = {"workers": "worker", "recorder": "recorder", "plc": "plc"}  # cameras: the camera id
Z85_KEY_LENGTH = 40  # a 32-byte Curve25519 key in Z85 text


class KeyFileError(SteelInspectError):
    """A CURVE key file or key folder is missing, unreadable, malformed or readable by others."""


@dataclass(frozen=True)
class KeyPair:
    """A public key and its secret, both Z85 text as ZeroMQ's socket options take them."""

    public: bytes
    secret: bytes
    path: Path  # the secret file, for messages (never the key itself)

    def __repr__(self) -> str:  # a pair that lands in a log or a traceback shows no secret
        return f"KeyPair(public={self.public.decode()}, path={self.path})"


def pair_path(folder: Path, role: str, name: str | None = None) -> Path:
    """The secret file of a role's pair (its public file is the same path with ``.key``)."""
    if role not in ROLES:
        raise KeyFileError(f"keys: no role {role!r} (roles: {', '.join(ROLES)})")
    if role == "cameras" and not name:
        raise KeyFileError("keys: a camera key pair needs the camera id")
    return Path(folder) / role / f"{name or PAIR_NAMES[role]}{SECRET_SUFFIX}"


def public_path(secret_path: Path) -> Path:
    return secret_path.with_suffix(PUBLIC_SUFFIX)


def line_pairs(folder: Path, camera_ids: Iterable[str]) -> list[Path]:
    """The secret files of every pair a line needs: one per camera, workers, recorder, PLC."""
    return ([pair_path(folder, "cameras", c) for c in camera_ids]
            + [pair_path(folder, role) for role in ("workers", "recorder", "plc")])


def has_keys(folder: Path) -> bool:
    """True when the folder holds any key file (then `run` does not make keys of its own)."""
    folder = Path(folder)
    return folder.is_dir() and any(p.suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX) for p in folder.rglob("*.key*"))


def sign_path(folder: Path, camera: str) -> Path:
    """A camera's signing key file (its public file: `sign_public_path`)."""
    return pair_path(folder, "cameras", camera).with_suffix(SIGN_SUFFIX)


def sign_public_path(secret_path: Path) -> Path:
    return secret_path.with_suffix(SIGN_PUBLIC_SUFFIX)


def sign_keys(folder: Path, camera_ids: Iterable[str]) -> list[Path]:
    """The signing key files of a line's cameras."""
    return [sign_path(folder, c) for c in camera_ids]


def has_sign_keys(folder: Path) -> bool:
    """True when the cameras' folder holds any signing key (a line signing since its first start)."""
    cameras = Path(folder) / "cameras"
    return cameras.is_dir() and any(cameras.glob(f"*{SIGN_SUFFIX}*"))


def generate(folder: Path, camera_ids: Iterable[str], *, force: bool = False, curve: bool = True) -> list[Path]:
    """Make the line's missing key pairs in `folder` (all of them with `force`): the CURVE pairs
    (unless `curve` is False) and each camera's signing pair; the secret files written. Refuses
    (`KeyFileError`) when every pair already exists and `force` is not set, and never overwrites a
    pair without `force`."""
    folder = Path(folder)
    camera_ids = list(camera_ids)
    wanted = (line_pairs(folder, camera_ids) if curve else []) + sign_keys(folder, camera_ids)
    for secret in wanted:
        other = sign_public_path(secret) if secret.suffix == SIGN_SUFFIX else public_path(secret)
        if not force and secret.exists() != other.exists():
            present = secret if secret.exists() else other
            raise KeyFileError(f"keys: {present} exists without its other half: remove it or use --force")
    todo = wanted if force else [s for s in wanted if not s.exists()]
    if not todo:
        raise KeyFileError(f"keys: {folder} already holds every key pair of this line: "
                           "refusing to overwrite them (--force replaces them all)")
    _private_dir(folder)
    for secret in todo:
        _private_dir(secret.parent)
        if secret.suffix == SIGN_SUFFIX:
            write_sign_pair(secret)
        else:
            write_pair(secret, *zmq.curve_keypair())
    return todo


def write_sign_pair(secret_path: Path) -> None:
    """A fresh Ed25519 pair as PEM files (as `openssl genpkey -algorithm ed25519` writes them, so an
    integrator can make one with OpenSSL): the secret created 0600 from the start, like `write_pair`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    secret = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    for path, data, mode in ((secret_path, secret, 0o600), (sign_public_path(secret_path), public, 0o644)):
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def load_signing_key(path: Path) -> Any:
    """A camera's Ed25519 signing key (`cryptography`'s Ed25519PrivateKey); `KeyFileError` naming the
    file when it is missing, readable by group or others, or not an unencrypted Ed25519 PEM key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    _check_private(path, "signing key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError):
        key = None  # never the library's message: it could quote the file
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an unencrypted Ed25519 private key (PEM)")
    return key


def load_verify_key(path: Path) -> Any:
    """A camera's Ed25519 public key (`cryptography`'s Ed25519PublicKey); `KeyFileError` naming the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise KeyFileError(f"{path}: public signing key file missing (steel-inspect keys generate makes it)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key (PEM)")
    return key


def _check_private(path: Path, what: str) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} file missing (steel-inspect keys generate makes it)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: readable by others (mode {stat.S_IMODE(mode):04o}): "
                           f"chmod 600 it, and make new keys if others may have read it")


def write_pair(secret_path: Path, public: bytes, secret: bytes) -> None:
    """Write a pair as ZeroMQ certificate files: the secret one created 0600 from the start (not
    chmod-ed afterwards, so it is never readable by others, not even for a moment)."""
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    head = f"#   ZeroMQ CURVE {{}} certificate, steel-inspect keys generate, {stamp}\n"
    public_text = f'{head.format("Public")}metadata\ncurve\n    public-key = "{public.decode()}"\n'
    secret_text = (f'{head.format("**Secret**")}#   Do not copy this file to another user or machine '
                   f'that does not run this role.\nmetadata\ncurve\n    public-key = "{public.decode()}"\n'
                   f'    secret-key = "{secret.decode()}"\n')
    for path, text, mode in ((secret_path, secret_text, 0o600), (public_path(secret_path), public_text, 0o644)):
        path.unlink(missing_ok=True)  # --force: a fresh file gets the mode below, an old one would keep its own
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)


def load_pair(secret_path: Path) -> KeyPair:
    """A pair from its secret file; `KeyFileError` naming the file when it is missing, readable by
    group or others, malformed, or its public key does not belong to its secret."""
    secret_path = Path(secret_path)
    _check_private(secret_path, "secret key")
    public, secret = _read(secret_path)
    if secret is None:
        raise KeyFileError(f"{secret_path}: no secret-key in this file")
    try:
        matches = zmq.curve_public(secret) == public
    except (zmq.ZMQError, ValueError):
        matches = False
    if not matches:
        raise KeyFileError(f"{secret_path}: its public-key does not belong to its secret-key")
    return KeyPair(public, secret, secret_path)


def load_public(path: Path) -> bytes:
    """The public key in a ``.key`` (or ``.key_secret``) file; `KeyFileError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: public key file missing (steel-inspect keys generate makes it)")
    return _read(path)[0]


def load_allowed(folder: Path) -> frozenset[bytes]:
    """Every public key in a role's folder: the clients a binding side accepts for that role."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KeyFileError(f"{folder}: key folder missing (steel-inspect keys generate makes it)")
    keys = frozenset(_read(p)[0] for p in sorted(folder.glob(f"*{PUBLIC_SUFFIX}")))
    if not keys:
        raise KeyFileError(f"{folder}: no public key (*{PUBLIC_SUFFIX}) in this folder: no client could connect")
    return keys


def _read(path: Path) -> tuple[bytes, bytes | None]:
    from zmq.auth import load_certificate

    try:
        public, secret = load_certificate(path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc}") from None
    except ValueError:
        raise KeyFileError(f"{path}: not a ZeroMQ certificate (no public-key)") from None
    for what, key in (("public-key", public), ("secret-key", secret)):
        if key is not None and (len(key) != Z85_KEY_LENGTH or not _is_z85(key)):
            raise KeyFileError(f"{path}: {what} is not a {Z85_KEY_LENGTH}-character Z85 key")  # never the value
    return public, secret


def _is_z85(key: bytes) -> bool:
    import struct

    from zmq.utils import z85

    try:
        z85.decode(key)
    except (ValueError, KeyError, IndexError, struct.error):
        return False
    return True


def _private_dir(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot make the key folder: {exc.strerror}") from None
