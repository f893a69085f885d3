"""Frames that overlap: each frame of a coil carries the last rows of the one before on top
(`cameras.pump.FrameOverlap`, a camera's ``overlap_px``), travels and is signed with its
``overlap_rows``, and adds only its new rows to the strip (length, coverage, signature check)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cameras.pump import FrameOverlap
from inspection import wire
from inspection.config import load_config
from inspection.errors import ConfigError, FrameError
from inspection.frame import Capture, Frame, StreamKey
from inspection.records.seals import BAD_SIGNATURE, SealCheck
from inspection.results import FrameResult, decode, encode
from inspection.signing import Signer
from tests.line_configs import write_line_config

SOURCE = StreamKey("L1", "hot", "top-1", "top")


def _frame(index: int, rows: int = 8, coil: str = "C-1", cols: int = 6) -> Frame:
    pixels = (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) + 100 * index).astype(np.uint8)
    return Frame(SOURCE, coil, seq=index + 1, index=index, captured_ns=1000 + index, position_mm=8.0 * index,
                 offset_mm=0.0, mm_per_px_x=1.0, mm_per_px_y=1.0, pixels=pixels)


def test_each_frame_but_a_coils_first_carries_the_end_of_the_one_before() -> None:
    overlap = FrameOverlap(3)
    first, second = _frame(0), _frame(1)
    assert overlap.apply(first) is first
    out = overlap.apply(second)
    assert out.overlap_rows == 3 and out.pixels.shape == (11, 6)
    assert np.array_equal(out.pixels[:3], first.pixels[-3:]) and np.array_equal(out.pixels[3:], second.pixels)
    assert (out.position_mm, out.length_mm) == (second.position_mm, second.length_mm) == (8.0, 8.0)
    assert out.pixels.flags.c_contiguous


def test_no_overlap_across_coils_after_a_skipped_frame_or_with_rows_zero() -> None:
    overlap = FrameOverlap(3)
    overlap.apply(_frame(0))
    assert overlap.apply(_frame(1, coil="C-2")).overlap_rows == 0  # a new coil starts without
    assert overlap.apply(_frame(3, coil="C-2")).overlap_rows == 0  # frame 2 never came (incomplete grab)
    assert overlap.apply(_frame(4, coil="C-2")).overlap_rows == 3
    assert overlap.apply(_frame(5, coil="C-2", cols=7)).overlap_rows == 0  # another width: nothing to stack
    plain = FrameOverlap(0)
    plain.apply(_frame(0))
    assert plain.apply(_frame(1)).overlap_rows == 0
    with pytest.raises(ValueError, match="overlap rows"):
        FrameOverlap(-1)


def test_a_short_frame_lends_what_it_has_and_its_rows_are_copied() -> None:
    overlap = FrameOverlap(5)
    short = _frame(0, rows=2)
    overlap.apply(short)
    kept = short.pixels.copy()
    short.pixels[:] = 0  # a camera SDK reusing its buffer must not change what the next frame carries
    out = overlap.apply(_frame(1))
    assert out.overlap_rows == 2 and np.array_equal(out.pixels[:2], kept)


def test_overlap_rows_are_checked_on_the_frame_and_on_the_wire() -> None:
    with pytest.raises(FrameError, match=r"overlap_rows: expected an integer from 0 to 7"):
        dataclasses.replace(_frame(0), overlap_rows=8)  # every row repeated: the frame adds nothing
    for bad in (-1, True, 2.0, "2"):
        parts = wire.encode(dataclasses.replace(_frame(1), overlap_rows=2))
        header = parts[0].decode().replace('"overlap_rows":2', f'"overlap_rows":{_json(bad)}')
        with pytest.raises(FrameError, match="overlap_rows"):
            wire.decode([header.encode(), parts[1]])


def _json(value: object) -> str:
    import json

    return json.dumps(value)


def test_round_trip_and_a_frame_without_overlap_keeps_its_old_header() -> None:
    plain = _frame(1)
    assert b"overlap_rows" not in bytes(wire.encode(plain)[0])
    stacked = FrameOverlap(3)
    stacked.apply(_frame(0))
    frame = stacked.apply(plain)
    back = wire.decode([bytes(p) for p in wire.encode(frame)])
    assert back == frame and back.overlap_rows == 3 and back.length_mm == 8.0


def _signed_result(frame: Frame, signer: Signer) -> FrameResult:
    back = wire.decode([bytes(p) for p in wire.encode(frame, signer)])
    return FrameResult(back.source, back.coil, back.seq, back.index, back.captured_ns, back.position_mm,
                       back.length_mm, "m-1", "0" * 64, 1, (), Capture.of(back))


def test_the_signature_covers_the_overlap_and_the_recorder_checks_the_new_rows_length() -> None:
    key = Ed25519PrivateKey.generate()
    signer, check = Signer(key, "top-1"), SealCheck({"top-1": key.public_key()})
    overlap = FrameOverlap(3)
    overlap.apply(_frame(0))
    result = decode(encode(_signed_result(overlap.apply(_frame(1)), signer)))  # as the recorder gets it
    assert result.capture.overlap_rows == 3 and result.length_mm == 8.0
    assert check.refuse(result) is None
    claims_more_rows = dataclasses.replace(result, capture=dataclasses.replace(result.capture, overlap_rows=2),
                                           length_mm=9.0)
    assert check.refuse(decode(encode(claims_more_rows)))[0] == BAD_SIGNATURE
    counts_the_overlap = dataclasses.replace(result, length_mm=11.0)
    assert check.refuse(counts_the_overlap)[0] == BAD_SIGNATURE
    assert check.refuse(decode(encode(_signed_result(_frame(2), signer)))) is None  # no overlap: as before


def test_config_overlap_px_must_leave_new_rows(tmp_path: Path) -> None:
    path = write_line_config(tmp_path, frame_height_px=256)
    line = load_config(path, {"cameras.0.overlap_px": 64, "cameras.1.overlap_px": 0})
    assert line.cameras[0].overlap_px == 64 and line.cameras[1].overlap_px == 0
    assert line.cameras[1].frame_shapes == {(256, 512)}
    assert line.cameras[0].frame_shapes == {(256, 512), (320, 512)}
    with pytest.raises(ConfigError, match=r"overlap_px: expected 0 to frame_height_px - 1 \(255\) rows, got 256"):
        load_config(path, {"cameras.0.overlap_px": 256})
