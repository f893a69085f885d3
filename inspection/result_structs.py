"""A fast path for the commonest worker -> recorder message, ``frame_result`` (`inspection.results`).

msgspec decodes the header straight into the Structs below, checking in C what the field-by-field
validation in `inspection.results` checks in Python: the exact key sets (unknown and missing fields),
the JSON types (a bool is not a number, an int is kept an int, a float a float), text lengths,
severity 1..3 and the list and tuple shapes. What a Struct cannot say (numbers' ranges, box
corners in order, crop parts referenced once, PNG bytes) `frame_result` checks here, and the
header's identity fields go through the same constructors (`StreamKey`, `FrameResult`) as on the
slow path.

The fast path only ever *accepts*: `frame_result` returns None for anything it does not take (another
message type, a field out of range, a malformed crop, ...), and the caller then decodes the message
the slow way, which accepts it or raises the `RecordError` it always raised. So a malformed message
gets exactly the error message it got before this module existed, and a message accepted here is
the value the slow path builds from it (`tests/test_result_structs.py` compares the two).

Measured in-process on `bench records`' messages (20 defects each): 2.8 us per defect against
4.7 for the schema-less parse plus the checks in Python (1.9 against 3.9 with the garbage collector
off); `steel-inspect bench records` reports it as ``cpu_us_per_defect.decode``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, field

from inspection.frame import StreamKey
from inspection.results import (
    MAX_CROP_BYTES,
    MAX_DEFECTS_PER_FRAME,
    MAX_HEADER_BYTES,
    PNG_SIGNATURE,
    RESULTS_VERSION,
    Defect,
    FrameResult,
    _capture,
    _guesses,
    _timing,
)

# int | float keeps what the JSON spelled (1 stays an int, as `json` gives it); a bool is refused,
# and so is a float beyond a double's range. Ranges are checked in `_defects`: msgspec can only
# constrain a plain int or float.
Number = int | float
ClassName = Annotated[str, Meta(min_length=1, max_length=64)]


class WireDefect(Struct, forbid_unknown_fields=True, kw_only=True):
    """One entry of ``defects`` (see `inspection.results`'s module docstring)."""

    cls: ClassName = field(name="class")
    score: Number
    severity: Annotated[int, Meta(ge=1, le=3)]
    box: tuple[Number, Number, Number, Number]
    along_mm: Number
    across_mm: Number
    length_mm: Number
    width_mm: Number
    area_mm2: Number
    crop: Annotated[int, Meta(ge=1)] | None
    guesses: Any = UNSET  # only defects of class "unknown" have them: checked by `results._guesses`


class WireModel(Struct, forbid_unknown_fields=True):
    version: Any  # checked by `FrameResult`
    sha256: Any


class WireFrameResult(Struct, forbid_unknown_fields=True, kw_only=True):
    """A ``frame_result`` header. Fields typed Any are checked by the constructors the slow path uses."""

    v: Literal[1]
    type: Literal["frame_result"]
    line: Any
    line_type: Any
    camera: Any
    surface: Any
    coil: Any
    seq: Any
    index: Any
    captured_ns: Any
    position_mm: Any
    length_mm: Any
    inspected_ns: Any
    model: WireModel
    defects: Annotated[list[WireDefect], Meta(max_length=MAX_DEFECTS_PER_FRAME)]
    capture: Any = UNSET  # present (an object, or null) on a line whose cameras sign
    timing: Any = UNSET  # present only when the worker measures its stage times


_DECODER = msgspec.json.Decoder(WireFrameResult)
assert RESULTS_VERSION == 1  # the Literal above says the same


def frame_result(parts: Any) -> FrameResult | None:
    """The `FrameResult` of a message's parts (JSON header, crop PNGs), or None: decode it the slow way."""
    if type(parts) is not list or not parts or not isinstance(parts[0], bytes | bytearray | memoryview):
        return None  # recv_multipart gives a list of bytes; anything else is left to the slow path
    try:
        header = parts[0]
        if len(header) > MAX_HEADER_BYTES:
            return None
        wire = _DECODER.decode(header)
        extra = [p if type(p) is bytes else bytes(memoryview(p)) for p in parts[1:]]
        defects = _defects(wire.defects, extra)
        capture = None if wire.capture is UNSET else _capture({"capture": wire.capture})
        timing = None if wire.timing is UNSET else _timing(wire.timing)
        return FrameResult(
            source=StreamKey(line=wire.line, line_type=wire.line_type, camera=wire.camera, surface=wire.surface),
            coil=wire.coil, seq=wire.seq, index=wire.index, captured_ns=wire.captured_ns,
            position_mm=wire.position_mm, length_mm=wire.length_mm, model_version=wire.model.version,
            model_sha256=wire.model.sha256, inspected_ns=wire.inspected_ns, defects=defects, capture=capture,
            timing=timing)
    # Whatever it is (a msgspec error, a RecordError or FrameError from a constructor, an
    # OverflowError for an integer beyond a double's range, ...): the slow path decides, and names it.
    except Exception:  # noqa: BLE001 - never an error from here, only "not taken"
        return None


def _defects(items: list[WireDefect], extra: list[bytes]) -> tuple[Defect, ...]:
    """The defects, each checked as `results._check_defect` checks one; `ValueError` when one is not
    plainly valid (the slow path then finds and names what is wrong)."""
    out = []
    used: set[int] = set()
    new, isfinite = object.__new__, math.isfinite
    for d in items:
        x1, y1, x2, y2 = box = d.box
        score, along, across, length, width, area = d.score, d.along_mm, d.across_mm, d.length_mm, d.width_mm, \
            d.area_mm2
        if not (0 <= score <= 1 and along >= 0 and length >= 0 and width >= 0 and area >= 0 and x2 >= x1
                and y2 >= y1 and isfinite(score + along + across + length + width + area + x1 + y1 + x2 + y2)):
            raise ValueError("a number out of range")
        crop = None
        ref = d.crop
        if ref is not None:
            if ref > len(extra) or ref in used:
                raise ValueError("crop reference")
            used.add(ref)
            crop = extra[ref - 1]
            if not crop.startswith(PNG_SIGNATURE) or len(crop) > MAX_CROP_BYTES:
                raise ValueError("crop bytes")
        guesses = () if d.guesses is UNSET else _guesses(d.guesses, "defect")
        # as `results._defect` builds it: the frozen dataclass's __dict__ filled at once
        record = new(Defect)
        record.__dict__.update(cls=d.cls, score=score, severity=d.severity, box=box, along_mm=along,
                               across_mm=across, length_mm=length, width_mm=width, area_mm2=area, crop_png=crop,
                               guesses=guesses)
        out.append(record)
    if len(used) != len(extra):
        raise ValueError("unreferenced crop parts")
    return tuple(out)
