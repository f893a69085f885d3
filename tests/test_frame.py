"""Frame and CoilEvent reject bad values with a message naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from inspection.frame import CoilEvent, Frame, StreamKey
from inspection.wire import FrameError

SOURCE = StreamKey("L1", "cold", "cam-1", "bottom")
GOOD = dict(source=SOURCE, coil="C1", seq=0, index=0, captured_ns=0, position_mm=0.0, offset_mm=-5.0,
            mm_per_px_x=0.25, mm_per_px_y=0.25, pixels=np.zeros((4, 8), np.uint16))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pixels", np.zeros((4, 8, 3), np.uint8), "2-D array (rows, columns), got shape (4, 8, 3)"),
        ("pixels", np.zeros((4, 8), np.float32), "pixels: expected dtype uint8 or uint16, got float32"),
        ("pixels", np.zeros((0, 8), np.uint8), "pixels: expected a non-empty image"),
        ("pixels", np.zeros((8, 8), np.uint8)[:, ::2], "pixels: expected a C-contiguous array"),
        ("pixels", [[1, 2]], "pixels: expected a numpy array, got list"),
        ("position_mm", -1.0, "position_mm: expected a number >= 0.0"),
        ("mm_per_px_y", float("inf"), "mm_per_px_y: expected a finite number"),
        ("index", 1.5, "index: expected an integer in 0.."),
        ("seq", 2**64, "seq: expected an integer in 0..9223372036854775807"),  # SQLite's INTEGER: was a crash
        ("coil", "", "coil: expected an identifier"),
        ("source", "L1", "source: expected a StreamKey"),
    ],
)
def test_frame_rejects_bad_fields(field: str, value: object, message: str) -> None:
    with pytest.raises(FrameError) as info:
        Frame(**{**GOOD, field: value})
    assert message in str(info.value)


def test_frame_properties() -> None:
    frame = Frame(**GOOD)
    assert (frame.height, frame.width, frame.length_mm) == (4, 8, 1.0)


def test_stream_key_rejects_bad_surface() -> None:
    with pytest.raises(FrameError, match="surface: expected one of top, bottom, got 'left'"):
        StreamKey("L1", "hot", "c", "left")  # type: ignore[arg-type]


def test_coil_event_rejects_more_drops_than_frames() -> None:
    with pytest.raises(FrameError, match="dropped: expected at most frames=3, got 4"):
        CoilEvent("coil_end", SOURCE, "C1", seq=1, time_ns=1, length_mm=1.0, frames=3, dropped=4)
