"""Wire format of camera streams: pure `encode` and `decode`, no pickle.

A message is a ZeroMQ multipart message:

- frame: ``[header, pixels]``; event: ``[header]``
- ``header`` is UTF-8 JSON: ``{"v": 1, "type": "frame" | "coil_start" | "coil_end", ...fields}``;
  a frame header adds ``dtype`` (``uint8`` | ``uint16``, little-endian) and ``shape`` ``[rows, cols]``,
  and ``overlap_rows`` only when the frame repeats rows of the previous one (`Frame.overlap_rows`).
- ``pixels`` is the raw C-order buffer, sent and received without a copy.
- a signing camera (`inspection.signing`) adds ``"sig"`` (128 lowercase hex characters: its
  Ed25519 signature) to every header, and ``"digest"`` (64 lowercase hex: SHA-256 of the pixel
  bytes) to a frame's; `decode` checks their form and that the digest is the pixels'. Verifying the
  signature is the recorder's job (`inspection.records.seals`): workers carry it on unchanged.

`decode` must be safe against any bytes a broken camera or an attacker can send: every
failure is a `FrameError` naming what was wrong, and nothing else escapes it. `identify` reads
which frame a malformed message claims to be (its header intact, its pixels not), so a worker can
record it as dropped rather than lose it without a trace.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from inspection.errors import FrameError
from inspection.frame import DIGEST_HEX, SIG_HEX, BrokenFrame, Capture, CoilEvent, Frame, StreamMessage, check_hex
from inspection.json_header import check_keys, coil_event, parse_object, stream_source
from inspection.signing import Signer, pixel_digest

__all__ = ["WIRE_VERSION", "FrameError", "decode", "encode", "identify", "DEFAULT_MAX_PIXELS", "MAX_HEADER_BYTES"]

WIRE_VERSION = 1
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024  # 64 Mpx: far above any line-scan frame, far below memory limits
MAX_HEADER_BYTES = 64 * 1024
_WIRE_DTYPES = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2")}
_FRAME_KEYS = frozenset(
    "v type line line_type camera surface coil seq index captured_ns position_mm offset_mm "
    "mm_per_px_x mm_per_px_y dtype shape".split()
)
_EVENT_KEYS = frozenset(
    "v type line line_type camera surface coil seq time_ns length_mm frames dropped".split()
)
_OPTIONAL_FRAME_KEYS = frozenset({"overlap_rows"})
_SIGNED_FRAME_KEYS = _FRAME_KEYS | {"digest", "sig"}
_SIGNED_EVENT_KEYS = _EVENT_KEYS | {"sig"}


def encode(message: StreamMessage, signer: Signer | None = None) -> list[bytes | memoryview]:
    """Encode a `Frame` or `CoilEvent` into multipart message parts (pixels are not copied); with
    `signer` (the camera's, `inspection.signing.Signer`) signed, else with the signature the message
    already carries, if any."""
    if isinstance(message, Frame):
        pixels = message.pixels
        if pixels.dtype.byteorder == ">":
            pixels = pixels.astype("<u2")
        view = memoryview(pixels).cast("B")
        header = {"v": WIRE_VERSION, "type": "frame", **message.header_fields(),
                  "dtype": pixels.dtype.name, "shape": list(pixels.shape)}
        digest, sig = signer.frame(message, view) if signer is not None else (message.digest, message.sig)
        if sig is not None:
            header.update(digest=digest, sig=sig)
        return [_dump(header), view]
    if isinstance(message, CoilEvent):
        header = {"v": WIRE_VERSION, "type": message.kind, **message.header_fields()}
        sig = signer.event(message) if signer is not None else message.sig
        if sig is not None:
            header["sig"] = sig
        return [_dump(header)]
    raise FrameError(f"message: expected a Frame or CoilEvent, got {type(message).__name__}")


def _dump(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def decode(parts: Sequence[Any], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> StreamMessage:
    """Decode multipart message parts into a `Frame` or `CoilEvent`.

    Raises `FrameError` for anything malformed; no other exception escapes.
    """
    try:
        return _decode(parts, max_pixels)
    except FrameError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: nothing but FrameError escapes
        raise FrameError(f"malformed message: {type(exc).__name__}: {exc}") from None


def _decode(parts: Sequence[Any], max_pixels: int) -> StreamMessage:
    if isinstance(parts, bytes | bytearray | memoryview | str) or not isinstance(parts, Sequence):
        raise FrameError(f"parts: expected a sequence of message parts, got {type(parts).__name__}")
    if len(parts) not in (1, 2):
        raise FrameError(f"parts: expected 1 (event) or 2 (frame) parts, got {len(parts)}")
    header = parse_object(_buffer(parts[0], "header"), MAX_HEADER_BYTES, FrameError)
    version = header.get("v")
    if version != WIRE_VERSION:
        raise FrameError(f"header.v: expected wire version {WIRE_VERSION}, got {version!r}")
    kind = header.get("type")
    if kind == "frame":
        if len(parts) != 2:
            raise FrameError(f"parts: a frame has 2 parts (header, pixels), got {len(parts)}")
        expected = _SIGNED_FRAME_KEYS if "sig" in header else _FRAME_KEYS
        check_keys(header, expected | (_OPTIONAL_FRAME_KEYS & header.keys()), "header", FrameError)
        return _frame_from(header, _buffer(parts[1], "pixels"), max_pixels)
    if kind in ("coil_start", "coil_end"):
        if len(parts) != 1:
            raise FrameError(f"parts: a {kind} event has 1 part, got {len(parts)}")
        check_keys(header, _SIGNED_EVENT_KEYS if "sig" in header else _EVENT_KEYS, "header", FrameError)
        return coil_event(kind, header, FrameError)
    raise FrameError(f"header.type: expected frame, coil_start or coil_end, got {kind!r}")


def identify(parts: Sequence[Any], reason: str) -> BrokenFrame | None:
    """The frame a message that failed to `decode` claims to be (its header parses and names a frame
    of a valid stream: line, camera, surface, coil, seq, index, capture time), as a `BrokenFrame`
    carrying `reason`; None when not even that can be read. Like `decode`, nothing but None or a
    `BrokenFrame` comes out, whatever the bytes."""
    try:
        if isinstance(parts, bytes | bytearray | memoryview | str) or not isinstance(parts, Sequence) or not parts:
            return None
        header = parse_object(_buffer(parts[0], "header"), MAX_HEADER_BYTES, FrameError)
        if header.get("v") != WIRE_VERSION or header.get("type") != "frame":
            return None
        return BrokenFrame(source=stream_source(header, FrameError), coil=header.get("coil"),
                           seq=header.get("seq"), index=header.get("index"), captured_ns=header.get("captured_ns"),
                           reason=reason, capture=_capture(header))
    except Exception:  # noqa: BLE001 - an unreadable header names no frame
        return None


def _capture(header: dict[str, Any]) -> Capture | None:
    """What the camera signed, as a broken frame's header tells it (its pixels cannot be checked
    against the digest, but the signature still proves the camera captured that frame)."""
    try:
        return Capture.from_wire({k: header[k] for k in Capture.KEYS | (Capture.OPTIONAL_KEYS & header.keys())})
    except Exception:  # noqa: BLE001 - unsigned, or not even that readable: the drop goes unsigned
        return None


def _buffer(part: Any, name: str) -> memoryview:
    try:
        view = memoryview(part)
    except TypeError:
        raise FrameError(f"{name}: expected a bytes-like part, got {type(part).__name__}") from None
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _frame_from(header: dict[str, Any], pixels: memoryview, max_pixels: int) -> Frame:
    dtype_name = header["dtype"]
    if not isinstance(dtype_name, str) or dtype_name not in _WIRE_DTYPES:
        raise FrameError(f"header.dtype: expected uint8 or uint16, got {dtype_name!r}")
    dtype = _WIRE_DTYPES[dtype_name]
    shape = header["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise FrameError(f"header.shape: expected [rows, cols] of positive integers, got {shape!r}")
    rows, cols = shape
    if rows * cols > max_pixels:
        raise FrameError(f"header.shape: {rows}x{cols} exceeds the maximum of {max_pixels} pixels")
    expected = rows * cols * dtype.itemsize
    if len(pixels) != expected:
        raise FrameError(
            f"pixels: expected {expected} bytes for {rows}x{cols} {dtype_name}, got {len(pixels)}"
        )
    array = np.frombuffer(pixels, dtype=dtype).reshape(rows, cols)
    for name in ("position_mm", "offset_mm", "mm_per_px_x", "mm_per_px_y"):
        value = header[name]
        if isinstance(value, float) and not math.isfinite(value):
            raise FrameError(f"header.{name}: expected a finite number, got {value!r}")
    digest = header.get("digest")
    if "sig" in header:  # present means signed (a null is refused); the form first: what is compared is bounded
        check_hex("header.digest", digest, DIGEST_HEX)
        check_hex("header.sig", header["sig"], SIG_HEX)
    if digest is not None and pixel_digest(pixels) != digest:
        raise FrameError("pixels: their SHA-256 is not the header's digest (changed after the camera "
                         "signed them)")
    return Frame(
        source=stream_source(header, FrameError),
        coil=header["coil"],
        seq=header["seq"],
        index=header["index"],
        captured_ns=header["captured_ns"],
        position_mm=header["position_mm"],
        offset_mm=header["offset_mm"],
        mm_per_px_x=header["mm_per_px_x"],
        mm_per_px_y=header["mm_per_px_y"],
        pixels=array,
        digest=digest,
        sig=header.get("sig"),
        overlap_rows=header.get("overlap_rows", 0),
    )
