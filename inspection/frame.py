"""The values that travel from cameras to inference workers: `Frame` and `CoilEvent`.

Both are small, frozen and validated on construction: a bad field raises `FrameError`
naming the field, what was expected and what arrived. They are the only things a camera
stream carries, in order: ``coil_start``, that coil's frames, ``coil_end``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inspection.errors import FrameError

LineType = Literal["hot", "cold"]
Surface = Literal["top", "bottom"]
EventKind = Literal["coil_start", "coil_end"]

LINE_TYPES: tuple[str, ...] = ("hot", "cold")
SURFACES: tuple[str, ...] = ("top", "bottom")
EVENT_KINDS: tuple[str, ...] = ("coil_start", "coil_end")
PIXEL_DTYPES: tuple[str, ...] = ("uint8", "uint16")

# Identifiers end up in file names, SQL rows and PLC messages: keep them boring.
IDENT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}"
_IDENT = re.compile(IDENT_PATTERN)


def check_ident(name: str, value: object) -> str:
    """Return `value` if it is a valid identifier, else raise `FrameError` naming the field."""
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise FrameError(
            f"{name}: expected an identifier matching {IDENT_PATTERN!r}, got {_show(value)}"
        )
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise FrameError(f"{name}: expected one of {', '.join(choices)}, got {_show(value)}")


MAX_INT = 2**63 - 1  # what an SQLite INTEGER holds: a larger value from the network must not crash the recorder
DIGEST_HEX = 64  # a frame's pixel digest: SHA-256, lowercase hex (`inspection.signing`)
SIG_HEX = 128  # a camera's Ed25519 signature: 64 bytes, lowercase hex
_HEX = frozenset("0123456789abcdef")


def check_hex(name: str, value: object, length: int) -> str:
    """`value` if it is exactly `length` lowercase hex characters, else `FrameError` naming the field
    (a signature or digest from the network is bounded and of one spelling before anything uses it)."""
    if not isinstance(value, str) or len(value) != length or not _HEX.issuperset(value):
        raise FrameError(f"{name}: expected {length} lowercase hex characters, got {_show(value)}")
    return value


def _check_int(name: str, value: object, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INT:
        raise FrameError(f"{name}: expected an integer in {minimum}..{MAX_INT}, got {_show(value)}")


def _check_float(name: str, value: object, *, positive: bool = False, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FrameError(f"{name}: expected a finite number, got {_show(value)}")
    if positive and value <= 0:
        raise FrameError(f"{name}: expected a number > 0, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise FrameError(f"{name}: expected a number >= {minimum}, got {_show(value)}")


@dataclass(frozen=True)
class StreamKey:
    """Who sent a message: the line, its type, the camera and the surface it looks at."""

    line: str
    line_type: LineType
    camera: str
    surface: Surface

    def __post_init__(self) -> None:
        check_ident("line", self.line)
        _check_choice("line_type", self.line_type, LINE_TYPES)
        check_ident("camera", self.camera)
        _check_choice("surface", self.surface, SURFACES)


@dataclass(frozen=True, eq=False)
class Frame:
    """One block of strip image from one camera, with where it lies on the strip.

    - ``seq``: the camera stream's sequence number, shared with coil events, so a gap is visible.
    - ``index``: the frame's number within its coil (0, 1, ...), the unit of coverage.
    - ``position_mm``: position along the strip, from the coil head, of the frame's first new row:
      the row after the ``overlap_rows`` rows repeated from the end of the camera's previous frame.
    - ``overlap_rows``: rows at the top of ``pixels`` that repeat the end of the previous frame of
      the coil (`cameras.pump.FrameOverlap`), so the first stage and the model see a defect cut by the
      seam with what lies above it; they lie before ``position_mm`` and belong to the previous frame
      (the frame's defects, length and coverage are its new rows only). 0: no overlap.
    - ``offset_mm``: position of the first image column across the strip, from the drive-side edge.
    - ``mm_per_px_x`` / ``mm_per_px_y``: pixel size across / along the strip.
    - ``pixels``: 2-D (rows along the strip, columns across), uint8 or uint16, C-contiguous.
    """

    source: StreamKey
    coil: str
    seq: int
    index: int
    captured_ns: int
    position_mm: float
    offset_mm: float
    mm_per_px_x: float
    mm_per_px_y: float
    pixels: np.ndarray = field(repr=False)
    # What the camera signed (`inspection.signing`): the pixels' digest and its Ed25519 signature of
    # the frame; None on a line that does not sign (``[security] curve = false``).
    digest: str | None = None
    sig: str | None = None
    overlap_rows: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.source, StreamKey):
            raise FrameError(f"source: expected a StreamKey, got {_show(self.source)}")
        check_ident("coil", self.coil)
        _check_int("seq", self.seq)
        _check_int("index", self.index)
        _check_int("captured_ns", self.captured_ns)
        _check_float("position_mm", self.position_mm, minimum=0.0)
        _check_float("offset_mm", self.offset_mm)
        _check_float("mm_per_px_x", self.mm_per_px_x, positive=True)
        _check_float("mm_per_px_y", self.mm_per_px_y, positive=True)
        px = self.pixels
        if not isinstance(px, np.ndarray):
            raise FrameError(f"pixels: expected a numpy array, got {type(px).__name__}")
        if px.ndim != 2:
            raise FrameError(f"pixels: expected a 2-D array (rows, columns), got shape {px.shape}")
        if px.dtype.name not in PIXEL_DTYPES:
            raise FrameError(f"pixels: expected dtype uint8 or uint16, got {px.dtype}")
        if px.shape[0] == 0 or px.shape[1] == 0:
            raise FrameError(f"pixels: expected a non-empty image, got shape {px.shape}")
        if not px.flags.c_contiguous:
            raise FrameError("pixels: expected a C-contiguous array (use np.ascontiguousarray)")
        _check_overlap("overlap_rows", self.overlap_rows, int(px.shape[0]))
        if (self.digest is None) != (self.sig is None):
            raise FrameError("digest, sig: expected both (a signed frame) or neither")
        if self.digest is not None:
            check_hex("digest", self.digest, DIGEST_HEX)
            check_hex("sig", self.sig, SIG_HEX)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def length_mm(self) -> float:
        """Strip length this frame adds: its new rows (the overlap belongs to the previous frame)."""
        return (self.height - self.overlap_rows) * self.mm_per_px_y

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.header_fields() == other.header_fields()
            and self.pixels.dtype == other.pixels.dtype
            and np.array_equal(self.pixels, other.pixels)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable pixel buffers make frames unhashable

    def header_fields(self) -> dict[str, object]:
        """Every field except the pixels, flat, as the wire header carries them."""
        return {
            "line": self.source.line,
            "line_type": self.source.line_type,
            "camera": self.source.camera,
            "surface": self.source.surface,
            "coil": self.coil,
            "seq": self.seq,
            "index": self.index,
            "captured_ns": self.captured_ns,
            "position_mm": self.position_mm,
            "offset_mm": self.offset_mm,
            "mm_per_px_x": self.mm_per_px_x,
            "mm_per_px_y": self.mm_per_px_y,
            # only when there is one: frames without overlap keep the header (and signature) they always had
            **({"overlap_rows": self.overlap_rows} if self.overlap_rows else {}),
        }


def _check_overlap(name: str, value: object, rows: int) -> None:
    """Overlap rows: an int from 0 to one less than the frame's rows (a frame adds at least one row)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < rows:
        raise FrameError(f"{name}: expected an integer from 0 to {rows - 1} (the frame's rows - 1), "
                         f"got {_show(value)}")


@dataclass(frozen=True)
class CoilEvent:
    """Coil start or end on a camera stream.

    ``coil_end`` carries what the camera produced for the coil: ``frames`` (all frames it
    captured, sent or not), ``dropped`` (frames it could not send) and ``length_mm`` (strip
    length it saw), so the recorder can prove coverage before it grades.
    """

    kind: EventKind
    source: StreamKey
    coil: str
    seq: int
    time_ns: int
    length_mm: float | None = None
    frames: int | None = None
    dropped: int | None = None
    sig: str | None = None  # the camera's Ed25519 signature of the event (`inspection.signing`), hex

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, EVENT_KINDS)
        if self.sig is not None:
            check_hex("sig", self.sig, SIG_HEX)
        if not isinstance(self.source, StreamKey):
            raise FrameError(f"source: expected a StreamKey, got {_show(self.source)}")
        check_ident("coil", self.coil)
        _check_int("seq", self.seq)
        _check_int("time_ns", self.time_ns)
        if self.length_mm is not None:
            _check_float("length_mm", self.length_mm, minimum=0.0)
        for name in ("frames", "dropped"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value)
        missing_end = self.frames is None or self.dropped is None or self.length_mm is None
        if self.kind == "coil_end" and missing_end:
            raise FrameError("coil_end: expected frames, dropped and length_mm, got a missing value")
        if self.frames is not None and self.dropped is not None and self.dropped > self.frames:
            raise FrameError(f"dropped: expected at most frames={self.frames}, got {self.dropped}")

    def header_fields(self) -> dict[str, object]:
        return {
            "line": self.source.line,
            "line_type": self.source.line_type,
            "camera": self.source.camera,
            "surface": self.source.surface,
            "coil": self.coil,
            "seq": self.seq,
            "time_ns": self.time_ns,
            "length_mm": self.length_mm,
            "frames": self.frames,
            "dropped": self.dropped,
        }


