"""`bench e2e --explain`: each missed box gets the first pipeline step that loses it, judged with the
worker's own code on a tiny real ONNX model (bright blobs are defects; class 0 scores ~0.63)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspection.benchmarks._e2e_explain import FrameTrace
from inspection.candidates import CandidateSettings
from inspection.detector import Detector
from inspection.frame_inspector import FrameInspector, InspectorSettings
from inspection.registry import Registry
from tests.tiny_models import DARK, add_tiny_model, blob_value

CLASSES = ("dark_spot", "bright_spot")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    root = tmp_path_factory.mktemp("registry")
    manifest = add_tiny_model(Registry(root / "models"), root, classes=CLASSES, version="hot-x1",
                              operating_threshold=0.7)  # class 0 blobs (~0.63) fall below it
    return Detector(manifest, providers="cpu")


def _trace(detector: Detector, first_stage: str) -> FrameTrace:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(DARK, 2, (512, 768)), 0, 255).astype(np.uint8)
    image[40:60, 40:60] = blob_value(1, 2)  # found
    image[300:320, 600:620] = blob_value(0, 2)  # scored below its class's threshold
    image[100:120, 200:220] = blob_value(1, 2)  # in the overlap of two grid tiles
    settings = InspectorSettings(tile_px=256, tile_overlap_px=64, first_stage=first_stage,
                                 candidates=CandidateSettings(k_sigma=4.0))  # no window on plain noise
    inspector = FrameInspector(detector, settings)
    tiles, _ = inspector.plan(image)
    found = detector.detect([image[t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles], min_score=0.05)
    return FrameTrace(inspector, image, tiles, found)


@pytest.mark.parametrize(
    ("box", "stage", "cause"),
    [
        ((40, 40, 60, 60), "none", None),
        ((36, 36, 64, 64), "none", None),  # IoU 0.51: still the same defect
        ((30, 30, 70, 70), "none", "box_mismatch"),  # IoU 0.25: the box is too small for the truth
        ((600, 300, 620, 320), "none", "below_threshold"),
        ((100, 400, 140, 440), "none", "no_detection"),  # nothing there at all
        ((100, 400, 140, 440), "windows", "first_stage"),  # clean strip: no window covers it
        ((40, 40, 60, 60), "windows", None),
    ],
)
def test_first_cause_along_the_pipeline(detector: Detector, box: tuple[int, ...], stage: str,
                                        cause: str | None) -> None:
    trace = _trace(detector, stage)
    assert trace.fragment_cause(np.array(box, float), stage, 0.3) == cause


def test_trace_merges_like_the_worker(detector: Detector) -> None:
    trace = _trace(detector, "none")
    seen_twice = [b.tolist() for b in trace.boxes if b[0] >= 200 and b[2] <= 220]
    assert seen_twice == [[200.0, 100.0, 220.0, 120.0]] * 2  # two grid tiles saw the blob in their overlap
    assert sorted(b.tolist() for b in trace.merged) == [[40.0, 40.0, 60.0, 60.0], [200.0, 100.0, 220.0, 120.0]]


@pytest.mark.parametrize("first_stage", ["none", "windows"])
def test_a_frame_with_overlap_is_traced_in_its_new_rows_as_the_worker_reports_it(detector: Detector,
                                                                                first_stage: str) -> None:
    from inspection.frame import Frame, StreamKey

    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(DARK, 2, (32 + 512, 768)), 0, 255).astype(np.uint8)  # 32 rows of overlap on top
    image[72:92, 40:60] = blob_value(1, 2)  # rows 40..60 of the new rows
    image[8:24, 300:316] = blob_value(1, 2)  # wholly in the overlap: the previous frame's
    settings = InspectorSettings(tile_px=256, tile_overlap_px=64, first_stage=first_stage,
                                 candidates=CandidateSettings(k_sigma=4.0))
    inspector = FrameInspector(detector, settings)
    tiles, _ = inspector.plan(image, 32)
    found = detector.detect([image[t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles], min_score=0.05)
    trace = FrameTrace(inspector, image, tiles, found, overlap_rows=32)
    frame = Frame(StreamKey("L1", "hot", "top-1", "top"), "C1", 1, 1, 1, 0.0, 0.0, 1.0, 1.0, image, overlap_rows=32)
    [worker] = inspector.inspect([frame])
    assert sorted(b.tolist() for b in trace.merged) == sorted(list(d.box) for d in worker.defects) \
        == [[40.0, 40.0, 60.0, 60.0]]
    assert trace.fragment_cause(np.array((40, 40, 60, 60), float), first_stage, 0.3) is None


def test_explain_tables_print(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import sys

    from inspection.benchmarks._causes import cause_table as _table
    from inspection.benchmarks._e2e_explain import FALSE_CAUSES, MISSED_CAUSES, print_tables

    missed = _table({"inclusion": __import__("collections").Counter(below_threshold=3, no_detection=1)},
                    MISSED_CAUSES, 10)
    assert missed["total"] == 4 and missed["of_ground_truth"] == 10 and missed["by_cause"]["below_threshold"] == 3
    false = _table({}, FALSE_CAUSES, None)
    print_tables({"missed": missed, "false": false, "control": {"defects": 0}, "replay": {"frames": 1}}, sys.stdout)
    out = capsys.readouterr().out
    assert "missed defects by cause (4 of 10 ground-truth defects)" in out and "inclusion" in out


def test_a_defect_found_in_its_frame_is_lost_after_the_worker_for_one_reason() -> None:
    from inspection.benchmarks._e2e_explain import missed_cause

    assert missed_cause(["below_threshold", None], cut_by_seam=True, fragment_recorded=True) == "below_threshold"
    assert missed_cause([None, None], cut_by_seam=True, fragment_recorded=True) == "frame_seam"
    # recorded as found, then joined across a seam with another defect's fragment (the box grew)
    assert missed_cause([None], cut_by_seam=False, fragment_recorded=True) == "seam_joined"
    assert missed_cause([None], cut_by_seam=False, fragment_recorded=False) == "records"


def _gt(cls: str, box: tuple[float, ...]) -> dict:
    return {"coil": "C1", "camera": "top", "class": cls, "box": np.array(box, float), "seam": False, "rows": []}


def test_a_near_defect_record_inside_its_class_labelled_area_counts_as_a_fragment_of_it() -> None:
    from inspection.benchmarks._causes import share_inside
    from inspection.benchmarks._e2e_explain import _false_defects, _labels_overlapping
    from inspection.benchmarks._matching import best_matches

    # one crazing area labelled as two overlapping boxes, an inclusion apart
    gts = [_gt("crazing", (0, 0, 100, 60)), _gt("crazing", (50, 0, 150, 60)), _gt("inclusion", (300, 0, 320, 20))]
    records = {("C1", "top"): [
        ("crazing", np.array((0.0, 0.0, 100.0, 60.0))),  # matches the first box
        ("crazing", np.array((80.0, 0.0, 120.0, 20.0))),  # a piece of the area, IoU < 0.3 with both boxes
        ("inclusion", np.array((90.0, 0.0, 130.0, 20.0))),  # as much inside the crazing area, but another class
        ("crazing", np.array((305.0, 5.0, 340.0, 30.0))),  # crazing on the inclusion: near it, not in its own area
        ("crazing", np.array((500.0, 0.0, 520.0, 20.0))),  # plain strip
    ]}
    matches = best_matches(gts, records)
    causes, fragments = _false_defects(gts, matches, records, 0.3)
    assert causes["crazing"] == {"near_defect": 2, "plain_texture": 1} and causes["inclusion"] == {"near_defect": 1}
    assert fragments == {"crazing": 1}
    assert _labels_overlapping(gts) == {"crazing": {"boxes": 2, "overlapping": 2},
                                        "inclusion": {"boxes": 1, "overlapping": 0}}
    # the share is of the union of the class's boxes: half in each of two boxes is wholly inside
    assert share_inside(np.array((40.0, 0.0, 160.0, 60.0)), [gts[0]["box"], gts[1]["box"]]) == pytest.approx(
        110 / 120, abs=0.04)
    assert share_inside(np.array((0.0, 0.0, 10.0, 10.0)), []) == 0.0
