"""An int8 copy's own OpenVINO quantization (`training.quantize_openvino`): registered beside the copy's
model.onnx, run by OpenVINO in its place under "auto" and "openvino", refused when its files do not
match the manifest, and never an escape from the version folder.

The model here is a small real detector (the training code's network, random weights) quantized both
ways on random calibration images; what the copy costs in accuracy is measured on dataset images by
`steel-inspect quantize` (its manifest) and checked on the shipped model in tests/test_openvino.py."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from inspection.detector import Detector
from inspection.errors import ManifestError
from inspection.gpu import CPU
from inspection.manifest import file_sha256, load_manifest
from inspection.registry import Manifest, Registry, RegistryError
from training.quantize_openvino import BIN, XML, missing_packages

pytestmark = pytest.mark.skipif(bool(missing_packages()), reason="nncf and openvino come with the train extra")

OPENVINO = "OpenVINO CPU"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small detector exported to ONNX, its ONNX Runtime int8 copy and its OpenVINO copy, in one folder."""
    torch = pytest.importorskip("torch", reason="the `train` extra builds this model")
    from training.export import export_onnx
    from training.model import Detector as TorchDetector
    from training.quantize import quantize_file
    from training.quantize_openvino import quantize_for_openvino

    folder = tmp_path_factory.mktemp("copy")
    torch.manual_seed(3)
    model = TorchDetector(2, stride=8).eval()
    with torch.no_grad():
        model.heat_head[-1].bias.fill_(0.0)  # scores around 0.5: detections to compare
    fp32 = export_onnx(model, folder / "fp32" / "model.onnx")
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(6)]
    quantize_file(fp32, folder / "model.onnx", calibration)
    entry = quantize_for_openvino(fp32, folder, calibration)
    manifest = {"schema": 1, "version": "hot-q1", "line_type": "hot", "model_file": "model.onnx",
                "classes": ["a", "b"], "operating_threshold": 0.3, "sha256": file_sha256(folder / "model.onnx"),
                "input": {"name": "image", "dtype": "uint8", "channels": 1, "size_multiple": 32},
                "outputs": {"max_detections": 100},
                "quantization": {"source_version": "hot-q0", "source_sha256": file_sha256(fp32)}, "openvino": entry}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def _add(registry: Registry, work: Path, **changes: object) -> Manifest:
    manifest = json.loads((work / "manifest.json").read_text(encoding="utf-8"))
    manifest["openvino"].update(changes)
    return registry.add(work / "model.onnx", manifest, extra_files={XML: work / XML, BIN: work / BIN})


def test_quantize_for_openvino_writes_an_ir_and_names_it(work: Path) -> None:
    entry = json.loads((work / "manifest.json").read_text(encoding="utf-8"))["openvino"]
    assert (entry["model_file"], entry["weights_file"]) == (XML, BIN)
    assert entry["sha256"] == file_sha256(work / XML) and entry["weights_sha256"] == file_sha256(work / BIN)
    assert entry["tool"].startswith("nncf ") and entry["calibration_images"] == 6
    assert "FakeQuantize" in (work / XML).read_text(encoding="utf-8")  # really quantized, not a plain conversion


def test_openvino_runs_the_copy_and_onnxruntime_the_int8_file(work: Path, tmp_path: Path) -> None:
    manifest = _add(Registry(tmp_path / "models"), work)
    folder = manifest.model_path.parent
    assert (folder / XML).is_file() and (folder / BIN).is_file()  # copied in with the version
    image = np.random.default_rng(1).integers(0, 256, (96, 128), dtype=np.uint8)
    auto = Detector(manifest, providers="auto", engine_cache=tmp_path / "cache")
    named = Detector(manifest, providers="openvino", engine_cache=tmp_path / "cache")
    onnxruntime = Detector(manifest, providers="cpu")
    for detector in (auto, named):
        assert detector.providers == [OPENVINO] and detector.backend.model_path == folder / XML
    assert onnxruntime.providers == [CPU]
    on_copy, on_file = auto.detect([image], min_score=0.05)[0], onnxruntime.detect([image], min_score=0.05)[0]
    assert len(on_copy) > 0 and len(on_file) > 0
    assert auto.manifest.version == "hot-q1"  # results name the version the copy belongs to
    # ... and the file that ran: the IR on OpenVINO, the int8 ONNX file on ONNX Runtime
    assert auto.file_sha256 == named.file_sha256 == manifest.data["openvino"]["sha256"] != manifest.sha256
    assert onnxruntime.file_sha256 == manifest.sha256


