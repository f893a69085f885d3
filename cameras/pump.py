"""Move one camera source's stream into a sender, keeping the coil's drop count honest.

The source counts frames it could not deliver (incomplete buffers); the sender counts frames
the transport dropped because workers were behind. `pump` adds the transport drops of each
coil to that coil's ``coil_end`` (``dropped``), so the recorder sees every lost frame.

With ``overlap_rows`` (a camera's ``overlap_px``), each frame of a coil but the first carries the
last rows of the frame captured before it on top (`FrameOverlap`): the frames stay independent
messages, so any worker can take any frame and still see across the seam.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cameras.base import CameraSource
from inspection.frame import Frame, StreamMessage

log = logging.getLogger(__name__)


class Sender(Protocol):
    def send(self, message: StreamMessage) -> bool: ...


@dataclass
class PumpStats:
    """What one camera run produced and delivered."""

    frames: int = 0  # frames the source delivered (excluding its own incomplete grabs)
    sent: int = 0
    dropped: int = 0  # transport drops
    source_dropped: int = 0  # incomplete / failed grabs
    events_lost: int = 0
    coils: list[str] = field(default_factory=list)
    megapixels: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class FrameOverlap:
    """Puts the last `rows` rows of the previous frame of the same coil on top of each frame
    (`Frame.overlap_rows`). Only the very next frame gets them: after an incomplete grab (a frame
    index skipped) or at a new coil, a frame goes out as captured. The rows are the camera's own
    memory, so a frame the transport dropped still lends its end to the next one."""

    def __init__(self, rows: int) -> None:
        if rows < 0:
            raise ValueError(f"overlap rows: expected >= 0, got {rows}")
        self.rows = rows
        self._last: tuple[str, int, np.ndarray] | None = None  # coil, index, last rows of the previous frame

    def apply(self, frame: Frame) -> Frame:
        if self.rows == 0:
            return frame
        last, pixels = self._last, frame.pixels
        # a copy: a camera SDK may reuse the buffer of the frame just sent
        self._last = (frame.coil, frame.index, pixels[-self.rows:].copy())
        if (last is None or last[0] != frame.coil or last[1] != frame.index - 1
                or last[2].dtype != pixels.dtype or last[2].shape[1] != pixels.shape[1]):
            return frame
        # a frame that arrived signed (never, from a source) would carry the signature of other pixels
        return dataclasses.replace(frame, pixels=np.concatenate([last[2], pixels]), overlap_rows=last[2].shape[0],
                                   digest=None, sig=None)


def pump(
    source: CameraSource,
    sender: Sender,
    *,
    max_frames: int | None = None,
    stopping: Callable[[], bool] = lambda: False,
    progress_every_s: float = 10.0,
    progress: Callable[[PumpStats], None] | None = None,
    overlap_rows: int = 0,
) -> PumpStats:
    """Send everything `source` yields until it ends, `max_frames` frames went out, or `stopping()`.

    Stopping asks the source to end: its current coil gets a ``coil_end`` if it is whole (`cameras.base`).
    `progress` is called with the running stats after every message (the camera process keeps them where a
    kill leaves them).
    `overlap_rows`: rows of the previous frame put on top of each frame (`FrameOverlap`).
    """
    stats = PumpStats()
    coil_drops = 0
    overlap = FrameOverlap(overlap_rows)
    start = last_log = time.monotonic()
    for message in source:
        if isinstance(message, Frame):
            message = overlap.apply(message)
            stats.frames += 1
            stats.megapixels += message.pixels.size / 1e6
            if sender.send(message):
                stats.sent += 1
            else:
                stats.dropped += 1
                coil_drops += 1
            if (max_frames is not None and stats.frames >= max_frames) or stopping():
                source.stop()
        else:
            if message.kind == "coil_start":
                coil_drops = 0
                stats.coils.append(message.coil)
            else:
                stats.source_dropped += message.dropped or 0
                if coil_drops:
                    log.warning(
                        "%s: coil %s: %d frame(s) dropped by the transport (workers behind)",
                        message.source.camera,
                        message.coil,
                        coil_drops,
                    )
                message = dataclasses.replace(message, dropped=(message.dropped or 0) + coil_drops)
            if not sender.send(message):
                stats.events_lost += 1
            if stopping():
                source.stop()
        if progress is not None:
            progress(stats)
        now = time.monotonic()
        if now - last_log >= progress_every_s:
            last_log = now
            log.info(
                "%s: %d frames, %d sent, %d dropped, %.1f Mpx/s",
                source.key.camera,
                stats.frames,
                stats.sent,
                stats.dropped,
                stats.megapixels / max(now - start, 1e-9),
            )
    stats.seconds = time.monotonic() - start
    return stats
