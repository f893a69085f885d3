"""Detector on a tiny real ONNX model: padding, clipping, thresholds, batching, validation, providers.

The behaviour tests run on each CPU backend (ONNX Runtime, and OpenVINO when installed): the
same results are expected whichever runs the model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import inspection.backends.onnxruntime as ort_backend
from inspection.backends import ProviderError, openvino_installed
from inspection.detector import Detections, Detector, DetectorError
from inspection.errors import ManifestError
from inspection.registry import Manifest, Registry
from tests.tiny_models import add_tiny_model, blob_image, blob_value, expected_score

CLASSES = ("dark_spot", "bright_spot")
CUDA_AND_CPU = ("CUDAExecutionProvider", "CPUExecutionProvider")
# What "auto" ends on without a GPU: OpenVINO when installed, else ONNX Runtime's CPU provider.
CPU_BACKEND = "OpenVINO CPU" if openvino_installed() else "CPUExecutionProvider"
BACKENDS = ["cpu", pytest.param("openvino", marks=pytest.mark.skipif(
    not openvino_installed(), reason="openvino not installed (pip install -e '.[openvino]')"))]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("registry")
    return add_tiny_model(Registry(root / "models"), root, classes=CLASSES, version="hot-t1",
                          operating_threshold=0.7)


@pytest.fixture(scope="module", params=BACKENDS)
def detector(manifest: Manifest, request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Detector:
    return Detector(manifest, providers=request.param, max_batch=2, engine_cache=tmp_path_factory.mktemp("cache"))


def test_finds_blobs_with_exact_boxes_classes_and_scores(detector: Detector) -> None:
    # 200 x 200 is not a multiple of 32: the runtime pads to 224 x 224.
    image = blob_image(200, 200, [((10, 12, 30, 20), 1), ((70, 100, 90, 120), 0)], num_classes=2)
    (found,) = detector.detect([image], min_score=0.5)
    assert found.class_names == ["bright_spot", "dark_spot"]  # sorted by score
    np.testing.assert_array_equal(found.boxes, np.array([[10, 12, 30, 20], [70, 100, 90, 120]], np.float32))
    expected = [expected_score(blob_value(1, 2)), expected_score(blob_value(0, 2))]
    np.testing.assert_allclose(found.scores, expected, rtol=1e-6)
    assert found.to_list()[0] == {"class": "bright_spot", "score": round(blob_value(1, 2) / 255, 6),
                                  "box": [10.0, 12.0, 30.0, 20.0]}


def test_default_threshold_is_the_operating_threshold(detector: Detector) -> None:
    image = blob_image(64, 64, [((2, 2, 8, 8), 0), ((40, 40, 50, 50), 1)])  # scores ~0.63 and ~0.88
    (default,) = detector.detect([image])
    assert default.class_names == ["bright_spot"]  # manifest threshold 0.7
    (low,) = detector.detect([image], min_score=0.6)
    assert len(low) == 2
    (everything,) = detector.detect([blob_image(64, 64)], min_score=0.0)
    assert len(everything) == 0  # empty output slots (score 0) are never detections


def test_per_class_operating_thresholds(tmp_path: Path) -> None:
    """A class the manifest gives its own threshold is judged by it; the others by the common one."""
    manifest = add_tiny_model(Registry(tmp_path / "models"), tmp_path, classes=CLASSES, version="hot-t2",
                              operating_threshold=0.7, operating_thresholds={"dark_spot": 0.6})
    assert manifest.class_thresholds == (0.6, 0.7)
    detector = Detector(manifest, providers="cpu")
    image = blob_image(64, 64, [((2, 2, 8, 8), 0), ((40, 40, 50, 50), 1)])  # scores ~0.63 and ~0.88
    (found,) = detector.detect([image])
    assert sorted(found.class_names) == ["bright_spot", "dark_spot"]  # dark_spot passes at 0.6, not at 0.7
    assert detector.passes(np.array([0.65, 0.65], np.float32), np.array([0, 1])).tolist() == [True, False]
    (strict,) = detector.detect([image], min_score=0.7)  # an explicit score overrides every class's threshold
    assert strict.class_names == ["bright_spot"]


@pytest.mark.parametrize("value", [{"no_such_class": 0.5}, {"dark_spot": 1.5}, {"dark_spot": True}, [0.5]])
def test_bad_per_class_thresholds_are_named(tmp_path: Path, value: object) -> None:
    with pytest.raises(ManifestError, match="operating_thresholds"):
        add_tiny_model(Registry(tmp_path / "models"), tmp_path, classes=CLASSES, version="hot-t3",
                       operating_thresholds=value)  # type: ignore[arg-type]


def test_the_lines_class_thresholds_replace_the_models(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`[worker.class_thresholds]`: a line raises or lowers a class's threshold on its own frames; the
    manifest (and so `evaluate`) keeps the model's, and the change is logged when the model loads."""
    manifest = add_tiny_model(Registry(tmp_path / "models"), tmp_path, classes=CLASSES, version="hot-t4",
                              operating_threshold=0.7)
    image = blob_image(64, 64, [((2, 2, 8, 8), 0), ((40, 40, 50, 50), 1)])  # scores ~0.63 and ~0.88
    with caplog.at_level(logging.INFO, logger="inspection.detector"):
        detector = Detector(manifest, providers="cpu", class_thresholds={"dark_spot": 0.6, "bright_spot": 0.9})
    assert detector.thresholds.tolist() == pytest.approx([0.6, 0.9])
    assert manifest.class_thresholds == (0.7, 0.7)
    (found,) = detector.detect([image])
    assert found.class_names == ["dark_spot"]  # 0.63 >= 0.6; 0.88 < 0.9
    assert "dark_spot 0.6 (model's 0.7), bright_spot 0.9 (model's 0.7)" in caplog.text