@pytest.mark.parametrize("providers", ["auto", "cpu"])
def test_the_worker_results_name_the_file_that_ran(work: Path, tmp_path: Path, providers: str) -> None:
    from inspection.results import FrameResult
    from inspection.worker import InferenceWorker
    from tests.test_worker import Feed, _config, _frame

    registry = Registry(tmp_path / "models")
    data = json.loads((work / "manifest.json").read_text(encoding="utf-8"))
    manifest = registry.add(work / "model.onnx", data, activate=True, extra_files={XML: work / XML, BIN: work / BIN})
    config = _config(registry.root, providers=providers, batch_size=2)
    feed, sent = Feed([_frame(0), _frame(1)]), []
    worker = InferenceWorker(config, registry, feed.receive, sent.append)
    worker.run(should_stop=lambda: sum(isinstance(m, FrameResult) for m in sent) >= 2)
    ran = manifest.data["openvino"]["sha256"] if providers == "auto" else manifest.sha256
    assert {(m.model_version, m.model_sha256) for m in sent if isinstance(m, FrameResult)} == {("hot-q1", ran)}


def test_doctor_says_auto_runs_the_copy_on_openvino(work: Path, tmp_path: Path) -> None:
    from inspection import doctor

    manifest = _add(Registry(tmp_path / "models"), work)
    found = doctor.report(manifest)["openvino"]
    assert (found["session"], found["auto"]) == ("starts", "OpenVINO")
    assert found["openvino_copy"] == str(manifest.model_path.parent / XML)
    assert any("model hot-q1 (its own OpenVINO quantization) starts; auto runs it on the CPU with OpenVINO" in line
               for line in doctor.lines(doctor.report(manifest)))


def test_a_copy_whose_files_do_not_match_is_refused(work: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry(tmp_path / "models")
    with pytest.raises(ManifestError, match="model.bin: sha256 is"):  # never registered with the wrong weights
        _add(registry, work, weights_sha256="0" * 64)
    assert not (tmp_path / "models" / "hot" / "hot-q1").exists()
    manifest = _add(registry, work)
    weights = manifest.model_path.parent / BIN
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # changed on disk after registration
    with pytest.raises(ManifestError, match="model.bin: sha256 is .* refusing to run an OpenVINO copy"):
        Detector(manifest, providers="openvino", engine_cache=tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        auto = Detector(manifest, providers="auto", engine_cache=tmp_path / "cache")
    assert auto.providers == [CPU]  # ONNX Runtime runs the int8 file, whose own sha256 still matches
    assert "OpenVINO cannot run the OpenVINO copy" in caplog.text and "model.bin" in caplog.text


def test_a_copy_never_names_files_outside_its_folder(work: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    with pytest.raises(RegistryError, match="expected a relative path inside the version folder"):
        registry.add(work / "model.onnx", json.loads((work / "manifest.json").read_text()),
                     extra_files={"../model.xml": work / XML})
    with pytest.raises(ManifestError, match="openvino.model_file"):
        _add(registry, work, model_file="../../model.xml")
    shutil.copytree(work, tmp_path / "bad")
    data = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    data["openvino"]["weights_sha256"] = "not a digest"
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="openvino.weights_sha256"):
        load_manifest(tmp_path / "bad")
