"""Tiling with overlap and merging of split defects, as tables of cases."""

from __future__ import annotations

import numpy as np
import pytest

from inspection.candidates import CandidateSettings, find_candidates
from inspection.tiling import (
    Tile,
    merge_boxes,
    suppress_nested,
    suppress_other_classes,
    tile_grid,
    tiles_touching,
    windows_around,
)


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap", "xs", "ys"),
    [
        (512, 512, 512, 64, [0], [0]),
        (200, 100, 512, 64, [0], [0]),
        (1024, 512, 512, 64, [0, 448, 512], [0]),
        (4096, 1024, 512, 64, [0, 448, 896, 1344, 1792, 2240, 2688, 3136, 3584], [0, 448, 512]),
        (1000, 600, 256, 32, [0, 224, 448, 672, 744], [0, 224, 344]),
    ],
)
def test_tile_grid_covers_frame_with_overlap(
    width: int, height: int, tile: int, overlap: int, xs: list[int], ys: list[int]
) -> None:
    tiles = tile_grid(width, height, tile, overlap)
    assert sorted({t.x for t in tiles}) == xs
    assert sorted({t.y for t in tiles}) == ys
    covered = np.zeros((height, width), bool)
    for t in tiles:
        assert t.x + t.width <= width and t.y + t.height <= height
        assert (t.width, t.height) == (min(tile, width), min(tile, height))
        covered[t.y:t.y + t.height, t.x:t.x + t.width] = True
    assert covered.all()


def test_every_defect_up_to_the_overlap_lies_inside_one_tile() -> None:
    tiles = tile_grid(4096, 1024, 512, 64)
    rng = np.random.default_rng(0)
    for _ in range(500):
        size = rng.integers(1, 65, 2)
        x, y = rng.integers(0, 4096 - size[0]), rng.integers(0, 1024 - size[1])
        inside = [t for t in tiles if t.x <= x and t.y <= y and x + size[0] <= t.x + t.width
                  and y + size[1] <= t.y + t.height]
        assert inside, (x, y, size)


def test_tile_grid_rejects_bad_overlap() -> None:
    with pytest.raises(ValueError, match="0 <= overlap < tile"):
        tile_grid(100, 100, 64, 64)


def test_tiles_touching_regions() -> None:
    tiles = [Tile(0, 0, 10, 10), Tile(10, 0, 10, 10), Tile(20, 0, 10, 10)]
    assert tiles_touching(tiles, np.array([[12, 2, 14, 4]])) == [tiles[1]]
    assert tiles_touching(tiles, np.array([[8, 2, 22, 4]])) == tiles
    assert tiles_touching(tiles, np.zeros((0, 4))) == []


@pytest.mark.parametrize(
    ("boxes", "scores", "labels", "kwargs", "expected_boxes", "expected_labels"),
    [
        # the same defect seen by two overlapping tiles: one box, union extent
        ([[100, 100, 140, 130], [102, 98, 141, 131]], [0.9, 0.8], [1, 1], {}, [[100, 98, 141, 131]], [1]),
        # one tile saw only part of a long scratch: contained, so merged
        ([[0, 0, 200, 20], [150, 2, 190, 18]], [0.7, 0.9], [2, 2], {}, [[0, 0, 200, 20]], [2]),
        # two different classes at the same place stay two defects
        ([[0, 0, 50, 50], [0, 0, 50, 50]], [0.7, 0.9], [0, 1], {}, [[0, 0, 50, 50], [0, 0, 50, 50]], [1, 0]),
        # far apart: unchanged, highest score first
        ([[0, 0, 10, 10], [100, 100, 110, 110]], [0.2, 0.9], [0, 0], {},
         [[100, 100, 110, 110], [0, 0, 10, 10]], [0, 0]),
        # a defect cut by a frame seam: the halves touch, merged only with touch_px
        ([[10, 0, 30, 40], [12, 40, 31, 70]], [0.5, 0.6], [3, 3], {},
         [[12, 40, 31, 70], [10, 0, 30, 40]], [3, 3]),
        ([[10, 0, 30, 40], [12, 40, 31, 70]], [0.5, 0.6], [3, 3], {"touch_px": 4}, [[10, 0, 31, 70]], [3]),
        # chains merge transitively
        ([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]], [0.1, 0.2, 0.3], [0, 0, 0], {},
         [[0, 0, 20, 10]], [0]),
        ([], [], [], {}, np.zeros((0, 4)), []),
    ],
)
def test_merge_boxes(boxes, scores, labels, kwargs, expected_boxes, expected_labels) -> None:  # noqa: ANN001
    out_boxes, out_scores, out_labels = merge_boxes(
        np.array(boxes), np.array(scores), np.array(labels), **kwargs
    )
    np.testing.assert_allclose(out_boxes, np.array(expected_boxes, dtype=np.float32).reshape(-1, 4))
    assert out_labels.tolist() == expected_labels
    if len(scores):
        best = max(s for s, lab in zip(scores, labels, strict=True) if lab == expected_labels[0])
        assert out_scores[0] == pytest.approx(best)


