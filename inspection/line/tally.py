"""A camera's running counts in a small memory-mapped file, so that they outlive a kill -9.

A camera writes its summary when it ends; one that is killed writes none, yet `run` needs what it sent:
the run's books (``frames_lost`` = sent - inspected - dropped), and where its restart resumes (the
frames left of ``--max-frames``, the coil after the last one it started). Each update is a write to
memory, not a system call per frame; the kernel keeps the file's pages when the process dies.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the supervisor reads tallies without importing the camera side
    from cameras.pump import PumpStats

COUNTS = ("frames", "sent", "dropped", "source_dropped", "events_lost", "coils_started")
_COIL_BYTES = 64
_RECORD = struct.Struct(f"<{len(COUNTS)}qd{_COIL_BYTES}s")  # the counts, megapixels, the last coil started


class Tally:
    """The writer's side: `update` after every message the camera handled."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self.path.open("wb") as file:
            file.write(b"\0" * _RECORD.size)
        self._file = self.path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), _RECORD.size)

    def update(self, stats: PumpStats) -> None:
        coil = stats.coils[-1].encode("utf-8")[:_COIL_BYTES] if stats.coils else b""
        _RECORD.pack_into(self._map, 0, stats.frames, stats.sent, stats.dropped, stats.source_dropped,
                          stats.events_lost, len(stats.coils), stats.megapixels, coil)

    def close(self) -> None:
        self._map.close()
        self._file.close()


def read_tally(path: str | Path) -> dict[str, Any] | None:
    """What a camera had counted when it last updated its tally (None: no tally, or not one)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) != _RECORD.size:
        return None
    *counts, megapixels, coil = _RECORD.unpack(data)
    last = coil.rstrip(b"\0").decode("utf-8", "replace") or None
    return {**dict(zip(COUNTS, counts, strict=True)), "megapixels": megapixels, "last_coil": last}
