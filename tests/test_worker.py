"""The inference worker in-process, with a tiny real ONNX model and a real registry on disk."""

from __future__ import annotations

import dataclasses
import queue
from pathlib import Path

import numpy as np
import pytest

from inspection.config import LineConfig, load_config
from inspection.frame import CoilEvent, Frame, StreamKey
from inspection.registry import Registry
from inspection.results import FrameDropped, FrameResult
from inspection.worker import InferenceWorker
from tests.tiny_models import DARK, add_tiny_model, blob_value

SOURCE = StreamKey("demo-hot-1", "hot", "top-1", "top")


def _config(registry_root: Path, **worker: object) -> LineConfig:
    config = load_config()
    model = dataclasses.replace(config.model, registry=registry_root, name="hot")
    w = dataclasses.replace(config.worker, **{"providers": "cpu", "first_stage": "none", "reload_check_s": 0.01,
                                              "max_wait_ms": 5.0, **worker})
    return dataclasses.replace(config, model=model, worker=w)


def _frame(index: int, blob: bool = False) -> Frame:
    pixels = np.full((256, 512), DARK, np.uint8)
    if blob:
        pixels[100:110, 100:110] = blob_value(1, 2)
    return Frame(source=SOURCE, coil="C1", seq=index + 1, index=index, captured_ns=index,
                 position_mm=256.0 * index, offset_mm=0.0, mm_per_px_x=1.0, mm_per_px_y=1.0, pixels=pixels)


class Feed:
    """A camera stand-in: messages in a queue; `receive` waits up to the timeout like a socket."""

    def __init__(self, messages: list[object]) -> None:
        self.q: queue.Queue[object] = queue.Queue()
        for m in messages:
            self.q.put(m)

    def receive(self, timeout: float) -> object | None:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "models")
    add_tiny_model(reg, tmp_path, version="hot-a", activate=True)
    return reg


def test_frames_become_results_and_coil_end_follows_its_frames(registry: Registry) -> None:
    start = CoilEvent("coil_start", SOURCE, "C1", seq=0, time_ns=0)
    frames = [_frame(i, blob=(i == 2)) for i in range(5)]
    end = CoilEvent("coil_end", SOURCE, "C1", seq=6, time_ns=9, length_mm=1280.0, frames=5, dropped=0)
    feed, sent = Feed([start, *frames, end]), []
    worker = InferenceWorker(_config(registry.root, batch_size=3), registry, feed.receive, sent.append)
    stats = worker.run(should_stop=lambda: feed.q.empty() and not worker._pending and len(sent) >= 7)
    assert [type(m).__name__ for m in sent] == ["CoilEvent"] + ["FrameResult"] * 5 + ["CoilEvent"]
    results = [m for m in sent if isinstance(m, FrameResult)]
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [len(r.defects) for r in results] == [0, 0, 1, 0, 0]
    defect = results[2].defects[0]
    assert defect.cls == "bright_spot" and defect.severity in (1, 2, 3)
    assert defect.along_mm == pytest.approx(512.0 + 105.0)
    assert defect.crop_png and defect.crop_png.startswith(b"\x89PNG")
    assert {r.model_version for r in results} == {"hot-a"}
    assert stats.frames_inspected == 5 and stats.batches >= 2


def test_hot_reload_switches_between_batches_without_loss_or_duplicates(
    registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "b").mkdir()
    add_tiny_model(registry, tmp_path / "b", version="hot-b")
    feed, sent = Feed([]), []
    worker = InferenceWorker(_config(registry.root, batch_size=2), registry, feed.receive, sent.append)
    promoted, fed = False, 0
    # The new model loads in the background (the CPU warm-up runs every window shape first), so how
    # many frames pass before the switch depends on the machine's load: feed until results of the
    # new model have come back (at most 2,000 frames), then stop feeding and drain.
    limit = 2000

    def should_stop() -> bool:
        nonlocal promoted, fed
        results = [m for m in sent if isinstance(m, FrameResult)]
        if len(results) >= 10 and not promoted:
            registry.promote("hot-b", by="test", reason="hot reload under load")
            promoted = True
        switched = sum(r.model_version == "hot-b" for r in results) >= 5
        if fed < limit and not switched and feed.q.qsize() < 4:
            feed.q.put(_frame(fed))
            fed += 1
        return (switched or fed >= limit) and len(results) >= fed

    stats = worker.run(should_stop)
    results = [m for m in sent if isinstance(m, FrameResult)]
    assert sorted(r.index for r in results) == list(range(fed))  # none lost, none twice
    versions = [r.model_version for r in results]
    assert versions[0] == "hot-a" and versions[-1] == "hot-b"
    switch = versions.index("hot-b")
    assert set(versions[switch:]) == {"hot-b"}  # never back to the old model
    assert stats.reloads == 1 and stats.models == {"hot": "hot-b"}


def test_a_failing_model_reports_frames_as_dropped(registry: Registry) -> None:
    feed, sent = Feed([_frame(0), _frame(1)]), []
    worker = InferenceWorker(_config(registry.root, batch_size=2), registry, feed.receive, sent.append)
    worker._slot("hot").detector.detect = _boom  # type: ignore[method-assign]
    worker.run(should_stop=lambda: len(sent) >= 2)
    assert [type(m) for m in sent] == [FrameDropped, FrameDropped]
    assert "inspection failed: RuntimeError: GPU fell off" in sent[0].reason
    assert worker.stats.frames_failed == 2


def _boom(*_: object, **__: object) -> list[object]:
    raise RuntimeError("GPU fell off")


