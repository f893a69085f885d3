"""Background negatives: defect-free strip texture for training, and the background false-positive
figure (detections per megapixel on defect-free frames) for the threshold choice and the manifest.

Every NEU-DET / CR7-DET training image holds a defect, so a detector trained on them alone has
never been told what clean strip looks like and fires all over it. A plant fixes this with its
own defect-free frames (and rejected false alarms) as background samples. Here the simulator's
own texture generator (`cameras.textures.hot_texture` / `cold_texture`) stands in for those
frames. Targets of a negative are empty: zero heatmaps, no box cells, image-level label all-zero.

Seed families (each texture i is generated from `np.random.default_rng([FAMILY, i])`), all
disjoint from the simulator's runtime streams, which are `default_rng([seed, crc32(camera), 1|2])`
(three words whose first is the line's small seed, never one of the families below):

- TRAIN_FAMILY 987654: the textures training cuts its negative tiles from;
- CHOICE_FAMILY 987656: background frames the operating threshold is chosen against (with val);
- REPORT_FAMILY 987655: held-out background frames for the reported figure, used for nothing else.

Torch-free (numpy + OpenCV + `cameras.textures`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cameras.textures import cold_texture, hot_texture
from inspection.errors import SteelInspectError
from training.augment import AugmentConfig, augment

TRAIN_FAMILY = 987654
REPORT_FAMILY = 987655
CHOICE_FAMILY = 987656
TEXTURE_MAKERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "hot": hot_texture, "cold": cold_texture}
# Simulator-like frame geometry (demo line: 1600 px across, 1024 lines per frame); the texture's
# across-strip brightness profile spans the whole width, so tiles are cut from full-width frames.
FRAME_ROWS, FRAME_COLS = 1024, 1600
EVAL_TILE = 512  # as the worker's default tile_px


class NegativesError(SteelInspectError):
    """Background negatives cannot be made: unknown line type or a bad share / count."""


def _maker(line_type: str) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    if line_type not in TEXTURE_MAKERS:
        raise NegativesError(f"line_type: expected one of {sorted(TEXTURE_MAKERS)}, got {line_type!r}")
    return TEXTURE_MAKERS[line_type]


def negatives_per_epoch(share: float, positives: int) -> int:
    """Negative samples per epoch for `share` negatives per positive training image."""
    if not 0.0 <= share <= 4.0:
        raise NegativesError(f"negatives: expected a share per positive image in 0..4, got {share}")
    return int(round(share * positives))


class NegativePool:
    """Full-width defect-free strip textures (seed family TRAIN_FAMILY); `item` cuts a random tile
    and runs it through the same augmentation as the defect images."""

    def __init__(self, line_type: str, textures: int, cfg: AugmentConfig, family: int = TRAIN_FAMILY,
                 rows: int = FRAME_ROWS, cols: int = FRAME_COLS) -> None:
        if textures < 1:
            raise NegativesError(f"textures: expected >= 1, got {textures}")
        make = _maker(line_type)
        self.line_type, self.family, self.cfg = line_type, family, cfg
        self.textures = [make(np.random.default_rng([family, i]), rows, cols) for i in range(textures)]
        # room for the largest scale of the augmentation, so the window rarely needs border fill
        ow, oh = cfg.out_size
        self.cut = (min(cols, int(np.ceil(ow * cfg.scale[1] / cfg.scale[0]))),
                    min(rows, int(np.ceil(oh * cfg.scale[1] / cfg.scale[0]))))

    def tile(self, rng: np.random.Generator) -> np.ndarray:
        texture = self.textures[int(rng.integers(len(self.textures)))]
        cw, ch = self.cut
        x = int(rng.integers(0, texture.shape[1] - cw + 1))
        y = int(rng.integers(0, texture.shape[0] - ch + 1))
        return texture[y:y + ch, x:x + cw]

    def item(self, rng: np.random.Generator) -> np.ndarray:
        """One augmented `cfg.out_size` negative image (it has no boxes, before or after)."""
        image, boxes, _ = augment(self.tile(rng), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                  self.cfg, rng)
        return image

    def describe(self) -> dict[str, Any]:
        return {"source": f"cameras.textures.{_maker(self.line_type).__name__}",
                "textures": len(self.textures),
                "texture_size": [int(self.textures[0].shape[1]), int(self.textures[0].shape[0])],
                "seeds": f"np.random.default_rng([{self.family}, i]) for i in 0..{len(self.textures) - 1}",
                "tile_before_augmentation": list(self.cut)}


def background_tiles(line_type: str, frames: int, family: int, tile: int = EVAL_TILE) -> list[np.ndarray]:
    """Defect-free frames i = 0..frames-1 from `default_rng([family, i])`, cut into non-overlapping
    `tile` squares (the part of a frame beyond whole tiles is left out)."""
    if frames < 1:
        raise NegativesError(f"background frames: expected >= 1, got {frames}")
    make = _maker(line_type)
    tiles = []
    for i in range(frames):
        frame = make(np.random.default_rng([family, i]), FRAME_ROWS, FRAME_COLS)
        for y in range(0, FRAME_ROWS - tile + 1, tile):
            for x in range(0, FRAME_COLS - tile + 1, tile):
                tiles.append(np.ascontiguousarray(frame[y:y + tile, x:x + tile]))
    return tiles


def per_mpx(scores: Sequence[np.ndarray], tiles: Sequence[np.ndarray], threshold: float) -> float:
    """Detections at or above `threshold` per megapixel over `tiles` (scores: one array per tile)."""
    pixels = sum(t.size for t in tiles)
    return sum(int((s >= threshold).sum()) for s in scores) / (pixels / 1e6)


def background_report(scores: Sequence[np.ndarray], tiles: Sequence[np.ndarray], threshold: float,
                      frames: int, family: int, max_detections: int, line_type: str = "hot") -> dict[str, Any]:
    """The manifest's `metrics.background` entry for detection scores on `background_tiles(...)`."""
    counts = [int((s >= threshold).sum()) for s in scores]
    return {"detections_per_mpx": round(per_mpx(scores, tiles, threshold), 3),
            "detections": int(sum(counts)), "threshold": threshold, "frames": frames,
            "tiles": len(tiles), "tile": [EVAL_TILE, EVAL_TILE], "frame_size": [FRAME_COLS, FRAME_ROWS],
            "megapixels": round(sum(t.size for t in tiles) / 1e6, 3),
            # a tile at the model's detection cap hides further detections: the figure is then a floor
            "tiles_at_detection_cap": sum(c >= max_detections for c in counts),
            "source": f"cameras.textures.{_maker(line_type).__name__}",
            "seeds": f"np.random.default_rng([{family}, i]) for i in 0..{frames - 1}"}
