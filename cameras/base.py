"""The one interface every camera source implements.

A source is a context manager; iterating it yields `Frame` and `CoilEvent` values in stream
order: ``coil_start``, that coil's frames, ``coil_end``, the next coil, ... The base class
owns everything that must be the same for every camera:

- ``seq`` counts every message of the camera (frames and coil events), so a gap is visible;
- ``index`` numbers the frames within a coil (0, 1, ...), including frames that could not be
  delivered (an incomplete line-scan buffer still covered strip: it is counted in the coil's
  ``frames`` and ``dropped``, never passed on);
- positions along the strip are mm from the coil head: the source's encoder position when it
  has one (`Grab.position_mm`); else, with ``position_source = "lines"``, lines seen so far x
  mm per line (right for a line-scan camera triggered line by line by the shaft encoder, or
  running at a line rate matched to the line speed); with ``"speed"``, the line speed x the
  time since the coil's first frame was captured (a free-running camera at a known speed);
- coils are cut either by the source (the simulator knows its coils) or, for sources that
  cannot know, every ``coil_length_mm`` of strip (None: the whole stream is one coil);
- `stop()` ends the stream cleanly after the current frame. The current coil gets its ``coil_end``
  only if it is whole: a source that names its coils (the simulator) and knows their length
  (``coil_length_mm``) and is stopped part way through one sends no ``coil_end`` for it, since the
  coil did not end (a source that only cuts its stream by length ends its coil where it stops). A coil_end counts
  the frames the camera captured, so one sent for a cut coil made a 16 m stub of a 120 m coil look
  fully inspected (`run --max-frames`, graded prime at 100 % coverage); without it the recorder
  holds the coil (`finalise_on_stop`, or when the camera's next coil starts), with the plant's
  length where it has one.

Subclasses implement `_grabs()`, a generator of `Grab` values, and optionally `open()` /
`close()` for hardware.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inspection.errors import SourceError
from inspection.frame import CoilEvent, Frame, StreamKey, StreamMessage, check_ident

log = logging.getLogger(__name__)
POSITION_SOURCES = ("lines", "speed")


@dataclass(frozen=True)
class StripGeometry:
    """Where a camera's pixels lie on the strip and how fast the strip moves under it."""

    width_px: int
    frame_height_px: int  # line-scan lines per frame
    mm_per_px_across: float
    mm_per_px_along: float
    offset_mm: float = 0.0
    speed_m_per_s: float = 1.0
    coil_length_mm: float | None = None
    position_source: str = "lines"  # "lines": lines x mm per line; "speed": line speed x capture time

    def __post_init__(self) -> None:
        if self.position_source not in POSITION_SOURCES:
            raise SourceError(
                f"position_source: expected one of {', '.join(POSITION_SOURCES)}, got {self.position_source!r}"
            )
        for name in ("width_px", "frame_height_px"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SourceError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("mm_per_px_across", "mm_per_px_along", "speed_m_per_s"):
            if not getattr(self, name) > 0:
                raise SourceError(f"{name}: expected a number > 0, got {getattr(self, name)!r}")
        if self.coil_length_mm is not None and not self.coil_length_mm > 0:
            raise SourceError(f"coil_length_mm: expected a number > 0 or None, got {self.coil_length_mm!r}")

    @property
    def frame_length_mm(self) -> float:
        return self.frame_height_px * self.mm_per_px_along

    @property
    def line_rate_hz(self) -> float:
        """Lines per second that keep one line = mm_per_px_along at the line speed."""
        return self.speed_m_per_s * 1000.0 / self.mm_per_px_along

    def frame_period_s(self, lines: int | None = None) -> float:
        return (lines or self.frame_height_px) / self.line_rate_hz


@dataclass
class Grab:
    """What a source delivers per frame; `pixels` None means an incomplete or failed buffer."""

    pixels: np.ndarray | None
    captured_ns: int = field(default_factory=time.time_ns)
    lines: int | None = None  # strip lines covered; default: the pixel rows, else the frame height
    position_mm: float | None = None  # encoder position of the first line, when the source has one
    coil: str | None = None  # the coil this frame belongs to, when the source decides coils
    reason: str = ""  # why an incomplete grab failed, for the log
    extra: Any = None  # per-frame data for `_on_frame` (the simulator's ground truth)


def coil_ids(line_type: str, seed: int, year: int = 26, first: int | None = None) -> Iterator[str]:
    """Deterministic coil ids like ``H26-000123`` (hot) or ``C26-004711`` (cold) from a seed, or
    numbered from `first` (a line that already recorded coils continues after them)."""
    start = int(np.random.default_rng(seed).integers(1000, 900000)) if first is None else int(first)
    prefix = coil_prefix(line_type, year)
    number = start
    while True:
        yield f"{prefix}{number:06d}"
        number += 1


def coil_prefix(line_type: str, year: int = 26) -> str:
    """The start of the simulated cameras' coil ids of a line type: ``H26-`` or ``C26-``."""
    return f"{'H' if line_type == 'hot' else 'C'}{year:02d}-"


class Pacer:
    """Sleeps so that frames leave at the line speed; `wait` returns early when stopping."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self._next = time.monotonic()
        self._stopping = stopping

    def wait(self, period_s: float) -> None:
        self._next += period_s
        while not self._stopping():
            delay = self._next - time.monotonic()
            if delay <= 0:
                break
            time.sleep(min(delay, 0.05))
        if self._next < time.monotonic() - 1.0:  # far behind (slow machine): do not burst to catch up
            self._next = time.monotonic()


class CameraSource(ABC):
    """Base of every camera source; see the module docstring for the stream it yields."""

    name = "source"
    live = True  # a live camera cannot wait (drops are counted); replay sources can (backpressure)

    def __init__(self, key: StreamKey, geometry: StripGeometry, *, seed: int = 0) -> None:
        if not isinstance(key, StreamKey):
            raise SourceError(f"key: expected a StreamKey, got {type(key).__name__}")
        self.key = key
        self.geometry = geometry
        self.seed = seed
        self._stop = threading.Event()
        self._coil_ids = coil_ids(key.line_type, seed)
        self.grab_failures = 0

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:  # noqa: B027 - optional hook
        """Acquire hardware or files; raise `SourceError` naming what is missing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release whatever `open` acquired; must be safe to call twice."""

    def __enter__(self) -> CameraSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """End the stream after the current frame; the current coil gets its coil_end if it is whole."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def describe(self) -> dict[str, Any]:
        """What this source applied, for the start-up log."""
        return {"source": self.name, "live": self.live, **dataclasses.asdict(self.geometry)}

    # -- what subclasses provide -----------------------------------------------------------
    @abstractmethod
    def _grabs(self) -> Iterator[Grab]:
        """Yield grabs until the source is exhausted or `stopping` is true."""

    def _on_frame(self, frame: Frame, grab: Grab) -> None:  # noqa: B027 - optional hook
        """Called with each frame before it is yielded (the simulator writes ground truth here)."""

    def next_coil_id(self) -> str:
        return next(self._coil_ids)

    def start_coils_at(self, number: int) -> None:
        """Number the next coils from `number` (every camera of a line gets the same, so they agree)."""
        self._coil_ids = coil_ids(self.key.line_type, self.seed, first=number)

    # -- the stream ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[StreamMessage]:
        state = _CoilState(self)
        for grab in self._grabs():
            coil = grab.coil
            if coil is None:
                coil = state.coil if state.coil and not state.full() else self.next_coil_id()
            if coil != state.coil:
                yield from state.end()
                yield state.start(check_ident("coil", coil))
            frame = state.add(grab)
            if frame is not None:
                self._on_frame(frame, grab)
                yield frame
            if self.stopping:
                if grab.coil is not None and state.cut_short():  # the source named the coil: it knows its end
                    state.abandon()
                break
        yield from state.end()


class _CoilState:
    """Counters of the coil being streamed; builds the events and frames with their seq."""

    def __init__(self, source: CameraSource) -> None:
        self.source = source
        self.seq = 0
        self.coil: str | None = None
        self.frames = self.dropped = 0
        self.length_mm = 0.0
        self.first_ns: int | None = None

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1

    def full(self) -> bool:
        limit = self.source.geometry.coil_length_mm
        return limit is not None and self.length_mm >= limit - 1e-6

    def cut_short(self) -> bool:
        """The coil is known to be longer than what was streamed of it. Asked only of a coil the source named:
        a source that only cuts its stream every coil_length_mm does not know where a coil ends, so its coils
        end where it stops."""
        return self.coil is not None and self.source.geometry.coil_length_mm is not None and not self.full()

    def abandon(self) -> None:
        """Leave the current coil without a coil_end (see the module docstring: stop())."""
        log.warning("%s: coil %s stopped after %.0f of %.0f mm: no coil_end, the recorder holds it",
                    self.source.key.camera, self.coil, self.length_mm, self.source.geometry.coil_length_mm)
        self.coil = None

    def start(self, coil: str) -> CoilEvent:
        self.coil, self.frames, self.dropped, self.length_mm, self.first_ns = coil, 0, 0, 0.0, None
        log.info("%s: coil %s starts", self.source.key.camera, coil)
        return CoilEvent("coil_start", self.source.key, coil, self._next_seq(), time.time_ns())

    def end(self) -> Iterator[CoilEvent]:
        if self.coil is None:
            return
        event = CoilEvent(
            "coil_end",
            self.source.key,
            self.coil,
            self._next_seq(),
            time.time_ns(),
            length_mm=round(self.length_mm, 3),
            frames=self.frames,
            dropped=self.dropped,
        )
        log.info(
            "%s: coil %s ends: %d frames, %d dropped at the source, %.0f mm",
            self.source.key.camera,
            self.coil,
            self.frames,
            self.dropped,
            self.length_mm,
        )
        self.coil = None
        yield event

    def add(self, grab: Grab) -> Frame | None:
        geo = self.source.geometry
        pixels = grab.pixels
        lines = grab.lines or (pixels.shape[0] if pixels is not None else geo.frame_height_px)
        if self.first_ns is None:
            self.first_ns = grab.captured_ns
        if grab.position_mm is not None:
            position = grab.position_mm
        elif geo.position_source == "speed":
            position = max(0.0, (grab.captured_ns - self.first_ns) * geo.speed_m_per_s * 1e-6)
        else:
            position = self.length_mm
        index = self.frames
        self.frames += 1
        self.length_mm = max(self.length_mm, position + lines * geo.mm_per_px_along)
        if pixels is None:
            self.dropped += 1
            self.source.grab_failures += 1
            log.warning(
                "%s: coil %s frame %d: incomplete grab not passed on (%s)",
                self.source.key.camera,
                self.coil,
                index,
                grab.reason or "no reason given",
            )
            return None
        return Frame(
            source=self.source.key,
            coil=self.coil,
            seq=self._next_seq(),
            index=index,
            captured_ns=grab.captured_ns,
            position_mm=round(position, 3),
            offset_mm=geo.offset_mm,
            mm_per_px_x=geo.mm_per_px_across,
            mm_per_px_y=geo.mm_per_px_along,
            pixels=np.ascontiguousarray(pixels),
        )
