"""Strip background textures for the simulator, precomputed once and varied per frame.

Frames are rows along the strip x columns across it. Rolling stretches everything along the
strip, so texture features are elongated along the rows' direction (vertical in the image).

- hot strip: mid-grey oxide scale, blotchy and grainy, uneven brightness across and along;
- cold strip: bright and smooth, fine grinding lines along the strip, specular streaks.

Generating a texture takes tens of milliseconds (about 45 ms for a 1600 x 1088 hot frame on this
CPU), too slow for a camera pushed as fast as the line takes frames, so a small bank of tall tiles is
built at start; each frame is a random window of a random tile, optionally mirrored, with a random
gain and offset (one OpenCV pass, a few ms for 1600x1024). The price is repetition: a flake in the
middle of a tile is in about one frame in four, at the same place across the strip, for the whole
stream. On the demo line one dark flake of the bottom camera's bank was found as an `unknown` defect
104 times in 8 coils, on every one of them, at the same place across the strip. ``fresh_rng`` (the demo's
``[simulator] fresh_texture``) generates every frame's texture anew, from a random stream of its own,
as a real strip never shows the same flake twice; mirror, gain and offset are drawn as for a window.

A real strip is continuous from one frame to the next. With ``continuous`` (the simulator's
default), a frame's gain and offset move from the previous frame's to its own along its rows, and
its first `BLEND_ROWS` rows fade from the texture that lay below the previous frame's window in its
tile (so the strip goes on as it was) into its own window, keeping the texture's spread (no
smoother band). A first version faded in the previous frame's last rows mirrored at the seam: a
frame carrying those rows above its own (overlap) then showed mirror-symmetric patterns across
the seam, and the model found defects in 5 of them on 205 m. Without it every seam is a step in
brightness and texture that no camera produces: invisible while each frame was judged alone, but a
frame that carries the end of the previous one (`Frame.overlap_rows`) showed it to the model as a
long horizontal edge, and the line's false defects on plain texture rose from 12 to 50 on the same
strip (`bench e2e --split val --seed 11`, 1024-line frames with 128 rows of overlap).
"""

from __future__ import annotations

import cv2
import numpy as np

from inspection.errors import SourceError

BLEND_ROWS = 64  # rows over which a frame fades in from the previous one (`TextureBank(continuous=True)`)


def _noise(rng: np.random.Generator, rows: int, cols: int, cell_rows: float, cell_cols: float) -> np.ndarray:
    """Smooth zero-mean unit noise with features about cell_rows x cell_cols pixels."""
    small = rng.standard_normal((max(2, int(rows / cell_rows) + 2), max(2, int(cols / cell_cols) + 2)))
    big = cv2.resize(small.astype(np.float32), (cols, rows), interpolation=cv2.INTER_CUBIC)
    return big / max(float(big.std()), 1e-6)


def _across_profile(cols: int, rng: np.random.Generator, edge_drop: float) -> np.ndarray:
    """Brightness across the strip: darker towards the edges, with a slight random tilt."""
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)
    tilt = float(rng.uniform(-0.05, 0.05))
    return (1.0 - edge_drop * x**4 + tilt * x).astype(np.float32)


