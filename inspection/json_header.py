"""Strict JSON message headers, shared by the camera wire format (`inspection.wire`) and the
worker -> recorder contract (`inspection.results`): parsing, the key check, and the stream identity
and coil events both carry. Each caller passes its own error type, so a malformed header is
reported in that format's terms and nothing else escapes."""

from __future__ import annotations

import json
from collections.abc import Set
from typing import Any

import msgspec

from inspection.errors import FrameError
from inspection.frame import SIG_HEX, CoilEvent, StreamKey, check_hex

# msgspec's JSON decoder (no schema: plain dicts, lists, str, int, float, bool, None) parses a
# recorder's header about four times faster than the standard library. It accepts only strict JSON
# (no NaN or Infinity, no lone surrogates, numbers within a double's range, exact big integers), and
# gives what `json` gives for it; whatever it refuses goes to `json` (`_parse_slowly`), which
# refuses it with the message it always did, or accepts it as it always did.
_FAST = msgspec.json.Decoder()


def parse_object(raw: bytes | bytearray | memoryview, max_bytes: int, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in `raw` (UTF-8, at most `max_bytes`, no NaN or Infinity), or `error`."""
    if len(raw) > max_bytes:
        raise error(f"header: expected at most {max_bytes} bytes, got {len(raw)}")
    try:
        header = _FAST.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        header = _parse_slowly(raw, error)
    if not isinstance(header, dict):
        raise error(f"header: expected a JSON object, got {type(header).__name__}")
    return header


def _parse_slowly(raw: bytes | bytearray | memoryview, error: type[Exception]) -> Any:
    """The standard library's reading of `raw` (the one the fast path must agree with), or `error`."""

    def reject_constant(token: str) -> float:
        raise error(f"header: non-finite number {token} is not allowed")

    try:
        header = json.loads(bytes(raw).decode("utf-8"), parse_constant=reject_constant)
    except error:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"header: not valid UTF-8 JSON ({type(exc).__name__})") from None
    return header


def check_keys(obj: dict[str, Any], expected: Set[str], name: str, error: type[Exception]) -> None:
    """`error` naming the missing or unknown fields of `obj` (called `name` in the message)."""
    missing = expected - obj.keys()
    if missing:
        raise error(f"{name}: missing field(s) {', '.join(sorted(missing))}")
    unknown = obj.keys() - expected
    if unknown:
        raise error(f"{name}: unknown field(s) {', '.join(sorted(unknown))}")


def stream_source(header: dict[str, Any], error: type[Exception]) -> StreamKey:
    """The stream identity (line, line type, camera, surface) of a header, checked, or `error`."""
    try:
        return StreamKey(line=header["line"], line_type=header["line_type"], camera=header["camera"],
                         surface=header["surface"])
    except FrameError as exc:
        raise error(str(exc)) from None


def coil_event(kind: str, header: dict[str, Any], error: type[Exception]) -> CoilEvent:
    """The `CoilEvent` of a coil_start / coil_end header whose keys were checked, or `error`."""
    try:
        if "sig" in header:  # present means signed: a null or malformed signature is refused here
            check_hex("header.sig", header["sig"], SIG_HEX)
        return CoilEvent(kind=kind, source=stream_source(header, error), coil=header["coil"], seq=header["seq"],
                         time_ns=header["time_ns"], length_mm=header["length_mm"], frames=header["frames"],
                         dropped=header["dropped"], sig=header.get("sig"))
    except FrameError as exc:
        raise error(str(exc)) from None
