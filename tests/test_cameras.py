"""Camera sources: stream order and counters, simulator ground truth, replay, GenTL errors."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from cameras import open_source
from cameras.base import CameraSource, Grab, StripGeometry
from cameras.simulator import SimulatorSource, read_ground_truth
from inspection.config import load_config
from inspection.errors import SourceError
from inspection.frame import CoilEvent, Frame, StreamKey
from tests._camera_config import write_line_config

HOT = StreamKey("test-line", "hot", "cam-1", "top")
COLD = StreamKey("test-line", "cold", "cam-1", "top")


def simulate(
    key: StreamKey,
    datasets: Path | None,
    *,
    seed: int = 5,
    rate: float = 300.0,
    rows: int = 256,
    width: int = 640,
    coil_mm: float = 2000.0,
    gt: Path | None = None,
    coils: int = 1,
) -> list:
    geo = StripGeometry(width, rows, 1.0, 1.0, 0.0, 5.0, coil_mm)
    source = SimulatorSource(
        key,
        geo,
        strip_width_mm=width - 40.0,
        seed=seed,
        defects_per_100m=rate,
        datasets_dir=datasets,
        realtime=False,
        ground_truth=gt,
        max_coils=coils,
    )
    with source:
        return list(source)


def frames_of(messages: list) -> list[Frame]:
    return [m for m in messages if isinstance(m, Frame)]


def test_stream_order_counters_and_positions(tmp_path: Path) -> None:
    messages = simulate(HOT, tmp_path, coil_mm=1000.0, coils=2)  # 1000 mm / 256 lines: 4 frames, last short
    assert [m.seq for m in messages] == list(range(len(messages)))  # seq counts every message
    kinds = [m.kind if isinstance(m, CoilEvent) else "frame" for m in messages]
    assert kinds == (["coil_start"] + ["frame"] * 4 + ["coil_end"]) * 2
    first, second = messages[0].coil, messages[6].coil
    assert re.fullmatch(r"H26-\d{6}", first) and second != first
    coil1 = frames_of(messages[:6])
    assert [f.index for f in coil1] == [0, 1, 2, 3]
    assert [f.position_mm for f in coil1] == [0.0, 256.0, 512.0, 768.0]
    assert [f.height for f in coil1] == [256, 256, 256, 232]
    end = messages[5]
    assert (end.frames, end.dropped, end.length_mm) == (4, 0, 1000.0)


def test_cameras_of_one_line_see_the_same_coils_but_different_strip(tmp_path: Path) -> None:
    top = simulate(HOT, tmp_path, coils=2, coil_mm=600.0)
    bottom = simulate(StreamKey("test-line", "hot", "cam-2", "bottom"), tmp_path, coils=2, coil_mm=600.0)
    coils = [m.coil for m in top if isinstance(m, CoilEvent)]
    assert coils == [m.coil for m in bottom if isinstance(m, CoilEvent)]
    assert not np.array_equal(frames_of(top)[0].pixels, frames_of(bottom)[0].pixels)


def test_simulator_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    a = simulate(HOT, tmp_path, seed=3, gt=tmp_path / "a.jsonl")
    b = simulate(HOT, tmp_path, seed=3, gt=tmp_path / "b.jsonl")
    c = simulate(HOT, tmp_path, seed=4)
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(frames_of(a), frames_of(b), strict=True))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert not np.array_equal(frames_of(a)[0].pixels, frames_of(c)[0].pixels)


def _check_ground_truth_against_pixels(with_defects: list, background: list, rows: list[dict]) -> None:
    assert rows, "the run pasted no defect: raise the rate"
    frames, clean = frames_of(with_defects), frames_of(background)
    changed = np.zeros(0, bool)
    for frame, bg in zip(frames, clean, strict=True):
        diff = np.abs(frame.pixels.astype(int) - bg.pixels.astype(int))
        inside = np.zeros(diff.shape, bool)
        for row in (r for r in rows if r["frame_index"] == frame.index):
            assert row["seq"] == frame.seq and row["coil"] == frame.coil
            x1, y1, x2, y2 = (int(round(v)) for v in row["box_px"])
            assert row["along_mm"] == [
                frame.position_mm + row["box_px"][1],
                frame.position_mm + row["box_px"][3],
            ]
            assert 0 <= x1 < x2 <= frame.width and 0 <= y1 < y2 <= frame.height  # fully inside the frame
            assert diff[y1:y2, x1:x2].mean() > 3.0  # the box holds pasted pixels, not background
            inside[max(0, y1 - 24) : y2 + 24, max(0, x1 - 24) : x2 + 24] = True  # + dilation and feathering
        changed = np.concatenate([changed, (diff > 0)[~inside]])
    assert not changed.any()  # nothing was pasted outside the ground-truth boxes


def test_ground_truth_matches_pasted_dataset_defects(tmp_path: Path, datasets_dir: Path) -> None:
    gt = tmp_path / "gt.jsonl"
    with_defects = simulate(HOT, datasets_dir, gt=gt)
    background = simulate(HOT, datasets_dir, rate=0.0)
    rows = read_ground_truth(gt)
    assert {r["source"] for r in rows} == {"dataset"} and {r["split"] for r in rows} == {"test"}
    from inspection.datasets import read_split_file

    test_files = set(read_split_file("neu-det")["test"])
    assert {r["image"] for r in rows} <= test_files  # only test-split images are pasted
    _check_ground_truth_against_pixels(with_defects, background, rows)


def test_cold_line_pastes_cr7_defects(tmp_path: Path, datasets_dir: Path) -> None:
    gt = tmp_path / "gt.jsonl"
    with_defects = simulate(COLD, datasets_dir, gt=gt, rows=512, width=1024, coil_mm=2048.0, rate=200.0)
    background = simulate(COLD, datasets_dir, rows=512, width=1024, coil_mm=2048.0, rate=0.0)
    rows = read_ground_truth(gt)
    from inspection.datasets import DATASET_CLASSES

    assert {r["dataset"] for r in rows} == {"cr7-det"} and {r["class"] for r in rows} <= set(DATASET_CLASSES["cr7-det"])
    _check_ground_truth_against_pixels(with_defects, background, rows)


def test_procedural_fallback_without_datasets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gt = tmp_path / "gt.jsonl"
    with caplog.at_level(logging.WARNING):
        with_defects = simulate(HOT, tmp_path / "no-datasets-here", gt=gt)
    assert "PROCEDURAL" in caplog.text
    rows = read_ground_truth(gt)
    assert rows and {r["source"] for r in rows} == {"procedural"} and {r["dataset"] for r in rows} == {None}
    _check_ground_truth_against_pixels(with_defects, simulate(HOT, tmp_path / "none", rate=0.0), rows)


class _Scripted(CameraSource):
    """Replays a scripted list of grabs (None pixels: an incomplete buffer)."""

    def __init__(self, grabs: list[Grab], geometry: StripGeometry) -> None:
        super().__init__(HOT, geometry)
        self.grabs = grabs

    def _grabs(self):  # noqa: ANN202
        yield from self.grabs


def test_incomplete_grabs_are_counted_not_passed_on() -> None:
    geo = StripGeometry(64, 100, 1.0, 2.0)
    grabs = [
        Grab(np.zeros((100, 64), np.uint8)),
        Grab(None, reason="incomplete"),
        Grab(np.ones((100, 64), np.uint8)),
    ]
    messages = list(_Scripted(grabs, geo))
    frames = frames_of(messages)
    assert [f.index for f in frames] == [0, 2]  # the gap shows which frame is missing
    assert [f.position_mm for f in frames] == [0.0, 400.0]  # the lost frame still covered strip
    end = messages[-1]
    assert (end.frames, end.dropped, end.length_mm) == (3, 1, 600.0)


def test_position_from_line_speed_and_coil_cut_by_length() -> None:
    geo = StripGeometry(64, 100, 1.0, 1.0, speed_m_per_s=2.0, coil_length_mm=250.0, position_source="speed")
    t0 = 1_000_000_000
    grabs = [Grab(np.zeros((100, 64), np.uint8), captured_ns=t0 + i * 50_000_000) for i in range(4)]  # 50 ms apart
    messages = list(_Scripted(grabs, geo))
    frames = frames_of(messages)
    assert [f.position_mm for f in frames] == [0.0, 100.0, 200.0, 0.0]  # 2 m/s x 50 ms = 100 mm
    assert frames[3].coil != frames[0].coil and frames[3].index == 0


def test_stop_ends_a_whole_coil_with_its_coil_end_and_a_cut_one_without(caplog: pytest.LogCaptureFixture) -> None:
    # A coil_end counts the frames the camera captured: sent for a coil the stop cut, it made a 16 m stub of
    # a 120 m coil look fully inspected (`run --max-frames`: graded prime at 100 % coverage).
    for stop_after, whole in ((3, True), (2, False)):  # 768 mm coils of 256-line frames: 3 frames make one
        geo = StripGeometry(640, 256, 1.0, 1.0, 0.0, 5.0, 768.0)
        source = SimulatorSource(HOT, geo, strip_width_mm=600.0, defects_per_100m=0.0, realtime=False)
        got = []
        with source, caplog.at_level(logging.WARNING, logger="cameras.base"):
            for message in source:
                got.append(message)
                if isinstance(message, Frame) and len(frames_of(got)) == stop_after:
                    source.stop()
        events = [m for m in got if isinstance(m, CoilEvent)]
        if whole:
            assert [e.kind for e in events] == ["coil_start", "coil_end"]
            assert got[-1] is events[-1] and got[-1].frames == 3 and got[-1].length_mm == 768.0
        else:
            assert [e.kind for e in events] == ["coil_start"] and isinstance(got[-1], Frame)
            assert f"coil {events[0].coil} stopped after 512 of 768 mm: no coil_end" in caplog.text


def test_replay_folder_sorted_any_size_and_bad_files_counted(tmp_path: Path) -> None:
    folder = tmp_path / "C26-777001"
    folder.mkdir()
    sizes = [(120, 200), (80, 200), (120, 160)]
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), np.full((h, w, 3), 10 * (i + 1), np.uint8))
    (folder / "img_01b.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    line = load_config(write_line_config(tmp_path))
    with open_source(line, line.camera(), source="folder", folder=folder) as source:
        assert source.live is False  # replay waits for workers instead of dropping
        messages = list(source)
    frames = frames_of(messages)
    assert [f.pixels.shape for f in frames] == sizes
    assert [int(f.pixels[0, 0]) for f in frames] == [10, 20, 30] and frames[0].pixels.ndim == 2
    assert messages[0].coil == "C26-777001"  # one coil per folder, named after it
    end = messages[-1]
    assert (end.frames, end.dropped) == (4, 1) and [f.index for f in frames] == [0, 1, 3]


def test_replay_video_file(tmp_path: Path) -> None:
    video = tmp_path / "strip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 96))
    assert writer.isOpened()
    for i in range(7):
        writer.write(np.full((96, 160, 3), 30 * i, np.uint8))
    writer.release()
    line = load_config(write_line_config(tmp_path))
    with open_source(line, line.camera(), source="folder", folder=video, coil_length_m=0.3) as source:
        messages = list(source)
    frames = frames_of(messages)
    assert len(frames) == 7 and frames[0].pixels.shape == (96, 160)
    assert [round(float(f.pixels.mean()) / 30) for f in frames] == list(range(7))  # lossy codec, right order
    ends = [m for m in messages if isinstance(m, CoilEvent) and m.kind == "coil_end"]
    assert [e.frames for e in ends] == [4, 3]  # a coil ends with the frame that reaches 300 mm (4 x 96 mm)


def test_factory_rejects_unknown_options_and_missing_folder(tmp_path: Path) -> None:
    line = load_config(write_line_config(tmp_path, options="options = { bogus = 1 }"))
    with pytest.raises(SourceError, match="bogus"):
        open_source(line, line.camera())
    line = load_config(write_line_config(tmp_path))
    with pytest.raises(SourceError, match="folder"):
        open_source(line, line.camera(), source="folder")


def test_genicam_without_producer_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEEL_INSPECT_CTI", raising=False)
    line = load_config(write_line_config(tmp_path))
    with pytest.raises(SourceError, match="no GenTL producer configured"):
        open_source(line, line.camera(), source="genicam").open()
    with pytest.raises(SourceError, match="does not exist"):
        open_source(line, line.camera(), source="genicam", cti=str(tmp_path / "missing.cti")).open()


def test_mes_extract_matches_the_simulated_coils(tmp_path: Path) -> None:
    from cameras.mes import write_mes_extract
    from inspection.records.platform import normalise, read_json

    line = load_config(write_line_config(tmp_path, coil_length_m=20.0, defects_per_100m=0.0))
    with open_source(line, line.camera(), max_coils=3, ground_truth="") as source:
        coils = [m.coil for m in source if isinstance(m, CoilEvent) and m.kind == "coil_start"]
    path = write_mes_extract(line, tmp_path / "mes.json", coils=3)
    rows = [normalise(raw)[0] for _, raw in read_json(path)]  # the platform import accepts every row
    assert [r["coil_id"] for r in rows] == coils
    assert {r["width_mm"] for r in rows} == {line.strip_width_mm} and {r["length_m"] for r in rows} == {20.0}


def _virtual_gentl_producer() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("genicam")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "viky.cti"
    return path if path.is_file() else None


@pytest.mark.skipif(_virtual_gentl_producer() is None, reason="no virtual GenTL producer (genicam wheel's viky.cti)")
def test_genicam_source_through_a_virtual_gentl_producer(tmp_path: Path) -> None:
    line = load_config(write_line_config(tmp_path, coil_length_m=0.5))
    source = open_source(
        line, line.camera(), source="genicam", cti=str(_virtual_gentl_producer()), realtime=False, coil_length_m=0.5
    )
    messages = []
    with source:
        assert source.applied["Width"] == 640 and source.applied["Height"] == 256
        for message in source:
            messages.append(message)
            if isinstance(message, Frame) and len(frames_of(messages)) == 3:
                source.stop()
    frames = frames_of(messages)
    assert [f.pixels.shape for f in frames] == [(256, 640)] * 3 and frames[0].pixels.dtype == np.uint8
    assert [m.kind for m in messages if isinstance(m, CoilEvent)] == [
        "coil_start",
        "coil_end",
        "coil_start",
        "coil_end",
    ]
    assert [f.index for f in frames] == [0, 1, 0]  # 0.5 m coils of 256 mm frames


def test_coil_mix_gives_each_coil_one_density_on_every_camera(tmp_path: Path, datasets_dir: Path) -> None:
    # Bands of 0 and 1000 defects per 100 m: each coil is either clean or full, the same coil the same
    # on both surfaces (the draw depends on the seed and the coil id, not the camera), and over
    # 12 coils both bands occur.
    geo = StripGeometry(640, 256, 1.0, 1.0, 0.0, 5.0, 2000.0)
    bottom = StreamKey(line=HOT.line, line_type=HOT.line_type, camera="bottom-1", surface="bottom")
    per_camera = {}
    for key in (HOT, bottom):
        source = SimulatorSource(key, geo, strip_width_mm=600.0, seed=3, defects_per_100m=40.0, realtime=False,
                                 datasets_dir=datasets_dir, max_coils=12, coil_mix=[(0.5, 0.0), (0.5, 1000.0)],
                                 ground_truth=tmp_path / f"{key.camera}.jsonl")
        with source:
            coils = [m.coil for m in source if isinstance(m, Frame)]
        pasted = Counter(json.loads(line)["coil"] for line in (tmp_path / f"{key.camera}.jsonl").open())
        per_camera[key.camera] = {coil: pasted[coil] > 0 for coil in dict.fromkeys(coils)}
    assert per_camera[HOT.camera] == per_camera["bottom-1"]
    assert set(per_camera["bottom-1"].values()) == {True, False}
    with pytest.raises(SourceError, match="coil_mix"):
        SimulatorSource(HOT, geo, strip_width_mm=600.0, coil_mix=[(0.5, -1.0)])


@pytest.mark.parametrize("line_type", ["hot", "cold"])
def test_a_continuous_strip_has_no_step_at_the_seams(line_type: str) -> None:
    from cameras.textures import TextureBank

    for continuous in (False, True):
        rng = np.random.default_rng(3)
        bank = TextureBank(line_type, 400, 128, rng, continuous=continuous)
        pixels = np.concatenate([bank.frame(rng).astype(np.float32) for _ in range(12)])
        step = np.abs(np.diff(pixels, axis=0)).mean(axis=1)  # mean brightness change from one row to the next
        seams = np.arange(128, len(pixels), 128) - 1
        ratio = float(step[seams].mean()) / float(np.delete(step, seams).mean())
        if continuous:
            assert 0.8 < ratio < 1.25  # a seam looks like any other row boundary
        else:
            assert ratio > 2.5  # separate windows of texture: a step at every seam


def test_the_continuous_strip_changes_the_background_only(tmp_path: Path, datasets_dir: Path) -> None:
    runs = {}
    for continuous in (False, True):
        geo = StripGeometry(640, 256, 1.0, 1.0, 0.0, 5.0, 2000.0)
        gt = tmp_path / f"{continuous}.jsonl"
        source = SimulatorSource(HOT, geo, strip_width_mm=600.0, seed=5, defects_per_100m=300.0,
                                 datasets_dir=datasets_dir, realtime=False, ground_truth=gt, max_coils=1,
                                 seam_share=0.5, continuous_strip=continuous)
        with source:
            runs[continuous] = (frames_of(list(source)), gt.read_text())
    assert runs[True][1] == runs[False][1] and runs[True][1]  # the same defects in the same places
    assert not np.array_equal(runs[True][0][1].pixels, runs[False][0][1].pixels)


def test_fresh_texture_draws_every_frame_anew_and_changes_nothing_else(tmp_path: Path, datasets_dir: Path) -> None:
    # Frames cut from a bank of four tiles repeat its flakes all through the stream (on the demo line one
    # of them was an `unknown` defect on every coil); fresh texture is new in every frame.
    def stream(fresh: bool, name: str) -> tuple[list[Frame], str, SimulatorSource]:
        geo = StripGeometry(640, 256, 1.0, 1.0, 0.0, 5.0, 2000.0)
        gt = tmp_path / f"{name}.jsonl"
        source = SimulatorSource(HOT, geo, strip_width_mm=600.0, seed=5, defects_per_100m=300.0,
                                 datasets_dir=datasets_dir, realtime=False, ground_truth=gt, max_coils=2,
                                 seam_share=0.5, continuous_strip=True, fresh_texture=fresh)
        with source:
            return frames_of(list(source)), gt.read_text(), source

    bank, truth_bank, bank_source = stream(False, "bank")
    fresh, truth_fresh, fresh_source = stream(True, "fresh")
    again, _, _ = stream(True, "again")
    assert truth_fresh == truth_bank and truth_bank  # the same defects in the same places
    assert len(bank_source.bank.tiles) == 4 and fresh_source.bank.tiles == []  # no bank to repeat
    assert not any(np.array_equal(a.pixels, b.pixels) for a, b in zip(bank, fresh, strict=True))
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(fresh, again, strict=True))  # from the seed
    # the same kind of strip: brightness and contrast of the whole stream within a few grey levels
    both = [np.concatenate([f.pixels.ravel() for f in frames]).astype(np.float32) for frames in (bank, fresh)]
    assert abs(float(both[0].mean() - both[1].mean())) < 6 and abs(float(both[0].std() - both[1].std())) < 4


@pytest.mark.parametrize("line_type", ["hot", "cold"])
def test_fresh_texture_has_no_step_at_the_seams_either(line_type: str) -> None:
    from cameras.textures import TextureBank

    rng = np.random.default_rng(3)
    bank = TextureBank(line_type, 400, 128, rng, continuous=True, fresh_rng=np.random.default_rng(4))
    pixels = np.concatenate([bank.frame(rng).astype(np.float32) for _ in range(12)])
    step = np.abs(np.diff(pixels, axis=0)).mean(axis=1)
    seams = np.arange(128, len(pixels), 128) - 1
    assert 0.8 < float(step[seams].mean()) / float(np.delete(step, seams).mean()) < 1.25


def test_the_demo_line_draws_fresh_texture_and_bench_e2e_keeps_the_bank(tmp_path: Path) -> None:
    import argparse

    from inspection.benchmarks import e2e
    from inspection.benchmarks._line import scratch_line

    demo = load_config(None)
    assert demo.simulator.fresh_texture
    with open_source(demo, demo.cameras[0], max_coils=1) as source:
        assert source.describe()["fresh_texture"] is True
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    args = parser.parse_args(["--set", "simulator.seed=3"])
    pinned = scratch_line(None, tmp_path, **e2e.line_overrides(args, "windows"))
    assert pinned.simulator.fresh_texture is False and pinned.simulator.coil_mix == ()
    assert pinned.simulator.seed == 3  # --set still applies on top
