"""A simulated line-scan camera over a moving hot or cold strip, with real defects pasted in.

The strip is cut into coils of ``coil_length_mm`` with deterministic ids (``H26-123456``);
every camera of a line built from the same seed sees the same coil ids, while background and
defects differ per camera (their random streams mix in the camera id). Background and
defects use separate random streams, so the same seed renders the same background whether or
not defects are pasted; this is how the tests check the ground truth against the pixels.

Defects arrive as a Poisson process along the strip (``defects_per_100m``), each one a real
labelled image of the line type's dataset split (or a procedural stand-in, see
`cameras.defects`). **A pasted defect always lies fully inside one frame** (and inside the
strip's width): its ground-truth boxes never straddle a frame boundary. The last frame of a
coil is shorter when the coil length is not a whole number of frames.

Ground truth is written as JSON lines beside the stream, one row per labelled box::

    {"line", "line_type", "camera", "surface", "coil", "frame_index", "seq", "defect", "class",
     "box_px": [x1, y1, x2, y2], "along_mm": [a1, a2], "across_mm": [c1, c2],
     "image", "dataset", "split", "source": "dataset" | "procedural"}

``box_px`` is in the frame's pixels; ``along_mm`` is from the coil head, ``across_mm`` from the
drive-side edge. The file is truncated when the source opens.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from cameras.base import CameraSource, Grab, Pacer, StripGeometry
from cameras.defects import DefectPatch, defect_library, paste
from cameras.textures import TextureBank
from inspection.errors import SourceError
from inspection.frame import Frame, StreamKey

log = logging.getLogger(__name__)
OFF_STRIP_LEVEL = 18  # what the camera sees beside the strip (rollers in shadow)


class SimulatorSource(CameraSource):
    """Moving strip for a hot or cold line; see the module docstring."""

    name = "simulator"

    def __init__(
        self,
        key: StreamKey,
        geometry: StripGeometry,
        *,
        strip_width_mm: float,
        seed: int = 0,
        defects_per_100m: float = 40.0,
        split: str = "test",
        datasets_dir: Path | None = None,
        realtime: bool = True,
        ground_truth: Path | None = None,
        max_coils: int | None = None,
    ) -> None:
        super().__init__(key, geometry, seed=seed)
        if geometry.coil_length_mm is None:
            raise SourceError("simulator: coil_length_mm is required")
        if defects_per_100m < 0:
            raise SourceError(f"defects_per_100m: expected >= 0, got {defects_per_100m}")
        self.strip_width_mm = strip_width_mm
        self.defects_per_100m = defects_per_100m
        self.split = split
        self.datasets_dir = datasets_dir
        self.live = realtime  # paced like a real camera: it cannot wait for slow workers
        self.realtime = realtime
        self.ground_truth_path = ground_truth
        self.max_coils = max_coils
        camera_salt = zlib.crc32(key.camera.encode())
        self._bg_rng = np.random.default_rng([seed, camera_salt, 1])
        self._defect_rng = np.random.default_rng([seed, camera_salt, 2])
        self._gt: IO[str] | None = None
        self.bank: TextureBank | None = None
        self.library: Any = None
        self.defects_pasted = 0
        self._warned_too_big = False

    def open(self) -> None:
        geo = self.geometry
        self.bank = TextureBank(self.key.line_type, geo.width_px, geo.frame_height_px, self._bg_rng)
        if self.defects_per_100m > 0:
            self.library = defect_library(self.datasets_dir, self.key.line_type, self.split)
        if self.ground_truth_path is not None:
            self.ground_truth_path.parent.mkdir(parents=True, exist_ok=True)
            self._gt = self.ground_truth_path.open("w", encoding="utf-8")
            log.info("simulator: ground truth -> %s", self.ground_truth_path)

    def close(self) -> None:
        if self._gt is not None:
            self._gt.close()
            self._gt = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "strip_width_mm": self.strip_width_mm,
            "seed": self.seed,
            "defects_per_100m": self.defects_per_100m,
            "split": self.split,
            "defect_source": getattr(self.library, "source", None),
            "realtime": self.realtime,
            "ground_truth": str(self.ground_truth_path) if self.ground_truth_path else None,
        }

    # -- geometry helpers -------------------------------------------------------------------
    def strip_columns(self) -> tuple[int, int]:
        """First and end column (exclusive) of the image that show strip, not background."""
        geo = self.geometry
        first = int(np.ceil(max(0.0, -geo.offset_mm) / geo.mm_per_px_across))
        end = int(np.floor((self.strip_width_mm - geo.offset_mm) / geo.mm_per_px_across))
        first, end = min(max(first, 0), geo.width_px), min(max(end, 0), geo.width_px)
        if end <= first:
            raise SourceError(
                f"simulator: the camera's {geo.width_px} px at offset {geo.offset_mm} mm do not "
                f"see the {self.strip_width_mm} mm strip"
            )
        return first, end

    def _grabs(self) -> Iterator[Grab]:
        if self.bank is None:
            raise SourceError("simulator: use it as a context manager (open() was not called)")
        geo = self.geometry
        first, end = self.strip_columns()
        pacer = Pacer(lambda: self.stopping)
        total_lines = int(round(geo.coil_length_mm / geo.mm_per_px_along))
        coils = 0
        while not self.stopping and (self.max_coils is None or coils < self.max_coils):
            coil = self.next_coil_id()
            coils += 1
            for start in range(0, total_lines, geo.frame_height_px):
                rows = min(geo.frame_height_px, total_lines - start)
                pixels = self.bank.frame(self._bg_rng, rows)
                pixels[:, :first] = OFF_STRIP_LEVEL
                pixels[:, end:] = OFF_STRIP_LEVEL
                placed = self._place_defects(pixels, first, end) if self.library is not None else []
                if self.realtime:
                    pacer.wait(geo.frame_period_s(rows))
                yield Grab(pixels, coil=coil, extra=placed)
                if self.stopping:
                    return

    def _place_defects(self, pixels: np.ndarray, first: int, end: int) -> list[tuple[DefectPatch, int, int]]:
        rng = self._defect_rng
        frame_m = pixels.shape[0] * self.geometry.mm_per_px_along / 1000.0
        count = int(rng.poisson(self.defects_per_100m / 100.0 * frame_m))
        placed: list[tuple[DefectPatch, int, int]] = []
        for _ in range(count):
            patch = self.library.sample(rng)
            h, w = patch.image.shape
            if h > pixels.shape[0] or w > end - first:
                if not self._warned_too_big:  # a coil's short tail frame, or frames smaller than the samples
                    log.info(
                        "simulator: a %dx%d defect image does not fit a %dx%d frame; skipped",
                        w,
                        h,
                        end - first,
                        pixels.shape[0],
                    )
                    self._warned_too_big = True
                continue
            for _attempt in range(8):  # avoid overlapping defects: their boxes must stay distinguishable
                x = int(rng.integers(first, end - w + 1))
                y = int(rng.integers(0, pixels.shape[0] - h + 1))
                if all(
                    x + w <= px or px + p.image.shape[1] <= x or y + h <= py or py + p.image.shape[0] <= y
                    for p, px, py in placed
                ):
                    paste(pixels, patch, x, y)
                    placed.append((patch, x, y))
                    break
        return placed

    def _on_frame(self, frame: Frame, grab: Grab) -> None:
        for number, (patch, x, y) in enumerate(grab.extra or ()):
            self.defects_pasted += 1
            if self._gt is None:
                continue
            for box, label in zip(patch.boxes, patch.labels, strict=True):
                self._gt.write(json.dumps(self._gt_row(frame, number, patch, box, label, x, y)) + "\n")
        if self._gt is not None and grab.extra:
            self._gt.flush()

    def _gt_row(
        self, frame: Frame, number: int, patch: DefectPatch, box: np.ndarray, label: str, x: int, y: int
    ) -> dict[str, Any]:
        x1, y1, x2, y2 = (round(float(v), 2) for v in (box[0] + x, box[1] + y, box[2] + x, box[3] + y))
        return {
            "line": frame.source.line,
            "line_type": frame.source.line_type,
            "camera": frame.source.camera,
            "surface": frame.source.surface,
            "coil": frame.coil,
            "frame_index": frame.index,
            "seq": frame.seq,
            "defect": number,
            "class": label,
            "box_px": [x1, y1, x2, y2],
            "along_mm": [
                round(frame.position_mm + y1 * frame.mm_per_px_y, 2),
                round(frame.position_mm + y2 * frame.mm_per_px_y, 2),
            ],
            "across_mm": [
                round(frame.offset_mm + x1 * frame.mm_per_px_x, 2),
                round(frame.offset_mm + x2 * frame.mm_per_px_x, 2),
            ],
            "image": patch.image_file,
            "dataset": patch.dataset,
            "split": patch.split,
            "source": patch.source,
        }


def read_ground_truth(path: Path) -> list[dict[str, Any]]:
    """The rows of a ground-truth JSON-lines file (for benchmarks and tests)."""
    rows = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise SourceError(f"{path}:{lineno}: not a JSON line: {exc}") from None
    return rows
