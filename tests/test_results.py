"""Worker -> recorder messages: round trips, and every malformed field named in a RecordError."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspection.errors import RecordError
from inspection.frame import CoilEvent, StreamKey
from inspection.results import Defect, FrameDropped, FrameResult, decode, encode
from inspection.testing.synthetic import TEST_MODEL, crop_png

SRC = StreamKey("demo-hot-1", "hot", "top-1", "top")


def _result(**changes: object) -> FrameResult:
    import numpy as np

    png = crop_png(np.random.default_rng(0))
    defects = (
        Defect("patches", 0.8, 2, (1.0, 2.0, 30.0, 40.0), 1234.5, 400.0, 38.0, 29.0, 900.0, png),
        Defect("scratches", 0.5, 1, (5.0, 5.0, 6.0, 90.0), 1300.0, 10.0, 85.0, 1.0, 60.0),
    )
    values = dict(
        source=SRC,
        coil="C-1",
        seq=7,
        index=6,
        captured_ns=10**18,
        position_mm=6144.0,
        length_mm=1024.0,
        model_version=TEST_MODEL[0],
        model_sha256=TEST_MODEL[1],
        inspected_ns=10**18 + 5,
        defects=defects,
    )
    values.update(changes)
    return FrameResult(**values)


def test_round_trips() -> None:
    result = _result()
    parts = encode(result)
    assert len(parts) == 2 and parts[1].startswith(b"\x89PNG")  # the crop travels as its own raw part
    assert decode(parts) == result
    dropped = FrameDropped(SRC, "C-1", 8, 7, 10**18, "decode failed")
    assert decode(encode(dropped)) == dropped
    end = CoilEvent("coil_end", SRC, "C-1", 9, 10**18, length_mm=8192.0, frames=8, dropped=1)
    assert decode(encode(end)) == end


def test_an_integer_beyond_sqlite_is_refused_not_a_recorder_crash() -> None:
    """seq 2**64 passed every check, then OverflowError in the store killed the recorder."""
    header = _header(encode(_result()))
    header["seq"] = 2**64
    with pytest.raises(RecordError, match="seq: expected an integer in 0..9223372036854775807"):
        decode([json.dumps(header).encode(), *encode(_result())[1:]])


def test_an_unknown_defect_carries_its_guesses() -> None:
    unknown = Defect("unknown", 0.4, 2, (1.0, 2.0, 30.0, 40.0), 1234.5, 400.0, 38.0, 29.0, 900.0,
                     guesses=(("patches", 0.4), ("inclusion", 0.31)))
    result = _result(defects=(unknown,))
    parts = encode(result)
    assert _header(parts)["defects"][0]["guesses"] == [["patches", 0.4], ["inclusion", 0.31]]
    assert decode(parts) == result
    assert "guesses" not in _header(encode(_result()))["defects"][0]  # a known class sends none


@pytest.mark.parametrize(("guesses", "message"), [
    ("patches", "guesses: expected a list"),
    ([["patches"]], r"guesses\[0\]: expected \[class, score\]"),
    ([["patches", 1.5]], r"guesses\[0\].score: expected a number in"),
    ([["", 0.5]], r"guesses\[0\]: expected \[class, score\]"),
    ([["a", 0.1]] * 9, "at most 8"),
])
def test_bad_guesses_are_named(guesses: object, message: str) -> None:
    parts = encode(_result())
    header = _header(parts)
    header["defects"][1]["guesses"] = guesses
    with pytest.raises(RecordError, match=message):
        decode([json.dumps(header).encode(), *parts[1:]])


def _header(parts: list[bytes]) -> dict:
    return json.loads(parts[0])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda h: h.update(v=2), "header.v"),
        (lambda h: h.update(type="frame"), "header.type"),
        (lambda h: h.pop("coil"), "missing field.*coil"),
        (lambda h: h.update(extra=1), "unknown field.*extra"),
        (lambda h: h.update(coil="bad coil id!"), "coil"),
        (lambda h: h.update(surface="left"), "surface"),
        (lambda h: h.update(index=-1), "index"),
        (lambda h: h["model"].update(sha256="abc"), "model.sha256"),
        (lambda h: h["defects"][1].update(score=1.5), "defects\\[1\\].score"),
        (lambda h: h["defects"][0].update(severity=4), "defects\\[0\\].severity"),
        (lambda h: h["defects"][0].update(box=[5, 5, 1, 1]), "defects\\[0\\].box"),
        (lambda h: h["defects"][1].update(crop=1), "defects\\[1\\].crop"),
        (lambda h: h["defects"][0].update(crop=None), "crop part"),
        (lambda h: h["defects"][0].pop("class"), "defects\\[0\\]: missing field.*class"),
        (lambda h: h.update(defects="none"), "defects: expected a list"),
    ],
)
def test_bad_fields_are_named(mutate: object, match: str) -> None:
    parts = encode(_result())
    header = _header(parts)
    mutate(header)
    with pytest.raises(RecordError, match=match):
        decode([json.dumps(header).encode(), *parts[1:]])


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ([], "non-empty"),
        ([b"\xff\xfe"], "UTF-8 JSON"),
        ([b"[1, 2]"], "JSON object"),
        ([b'{"v": 1, "type": "frame_result", "x": NaN}'], "non-finite|JSON"),
    ],
)
def test_bad_envelopes(parts: list[bytes], match: str) -> None:
    with pytest.raises(RecordError, match=match):
        decode(parts)


def test_crop_must_be_png() -> None:
    parts = encode(_result())
    with pytest.raises(RecordError, match="defects\\[0\\].crop: expected PNG"):
        decode([parts[0], b"GIF89a..."])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_random_bytes_only_raise_record_error(parts: list[bytes]) -> None:
    # decode's contract: whatever arrives, the only exception is RecordError (anything else fails here)
    with contextlib.suppress(RecordError):
        decode(parts)


def test_worker_status_round_trip_and_validation() -> None:
    from inspection.results import WorkerStatus

    status = WorkerStatus("worker-1", "line-pc-3", 4242, 123, {"frames_received": 7, "models": {"hot": "hot-1"}})
    assert decode(encode(status)) == status
    with pytest.raises(RecordError, match="stats.nested: expected a number, a short text or a flat object"):
        WorkerStatus("worker-1", "h", 1, 1, {"nested": {"a": {"b": 1}}})
    with pytest.raises(RecordError, match="worker: expected an identifier"):
        WorkerStatus("no spaces please", "h", 1, 1, {})