@dataclass(frozen=True)
class BrokenFrame:
    """A frame that arrived malformed (pixels cut short, a part missing) but whose header still says
    which frame it was: the worker records it as dropped with `reason`, so the coil's coverage counts
    it as a known drop instead of a frame no record shows (`inspection.wire.identify`)."""

    source: StreamKey
    coil: str
    seq: int
    index: int
    captured_ns: int
    reason: str
    capture: Capture | None = None  # what the camera signed, when its header says (so the drop is signed)

    def __post_init__(self) -> None:
        if not isinstance(self.source, StreamKey):
            raise FrameError(f"source: expected a StreamKey, got {_show(self.source)}")
        check_ident("coil", self.coil)
        for name in ("seq", "index", "captured_ns"):
            _check_int(name, getattr(self, name))


@dataclass(frozen=True)
class Capture:
    """What a camera signed about a frame beyond the stream identity, coil, seq, index and capture
    time that every result carries: its placement, pixel format and size, the pixels' digest and the
    signature (`inspection.signing.frame_bytes` is the byte string signed). Workers carry it unchanged
    from the camera's header into the frame_result / frame_dropped they send, so the recorder can
    check that the camera captured that frame; a worker never holds a camera's secret."""

    position_mm: float
    offset_mm: float
    mm_per_px_x: float
    mm_per_px_y: float
    dtype: str
    rows: int
    cols: int
    digest: str
    sig: str
    overlap_rows: int = 0  # rows repeated from the previous frame (`Frame.overlap_rows`); signed when > 0

    def __post_init__(self) -> None:
        _check_float("capture.position_mm", self.position_mm, minimum=0.0)
        _check_float("capture.offset_mm", self.offset_mm)
        _check_float("capture.mm_per_px_x", self.mm_per_px_x, positive=True)
        _check_float("capture.mm_per_px_y", self.mm_per_px_y, positive=True)
        _check_choice("capture.dtype", self.dtype, PIXEL_DTYPES)
        for name in ("rows", "cols"):
            _check_int(f"capture.{name}", getattr(self, name), minimum=1)
        check_hex("capture.digest", self.digest, DIGEST_HEX)
        check_hex("capture.sig", self.sig, SIG_HEX)
        _check_overlap("capture.overlap_rows", self.overlap_rows, self.rows)

    @property
    def length_mm(self) -> float:
        """The strip length of the frame, computed as `Frame.length_mm` is (so the two compare equal)."""
        return (self.rows - self.overlap_rows) * self.mm_per_px_y

    KEYS = frozenset("position_mm offset_mm mm_per_px_x mm_per_px_y dtype shape digest sig".split())
    OPTIONAL_KEYS = frozenset({"overlap_rows"})

    def as_wire(self) -> dict[str, object]:
        return {"position_mm": self.position_mm, "offset_mm": self.offset_mm, "mm_per_px_x": self.mm_per_px_x,
                "mm_per_px_y": self.mm_per_px_y, "dtype": self.dtype, "shape": [self.rows, self.cols],
                "digest": self.digest, "sig": self.sig,
                **({"overlap_rows": self.overlap_rows} if self.overlap_rows else {})}

    @classmethod
    def from_wire(cls, obj: dict[str, object]) -> Capture:
        """From `as_wire`'s object whose keys were checked; `FrameError` naming a bad field."""
        shape = obj["shape"]
        if not isinstance(shape, list) or len(shape) != 2:
            raise FrameError(f"capture.shape: expected [rows, cols], got {_show(shape)}")
        return cls(position_mm=obj["position_mm"], offset_mm=obj["offset_mm"],  # type: ignore[arg-type]
                   mm_per_px_x=obj["mm_per_px_x"], mm_per_px_y=obj["mm_per_px_y"],  # type: ignore[arg-type]
                   dtype=obj["dtype"], rows=shape[0], cols=shape[1], digest=obj["digest"],  # type: ignore[arg-type]
                   sig=obj["sig"], overlap_rows=obj.get("overlap_rows", 0))  # type: ignore[arg-type]

    @classmethod
    def of(cls, frame: Frame) -> Capture | None:
        """The capture record of a signed frame (None for an unsigned one)."""
        if frame.digest is None or frame.sig is None:
            return None
        rows, cols = frame.pixels.shape
        return cls(frame.position_mm, frame.offset_mm, frame.mm_per_px_x, frame.mm_per_px_y, frame.pixels.dtype.name,
                   int(rows), int(cols), frame.digest, frame.sig, frame.overlap_rows)


StreamMessage = Frame | CoilEvent
