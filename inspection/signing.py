"""Cameras sign what they capture (Ed25519); the recorder checks it (`inspection.records.seals`).

CURVE proves which *role* sent a message, but every worker shares one key: whoever holds it could
tell the recorder about frames, seqs and coils a camera never captured. So the camera process signs
every stream message with a secret only it holds (``cameras/<camera id>.sign`` in the key folder,
`inspection.keys`); workers carry the signature unchanged into their results, and the recorder
verifies it with the camera's public key before anything is recorded.

The signed bytes are a fixed binary layout, so a camera integrator can produce them in any language
without matching anyone's JSON or float formatting (inspection/schemas/README.md documents it):

- text: 2-byte big-endian length, then the UTF-8 bytes; integer: 8-byte big-endian unsigned;
  number: IEEE-754 binary64, big-endian (an integer in the JSON header is converted first);
  optional number / integer: one byte 0 (absent: nothing follows) or 1 followed by the value.
- frame: ``b"steel-inspect frame v1\\n"``, then text line, line_type, camera, surface, coil;
  integer seq, index, captured_ns; number position_mm, offset_mm, mm_per_px_x, mm_per_px_y; text
  dtype; integer rows, cols; then the 32 raw bytes of the pixels' digest (SHA-256 of the pixel bytes
  exactly as sent: C order, little-endian); then, only for a frame that repeats rows of the previous
  one (``overlap_rows`` > 0), integer overlap_rows (a frame without overlap signs the bytes it
  always did).
- coil event: ``b"steel-inspect coil event v1\\n"``, then text kind (coil_start | coil_end), line,
  line_type, camera, surface, coil; integer seq, time_ns; optional number length_mm; optional
  integer frames, dropped.

The signature travels as 128 lowercase hex characters (``"sig"``), the digest as 64 (``"digest"``).
SHA-256 rather than BLAKE2b: with the CPU's SHA extensions it is the faster of the two here (1.5 ms
against 3.0 ms for a 1600x1024 8-bit frame), and every platform a camera runs on has it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from typing import Any

from inspection.frame import Capture, CoilEvent, Frame, StreamKey

FRAME_DOMAIN = b"steel-inspect frame v1\n"
EVENT_DOMAIN = b"steel-inspect coil event v1\n"
_U64, _F64 = struct.Struct(">Q"), struct.Struct(">d")
UNSIGNED = "0" * 128  # a placeholder ``sig`` for a capture about to be signed (never verifies)


def pixel_digest(pixels: Any) -> str:
    """SHA-256 of the pixel bytes as they travel (hashlib reads the buffer without a copy)."""
    return hashlib.sha256(pixels).hexdigest()


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def _stream(kind: bytes, source: StreamKey, coil: str) -> list[bytes]:
    return [kind, _text(source.line), _text(source.line_type), _text(source.camera), _text(source.surface),
            _text(coil)]


def frame_bytes(source: StreamKey, coil: str, seq: int, index: int, captured_ns: int, capture: Capture) -> bytes:
    """The bytes a camera signs for a frame (the layout in the module docstring)."""
    c = capture
    return b"".join([*_stream(FRAME_DOMAIN, source, coil), _U64.pack(seq), _U64.pack(index), _U64.pack(captured_ns),
                     _F64.pack(float(c.position_mm)), _F64.pack(float(c.offset_mm)), _F64.pack(float(c.mm_per_px_x)),
                     _F64.pack(float(c.mm_per_px_y)), _text(c.dtype), _U64.pack(c.rows), _U64.pack(c.cols),
                     bytes.fromhex(c.digest), _U64.pack(c.overlap_rows) if c.overlap_rows else b""])


def event_bytes(event: CoilEvent) -> bytes:
    """The bytes a camera signs for a coil_start / coil_end (the layout in the module docstring)."""
    def optional(value: float | int | None, packer: struct.Struct, cast: type) -> bytes:
        return b"\x00" if value is None else b"\x01" + packer.pack(cast(value))

    return b"".join([EVENT_DOMAIN, _text(event.kind), *_stream(b"", event.source, event.coil)[1:],
                     _U64.pack(event.seq), _U64.pack(event.time_ns), optional(event.length_mm, _F64, float),
                     optional(event.frames, _U64, int), optional(event.dropped, _U64, int)])


class Signer:
    """One camera's signing key, in the camera process only (`keys.load_signing_key` reads it)."""

    def __init__(self, key: Any, camera: str) -> None:
        self._key, self.camera = key, camera

    def __repr__(self) -> str:  # never the key
        return f"Signer(camera={self.camera})"

    def frame(self, frame: Frame, pixels: Any) -> tuple[str, str]:
        """(digest, sig) of `frame`, whose wire bytes are `pixels`."""
        rows, cols = frame.pixels.shape
        capture = Capture(frame.position_mm, frame.offset_mm, frame.mm_per_px_x, frame.mm_per_px_y,
                          frame.pixels.dtype.name, int(rows), int(cols), pixel_digest(pixels), UNSIGNED,
                          frame.overlap_rows)
        capture = self.seal(frame.source, frame.coil, frame.seq, frame.index, frame.captured_ns, capture)
        return capture.digest, capture.sig

    def seal(self, source: StreamKey, coil: str, seq: int, index: int, captured_ns: int, capture: Capture) -> Capture:
        """`capture` with this camera's signature of the frame (its ``sig`` is ignored and replaced)."""
        sig = self._key.sign(frame_bytes(source, coil, seq, index, captured_ns, capture)).hex()
        return dataclasses.replace(capture, sig=sig)

    def event(self, event: CoilEvent) -> str:
        return self._key.sign(event_bytes(event)).hex()


def verify(public_key: Any, data: bytes, sig: str) -> bool:
    """True when `sig` (hex) is `public_key`'s Ed25519 signature of `data`."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(bytes.fromhex(sig), data)
    except (InvalidSignature, ValueError):
        return False
    return True
