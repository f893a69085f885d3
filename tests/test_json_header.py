"""The shared header parser reads every input exactly as the standard library's `json` did: the fast
decoder (msgspec) may only be faster, never more lenient or different."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspection.errors import RecordError
from inspection.json_header import _parse_slowly, parse_object

LIMIT = 1 << 20


def _outcome(parse: Any, raw: bytes) -> tuple[str, str]:
    """("ok", repr of the object) or ("error", the message): repr tells 1 from 1.0 and -0.0 from 0.0."""
    try:
        return "ok", repr(parse(raw))
    except RecordError as exc:
        return "error", str(exc)


def _reference(raw: bytes) -> dict[str, Any]:
    """What parse_object did before it had a fast path: json, then the object check."""
    header = _parse_slowly(raw, RecordError)
    if not isinstance(header, dict):
        raise RecordError(f"header: expected a JSON object, got {type(header).__name__}")
    return header


def _same(raw: bytes) -> None:
    assert _outcome(lambda r: parse_object(memoryview(r), LIMIT, RecordError), raw) == _outcome(_reference, raw)


# any JSON value, with lone surrogates, big integers and awkward floats among them
_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(exclude_categories=()),
                                                                        max_size=8))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _VALUES, max_size=6), st.booleans())
def test_json_objects_read_as_json_reads_them(value: dict[str, Any], ascii_only: bool) -> None:
    try:
        raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 spelling: only its \\u escape exists
        raw = json.dumps(value).encode("utf-8")
    _same(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=60), st.integers(min_value=0, max_value=60))
def test_damaged_headers_are_refused_or_read_as_json_reads_them(noise: bytes, at: int) -> None:
    good = b'{"v":1,"seq":7,"x":[1.5,-0.0,1e300,"\\u00e9"],"n":null}'
    _same(noise)
    _same(good[:at] + noise + good[at:])


@pytest.mark.parametrize("raw", [
    b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}', b'{"a": 1e-400}', b'{"a": "\\ud800"}', b'{"a": 01}',
    b'\xef\xbb\xbf{}', b'{"a": "x\x01"}', b'{"a": 1}\x00', b'{"a": 1, "a": 2}', b'{"a": 18446744073709551616}',
    b'{"a": ' + b"9" * 5000 + b"}", b"[" * 5000, b"[1, 2]", b'"text"', b"",
])
def test_edge_cases_read_as_json_reads_them(raw: bytes) -> None:
    _same(raw)