def test_merge_joins_views_not_neighbours_inside_one_view() -> None:
    """Inside one view the model's own boxes stand; across views a box cut by its view's edge joins the
    whole box of another view, and a small box beside a large one of another view stays apart."""
    boxes = np.array([[0, 0, 100, 100], [10, 10, 30, 30],  # view 0: a large defect and a small one inside it
                      [90, 0, 100, 100],  # view 1 (starting at x 90): the part of the large defect it saw
                      [200, 0, 260, 60], [210, 10, 220, 20]], np.float32)  # view 2 large, view 3 small, uncut
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    labels = np.zeros(5, np.int64)
    views = np.array([0, 0, 1, 2, 3])
    cut = np.array([False, False, True, False, False])
    out_boxes, _, _ = merge_boxes(boxes, scores, labels, views=views, cut=cut)
    assert sorted(map(tuple, out_boxes.tolist())) == sorted(
        [(0, 0, 100, 100), (10, 10, 30, 30), (200, 0, 260, 60), (210, 10, 220, 20)])
    # without views, containment merges the neighbours too (the old behaviour, kept for callers without views)
    assert len(merge_boxes(boxes, scores, labels)[0]) == 2


@pytest.mark.parametrize(
    ("kwargs", "kept"),
    [
        ({"iou": 0.0}, [0, 1, 2, 3, 4, 5]),  # off
        ({"iou": 0.5}, [0, 2, 3, 4, 5]),  # the lower-scoring box of another class on defect A goes
        ({"iou": 0.5, "containment": 0.8}, [0, 2, 3, 5]),  # and the other-class fragment inside defect B
        ({"iou": 0.0, "containment": 0.8}, [0, 2, 3, 5]),  # containment alone: A's class-1 box lies inside
        ({"iou": 0.95}, [0, 1, 2, 3, 4, 5]),  # A's two boxes overlap at IoU 0.9 only
    ],
)
def test_suppress_other_classes(kwargs, kept) -> None:  # noqa: ANN001
    """One class per defect: a lower-scoring box of another class on the same defect is dropped;
    boxes of one class (separate defects to the model's NMS) and separate defects stay."""
    boxes = np.array([[0, 0, 100, 100], [0, 0, 90, 100],  # defect A: class 0 and class 1
                      [200, 0, 300, 100],  # defect B, class 1
                      [210, 10, 220, 20],  # class 1 inside B: the same class, kept
                      [250, 50, 270, 70],  # class 0 inside B: a fragment called something else
                      [5, 0, 100, 100]], np.float32)  # class 0 again on A, IoU 0.95 with box 0: kept
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], np.float32)
    labels = np.array([0, 1, 1, 1, 0, 0])
    assert suppress_other_classes(boxes, scores, labels, **kwargs).tolist() == kept


def test_view_boxes_marks_boxes_cut_by_an_inner_view_edge() -> None:
    from inspection.detector import Detections
    from inspection.frame_inspector import view_boxes

    def det(*rows: tuple[float, float, float, float]) -> Detections:
        return Detections(np.array(rows, np.float32).reshape(-1, 4), np.full(len(rows), 0.9, np.float32),
                          np.zeros(len(rows), np.int64), ("a",))

    tiles = [Tile(0, 0, 512, 512), Tile(384, 0, 512, 512)]
    found = [det((500, 10, 512, 50), (0, 10, 20, 50)), det((0, 10, 140, 50))]
    boxes, _, _, views, cut, local = view_boxes(tiles, found, (512, 896))
    assert boxes.tolist() == [[500, 10, 512, 50], [0, 10, 20, 50], [384, 10, 524, 50]]
    assert views.tolist() == [0, 0, 1] and local.tolist() == [0, 1, 0]
    assert cut.tolist() == [True, False, True]  # the frame's own left edge does not cut


def _strip(seed: int = 0, shape: tuple[int, int] = (1024, 1600)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shading = np.linspace(90, 140, shape[1], dtype=np.float32)[None, :]
    return np.clip(shading + rng.normal(0, 4, shape), 0, 255).astype(np.uint8)


def test_candidates_find_a_dark_spot_and_nothing_on_clean_strip() -> None:
    strict = CandidateSettings(k_sigma=4.0)  # at the default 2.5 some noise cells pass on purpose (recall)
    clean = _strip()
    assert len(find_candidates(clean, strict)) == 0
    assert len(find_candidates(clean)) <= 12
    spotted = clean.copy()
    spotted[500:530, 800:840] = 40
    boxes = find_candidates(spotted, strict)
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0]
    assert x1 <= 800 and y1 <= 500 and x2 >= 840 and y2 >= 530
    assert (x2 - x1) * (y2 - y1) <= 256 * 256  # a few 64-px cells around the spot, not the frame


