"""How a CPU worker runs the model so that its memory stays flat: one window per run, and every window
shape run before the worker says it is ready.

Why: ONNX Runtime's CPU memory arena keeps what it grew to, and where a run's tensors land depends on
the run's input shape. The first stage hands the model windows of many shapes (128-px steps from
256 px up to the whole frame), and the worker used to batch the windows of one shape, so new (shape,
count) pairs kept turning up long after the start, each touching arena pages no run had touched
before: in `bench soak` the worker grew 30 % after its warm-up. Every run frees all its tensors at its
end, so the next run of a shape finds the arena as the last one left it and fits in the same pages.
With one window per run the inputs are a short list (`model_shapes`: 84 for the demo's 1600 x 1024
frames) and running each of them (twice: a run that grows the arena can move where the shapes before
it land) leaves nothing new for the line to touch. Measured on the demo line's own windows (`README`,
Reliability): flat after the warm-up, and a lower peak, since the largest run is now one window.

A window of a shape not in the list (a coil's last, shorter frame) still runs; it may touch a few
new pages. Batching more windows per run (`[worker] cpu_batch`) brings back the growth.
"""

from __future__ import annotations

from collections.abc import Iterable

from inspection.tiling import WINDOW_STEP_PX


def window_sides(limit: int, min_px: int, step_px: int = WINDOW_STEP_PX) -> list[int]:
    """Every side `tiling.windows_around` can give a window in a frame side of `limit` px."""
    sides = {min(limit, min_px)}
    side = step_px
    while side < limit + step_px:
        if side > min_px:
            sides.add(min(limit, side))
        side += step_px
    return sorted(sides)


def model_shapes(frames: Iterable[tuple[int, int]], *, first_stage: str, tile_px: int, window_min_px: int
                 ) -> list[tuple[int, int]]:
    """Every (height, width) the frame inspector hands the model for frames of these (height, width):
    its windows, or its grid tiles (`first_stage` candidates or none); largest first."""
    shapes: set[tuple[int, int]] = set()
    for height, width in frames:
        if first_stage == "windows":
            low = min(window_min_px, tile_px)
            shapes.update((h, w) for h in window_sides(height, low) for w in window_sides(width, low))
        else:
            shapes.add((min(tile_px, height), min(tile_px, width)))
    return sorted(shapes, key=lambda s: (-s[0] * s[1], s))
