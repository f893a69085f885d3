"""The msgspec fast path for frame_result messages (`inspection.result_structs`) against the slow,
field-by-field decoding (`results.decode_slowly`): what the fast path takes is exactly the value (types
included) the slow path builds, and it gives the same database rows; what it does not take goes
to the slow path, so the error is the one the slow path has always given."""

from __future__ import annotations

import json
import math
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from inspection.errors import RecordError
from inspection.frame import StreamKey
from inspection.records.store import Store
from inspection.result_structs import frame_result
from inspection.results import Defect, FrameResult, WorkerTiming, decode, decode_slowly, encode
from inspection.signing import Signer
from inspection.testing.synthetic import TEST_MODEL, coil_messages, crop_png, signed

SRC = StreamKey("demo-hot-1", "hot", "top-1", "top")
CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]


def _typed(value: Any) -> Any:
    """`value` with the type of every leaf beside it: 1 and 1.0 compare equal, but are not the same."""
    if is_dataclass(value):
        return type(value), tuple((f.name, _typed(getattr(value, f.name))) for f in fields(value))
    if isinstance(value, tuple | list):
        return type(value), tuple(_typed(v) for v in value)
    if isinstance(value, dict):
        return type(value), tuple(sorted((k, _typed(v)) for k, v in value.items()))
    return type(value), value


def _result(defects: tuple[Defect, ...], **changes: Any) -> FrameResult:
    values: dict[str, Any] = dict(source=SRC, coil="C-1", seq=7, index=6, captured_ns=10**18, position_mm=6144.0,
                                  length_mm=1024.0, model_version=TEST_MODEL[0], model_sha256=TEST_MODEL[1],
                                  inspected_ns=10**18 + 5, defects=defects)
    values.update(changes)
    return FrameResult(**values)


def _messages() -> list[Any]:
    """What workers send: plain, with crops, signed (capture), timed, with an unknown's guesses."""
    png = crop_png(np.random.default_rng(0))
    unknown = Defect("unknown", 0.4, 2, (1, 2.0, 30, 40.0), 1234.5, 400, 38.0, 29.0, 900,
                     guesses=(("patches", 0.4), ("inclusion", 0.31)))
    known = Defect("patches", 1, 3, (0, 0, 0, 0), 0, -5.5, 0, 0, 0, png)
    signer = Signer(Ed25519PrivateKey.generate(), "top-1")
    return [*coil_messages("C-2", length_m=8, defects_per_frame=3, seed=1),
            *coil_messages("C-3", length_m=4, defects_per_frame=2, seed=2, crops=True),
            *signed(coil_messages("C-4", length_m=4, defects_per_frame=2, seed=3), {"top-1": signer}),
            _result((unknown, known)), _result(()),
            _result((known,), timing=WorkerTiming(1, 2, 3, 4))]


def test_the_fast_path_builds_what_the_slow_path_builds() -> None:
    taken = 0
    for message in _messages():
        parts = encode(message)
        fast = frame_result(parts)
        slow = decode_slowly(parts)
        assert _typed(slow) == _typed(message)
        if isinstance(message, FrameResult):  # every plainly valid frame_result takes the fast path
            assert fast is not None
            taken += 1
        if fast is not None:
            assert _typed(fast) == _typed(slow)
        assert _typed(decode(parts)) == _typed(slow)
    assert taken > 20


def _rows(path: Path, messages: list[Any], decoder: Any) -> dict[str, list[tuple]]:
    store = Store(path, clock=lambda: 1_763_900_000 * 10**9)
    store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    store.apply_batch([decoder(encode(m)) for m in messages], want_rows=True)
    tables = ("coils", "frames", "defects", "defect_guesses", "frame_seals", "coil_class_counts", "audit_log")
    rows = {t: store.db.execute(f"SELECT * FROM [{t}] ORDER BY rowid").fetchall() for t in tables}
    store.close()
    return rows


def test_the_fast_path_gives_the_same_rows_and_audit_chain(tmp_path: Path) -> None:
    messages = _messages()
    assert _rows(tmp_path / "fast.db", messages, decode) == _rows(tmp_path / "slow.db", messages, decode_slowly)