def hot_texture(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Scale-textured hot strip: blotches of darker scale, grain, uneven brightness."""
    level = float(rng.uniform(125, 150))  # NEU-DET images: mean grey ~140
    uneven = 16.0 * _noise(rng, rows, cols, 220, 160)  # slow brightness waves
    blotch = _noise(rng, rows, cols, 28, 9)  # scale flakes, elongated along the strip
    scale = -26.0 * np.clip(blotch - 0.6, 0, None) + 8.0 * np.tanh(blotch)
    grain = (
        cv2.GaussianBlur(rng.standard_normal((rows, cols)).astype(np.float32), (0, 0), 0.7) * 20.0
    )  # grain as fine as in NEU-DET
    img = (level + uneven + scale + grain) * _across_profile(cols, rng, 0.15)[None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


def cold_texture(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Smooth cold strip: bright, fine grinding lines along the strip, a few specular streaks."""
    level = float(rng.uniform(105, 125))  # CR7-DET images: mean grey ~115
    uneven = 7.0 * _noise(rng, rows, cols, 400, 300)
    grind = 5.0 * _noise(rng, rows, cols, 60, 1.5)  # fine lines along the rolling direction
    streaks = np.zeros((rows, cols), np.float32)
    x = np.arange(cols, dtype=np.float32)
    for _ in range(max(2, cols // 200)):
        centre, width = rng.uniform(0, cols), rng.uniform(1.0, 5.0)
        across = np.exp(-0.5 * ((x - centre) / width) ** 2)
        along = np.clip(0.5 + 0.5 * _noise(rng, rows, 1, 300, 1)[:, 0], 0, None)  # fades in and out
        streaks += float(rng.uniform(10, 35)) * along[:, None] * across[None, :]
    grain = rng.standard_normal((rows, cols)).astype(np.float32) * 2.0
    img = (level + uneven + grind + streaks + grain) * _across_profile(cols, rng, 0.06)[None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


class TextureBank:
    """A few tall tiles of strip texture; `frame` cuts a varied window out of one of them."""

    def __init__(self, line_type: str, width: int, height: int, rng: np.random.Generator, tiles: int = 4,
                 continuous: bool = False, fresh_rng: np.random.Generator | None = None) -> None:
        makers = {"hot": hot_texture, "cold": cold_texture}
        if line_type not in makers:
            raise SourceError(f"line_type: expected hot or cold, got {line_type!r}")
        if width <= 0 or height <= 0:
            raise SourceError(f"texture size: expected positive width and height, got {width}x{height}")
        self.height, self.width = height, width
        self.continuous = continuous
        self._make = makers[line_type]
        # continuous: BLEND_ROWS more rows below every window a frame can take, its texture's own continuation
        self._extra = BLEND_ROWS if continuous else 0
        # fresh_rng: the stream every frame's own texture is drawn from; no tiles are made then
        self._fresh = fresh_rng
        self.tiles = [] if fresh_rng is not None else [self._make(rng, 2 * height + self._extra, width)
                                                   for _ in range(tiles)]
        self._last: tuple[np.ndarray, bool, int, float, float] | None = None  # tile, flipped, end row, gain, offset

    def frame(self, rng: np.random.Generator, rows: int | None = None) -> np.ndarray:
        """A new writable uint8 array of `rows` x width (default: the bank's frame height)."""
        rows = self.height if rows is None else rows
        if not 0 < rows <= self.height:
            raise SourceError(f"rows: expected 1..{self.height}, got {rows}")
        if self._fresh is None:
            tile = self.tiles[int(rng.integers(len(self.tiles)))]
            start = int(rng.integers(0, 2 * self.height - rows + 1))
        else:  # a texture of its own, just tall enough (and its continuation below, for the next frame's blend)
            tile, start = self._make(self._fresh, rows + self._extra, self.width), 0
        window = tile[start : start + rows]
        flipped = rng.random() < 0.5
        if flipped:
            window = cv2.flip(window, 1)  # mirror across: edges stay symmetric
        gain, offset = float(rng.uniform(0.92, 1.08)), float(rng.uniform(-6, 6))
        if not self.continuous:
            return cv2.convertScaleAbs(window, alpha=gain, beta=offset)
        out = self._continued(window, gain, offset)
        self._last = (tile, flipped, start + rows, gain, offset)
        return out

    def _continued(self, window: np.ndarray, gain: float, offset: float) -> np.ndarray:
        """`window` with gain and offset, continuing the previous frame without a seam (module docstring)."""
        out = window.astype(np.float32)
        if self._last is None:
            return np.clip(np.rint(out * gain + offset), 0, 255).astype(np.uint8)
        tile, flipped, end, gain0, offset0 = self._last
        ramp = np.linspace(0.0, 1.0, out.shape[0], dtype=np.float32)[:, None]
        out = out * (gain0 + (gain - gain0) * ramp) + (offset0 + (offset - offset0) * ramp)
        n = min(BLEND_ROWS, out.shape[0])
        # what lay below the previous frame in its tile, as that frame showed it, fading into this frame
        before = tile[end:end + n].astype(np.float32)
        before = (before[:, ::-1] if flipped else before) * gain0 + offset0
        after = out[:n]
        mean_b, mean_a = before.mean(axis=0), after.mean(axis=0)  # per column: profile and streaks
        angle = ((np.arange(n, dtype=np.float32) + 0.5) / n * (np.pi / 2))[:, None]
        cos, sin = np.cos(angle), np.sin(angle)
        # cos^2 + sin^2 = 1: the two textures' spreads add up to one texture's spread at every row
        out[:n] = cos * (before - mean_b) + sin * (after - mean_a) + cos * cos * mean_b + sin * sin * mean_a
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