def test_a_line_threshold_for_a_class_the_model_lacks_is_logged_not_fatal(manifest: Manifest,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The thresholds belong to the line, so a model with other classes still runs (a tuning knob never
    stops a line); the warning names the class and the model's classes, which shows a misspelling."""
    with caplog.at_level(logging.WARNING, logger="inspection.detector"):
        detector = Detector(manifest, providers="cpu", class_thresholds={"inclusion": 0.35, "dark_spot": 0.8})
    assert detector.thresholds.tolist() == pytest.approx([0.8, 0.7])
    assert "model hot-t1 has no class 'inclusion'" in caplog.text and "dark_spot, bright_spot" in caplog.text


@pytest.mark.parametrize(("value", "message"), [({"dark_spot": 1.0}, "'dark_spot' must be a score between 0 and 1"),
                                                ({"dark_spot": True}, "'dark_spot' must be a score")])
def test_bad_line_class_thresholds_are_named(manifest: Manifest, value: dict,
                                                                    message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        Detector(manifest, providers="cpu", class_thresholds=value)


def test_boxes_are_clipped_to_the_original_image(detector: Detector) -> None:
    # The blob touches the right and bottom edges; replicate padding extends it to 224,
    # so the model's box reaches 224 and must come back clipped to 200.
    image = blob_image(200, 200, [((194, 196, 200, 200), 1)])
    (found,) = detector.detect([image])
    np.testing.assert_array_equal(found.boxes, np.array([[194, 196, 200, 200]], np.float32))


def test_batches_mixed_sizes_and_keeps_input_order(detector: Detector) -> None:
    images = [blob_image(64 + 32 * (i % 2), 96, [((4 + 8 * i, 4, 12 + 8 * i, 12), 1)]) for i in range(5)]
    together = detector.detect(images)
    one_by_one = [detector.detect([im])[0] for im in images]
    assert [d.boxes.tolist() for d in together] == [d.boxes.tolist() for d in one_by_one]
    assert [d.boxes[0, 0] for d in together] == [4 + 8 * i for i in range(5)]
    assert detector.detect([]) == []


@pytest.mark.parametrize(("images", "message"), [
    ([np.zeros((32, 32), np.float32)], r"images\[0\]: .* got float32 array of shape \(32, 32\)"),
    ([np.zeros((32, 32), np.uint8), np.zeros((3, 32, 32), np.uint8)], r"images\[1\]: .*shape \(3, 32, 32\)"),
    ([np.zeros((0, 32), np.uint8)], r"images\[0\]: expected a non-empty"),
    (["picture.png"], r"images\[0\]: .* got str"),
    (np.zeros((2, 32, 32), np.uint8), "expected a sequence .* got one uint8 array"),
])
def test_bad_images_are_named(detector: Detector, images: object, message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        detector.detect(images)  # type: ignore[arg-type]


@pytest.mark.parametrize("score", [-0.1, 1.5, "0.5", True])
def test_bad_min_score(detector: Detector, score: object) -> None:
    with pytest.raises(DetectorError, match="min_score"):
        detector.detect([np.zeros((32, 32), np.uint8)], min_score=score)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"boxes": np.zeros((1, 4), np.float64)}, "boxes: expected float32"),
    ({"scores": np.zeros(2, np.float32)}, r"scores: expected float32 \[1\]"),
    ({"labels": np.array([1], np.int32)}, "labels: expected int64"),
    ({"labels": np.array([5], np.int64)}, r"labels: expected 0\.\.1, got \[5\]"),
    ({"boxes": np.array([[5, 0, 1, 1]], np.float32)}, "x2 >= x1"),
])
def test_detections_validate_their_fields(kwargs: dict, message: str) -> None:
    fields = {"boxes": np.zeros((1, 4), np.float32), "scores": np.ones(1, np.float32),
              "labels": np.zeros(1, np.int64), "classes": CLASSES}
    with pytest.raises(DetectorError, match=message):
        Detections(**{**fields, **kwargs})


