"""Frame inspection with a tiny real ONNX model: tiles, first stage, merge, millimetres."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.candidates import CandidateSettings
from inspection.detector import Detector
from inspection.frame import Frame, StreamKey
from inspection.frame_inspector import FrameInspector, InspectorSettings
from inspection.registry import Registry
from tests.tiny_models import DARK, add_tiny_model, blob_value

SOURCE = StreamKey("L1", "hot", "top-1", "top")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    root = tmp_path_factory.mktemp("registry")
    manifest = add_tiny_model(Registry(root / "models"), root, activate=True)
    return Detector(manifest, providers="cpu")


def _frame(pixels: np.ndarray, position_mm: float = 5000.0, offset_mm: float = 100.0) -> Frame:
    return Frame(source=SOURCE, coil="C1", seq=7, index=3, captured_ns=1, position_mm=position_mm,
                 offset_mm=offset_mm, mm_per_px_x=0.5, mm_per_px_y=2.0, pixels=pixels)


def _noisy_strip(shape: tuple[int, int] = (1024, 1600), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(DARK, 2, shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("first_stage", ["none", "candidates", "windows"])
def test_finds_blob_with_strip_coordinates(detector: Detector, first_stage: str) -> None:
    pixels = _noisy_strip()
    pixels[402:416, 1000:1020] = blob_value(1, 2)  # inside one 32-px model cell: x 992..1024, y 384..416
    # k 4: on this white-noise strip the default k 2.5 flags noise cells on purpose (recall first)
    inspector = FrameInspector(detector, InspectorSettings(first_stage=first_stage,
                                                           candidates=CandidateSettings(k_sigma=4.0)))
    [result] = inspector.inspect([_frame(pixels)])
    assert len(result.defects) == 1
    d = result.defects[0]
    assert d.cls == "bright_spot"
    assert d.box == (1000.0, 402.0, 1020.0, 416.0)
    assert d.along_mm == pytest.approx(5000.0 + 409.0 * 2.0)
    assert d.across_mm == pytest.approx(100.0 + 1010.0 * 0.5)
    assert (d.length_mm, d.width_mm, d.area_mm2) == pytest.approx((28.0, 10.0, 280.0))
    crop = cv2.imdecode(np.frombuffer(d.crop_png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (14 + 32, 20 + 32)  # the box plus the 16-px margin on each side
    if first_stage == "none":
        assert result.tiles_inspected == result.tiles_total
        assert result.model_px == 12 * 512 * 512  # the overlapping grid: 4 x 3 tiles
    elif first_stage == "candidates":
        assert 1 <= result.tiles_inspected < result.tiles_total
    else:  # one window around the blob's flagged cells plus context, far smaller than a 512-px tile
        assert result.tiles_inspected == 1 and 256 * 256 <= result.model_px <= 384 * 384


def test_blob_in_tile_overlap_is_one_defect(detector: Detector) -> None:
    pixels = _noisy_strip()
    pixels[10:20, 400:410] = blob_value(0, 2)  # x 400 lies in tiles starting at 0 and at 384
    [result] = FrameInspector(detector, InspectorSettings(first_stage="none")).inspect([_frame(pixels)])
    assert [d.cls for d in result.defects] == ["dark_spot"]


def test_clean_frame_has_no_defects_and_the_first_stage_skips_the_model(detector: Detector) -> None:
    strict = InspectorSettings(candidates=CandidateSettings(k_sigma=4.0))
    [result] = FrameInspector(detector, strict).inspect([_frame(_noisy_strip())])
    assert result.defects == ()
    assert result.tiles_inspected == 0 and result.model_px == 0
    [result] = FrameInspector(detector).inspect([_frame(_noisy_strip())])  # default k 2.5: noise cells pass
    assert result.defects == ()
    assert 0 < result.model_px < 12 * 512 * 512  # still less than the overlapping grid of "none"


def test_batch_of_frames_keeps_results_apart(detector: Detector) -> None:
    a, b = _noisy_strip(seed=1), _noisy_strip(seed=2)
    b[100:110, 100:110] = blob_value(0, 2)
    frames = [_frame(a), _frame(b, position_mm=7048.0)]
    results = FrameInspector(detector, InspectorSettings(first_stage="none")).inspect(frames)
    assert [len(r.defects) for r in results] == [0, 1]
    assert results[1].frame is frames[1]
    assert results[1].defects[0].along_mm == pytest.approx(7048.0 + 105.0 * 2.0)


def test_uint16_frames_are_shifted_to_8_bits(detector: Detector) -> None:
    pixels = (_noisy_strip().astype(np.uint16) << 4)
    pixels[100:110, 100:110] = blob_value(1, 2) << 4
    settings = InspectorSettings(first_stage="none", uint16_shift=4)
    [result] = FrameInspector(detector, settings).inspect([_frame(pixels)])
    assert [d.cls for d in result.defects] == ["bright_spot"]


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="first_stage: expected one of windows, candidates, none"):
        InspectorSettings(first_stage="all")


def test_tiny_model_fixture_is_real(tmp_path: Path, detector: Detector) -> None:
    assert Path(detector.manifest.model_path).stat().st_size > 0
    assert detector.providers == ["CPUExecutionProvider"]


def _overlapped(pixels: np.ndarray, overlap_rows: int) -> Frame:
    return Frame(source=SOURCE, coil="C1", seq=7, index=3, captured_ns=1, position_mm=5000.0, offset_mm=100.0,
                 mm_per_px_x=0.5, mm_per_px_y=2.0, pixels=pixels, overlap_rows=overlap_rows)


def test_overlap_rows_are_context_and_boxes_are_cut_at_the_seam(detector: Detector) -> None:
    # 112 rows of the previous frame on top of 512 new ones; a blob across the seam (rows 104..126, centre
    # in the new rows; inside one 32-px cell of the tiny model) is reported from the seam down, in the new
    # rows' coordinates and millimetres
    pixels = _noisy_strip((112 + 512, 1600))
    pixels[104:126, 580:600] = blob_value(1, 2)
    [result] = FrameInspector(detector, InspectorSettings(first_stage="none")).inspect([_overlapped(pixels, 112)])
    [d] = result.defects
    assert d.box == (580.0, 0.0, 600.0, 14.0)
    assert d.along_mm == pytest.approx(5000.0 + 7.0 * 2.0)
    assert d.length_mm == pytest.approx(28.0)
    crop = cv2.imdecode(np.frombuffer(d.crop_png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (14 + 16, 20 + 32)  # cut from the new rows: no margin above the seam


def test_a_box_centred_in_the_overlap_is_the_previous_frames(detector: Detector) -> None:
    pixels = _noisy_strip((112 + 512, 1600))
    pixels[96:118, 580:600] = blob_value(1, 2)  # centre row 107: mostly above the seam
    pixels[300:310, 900:910] = blob_value(0, 2)  # wholly in the new rows
    [result] = FrameInspector(detector, InspectorSettings(first_stage="none")).inspect([_overlapped(pixels, 112)])
    assert [(d.cls, d.box) for d in result.defects] == [("dark_spot", (900.0, 188.0, 910.0, 198.0))]


def test_views_wholly_in_the_overlap_are_not_inspected(detector: Detector) -> None:
    pixels = _noisy_strip((256 + 512, 1600))
    pixels[40:54, 600:620] = blob_value(1, 2)  # only in the previous frame's rows
    strict = InspectorSettings(candidates=CandidateSettings(k_sigma=4.0))
    [result] = FrameInspector(detector, strict).inspect([_overlapped(pixels, 256)])
    assert result.defects == () and result.tiles_inspected == 0  # its window lies above the seam
    [without] = FrameInspector(detector, strict).inspect([_overlapped(pixels, 0)])
    assert {d.cls for d in without.defects} == {"bright_spot"}  # the same pixels as new rows: found


@pytest.mark.parametrize(("per_line_type", "kept"), [({}, 3), ({"cold": 0.8}, 3), ({"hot": 0.8}, 2),
                                                    ({"hot": {"no such class": 0.8}}, 3)])
def test_nested_boxes_of_one_class_go_only_on_the_line_types_that_ask(detector: Detector, per_line_type: dict,
                                                                      kept: int) -> None:
    """`[worker] same_class_containment = { hot = 0.8 }`: a hot model's box lying inside a larger one of
    its class is dropped; on a cold line (small defects inside larger ones) the setting is left out."""
    assert detector.manifest.line_type == "hot"
    boxes = np.array([[0, 0, 200, 200], [20, 20, 60, 60], [300, 0, 400, 100]], np.float32)
    scores, labels = np.array([0.5, 0.9, 0.6], np.float32), np.array([1, 1, 1])
    views, cut = np.array([0, 0, 0]), np.zeros(3, bool)
    inspector = FrameInspector(detector, InspectorSettings(same_class_containment=per_line_type))
    merged = inspector.merge(boxes, scores, labels, views, cut)
    assert len(merged[0]) == kept
    assert [0, 0, 200, 200] in merged[0].tolist()  # the larger box stays, whatever the scores


def test_a_class_the_model_lacks_is_logged_once_not_at_every_batch(detector: Detector,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The worker makes a FrameInspector per batch: the per-class table is resolved once per model."""
    boxes, scores, labels = np.array([[0, 0, 10, 10]], np.float32), np.array([0.5], np.float32), np.array([0])
    settings = InspectorSettings(same_class_containment={"hot": {"a class no model has": 0.8}})
    with caplog.at_level(logging.WARNING, logger="inspection.frame_inspector"):
        for _ in range(3):  # three batches
            FrameInspector(detector, settings).merge(boxes, scores, labels, np.zeros(1, int), np.zeros(1, bool))
    said = [r for r in caplog.records if "a class no model has" in r.getMessage()]
    assert len(said) == 1 and "has no class" in said[0].getMessage()


def test_nested_boxes_go_only_for_the_classes_that_ask(detector: Detector) -> None:
    """`same_class_containment = { hot = { CLASS = 0.5 } }`: nested boxes of that class go, a small box
    inside a larger one of a class the table leaves out stays."""
    asked = detector.manifest.classes[0]  # labels 0; the other boxes are class 1
    boxes = np.array([[0, 0, 200, 200], [20, 20, 60, 60], [300, 0, 400, 100], [310, 10, 330, 30]], np.float32)
    scores, labels = np.array([0.5, 0.9, 0.6, 0.7], np.float32), np.array([0, 0, 1, 1])
    views, cut = np.zeros(4, int), np.zeros(4, bool)
    inspector = FrameInspector(detector, InspectorSettings(same_class_containment={"hot": {asked: 0.5}}))
    merged = inspector.merge(boxes, scores, labels, views, cut)
    assert sorted(merged[0].tolist()) == [[0, 0, 200, 200], [300, 0, 400, 100], [310, 10, 330, 30]]
