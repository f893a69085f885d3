"""A simulated line-scan camera over a moving hot or cold strip, with real defects pasted in.

The strip is cut into coils of ``coil_length_mm`` with deterministic ids (``H26-123456``);
every camera of a line built from the same seed sees the same coil ids, while background and
defects differ per camera (their random streams mix in the camera id). Background and
defects use separate random streams, so the same seed renders the same background whether or
not defects are pasted; this is how the tests check the ground truth against the pixels.

Defects arrive as a Poisson process along the strip (``defects_per_100m``, or per coil from
``coil_mix``: bands of (share of coils, defects per 100 m) drawn from the seed and the coil id, so
every camera of a coil sees the same density and a line shows clean, middling and bad coils), each one a real
labelled image of the line type's dataset split (or a procedural stand-in, see
`cameras.defects`). A pasted defect lies inside the strip's width and, by default, fully inside
one frame. With ``seam_share`` > 0 that share of the pasted defects is placed across the frame's
bottom seam instead -- the seam cuts one of its labelled boxes -- and the rest of the patch is
carried into the top of the next frame of the same coil (never across a coil end: on a coil's
last frame, or when the rest does not fit the next frame, the defect stays inside the frame).
The patch is blended once over both frames, so the two frames put together show exactly the
whole defect. The seam decisions use their own random stream, and the next frame's background is
rendered one frame ahead only when seams are on, so ``seam_share = 0`` gives the same pixels and
ground truth as before the option existed. The last frame of a coil is shorter when the coil
length is not a whole number of frames. With ``continuous_strip`` (the line config's default) each
frame's background continues the previous frame's without a step at the seam
(`cameras.textures.TextureBank`); the random draws are the same either way, so defects and ground
truth do not change with it. With ``fresh_texture`` every frame's background is generated anew
instead of cut from a bank of four tiles (`cameras.textures`: the bank repeats its flakes all through
the stream), from a random stream of its own: defects and ground truth do not change with it either.

Ground truth is written as JSON lines beside the stream, one row per labelled box and frame::

    {"line", "line_type", "camera", "surface", "coil", "frame_index", "seq", "defect", "class",
     "box_px": [x1, y1, x2, y2], "along_mm": [a1, a2], "across_mm": [c1, c2],
     "image", "dataset", "split", "source": "dataset" | "procedural", "patch_xy": [x, y][, "group"]}

``box_px`` is in the frame's pixels (clipped to the frame for a box cut by a seam); ``patch_xy`` is
where the top-left of the pasted image lies in the frame (y < 0 for the rest of a patch carried over
from the previous frame), so a benchmark can cut the pasted image back out; ``along_mm``
is from the coil head, ``across_mm`` from the drive-side edge. ``defect`` numbers the patches of
a frame (the rest of a patch carried over from the previous frame comes first). A box cut by a
seam has one row per frame it lies in, all with the same ``group``:
``"<coil>/<camera>/<frame_index>/<defect>/<box>"`` of its upper part (``box`` numbers the
patch's labelled boxes); rows without ``group`` are whole boxes. The file is truncated when the
source opens.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


@dataclass
class _Seam:
    """One patch pasted across a frame seam; `group` names it once its upper part is written."""

    group: str | None = None


@dataclass(frozen=True)
class _Placement:
    """A patch in a frame: top-left at (x, y) in the frame's pixels; y < 0 for the rest of a patch
    carried over from the previous frame, y + height > rows for one cut by the bottom seam."""

    patch: DefectPatch
    x: int
    y: int
    seam: _Seam | None = None


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
        seam_share: float = 0.0,
        coil_mix: Sequence[tuple[float, float]] = (),
        continuous_strip: bool = False,
        fresh_texture: bool = False,
    ) -> None:
        super().__init__(key, geometry, seed=seed)
        if geometry.coil_length_mm is None:
            raise SourceError("simulator: coil_length_mm is required")
        if defects_per_100m < 0:
            raise SourceError(f"defects_per_100m: expected >= 0, got {defects_per_100m}")
        if not 0.0 <= seam_share <= 1.0:
            raise SourceError(f"seam_share: expected a share between 0 and 1, got {seam_share}")
        if any(len(band) != 2 or band[0] <= 0 or band[1] < 0 for band in coil_mix):
            raise SourceError(f"coil_mix: expected (share > 0, defects per 100 m >= 0) bands, got {list(coil_mix)}")
        self.strip_width_mm = strip_width_mm
        self.defects_per_100m = defects_per_100m
        self.coil_mix = tuple((float(share), float(density)) for share, density in coil_mix)
        self.coil_density = defects_per_100m  # this coil's (coil_mix), set when a coil starts
        self.split = split
        self.datasets_dir = datasets_dir
        self.live = realtime  # paced like a real camera: it cannot wait for slow workers
        self.realtime = realtime
        self.ground_truth_path = ground_truth
        self.max_coils = max_coils
        camera_salt = zlib.crc32(key.camera.encode())
        self._bg_rng = np.random.default_rng([seed, camera_salt, 1])
        self._defect_rng = np.random.default_rng([seed, camera_salt, 2])
        self.seam_share = seam_share
        self.continuous_strip = continuous_strip
        self.fresh_texture = fresh_texture
        self._texture_rng = np.random.default_rng([seed, camera_salt, 5]) if fresh_texture else None
        self._seam_rng = np.random.default_rng([seed, camera_salt, 3])  # apart: the other streams stay as they were
        self._gt: IO[str] | None = None
        self.bank: TextureBank | None = None
        self.library: Any = None
        self.defects_pasted = 0
        self._warned_too_big = False

    def open(self) -> None:
        geo = self.geometry
        self.bank = TextureBank(self.key.line_type, geo.width_px, geo.frame_height_px, self._bg_rng,
                                continuous=self.continuous_strip, fresh_rng=self._texture_rng)
        if self.defects_per_100m > 0 or any(density > 0 for _, density in self.coil_mix):
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
            "coil_mix": [list(band) for band in self.coil_mix],
            "seam_share": self.seam_share,
            "continuous_strip": self.continuous_strip,
            "fresh_texture": self.fresh_texture,
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
            self.coil_density = self._density_of(coil)
            carried: list[_Placement] = []
            ahead: np.ndarray | None = None  # the next frame's background, when seams are on
            for start in range(0, total_lines, geo.frame_height_px):
                rows = min(geo.frame_height_px, total_lines - start)
                pixels = ahead if ahead is not None else self._background(rows, first, end)
                next_rows = min(geo.frame_height_px, total_lines - start - rows)
                ahead = self._background(next_rows, first, end) if self.seam_share > 0 and next_rows > 0 else None
                placed, carried = (self._place_defects(pixels, first, end, carried, ahead)
                                   if self.library is not None else ([], []))
                if self.realtime:
                    pacer.wait(geo.frame_period_s(rows))
                yield Grab(pixels, coil=coil, extra=placed)
                if self.stopping:
                    return

    def _density_of(self, coil: str) -> float:
        """Defects per 100 m on `coil`: its `coil_mix` band (from the seed and the coil id only, not
        the camera), or `defects_per_100m` without a mix."""
        if not self.coil_mix:
            return self.defects_per_100m
        draw = np.random.default_rng([self.seed, zlib.crc32(coil.encode()), 4]).random()
        total = sum(share for share, _ in self.coil_mix)
        for share, density in self.coil_mix:
            draw -= share / total
            if draw < 0:
                return density
        return self.coil_mix[-1][1]

    def _background(self, rows: int, first: int, end: int) -> np.ndarray:
        pixels = self.bank.frame(self._bg_rng, rows)
        pixels[:, :first] = OFF_STRIP_LEVEL
        pixels[:, end:] = OFF_STRIP_LEVEL
        return pixels

    def _place_defects(self, pixels: np.ndarray, first: int, end: int, carried: list[_Placement],
                       ahead: np.ndarray | None) -> tuple[list[_Placement], list[_Placement]]:
        """Paste this frame's defects; returns them (carried-over parts first) and the parts of
        defects cut by the bottom seam that are already pasted into `ahead`, the next frame."""
        rng = self._defect_rng
        frame_m = pixels.shape[0] * self.geometry.mm_per_px_along / 1000.0
        count = int(rng.poisson(self.coil_density / 100.0 * frame_m))
        placed: list[_Placement] = list(carried)
        below: list[_Placement] = []
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
            across_seam = ahead is not None and self._seam_rng.random() < self.seam_share
            for _attempt in range(8):  # avoid overlapping defects: their boxes must stay distinguishable
                x = int(rng.integers(first, end - w + 1))
                y = int(rng.integers(0, pixels.shape[0] - h + 1))
                seam_y = self._seam_y(patch, pixels.shape[0], ahead.shape[0]) if across_seam else None
                y = y if seam_y is None else seam_y
                if all(
                    x + w <= q.x or q.x + q.patch.image.shape[1] <= x or y + h <= q.y
                    or q.y + q.patch.image.shape[0] <= y
                    for q in placed
                ):
                    if seam_y is None:
                        paste(pixels, patch, x, y)
                        placed.append(_Placement(patch, x, y))
                    else:
                        seam = _Seam()
                        _paste_across(pixels, ahead, patch, x, y)
                        placed.append(_Placement(patch, x, y, seam))
                        below.append(_Placement(patch, x, y - pixels.shape[0], seam))
                    break
        return placed, below

    def _seam_y(self, patch: DefectPatch, rows: int, next_rows: int) -> int | None:
        """Top row for `patch` so that the bottom seam cuts one of its labelled boxes, or None."""
        box = patch.boxes[int(self._seam_rng.integers(len(patch.boxes)))]
        h = patch.image.shape[0]
        low, high = max(int(np.ceil(box[1])) + 1, 1), min(int(np.floor(box[3])), h - 1)
        if low >= high:
            return None  # a box too thin to cut with a row of it on each side
        cut = int(self._seam_rng.integers(low, high))  # patch rows [0, cut) above the seam
        return rows - cut if h - cut <= next_rows else None

    def _on_frame(self, frame: Frame, grab: Grab) -> None:
        rows = frame.pixels.shape[0]
        for number, placement in enumerate(grab.extra or ()):
            patch, x, y, seam = placement.patch, placement.x, placement.y, placement.seam
            if y >= 0:  # not the rest of a defect counted in the previous frame
                self.defects_pasted += 1
            if seam is not None and y >= 0:
                seam.group = f"{frame.coil}/{frame.source.camera}/{frame.index}/{number}"
            if self._gt is None:
                continue
            for i, (box, label) in enumerate(zip(patch.boxes, patch.labels, strict=True)):
                row = self._gt_row(frame, number, patch, box, label, x, y, clip=seam is not None)
                if row is None:
                    continue  # this box of a cut patch lies wholly in the other frame
                top, bottom = box[1] + y, box[3] + y
                if seam is not None and (top < 0 < bottom or top < rows < bottom):
                    row["group"] = f"{seam.group}/{i}"
                self._gt.write(json.dumps(row) + "\n")
        if self._gt is not None and grab.extra:
            self._gt.flush()

    def _gt_row(
        self, frame: Frame, number: int, patch: DefectPatch, box: np.ndarray, label: str, x: int, y: int,
        clip: bool = False,
    ) -> dict[str, Any] | None:
        x1, y1, x2, y2 = (round(float(v), 2) for v in (box[0] + x, box[1] + y, box[2] + x, box[3] + y))
        if clip:  # a patch cut by a seam: its part in this frame
            y1, y2 = max(y1, 0.0), min(y2, float(frame.pixels.shape[0]))
            if y2 <= y1:
                return None
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
            "patch_xy": [x, y],
        }


def _paste_across(pixels: np.ndarray, ahead: np.ndarray, patch: DefectPatch, x: int, y: int) -> None:
    """Blend `patch` with its top-left at (x, y) of `pixels` over the seam into `ahead` (the next
    frame), in one piece, so the two frames together show it exactly as one paste would."""
    h, w = patch.image.shape
    above = pixels.shape[0] - y
    region = np.concatenate([pixels[y:, x : x + w], ahead[: h - above, x : x + w]])
    paste(region, patch, 0, 0)
    pixels[y:, x : x + w] = region[:above]
    ahead[: h - above, x : x + w] = region[above:]


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
