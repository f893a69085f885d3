"""Wire format: round trips (hypothesis), table-driven malformed messages, random-bytes fuzz."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inspection.frame import IDENT_PATTERN, BrokenFrame, CoilEvent, Frame, StreamKey
from inspection.wire import FrameError, decode, encode, identify

idents = st.from_regex(IDENT_PATTERN, fullmatch=True)
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=2**62)
sources = st.builds(
    StreamKey, line=idents, line_type=st.sampled_from(["hot", "cold"]), camera=idents,
    surface=st.sampled_from(["top", "bottom"]),
)
pixel_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16]),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
)
frames = st.builds(
    Frame, source=sources, coil=idents, seq=counts, index=counts, captured_ns=counts,
    position_mm=non_negative, offset_mm=finite, mm_per_px_x=positive, mm_per_px_y=positive,
    pixels=pixel_arrays,
)


@st.composite
def events(draw: st.DrawFn) -> CoilEvent:
    kind = draw(st.sampled_from(["coil_start", "coil_end"]))
    frames_n = draw(st.integers(0, 10**6))
    end = kind == "coil_end"
    return CoilEvent(
        kind=kind, source=draw(sources), coil=draw(idents), seq=draw(counts), time_ns=draw(counts),
        length_mm=draw(non_negative) if end else draw(st.none() | non_negative),
        frames=frames_n if end else None,
        dropped=draw(st.integers(0, frames_n)) if end else None,
    )


def make_frame(pixels: np.ndarray | None = None) -> Frame:
    return Frame(
        source=StreamKey("L1", "hot", "top-1", "top"), coil="C-1", seq=3, index=1,
        captured_ns=123, position_mm=1024.0, offset_mm=0.0, mm_per_px_x=1.0, mm_per_px_y=1.0,
        pixels=np.arange(12, dtype=np.uint8).reshape(3, 4) if pixels is None else pixels,
    )


@given(frames)
@settings(max_examples=200, deadline=None)
def test_frame_round_trip(frame: Frame) -> None:
    parts = encode(frame)
    assert len(parts) == 2
    decoded = decode([bytes(p) for p in parts])
    assert decoded == frame
    assert decoded.pixels.dtype == frame.pixels.dtype


@given(events())
@settings(max_examples=200, deadline=None)
def test_event_round_trip(event: CoilEvent) -> None:
    parts = encode(event)
    assert len(parts) == 1
    assert decode(parts) == event


def test_pixels_are_not_copied_on_encode() -> None:
    frame = make_frame(np.zeros((64, 64), np.uint8))
    pixel_part = encode(frame)[1]
    assert isinstance(pixel_part, memoryview)
    assert np.shares_memory(np.frombuffer(pixel_part, np.uint8), frame.pixels)


def test_big_endian_uint16_is_sent_little_endian() -> None:
    pixels = np.arange(6, dtype=">u2").reshape(2, 3)
    decoded = decode(encode(make_frame(pixels)))
    assert decoded.pixels.dtype == np.dtype("<u2")
    assert np.array_equal(decoded.pixels, pixels)


def _header(**changes: object) -> bytes:
    header = json.loads(encode(make_frame())[0])
    for key, value in changes.items():
        if value is _DELETE:
            del header[key]
        else:
            header[key] = value
    return json.dumps(header).encode()


_DELETE = object()
GOOD_PIXELS = bytes(range(12))


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "expected 1 (event) or 2 (frame) parts, got 0"),
        ([_header(), GOOD_PIXELS, b""], "got 3"),
        ([_header()], "a frame has 2 parts"),
        ([b"\xff\xfe", GOOD_PIXELS], "not valid UTF-8 JSON"),
        ([b"{not json", GOOD_PIXELS], "not valid UTF-8 JSON"),
        ([b"[1, 2]", GOOD_PIXELS], "expected a JSON object"),
        ([b"[" * 100_000, GOOD_PIXELS], "header: expected at most"),
        ([b"[" * 50_000, GOOD_PIXELS], "not valid UTF-8 JSON"),
        ([_header(v=2), GOOD_PIXELS], "header.v: expected wire version 1, got 2"),
        ([_header(type="frme"), GOOD_PIXELS], "header.type"),
        ([_header(coil=_DELETE), GOOD_PIXELS], "missing field(s) coil"),
        ([_header(extra=1), GOOD_PIXELS], "unknown field(s) extra"),
        ([_header(), GOOD_PIXELS[:-1]], "pixels: expected 12 bytes for 3x4 uint8, got 11"),
        ([_header(), GOOD_PIXELS + b"\0"], "got 13"),
        ([_header(dtype="float32"), GOOD_PIXELS], "header.dtype"),
        ([_header(shape=[3, 4, 1]), GOOD_PIXELS], "header.shape"),
        ([_header(shape=[3, -4]), GOOD_PIXELS], "header.shape"),
        ([_header(shape=[3, True]), GOOD_PIXELS], "header.shape"),
        ([_header(shape=[100_000, 100_000]), GOOD_PIXELS], "exceeds the maximum"),
        ([_header(seq=-1), GOOD_PIXELS], "seq: expected an integer in 0..9223372036854775807, got -1"),
        ([_header(seq=2**64), GOOD_PIXELS], "seq: expected an integer in 0..9223372036854775807, got 1844"),
        ([_header(seq=True), GOOD_PIXELS], "seq: expected an integer"),
        ([_header(surface="side"), GOOD_PIXELS], "surface: expected one of top, bottom"),
        ([_header(line_type="warm"), GOOD_PIXELS], "line_type"),
        ([_header(coil="../../etc/passwd"), GOOD_PIXELS], "coil: expected an identifier"),
        ([_header(mm_per_px_x=0), GOOD_PIXELS], "mm_per_px_x: expected a number > 0"),
        ([_header(position_mm="12"), GOOD_PIXELS], "position_mm: expected a finite number"),
        ([_header(offset_mm=float("nan")), GOOD_PIXELS], "non-finite number NaN"),
        ([_header(), 12345], "pixels: expected a bytes-like part"),
        (b"not a list", "expected a sequence"),
    ],
)
def test_malformed_messages_raise_frame_error_naming_the_problem(parts: object, message: str) -> None:
    with pytest.raises(FrameError) as info:
        decode(parts)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_max_pixels_is_configurable() -> None:
    parts = encode(make_frame())
    with pytest.raises(FrameError, match="exceeds the maximum of 10 pixels"):
        decode(parts, max_pixels=10)
    assert decode(parts, max_pixels=12) == make_frame()


def test_coil_end_needs_its_counts() -> None:
    header = json.dumps({
        "v": 1, "type": "coil_end", "line": "L1", "line_type": "hot", "camera": "c", "surface": "top",
        "coil": "C1", "seq": 1, "time_ns": 1, "length_mm": 10.0, "frames": None, "dropped": None,
    }).encode()
    with pytest.raises(FrameError, match="coil_end: expected frames, dropped and length_mm"):
        decode([header])


@given(st.lists(st.binary(max_size=300), min_size=0, max_size=3))
@settings(max_examples=500, deadline=None)
def test_random_bytes_only_ever_raise_frame_error(parts: list[bytes]) -> None:
    # The property is that nothing but FrameError escapes; a decoded message is fine too.
    with contextlib.suppress(FrameError):
        decode(parts)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_mutated_valid_messages_only_ever_raise_frame_error(data: st.DataObject) -> None:
    header, pixels = (bytes(p) for p in encode(make_frame()))
    position = data.draw(st.integers(0, len(header) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = header[:position] + bytes([byte]) + header[position + 1:]
    try:
        result = decode([mutated, pixels])
    except FrameError:
        return
    assert isinstance(result, Frame)


@pytest.mark.parametrize("cut", [
    lambda h, p: [h, p[: len(p) // 2]],  # pixels cut short
    lambda h, p: [h],  # pixels part missing
    lambda h, p: [h, p + b"\0"],  # one byte too many
    lambda h, p: [h, p, b"extra"],  # a third part
])
def test_a_broken_frame_whose_header_is_intact_is_identified(cut) -> None:  # noqa: ANN001
    frame = make_frame()
    header, pixels = (bytes(p) for p in encode(frame))
    parts = cut(header, pixels)
    with pytest.raises(FrameError) as error:
        decode(parts)
    broken = identify(parts, str(error.value))
    assert broken is not None
    assert (broken.source, broken.coil, broken.seq, broken.index, broken.captured_ns) == (
        frame.source, frame.coil, frame.seq, frame.index, frame.captured_ns)
    assert broken.reason == str(error.value)


@pytest.mark.parametrize("parts", [
    [],
    [b"{not json"],
    [json.dumps({"v": 1, "type": "coil_end", "coil": "C-1"}).encode()],  # not a frame
    [json.dumps({"v": 2, "type": "frame"}).encode(), b""],  # another wire version
    [json.dumps({"v": 1, "type": "frame", "line": "L1", "line_type": "hot", "camera": "top-1", "surface": "top",
                 "coil": "C-1", "seq": 2**64, "index": 0, "captured_ns": 1}).encode()],  # seq out of range
    [json.dumps({"v": 1, "type": "frame", "line": "L1", "line_type": "hot", "camera": "top-1", "surface": "top",
                 "coil": "../x", "seq": 1, "index": 0, "captured_ns": 1}).encode()],  # coil not an identifier
])
def test_a_message_that_names_no_valid_frame_is_not_identified(parts: list[bytes]) -> None:
    assert identify(parts, "malformed") is None


@given(st.lists(st.binary(max_size=300), min_size=0, max_size=3))
@settings(max_examples=300, deadline=None)
def test_identify_never_raises_on_random_bytes(parts: list[bytes]) -> None:
    broken = identify(parts, "malformed")
    assert broken is None or isinstance(broken, BrokenFrame)