def test_the_lines_class_thresholds_decide_what_the_worker_reports(registry: Registry) -> None:
    """`[worker.class_thresholds.hot]`: the same frame's defect is reported at the model's threshold and
    not at a line threshold above its score."""
    found = []
    for thresholds in ({}, {"hot": {"bright_spot": 0.99}}):
        feed, sent = Feed([_frame(0, blob=True)]), []
        worker = InferenceWorker(_config(registry.root, batch_size=1, class_thresholds=thresholds), registry,
                                 feed.receive, sent.append)
        worker.run(should_stop=lambda sent=sent: len(sent) >= 1)
        found.append([d.cls for m in sent if isinstance(m, FrameResult) for d in m.defects])
    assert found == [["bright_spot"], []]


def test_a_broken_new_model_keeps_the_old_one(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    manifest = add_tiny_model(registry, tmp_path / "b", version="hot-b")
    feed, sent = Feed([_frame(0)]), []
    worker = InferenceWorker(_config(registry.root, batch_size=1), registry, feed.receive, sent.append)
    worker.run(should_stop=lambda: len(sent) >= 1)
    registry.promote("hot-b")
    Path(manifest.model_path).write_bytes(b"corrupt")  # broken after promotion: the load must refuse it
    feed.q.put(_frame(1))
    worker._last_reload_check = 0.0
    worker.run(should_stop=lambda: len(sent) >= 2)
    assert [m.model_version for m in sent if isinstance(m, FrameResult)] == ["hot-a", "hot-a"]


def test_a_model_of_the_other_line_type_is_refused_by_name(registry: Registry) -> None:
    """A configured version trained for hot strip does not inspect cold strip: the worker says so
    (frames of a line type it has no model for are reported dropped with that reason)."""
    from inspection.errors import ManifestError

    config = _config(registry.root, batch_size=1)
    cold = dataclasses.replace(config, type="cold", model=dataclasses.replace(config.model, name="hot-a"))
    worker = InferenceWorker(cold, registry, Feed([]).receive, [].append)
    with pytest.raises(ManifestError, match="model hot-a was trained for hot strip; frames of cold strip"):
        worker.load("cold")


# -- the CPU path: one window per run, every window shape run before the worker is ready ------------------

@pytest.mark.parametrize(("height", "width"), [(1024, 1600), (256, 512), (300, 700), (200, 1000)])
def test_the_warm_up_shapes_hold_every_window_the_first_stage_can_make(height: int, width: int) -> None:
    from inspection.cpu_runs import model_shapes
    from inspection.tiling import windows_around

    shapes = set(model_shapes([(height, width)], first_stage="windows", tile_px=512, window_min_px=256))
    rng = np.random.default_rng(height * width)
    for _ in range(300):
        x1, y1 = rng.uniform(0, width), rng.uniform(0, height)
        regions = [[x1, y1, min(width, x1 + rng.exponential(150)), min(height, y1 + rng.exponential(150))]
                   for _ in range(rng.integers(1, 4))]
        for tile in windows_around(np.array(regions), width, height, context_px=64, min_px=256):
            assert (tile.height, tile.width) in shapes, (tile, regions)


def test_a_cpu_worker_runs_one_window_at_a_time_in_shapes_it_ran_before_it_was_ready(registry: Registry) -> None:
    """Why (`inspection.cpu_runs`): ONNX Runtime's arena grows with every new (shape, count) a run brings;
    one window per run and every shape run at start leave the line nothing new to grow for."""
    from inspection.cpu_runs import model_shapes

    config = _config(registry.root, first_stage="windows", batch_size=2)
    config = dataclasses.replace(config, cameras=tuple(dataclasses.replace(c, frame_height_px=256, width_px=512)
                                                       for c in config.cameras))
    feed, sent = Feed([]), []
    worker = InferenceWorker(config, registry, feed.receive, sent.append)
    detector = worker.load("hot").detector
    # the frames of a coil but its first carry the demo's 128 overlap rows: those shapes are warmed too
    assert config.cameras[0].frame_shapes == {(256, 512), (384, 512)}
    expected = model_shapes([(256, 512), (384, 512)], first_stage="windows", tile_px=config.worker.tile_px,
                            window_min_px=256)
    assert detector.warmed_shapes == tuple(expected) and detector.max_batch == 1
    warmed = {detector._pad(np.zeros(shape, np.uint8)).shape for shape in expected}
    runs: list[tuple[int, ...]] = []
    real_run = detector.backend.run

    def watched(feed_: dict, names: list[str]) -> list[np.ndarray]:  # the real run, its input shapes noted
        runs.append(next(iter(feed_.values())).shape)
        return real_run(feed_, names)

    detector.backend.run = watched
    rng = np.random.default_rng(1)
    for index in range(6):
        frame = _frame(index)
        pixels = rng.normal(DARK, 2, frame.pixels.shape).clip(0, 255).astype(np.uint8)
        for _ in range(index % 3 + 1):  # 1-3 defects per frame: windows of several shapes, several per batch
            y, x = rng.integers(0, 246), rng.integers(0, 502)
            pixels[y:y + 10, x:x + 10] = blob_value(1, 2)
        feed.q.put(dataclasses.replace(frame, pixels=pixels))
    worker.run(should_stop=lambda: sum(isinstance(m, FrameResult) for m in sent) >= 6)
    assert runs and all(shape[0] == 1 for shape in runs), runs  # one window per run
    assert {shape[2:] for shape in runs} <= warmed, (runs, warmed)
