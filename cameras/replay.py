"""Replay of recorded strip images: a folder of image files or a video file, through OpenCV.

- A folder: every image file in it (``.png .jpg .jpeg .bmp .tif .tiff .pgm``), sorted by name,
  decoded as 8-bit grayscale; images may have any size (each becomes one frame as it is).
- A video file: every frame, converted to grayscale.

Coils: without a coil length the whole replay is one coil, named after the folder or file
when that name is a valid identifier (else a generated id); with ``coil_length_mm`` the
stream is cut every that many mm of strip, like a live camera. Positions along the strip are
lines so far x mm per line.

Replay is not live: the camera process sends with backpressure (it waits for workers instead
of dropping), unless ``realtime`` paces it at the line speed. A file that cannot be decoded
is counted as a failed grab (in the coil's ``dropped``) and logged, never passed on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cameras.base import CameraSource, Grab, Pacer, StripGeometry
from inspection.errors import SourceError
from inspection.frame import IDENT_PATTERN, StreamKey

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name; `SourceError` if there are none."""
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"{folder}: no image files ({' '.join(IMAGE_SUFFIXES)})")
    return files


class ReplaySource(CameraSource):
    """Frames from a folder of images or a video file; see the module docstring."""

    name = "folder"

    def __init__(
        self,
        key: StreamKey,
        geometry: StripGeometry,
        path: Path,
        *,
        seed: int = 0,
        realtime: bool = False,
        loop: bool = False,
    ) -> None:
        super().__init__(key, geometry, seed=seed)
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        self.live = False
        self._video: cv2.VideoCapture | None = None
        self._files: list[Path] = []

    def open(self) -> None:
        if self.path.is_dir():
            self._files = list_images(self.path)
            log.info("replay: %d images from %s", len(self._files), self.path)
        elif self.path.is_file():
            self._video = cv2.VideoCapture(str(self.path))
            if not self._video.isOpened():
                raise SourceError(f"{self.path}: OpenCV cannot open it as a video")
            log.info(
                "replay: video %s (%d frames reported)",
                self.path,
                int(self._video.get(cv2.CAP_PROP_FRAME_COUNT)),
            )
        else:
            raise SourceError(f"{self.path}: no such folder or video file")
        if self.geometry.coil_length_mm is None and re.fullmatch(IDENT_PATTERN, self.path.stem):
            self._coil_ids = iter([self.path.stem] + [f"{self.path.stem}-{i}" for i in range(1, 10**6)])

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": str(self.path), "realtime": self.realtime, "loop": self.loop}

    def _grabs(self) -> Iterator[Grab]:
        pacer = Pacer(lambda: self.stopping)
        while True:
            for grab in self._video_grabs() if self._video is not None else self._file_grabs():
                if self.realtime:
                    pacer.wait(self.geometry.frame_period_s(grab.lines))
                yield grab
                if self.stopping:
                    return
            if not self.loop or self.stopping:
                return
            if self._video is not None:
                self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def _file_grabs(self) -> Iterator[Grab]:
        for path in self._files:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None or image.size == 0:
                yield Grab(None, reason=f"cannot decode {path.name}")
            else:
                yield Grab(_to_uint8(image))

    def _video_grabs(self) -> Iterator[Grab]:
        while not self.stopping:
            ok, image = self._video.read()
            if not ok:
                return
            if image.ndim == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            yield Grab(_to_uint8(image))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return cv2.convertScaleAbs(image, alpha=255.0 / max(float(image.max()), 1.0))