def test_candidate_settings_validated() -> None:
    with pytest.raises(ValueError, match="odd background_px"):
        CandidateSettings(background_px=10)
    with pytest.raises(ValueError, match="expected a 2-D image"):
        find_candidates(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize(
    ("regions", "width", "height", "kwargs", "expected"),
    [
        ([], 1600, 1024, {}, []),
        # one small region: a 256-px window centred on it
        ([[800, 500, 840, 530]], 1600, 1024, {}, [(692, 387, 256, 256)]),
        # near the frame corner: shifted inside the frame, never cut
        ([[0, 0, 20, 20]], 1600, 1024, {}, [(0, 0, 256, 256)]),
        # two regions whose grown boxes touch become one window (sizes rounded up to 128)
        ([[100, 100, 140, 140], [230, 100, 260, 140]], 1600, 1024, {}, [(0, 0, 384, 256)]),
        # far apart: two windows, in row order
        ([[1000, 600, 1040, 640], [100, 100, 140, 140]], 1600, 1024, {},
         [(0, 0, 256, 256), (892, 492, 256, 256)]),
        # a long scratch: the window follows it, rounded up to a multiple of 128
        ([[300, 0, 330, 1024]], 1600, 1024, {}, [(187, 0, 256, 1024)]),
        # a frame smaller than the minimum window: the whole frame
        ([[10, 10, 30, 30]], 200, 150, {}, [(0, 0, 200, 150)]),
        # no context, smaller minimum
        ([[800, 500, 840, 530]], 1600, 1024, {"context_px": 0, "min_px": 64, "step_px": 32}, [(788, 483, 64, 64)]),
    ],
)
def test_windows_around_regions(regions, width, height, kwargs, expected) -> None:  # noqa: ANN001
    windows = windows_around(np.array(regions, np.float32).reshape(-1, 4), width, height, **kwargs)
    assert [(t.x, t.y, t.width, t.height) for t in windows] == expected
    for t, (x1, y1, x2, y2) in zip(windows, sorted(regions, key=lambda r: (r[1], r[0])), strict=False):
        assert t.x >= 0 and t.y >= 0 and t.x + t.width <= width and t.y + t.height <= height
        if t.width < width and t.height < height:  # the region (plus context where it fits) is inside
            assert t.x <= x1 and t.y <= y1 and x2 <= t.x + t.width and y2 <= t.y + t.height


def test_windows_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="context_px >= 0"):
        windows_around(np.zeros((0, 4), np.float32), 100, 100, context_px=-1)


@pytest.mark.parametrize(("containment", "kept"), [
    (0.0, [0, 1, 2, 3, 4]),  # off: the model's boxes as they are
    (0.9, [0, 2, 3, 4]),     # box 1 lies wholly in box 0 (same class) and goes, whatever its score
    (0.5, [0, 2, 4]),        # box 3 lies 0.6 inside box 2 (same class)
])
def test_suppress_nested_drops_a_box_inside_a_larger_one_of_its_class(containment: float, kept: list[int]) -> None:
    boxes = np.array([[0, 0, 100, 100],     # 0 crazing, large
                      [10, 10, 40, 40],     # 1 crazing, wholly inside 0
                      [200, 0, 300, 100],   # 2 crazing
                      [270, 0, 320, 100],   # 3 crazing, 0.6 of it inside 2: (300 - 270) / 50
                      [20, 20, 50, 50]],    # 4 another class inside 0: not this rule's business
                     np.float32)
    labels = np.array([0, 0, 0, 0, 1])
    assert suppress_nested(boxes, labels, containment=containment).tolist() == kept


def test_suppress_nested_takes_a_share_per_class() -> None:
    """An array of shares by label: crazing (0) at 0.5 drops its nested boxes, inclusion (1) at 0 keeps
    a small inclusion inside a larger one (small defects lie inside larger ones of their class)."""
    boxes = np.array([[0, 0, 100, 100],     # 0 crazing, large
                      [10, 10, 40, 40],     # 1 crazing, wholly inside 0
                      [200, 0, 300, 100],   # 2 inclusion
                      [210, 10, 230, 30]],  # 3 inclusion, wholly inside 2
                     np.float32)
    labels = np.array([0, 0, 1, 1])
    assert suppress_nested(boxes, labels, containment=np.array([0.5, 0.0])).tolist() == [0, 2, 3]
    assert suppress_nested(boxes, labels, containment=np.array([0.0, 0.5])).tolist() == [0, 1, 2]
    assert suppress_nested(boxes, labels, containment=np.array([0.0, 0.0])).tolist() == [0, 1, 2, 3]
    assert suppress_nested(boxes[:0], labels[:0], containment=np.array([0.5, 0.5])).tolist() == []


def test_suppress_nested_keeps_boxes_of_equal_size_and_single_boxes() -> None:
    twins = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)  # the same box twice: neither is the larger
    assert suppress_nested(twins, np.array([0, 0]), containment=0.9).tolist() == [0, 1]
    assert suppress_nested(twins[:1], np.array([0]), containment=0.9).tolist() == [0]
