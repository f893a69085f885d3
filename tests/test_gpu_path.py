"""The GPU path, checked on a CPU: engine cache folders, provider list and options, shape buckets,
warm-up before ready, the fp32 source of int8 copies, quiet probing, `doctor` and `bench gpu`.

No GPU exists here. The one mock is ONNX Runtime reporting one: `FakeGpuSession` is a real CPU
session that claims the first GPU provider it was asked for (and records what it was asked and
what it ran). Models are real tiny ONNX models; locks, folders and the dynamic loader are real.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import inspection.backends.onnxruntime as ort_backend
from inspection import gpu
from inspection.backends import openvino_installed
from inspection.cli import main as cli_main
from inspection.config import DEMO_CONFIG, load_config
from inspection.detector import Detector
from inspection.errors import ConfigError, SteelInspectError
from inspection.frame import Frame, StreamKey
from inspection.providers import (
    GpuSettings,
    engine_cache_dir,
    locked,
    prepare_engine_cache,
    provider_list,
    provider_options,
)
from inspection.registry import Manifest, Registry, load_manifest
from inspection.results import FrameResult
from inspection.shapes import ShapeBuckets, ShapeError
from inspection.worker import InferenceWorker
from tests.tiny_models import add_tiny_model, blob_image, build_blob_model, tiny_manifest

TRT, CUDA, CPU = gpu.TENSORRT, gpu.CUDA, gpu.CPU
NO_GPU_HERE = not gpu.cuda_devices().devices
CPU_BACKEND = "OpenVINO CPU" if openvino_installed() else CPU  # what "auto" ends on without a GPU
needs_no_gpu = pytest.mark.skipif(not NO_GPU_HERE, reason="checks what a machine without a GPU reports")
_REAL_SESSION = ort.InferenceSession


class FakeGpuSession:
    """A real CPU session claiming the first GPU provider of its list; records lists, options and runs."""

    created: list[list[tuple[str, dict]]] = []
    options: list[Any] = []
    runs: list[tuple[int, ...]] = []
    nodes: dict[str, dict[str, int]] | None = None  # the node assignment to report, else the real one
    delay: dict[str, float] = {}  # model path fragment -> seconds session creation takes (an engine build)

    def __init__(self, path: str, sess_options: Any = None, providers: Any = None, enable_fallback: int = 1) -> None:
        listed = [p if isinstance(p, tuple) else (p, {}) for p in providers]
        FakeGpuSession.created.append(listed)
        FakeGpuSession.options.append(sess_options)
        time.sleep(sum(s for fragment, s in FakeGpuSession.delay.items() if fragment in path))
        self._real = _REAL_SESSION(path, sess_options=sess_options, providers=[CPU])
        self._providers = [listed[0][0], CPU] if listed[0][0] != CPU else [CPU]

    def get_providers(self) -> list[str]:
        return self._providers

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        FakeGpuSession.runs.append(next(iter(feed.values())).shape)
        return self._real.run(names, feed)

    def get_provider_graph_assignment_info(self) -> Any:
        if FakeGpuSession.nodes is None:
            return self._real.get_provider_graph_assignment_info()
        return [SimpleNamespace(ep_name=ep, get_nodes=lambda ops=ops: [SimpleNamespace(op_type=op) for op, n in
                                                                       ops.items() for _ in range(n)])
                for ep, ops in FakeGpuSession.nodes.items()]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real, attr)


@pytest.fixture()
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_backend, "_failed_providers", {})


@pytest.fixture()
def fake_gpu(monkeypatch: pytest.MonkeyPatch, fresh_probe: None, tmp_path: Path) -> type[FakeGpuSession]:
    monkeypatch.setenv("STEEL_INSPECT_TRT_CACHE", str(tmp_path / "engines"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", FakeGpuSession)
    FakeGpuSession.created, FakeGpuSession.options, FakeGpuSession.runs = [], [], []
    FakeGpuSession.nodes, FakeGpuSession.delay = None, {}
    return FakeGpuSession


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def _add(registry: Registry, tmp_path: Path, version: str, max_detections: int = 20, activate: bool = False,
         **extra: Any) -> Manifest:
    """A tiny real model; `max_detections` changes the file (and its sha256), not the tensor names."""
    model = build_blob_model(tmp_path / f"{version}.onnx", max_detections=max_detections)
    return registry.add(model, {**tiny_manifest(version=version, max_detections=max_detections), **extra},
                        activate=activate)


SMALL = ShapeBuckets((256, 384, 512), 2)


# -- engine cache ---------------------------------------------------------------------------------

def test_engine_cache_has_one_folder_per_model_sha256_and_precision(registry: Registry, tmp_path: Path) -> None:
    one, two = _add(registry, tmp_path, "hot-1", 20), _add(registry, tmp_path, "hot-2", 21)
    assert one.sha256 != two.sha256  # same tensor names, different files: what TensorRT's cache key misses
    root = tmp_path / "cache"
    folders = {engine_cache_dir(root, m.sha256, p) for m in (one, two) for p in ("fp16", "fp32")}
    assert len(folders) == 4
    assert engine_cache_dir(root, one.sha256, "fp16") == root / one.sha256 / "fp16"
    with pytest.raises(SteelInspectError, match="expected a sha256"):
        engine_cache_dir(root, "../../etc", "fp16")


def test_engine_cache_folder_is_created_with_its_parents(tmp_path: Path) -> None:
    root = tmp_path / "fresh" / "host" / "cache"  # nothing of it exists, as on a new machine
    folder = prepare_engine_cache(root, "a" * 64, "fp32")
    assert folder.is_dir() and folder == root / ("a" * 64) / "fp32"
    settings = GpuSettings(cache_dir=folder)
    options = provider_options(TRT, settings)
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(folder)
    assert options["trt_engine_cache_enable"] is True and options["trt_timing_cache_enable"] is True


def test_one_builder_at_a_time_per_cache_folder(tmp_path: Path) -> None:
    folder = prepare_engine_cache(tmp_path, "b" * 64, "fp16")
    inside, events = threading.Event(), []

    def first() -> None:
        with locked(folder):
            events.append("first in")
            inside.set()
            time.sleep(0.3)
            events.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with locked(folder):  # a second open file description of the lock: waits like another process would
        events.append("second in")
    thread.join()
    assert events == ["first in", "first out", "second in"]


# -- provider list, options, threads --------------------------------------------------------------

def test_one_session_lists_tensorrt_then_cuda_then_cpu_with_their_options(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    manifest = _add(registry, tmp_path, "hot-1")
    detector = Detector(manifest, providers="auto", fp16=False, device_id=1, buckets=SMALL)
    assert detector.providers[0] == TRT and detector.on_gpu
    listed = fake_gpu.created[0]
    assert [name for name, _ in listed] == [TRT, CUDA, CPU]
    trt, cuda = listed[0][1], listed[1][1]
    assert trt["trt_fp16_enable"] is False and trt["trt_int8_enable"] is False and trt["device_id"] == 1
    assert trt["trt_profile_min_shapes"] == "image:1x1x256x256"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "image:2x1x512x512"
    # A cache folder is made only where TensorRT's libraries are (not here): no empty folders on CPU machines.
    assert ("trt_engine_cache_path" in trt) == gpu.check(TRT).can_try
    assert cuda == {"device_id": 1, "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}


def test_gpu_sessions_get_one_thread_that_does_not_spin(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    manifest = _add(registry, tmp_path, "hot-1")
    Detector(manifest, providers="auto", intra_op_threads=2, buckets=SMALL)
    options = fake_gpu.options[0]
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.record_ep_graph_assignment_info") == "1"
    assert options.log_severity_level == 2  # the provider's partition warnings are shown
    cpu = Detector(manifest, providers="cpu", intra_op_threads=2)
    assert cpu.session.get_session_options().intra_op_num_threads == 2


def test_provider_list_keeps_the_order_asked_and_ends_on_cpu() -> None:
    assert [p for p, _ in provider_list([CUDA, TRT, CPU], GpuSettings())] == [CUDA, TRT, CPU]
    assert provider_list([], GpuSettings()) == [(CPU, {})]


def test_node_assignment_is_recorded_and_convolutions_on_the_cpu_are_a_warning(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession], caplog: pytest.LogCaptureFixture) -> None:
    fake_gpu.nodes = {TRT: {"Conv": 10, "Relu": 9}, CPU: {"Conv": 1, "Shape": 2}}
    with caplog.at_level(logging.INFO, logger="inspection.detector"):
        detector = Detector(_add(registry, tmp_path, "hot-1"), providers="auto", buckets=SMALL)
    assert detector.nodes == fake_gpu.nodes
    assert "TensorrtExecutionProvider 19 nodes; CPUExecutionProvider 3 nodes (Shape 2, Conv 1)" in caplog.text
    assert any(r.levelno == logging.WARNING and "1 convolution(s) of hot-1 run on the CPU" in r.message
               for r in caplog.records)


# -- shape buckets ------------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "bucket"), [
    ((200, 200), (256, 256)), ((256, 300), (256, 384)), ((384, 512), (384, 512)), ((1, 512), (256, 512)),
    ((513, 100), None), ((100, 2000), None),
])
def test_windows_round_up_to_a_bucket(size: tuple[int, int], bucket: tuple[int, int] | None) -> None:
    assert ShapeBuckets().shape_for(*size) == bucket


def test_large_windows_are_cut_into_overlapping_views_of_the_largest_side() -> None:
    views = ShapeBuckets((256, 512)).split(700, 1100)
    assert all(v.width <= 512 and v.height <= 512 for v in views)
    covered = np.zeros((700, 1100), bool)
    for v in views:
        covered[v.y:v.y + v.height, v.x:v.x + v.width] = True
    assert covered.all()
    assert ShapeBuckets((256, 512)).shapes[0] == (512, 512)  # warm-up starts at TensorRT's optimum


@pytest.mark.parametrize("sides", [(512, 256), (256, 256), (0, 256), (256, 4096), ()])
def test_bad_buckets_are_refused(sides: tuple[int, ...]) -> None:
    with pytest.raises(ShapeError, match="shape buckets"):
        ShapeBuckets(sides)


def test_bucketed_detection_matches_the_unpadded_run(registry: Registry, tmp_path: Path) -> None:
    """The blob model only looks inside its 32-px cells, so padding and views must change nothing:
    a window padded to its bucket, and one cut into views (a blob in the views' overlap too)."""
    manifest = _add(registry, tmp_path, "hot-1")
    plain = Detector(manifest, providers="cpu")
    bucketed = Detector(manifest, providers="cpu", buckets=ShapeBuckets((256, 384, 512), 3, always=True))
    images = [blob_image(100, 150, [((10, 12, 30, 20), 1)]),
              blob_image(300, 260, [((200, 250, 230, 300), 0)]),  # touches the bottom edge
              blob_image(704, 1152, [((390, 40, 410, 50), 1), ((900, 580, 920, 590), 0), ((10, 690, 20, 704), 1)])]
    for ours, theirs in zip(bucketed.detect(images), plain.detect(images), strict=True):
        assert sorted(ours.boxes.tolist()) == sorted(theirs.boxes.tolist())
        assert sorted(ours.scores.tolist()) == sorted(theirs.scores.tolist())
    assert len(bucketed.detect(images)[2]) == 3  # the overlap blob, seen by two views, is one detection


def test_on_a_gpu_only_bucket_shapes_run_and_each_runs_before_the_detector_is_returned(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    detector = Detector(_add(registry, tmp_path, "hot-1"), providers="auto", buckets=SMALL)
    expected = [(2, 1, h, w) for h, w in SMALL.shapes]
    assert fake_gpu.runs == expected  # warm-up: every shape once, largest first, inside the constructor
    assert list(detector.warm_up_s) == [f"{h}x{w}" for h, w in SMALL.shapes]
    fake_gpu.runs.clear()
    found = detector.detect([blob_image(100, 100, [((4, 4, 9, 9), 1)]), blob_image(300, 500),
                             blob_image(704, 1152), blob_image(64, 64)])
    assert len(found) == 4 and len(found[0]) == 1
    assert set(fake_gpu.runs) <= set(expected)


# -- int8 copies on a GPU -----------------------------------------------------------------------

def _int8_pair(registry: Registry, tmp_path: Path, source_sha256: str | None = None) -> tuple[Manifest, Manifest]:
    source = _add(registry, tmp_path, "hot-src", 20)
    copy = _add(registry, tmp_path, "hot-q", 21, activate=True,
                quantization={"source_version": "hot-src", "source_sha256": source_sha256 or source.sha256})
    return source, copy


def test_an_int8_copy_runs_as_its_fp32_source_on_the_gpu(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    source, copy = _int8_pair(registry, tmp_path)
    detector = Detector(copy, providers="auto", buckets=SMALL)
    assert detector.manifest.version == "hot-src" and detector.requested.version == "hot-q"
    assert Detector(copy, providers="cpu").manifest.version == "hot-q"
    assert Detector(copy, providers="auto", buckets=SMALL, use_fp32_source=False).manifest.version == "hot-q"


def test_a_copy_with_a_crop_classifier_is_not_replaced_by_its_source(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    source = _add(registry, tmp_path, "hot-src", 20)
    copy = _add(registry, tmp_path, "hot-c", 22, quantization={"source_version": "hot-src",
                                                               "source_sha256": source.sha256},
                classifier={"source_version": "hot-src"})
    assert Detector(copy, providers="auto", buckets=SMALL).manifest.version == "hot-c"


def test_a_source_that_does_not_match_is_not_run(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession], caplog: pytest.LogCaptureFixture) -> None:
    _, copy = _int8_pair(registry, tmp_path, source_sha256="0" * 64)
    with caplog.at_level(logging.WARNING, logger="inspection.detector"):
        assert Detector(copy, providers="auto", buckets=SMALL).manifest.version == "hot-q"
    assert "names source hot-src with sha256 000000000000" in caplog.text


@needs_no_gpu
def test_without_a_gpu_the_int8_copy_runs_as_registered(registry: Registry, tmp_path: Path,
                                                         fresh_probe: None) -> None:
    _, copy = _int8_pair(registry, tmp_path)
    detector = Detector(copy, providers="auto")
    assert detector.providers == [CPU] and detector.manifest.version == "hot-q"


@needs_no_gpu
def test_without_a_gpu_a_copy_away_from_its_source_runs_without_a_warning(
        registry: Registry, tmp_path: Path, fresh_probe: None, caplog: pytest.LogCaptureFixture) -> None:
    """A copy checked from a folder of its own (the clean-strip check's candidate) has no source beside
    it: without a GPU that changes nothing, so it is said at INFO, not as a warning."""
    _, copy = _int8_pair(registry, tmp_path)
    alone = tmp_path / "candidate" / copy.version
    shutil.copytree(copy.model_path.parent, alone)
    with caplog.at_level(logging.INFO, logger="inspection.detector"):
        detector = Detector(load_manifest(alone / "manifest.json"), providers="auto")
    assert detector.manifest.version == "hot-q" and detector.providers == [CPU]
    said = [r for r in caplog.records if "which cannot be loaded" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO]


def _worker(registry: Registry, **worker: Any) -> InferenceWorker:
    config = load_config()
    model = dataclasses.replace(config.model, registry=registry.root, name="hot")
    w = dataclasses.replace(config.worker, providers="auto", first_stage="none", gpu_batch=2, **worker)
    return InferenceWorker(dataclasses.replace(config, model=model, worker=w), registry, lambda _: None,
                           lambda _: None)


def _frame(index: int = 0) -> Frame:
    pixels = blob_image(256, 512, [((100, 100, 110, 110), 1)])
    return Frame(source=StreamKey("demo-hot-1", "hot", "top-1", "top"), coil="C1", seq=index + 1, index=index,
                 captured_ns=index, position_mm=0.0, offset_mm=0.0, mm_per_px_x=1.0, mm_per_px_y=1.0, pixels=pixels)


def test_worker_results_name_the_model_that_ran(registry: Registry, tmp_path: Path,
                                                fake_gpu: type[FakeGpuSession]) -> None:
    source, _ = _int8_pair(registry, tmp_path)
    sent: list[Any] = []
    worker = _worker(registry)
    worker.send = sent.append
    slot = worker.load("hot")
    assert slot.detector.warm_up_s  # warmed up before `load` returns, so before the process says ready
    worker._inspect("hot", [_frame()])
    (result,) = sent
    assert isinstance(result, FrameResult) and len(result.defects) == 1
    assert (result.model_version, result.model_sha256) == ("hot-src", source.sha256)
    registry.promote("hot-src")  # the registry changed, but not the model for hot: no reload
    registry.promote("hot-q")
    assert slot.refresh() is False and slot.manifest.version == "hot-src"


def test_hot_reload_on_a_gpu_builds_the_new_model_beside_the_old_one(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    _add(registry, tmp_path, "hot-a", 20, activate=True)
    _add(registry, tmp_path, "hot-b", 21)
    slot = _worker(registry).load("hot")
    fake_gpu.delay = {"hot-b": 1.0}  # its "engine build" takes a second
    registry.promote("hot-b")
    assert slot.refresh() is False  # loading started in the background
    assert slot.manifest.version == "hot-a"
    assert len(slot.detector.detect([blob_image(64, 64, [((1, 1, 5, 5), 1)])])[0]) == 1  # old model still works
    loader = slot._loading
    assert loader is not None
    loader.join(30)
    assert slot.refresh() is True and slot.manifest.version == "hot-b"
    assert slot.detector.warm_up_s  # warmed up before the switch


# -- a machine without a GPU --------------------------------------------------------------------

@needs_no_gpu
def test_a_cpu_only_machine_probes_quietly(registry: Registry, tmp_path: Path, fresh_probe: None,
                                           capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    manifest = _add(registry, tmp_path, "hot-1")
    with caplog.at_level(logging.INFO, logger="inspection"):  # the probe logs from inspection.backends
        assert Detector(manifest, providers="auto").providers == [CPU_BACKEND]
    assert "onnxruntime" not in capfd.readouterr().err  # none of ONNX Runtime's red error lines
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for provider in set(ort.get_available_providers()) & {TRT, CUDA}:
        assert f"execution provider {provider} cannot start here: missing libcuda.so.1" in caplog.text


def test_library_names_and_where_they_come_from() -> None:
    cuda = gpu.required_libraries(CUDA)
    assert cuda[0] == "libcuda.so.1" and "libcudnn.so.9" in cuda and f"libcublas.so.{gpu.cuda_major()}" in cuda
    assert "libnvinfer.so.10" in gpu.required_libraries(TRT)
    check = gpu.ProviderCheck(TRT, True, ("libcuda.so.1", "libnvinfer.so.10", "libnvonnxparser.so.10"))
    assert check.why_not() == ("missing libcuda.so.1 (the NVIDIA driver, installed on the host); "
                               "libnvinfer.so.10, libnvonnxparser.so.10 (TensorRT 10: pip install "
                               "'tensorrt-cu13-libs>=10.13,<11', or its tar file's lib/ on LD_LIBRARY_PATH)")
    assert gpu.check(CPU).can_try


@pytest.mark.parametrize(("name", "configured", "devices", "device"), [
    ("worker-1", -1, 2, 0), ("worker-2", -1, 2, 1), ("worker-3", -1, 2, 0), ("worker-2", -1, 0, 0),
    ("worker-2", 1, 4, 1), ("worker", -1, 2, 0),
])
def test_one_gpu_worker_per_device_by_default(name: str, configured: int, devices: int, device: int) -> None:
    assert gpu.device_for_worker(name, configured, devices) == device


@pytest.mark.parametrize(("key", "value", "message"), [
    ("gpu_window_px", [512, 256], "ascending distinct sides"), ("gpu_window_px", [16], "ascending distinct"),
    ("gpu_window_px", "512", "expected an array"), ("gpu_device", -2, "expected -1"),
    ("gpu_batch", 0, "expected a number > 0"), ("gpu_fp16", "yes", "expected true or false"),
])
def test_gpu_config_keys_are_checked(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"worker.{key}: .*{message}"):
        load_config(None, {f"worker.{key}": value})


def test_gpu_config_defaults() -> None:
    w = load_config().worker
    assert (w.gpu_fp16, w.gpu_fp32_source, w.gpu_window_px, w.gpu_batch, w.gpu_device, w.gpu_engine_cache) == (
        True, True, (256, 384, 512), 16, -1, None)


# -- doctor and bench gpu -----------------------------------------------------------------------

def _config_file(tmp_path: Path, registry: Registry) -> Path:
    path = tmp_path / "line.toml"
    path.write_text(DEMO_CONFIG.read_text(encoding="utf-8").replace('registry = ""', f'registry = "{registry.root}"'),
                    encoding="utf-8")
    return path


@needs_no_gpu
def test_doctor_says_which_providers_start_and_why_not(registry: Registry, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    add_tiny_model(registry, tmp_path, version="hot-t", activate=True)
    config, out = _config_file(tmp_path, registry), tmp_path / "doctor.json"
    assert cli_main(["doctor", "--config", str(config), "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "CPUExecutionProvider: starts" in printed.out and "session check with model hot-t" in printed.out
    assert "CUDAExecutionProvider: cannot start: missing libcuda.so.1 (the NVIDIA driver" in printed.out
    assert "result: no GPU provider can start here" in printed.out
    assert "onnxruntime:" not in printed.err
    found = json.loads(out.read_text())
    assert found["gpu_ready"] == [] and found["providers"][CPU]["starts"] is True
    assert cli_main(["doctor", "--config", str(config), "--require-gpu"]) == 1


@needs_no_gpu
def test_bench_gpu_reports_no_gpu_cleanly(registry: Registry, tmp_path: Path) -> None:
    add_tiny_model(registry, tmp_path, version="hot-t", activate=True)
    out = tmp_path / "gpu.json"
    assert cli_main(["bench", "gpu", "--config", str(_config_file(tmp_path, registry)), "--json", str(out),
                     "--images", "2", "--frames", "0"]) == 0
    figures = json.loads(out.read_text())
    assert figures["status"] == "no GPU" and "libcuda.so.1" in figures["reason"]
    assert "matrix" not in figures  # nothing is claimed that was not measured
    names = figures["engine_cache_names"]
    assert names["folders_distinct"] if names["checked"] else "onnx package" in names["note"]


def test_tensorrt_can_leave_op_types_to_cuda() -> None:
    assert "trt_op_types_to_exclude" not in provider_options(TRT, GpuSettings())  # ONNX Runtime's default
    options = provider_options(TRT, GpuSettings(trt_exclude=("MaxPool", "Equal", "NonZero")))
    assert options["trt_op_types_to_exclude"] == "NonMaxSuppression,NonZero,RoiAlign,MaxPool,Equal"
    with pytest.raises(ConfigError, match="worker.gpu_trt_exclude_ops: expected ONNX op type names"):
        load_config(None, {"worker.gpu_trt_exclude_ops": ["Max Pool"]})


def test_versions_with_the_same_tensor_names_are_found(registry: Registry, tmp_path: Path) -> None:
    from inspection.benchmarks._gpu_checks import cache_key_check

    _add(registry, tmp_path, "hot-1", 20)
    _add(registry, tmp_path, "hot-2", 21)  # other weights (here: another constant), same names
    found = cache_key_check(registry, tmp_path / "engines")
    assert found["checked"] and found["same_tensorrt_cache_name"] == [["hot-1", "hot-2"]]
    assert found["folders_distinct"]


def test_bench_gpu_measurements_run_against_a_session_that_pretends_to_be_tensorrt(
        registry: Registry, tmp_path: Path, fake_gpu: type[FakeGpuSession]) -> None:
    """The figures here mean nothing (the session runs on the CPU); this runs the GPU branch's code."""
    from inspection.benchmarks import gpu as bench
    from inspection.benchmarks._gpu_collision import collision_check

    one = _add(registry, tmp_path, "hot-1", 20)
    _add(registry, tmp_path, "hot-2", 21)
    buckets = ShapeBuckets((256, 512), max(bench.BATCHES))
    images = [blob_image(200, 200, [((10, 10, 20, 20), 1)])]
    reference = Detector(one, providers="cpu").detect(images)
    figures = bench._variant(Detector, one, TRT, True, bench.PEAK_TEST, buckets, tmp_path / "engines",
                             (images, reference), ([], []), np.zeros((32, 1, 512, 512), np.uint8), 0.01, True)
    assert "error" not in figures, figures
    assert figures["providers"][0] == TRT and figures["left_to_cuda"] == ["MaxPool", "Equal"]
    assert figures["parity_vs_cpu_fp32"]["validation_images"]["same_share"] == 1.0
    assert set(figures["bare_mpx_per_s_by_batch"]) == {"8", "16", "32"}
    assert [name for name, _ in fake_gpu.created[1]] == [TRT, CUDA, CPU]  # [0] is the CPU reference
    check = collision_check(registry, buckets, tmp_path / "collision")
    assert check["checked"] and {check["a"], check["b"]} == {"hot-1", "hot-2"}
    assert set(check) >= {"shared_folder", "per_sha256_folders"}
