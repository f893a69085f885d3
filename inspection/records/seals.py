"""The recorder's check of the cameras' signatures (`inspection.signing`): which results are evidence.

Every worker shares one CURVE key, so the key proves only that a worker sent a result, not that a
camera captured the frame it is about. A frame_result, frame_dropped, coil_start or coil_end is
recorded only when it carries its camera's valid Ed25519 signature over what the camera sent (for a
frame: identity, placement, pixel format and size, pixel digest); a frame_result must also place
the frame where the camera said. Worker status reports and shadow results are not evidence of a
frame and are not checked. One verification per message, whatever its number of defects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inspection.frame import CoilEvent
from inspection.results import FrameDropped, FrameResult
from inspection.signing import event_bytes, frame_bytes, verify

UNSIGNED, BAD_SIGNATURE = "unsigned", "bad_signature"  # why a result was refused (the stats' names)


class SealCheck:
    """The public signing keys of a line's cameras (camera id -> Ed25519PublicKey, read at start)."""

    def __init__(self, keys: Mapping[str, Any]) -> None:
        self.keys = dict(keys)

    def refuse(self, message: Any) -> tuple[str, str] | None:
        """(`UNSIGNED` | `BAD_SIGNATURE`, why) when `message` must not be recorded; None when it may."""
        if isinstance(message, CoilEvent):
            what = f"{message.kind} of coil {message.coil} (seq {message.seq})"
            if message.sig is None:
                return UNSIGNED, f"{what} carries no camera signature"
            data, sig = event_bytes(message), message.sig
        elif isinstance(message, FrameResult | FrameDropped):
            capture = message.capture
            what = f"frame {message.index} of coil {message.coil} (seq {message.seq})"
            if capture is None:
                return UNSIGNED, f"{what} carries no camera signature"
            if isinstance(message, FrameResult) and (message.position_mm != capture.position_mm
                                                     or message.length_mm != capture.length_mm):
                return BAD_SIGNATURE, f"{what} is placed where the camera did not put it"
            data, sig = frame_bytes(message.source, message.coil, message.seq, message.index,
                                    message.captured_ns, capture), capture.sig
        else:
            return None
        key = self.keys.get(message.source.camera)
        if key is None:
            return BAD_SIGNATURE, f"{what}: no signing key for camera {message.source.camera}"
        if not verify(key, data, sig):
            return BAD_SIGNATURE, f"{what}: not signed by camera {message.source.camera}'s key"
        return None