def _header(parts: list[bytes]) -> dict:
    return json.loads(parts[0])


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda h: h.update(v=2), "header.v"),
    (lambda h: h.pop("coil"), "missing field.*coil"),
    (lambda h: h.update(extra=1), "unknown field.*extra"),
    (lambda h: h.update(coil="bad coil id!"), "coil"),
    (lambda h: h.update(seq=2**64), "seq: expected an integer"),
    (lambda h: h["model"].update(sha256="abc"), "model.sha256"),
    (lambda h: h["model"].update(extra="x"), "model: unknown field"),
    (lambda h: h["defects"][1].update(score=1.5), r"defects\[1\].score"),
    (lambda h: h["defects"][1].update(score=True), r"defects\[1\].score"),
    (lambda h: h["defects"][0].update(severity=4), r"defects\[0\].severity"),
    (lambda h: h["defects"][0].update(box=[5, 5, 1, 1]), r"defects\[0\].box"),
    (lambda h: h["defects"][0].update(box=[5, 5, 6]), r"defects\[0\].box"),
    (lambda h: h["defects"][0].update(along_mm=-1), r"defects\[0\].along_mm"),
    (lambda h: h["defects"][0].update(width_mm=10**400), r"OverflowError|width_mm"),
    (lambda h: h["defects"][1].update(crop=1), r"defects\[1\].crop"),
    (lambda h: h["defects"][0].update(crop=None), "crop part"),
    (lambda h: h["defects"][0].update(crop=True), r"defects\[0\].crop"),
    (lambda h: h["defects"][0].update(**{"class": ""}), r"defects\[0\].class"),
    (lambda h: h["defects"][0].update(guesses=None), r"defects\[0\].guesses"),
    (lambda h: h["defects"][0].pop("class"), r"defects\[0\]: missing field.*class"),
    (lambda h: h.update(defects="none"), "defects: expected a list"),
    (lambda h: h.update(timing=None), "timing"),
    (lambda h: h.update(capture={"sig": "x"}), "capture"),
])
def test_a_malformed_message_falls_back_to_the_slow_paths_error(mutate: Any, match: str) -> None:
    png = crop_png(np.random.default_rng(0))
    parts = encode(_result((Defect("patches", 0.8, 2, (1.0, 2.0, 30.0, 40.0), 1234.5, 400.0, 38.0, 29.0, 900.0, png),
                            Defect("scratches", 0.5, 1, (5.0, 5.0, 6.0, 90.0), 1300.0, 10.0, 85.0, 1.0, 60.0))))
    header = _header(parts)
    mutate(header)
    bad = [json.dumps(header).encode(), *parts[1:]]
    assert frame_result(bad) is None
    with pytest.raises(RecordError, match=match) as slow:
        decode_slowly(bad)
    with pytest.raises(RecordError) as fast:
        decode(bad)
    assert str(fast.value) == str(slow.value)


def test_a_crop_that_is_not_png_falls_back() -> None:
    parts = encode(_result((Defect("patches", 0.8, 2, (1.0, 2.0, 30.0, 40.0), 1.0, 4.0, 3.0, 2.0, 9.0,
                                   crop_png(np.random.default_rng(0))),)))
    assert frame_result([parts[0], b"GIF89a..."]) is None
    with pytest.raises(RecordError, match=r"defects\[0\].crop: expected PNG"):
        decode([parts[0], b"GIF89a..."])


_wild = st.one_of(st.integers(-10, 10**6), st.integers(min_value=2**62), st.floats(), st.booleans(), st.none(),
                  st.text(max_size=2), st.lists(st.integers(0, 9), max_size=5))
_size = st.one_of(st.integers(0, 10**6), st.floats(0, 1e9))
_valid = st.fixed_dictionaries({
    "class": st.one_of(st.sampled_from(["patches", "unknown", "oil spots"]), st.text(min_size=1, max_size=64)),
    "score": st.one_of(st.floats(0, 1), st.integers(0, 1)), "severity": st.integers(1, 3),
    "box": st.lists(st.one_of(st.integers(0, 4000), st.floats(0, 4000)), min_size=4, max_size=4).map(
        lambda b: [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]),
    "along_mm": _size, "across_mm": st.one_of(st.integers(-10**6, 10**6), st.floats(-1e9, 1e9)),
    "length_mm": _size, "width_mm": _size, "area_mm2": _size, "crop": st.none(),
}, optional={"guesses": st.lists(st.tuples(st.text(min_size=1, max_size=3), st.floats(0, 1)), max_size=3)})


@st.composite
def _defects(draw: st.DrawFn) -> dict:
    """A plausible defect, often with one field (or one unknown key) replaced by anything at all."""
    item = draw(_valid)
    if draw(st.booleans()):
        item[draw(st.sampled_from([*item, "guesses", "extra"]))] = draw(_wild)
    if draw(st.integers(0, 9)) == 0:
        item.pop(draw(st.sampled_from(sorted(item))))
    return item


@settings(max_examples=300, deadline=None)
@given(st.lists(_defects(), max_size=4), st.integers(0, 2))
def test_whatever_the_fast_path_takes_the_slow_path_takes_alike(items: list[dict], crops: int) -> None:
    header = _header(encode(_result(())))
    header["defects"] = items
    refs = iter(range(1, crops + 1))
    for item in items[:crops]:  # the crops sent: each referenced by one defect (unless a draw replaced it)
        if item.get("crop", 0) is None:
            item["crop"] = next(refs)
    pngs = [crop_png(np.random.default_rng(i)) for i in range(crops)]
    parts = [json.dumps(header).encode(), *pngs]
    fast = frame_result(parts)
    try:
        slow = decode_slowly(parts)
    except RecordError:
        assert fast is None  # never more lenient than the field-by-field checks
        return
    if fast is not None:
        assert _typed(fast) == _typed(slow)
        assert all(math.isfinite(d.score) for d in fast.defects)