def test_model_without_contract_outputs_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "wrong",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("out", TensorProto.UINT8, ["N", 1, "H", "W"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    registry = Registry(tmp_path / "models")
    from tests.tiny_models import tiny_manifest
    manifest = registry.add(tmp_path / "wrong.onnx", tiny_manifest(version="hot-wrong"))
    with pytest.raises(ManifestError, match=r"missing outputs \['boxes', 'scores', 'labels'\]"):
        Detector(manifest, providers="cpu")


def test_auto_probe_on_this_machine_ends_on_cpu(manifest: Manifest) -> None:
    # No GPU here: whatever ONNX Runtime lists, what really runs is on the CPU.
    assert Detector(manifest, providers="auto").providers == [CPU_BACKEND]


# The GPU paths cannot run on this machine, so the next tests replace ONNX Runtime's provider
# list and session constructor (and nothing else) to check the probing logic itself.

class _FakeGpuSession:
    """A real CPU session that claims to run on the GPU provider it was asked for."""

    created: list[tuple[str, dict]] = []

    def __init__(self, path: str, sess_options: object, providers: list, enable_fallback: int) -> None:
        name, options = providers[0]
        _FakeGpuSession.created.append((name, options))
        self._real = _REAL_SESSION(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self._providers = [name, "CPUExecutionProvider"] if name != "CPUExecutionProvider" else [name]

    def get_providers(self) -> list[str]:
        return self._providers

    def __getattr__(self, attr: str) -> object:
        return getattr(self._real, attr)


_REAL_SESSION = ort.InferenceSession


@pytest.fixture()
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort_backend, "_failed_providers", {})
    _FakeGpuSession.created = []


def test_cuda_that_fails_to_start_falls_back_to_cpu(
        manifest: Manifest, monkeypatch: pytest.MonkeyPatch, fresh_probe: None,
        caplog: pytest.LogCaptureFixture) -> None:
    def session(path: str, sess_options: object, providers: list, enable_fallback: int) -> object:
        if providers[0][0] == "CUDAExecutionProvider":
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return _REAL_SESSION(path, sess_options=sess_options, providers=[providers[0][0]])

    monkeypatch.setattr(ort, "get_available_providers", lambda: [*CUDA_AND_CPU])
    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.WARNING, logger="inspection.detector"):
        detector = Detector(manifest, providers="auto")
    assert detector.providers == [CPU_BACKEND]
    assert "CUDAExecutionProvider failed to start" in caplog.text and "no CUDA-capable device" in caplog.text
    assert len(detector.detect([blob_image(64, 64, [((1, 1, 5, 5), 1)])])[0]) == 1


def test_cuda_listed_but_silently_on_cpu_is_not_reported_as_cuda(
        manifest: Manifest, monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    # onnxruntime-gpu without CUDA libraries starts the session on CPU without raising.
    def session(path: str, sess_options: object, providers: list, enable_fallback: int) -> object:
        return _REAL_SESSION(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: [*CUDA_AND_CPU])
    monkeypatch.setattr(ort, "InferenceSession", session)
    assert Detector(manifest, providers="auto").providers == [CPU_BACKEND]
    assert "CUDAExecutionProvider" in ort_backend._failed_providers


def test_first_gpu_provider_that_starts_wins_and_tensorrt_gets_fp16(
        manifest: Manifest, monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", *CUDA_AND_CPU])
    monkeypatch.setattr(ort, "InferenceSession", _FakeGpuSession)
    detector = Detector(manifest, providers="auto")
    assert detector.providers[0] == "TensorrtExecutionProvider"
    name, options = _FakeGpuSession.created[0]
    assert name == "TensorrtExecutionProvider" and options["trt_fp16_enable"] is True
    Detector(manifest, providers="auto", fp16=False)
    assert _FakeGpuSession.created[-1][1]["trt_fp16_enable"] is False
    assert Detector(manifest, providers="cpu").providers == ["CPUExecutionProvider"]


def test_unknown_provider_setting(manifest: Manifest) -> None:
    with pytest.raises(ProviderError, match="providers: expected 'auto', 'cpu', 'openvino' or a list"):
        Detector(manifest, providers="gpu")


def test_model_labels_beyond_the_manifest_classes_are_refused(tmp_path: Path) -> None:
    from tests.tiny_models import build_blob_model, tiny_manifest

    model = build_blob_model(tmp_path / "three.onnx", num_classes=3)  # emits labels 0..2
    manifest = Registry(tmp_path / "models").add(model, tiny_manifest(classes=("a", "b"), version="hot-2c"))
    detector = Detector(manifest, providers="cpu")
    image = blob_image(64, 64, [((2, 2, 8, 8), 2)], num_classes=3)
    with pytest.raises(ManifestError, match=r"labels \[2\] outside the 2 classes"):
        detector.detect([image])
