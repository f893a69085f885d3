"""int8 quantization: the file-level recipe on a small conv graph, and the whole command on a real model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inspection.cli import main
from inspection.config import REPO_DIR
from inspection.detector import Detector
from inspection.registry import Registry
from tests.line_configs import assert_clean_strip_decided, clean_strip_gate_config
from training.quantize import QuantizeError, quantize_file, quantize_version


def _conv_model(path: Path) -> Path:
    """uint8 image -> float -> stem conv -> relu -> body conv -> relu -> head conv (names as the detector's)."""
    rng = np.random.default_rng(0)
    weights = {"w_stem": rng.normal(0, 0.3, (4, 1, 3, 3)), "w_body": rng.normal(0, 0.3, (4, 4, 3, 3)),
               "w_head": rng.normal(0, 0.3, (2, 4, 1, 1))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inits.append(numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"))
    nodes = [
        helper.make_node("Cast", ["image"], ["x0"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x0", "scale"], ["x1"]),
        helper.make_node("Conv", ["x1", "w_stem"], ["s"], name="/model/backbone/stem/stem.0/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["s_r"]),
        helper.make_node("Conv", ["s_r", "w_body"], ["b"], name="/model/backbone/stages.0/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["b_r"]),
        helper.make_node("Conv", ["b_r", "w_head"], ["out"], name="/model/heat_head/heat_head.1/Conv"),
    ]
    graph = helper.make_graph(nodes, "tiny-conv", [helper.make_tensor_value_info("image", TensorProto.UINT8,
                                                                                ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return path


def _run(path: Path, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image[None, None]})[0]


def test_quantize_file_keeps_stem_and_heads_fp32_and_stays_close(tmp_path: Path) -> None:
    source = _conv_model(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(1)
    calibration = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(8)]
    kept = quantize_file(source, tmp_path / "int8.onnx", calibration)
    assert kept == ["/model/backbone/stem/stem.0/Conv", "/model/heat_head/heat_head.1/Conv"]
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    dequantized = {i for n in graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    # Only the body conv reads dequantized (int8) weights; the kept convs read their fp32 initialisers.
    assert convs["/model/backbone/stages.0/Conv"].input[1] in dequantized
    assert convs["/model/backbone/stem/stem.0/Conv"].input[1] == "w_stem"
    assert convs["/model/heat_head/heat_head.1/Conv"].input[1] == "w_head"
    image = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    reference, quantized = _run(source, image), _run(tmp_path / "int8.onnx", image)
    assert quantized.shape == reference.shape
    assert not np.array_equal(quantized, reference)  # really quantized
    assert np.abs(quantized - reference).max() < 0.05 * np.abs(reference).max()


def test_quantize_file_names_the_model_when_it_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(QuantizeError, match="broken.onnx"):
        quantize_file(broken, tmp_path / "out.onnx", [np.zeros((32, 32), np.uint8)])


@pytest.mark.slow
@pytest.mark.datasets
def test_quantize_command_registers_a_measured_int8_version(tmp_path: Path, datasets_dir: Path, ipc_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    registry_dir = tmp_path / "models"
    shipped = Registry(REPO_DIR / "models")
    source = shipped.resolve("hot")
    if source.data.get("quantization"):  # the active model is itself an int8 copy: start from its fp32 source
        source = shipped.resolve(source.data["quantization"]["source_version"])
    (registry_dir / "hot").mkdir(parents=True)
    shutil.copytree(source.model_path.parent, registry_dir / "hot" / source.version)
    registry = Registry(registry_dir)
    registry.promote(source.version, reason="test setup")

    code = main(["quantize", source.version, "--models", str(registry_dir), "--datasets", str(datasets_dir),
                 "--calibration-images", "8", "--calibration-backgrounds", "1", "--json",
                 str(tmp_path / "summary.json"), "--config", str(clean_strip_gate_config(tmp_path, ipc_dir))])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    new = Registry(registry_dir).resolve(summary["version"])  # loads = sha256 verified
    q = new.data["quantization"]
    assert q["source_version"] == source.version and q["source_sha256"] == source.sha256
    assert q["calibration"]["train_images"] == 8 and q["calibration"]["background_tiles"] == 6
    assert any("stem" in name for name in q["kept_fp32"]) and any("head" in name for name in q["kept_fp32"])
    assert 0.0 <= q["agreement_val"]["fp32_found_by_int8"] <= 1.0
    assert new.data["metrics"]["val"]["images"] > 0 and new.data["metrics"]["test"]["images"] > 0
    assert new.data["metrics"]["test"]["training_images_evaluated"] == 0
    assert set(new.data["speed_side_by_side"]["threads_1"]) == {"fp32", "int8"}
    # The unknown rule's budget split was chosen on the cold set's val defects, and the copy is measured
    # on the cold set's test defects, types a hot model never learns.
    unknown = new.data["unknown"]
    assert unknown["novelty_share_of_budget"] in (0.25, 0.5, 0.75) and unknown["unseen_val"]["found"] > 0
    assert max(unknown["unseen_val"]["called_unknown_per_split"].values()) == \
        unknown["unseen_val"]["called_unknown_per_split"][str(unknown["novelty_share_of_budget"])]
    unseen = new.data["metrics"]["unseen_test"]
    assert unseen["dataset"] == "cr7-det" and unseen["boxes"] > 0 and 0 < unseen["found"] <= unseen["boxes"]
    assert unseen["called_unknown"] == sum(c["found_as_unknown"] for c in unseen["per_class"].values())
    assert new.sha256 != source.sha256 and new.classes == source.classes
    # Its own OpenVINO quantization (nncf and openvino come with the train extra), measured on OpenVINO
    copy = new.data["openvino"]
    folder = new.model_path.parent
    assert (folder / copy["model_file"]).is_file() and (folder / copy["weights_file"]).is_file()
    assert copy["metrics_runtime"] == "OpenVINO CPU" and copy["calibration_images"] == 14  # 8 images + 6 tiles
    assert copy["metrics"]["val"]["images"] > 0 and copy["metrics"]["test"]["images"] > 0
    assert 0.0 <= copy["agreement_val"]["fp32_found_by_int8"] <= 1.0
    assert summary["openvino"]["val"]["map50"] == copy["metrics"]["val"]["map50"]
    assert Detector(new, providers="auto").providers == ["OpenVINO CPU"]
    # The gate decided; what it decided is what the registry shows.
    assert (Registry(registry_dir).active("hot") == new.version) == summary["activated"]
    assert_clean_strip_decided(new.data["promotion"], summary["activated"])
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_version(new.version, models_dir=registry_dir, datasets_dir=datasets_dir, register=False)


def test_a_new_version_inherits_the_source_description_not_its_figures_or_stamps(tmp_path: Path) -> None:
    from inspection.manifest import file_sha256
    from training.finalize import new_version_manifest

    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"not the source's bytes")
    source = {"version": "hot-20260101-1", "created": "2026-01-01T00:00:00Z", "code_version": "old",
              "sha256": "0" * 64, "size_bytes": 1, "metrics": {"val": {"map50": 0.7}}, "promotion": {"gate": "x"},
              "classes": ["a", "b"], "parity": {"max_abs_diff": 0.0}, "unknown": {"budget": 0.05}}
    manifest = new_version_manifest(source, "hot-20260101-2", model_file, ("parity",))
    assert manifest["version"] == "hot-20260101-2"
    assert manifest["sha256"] == file_sha256(model_file) and manifest["size_bytes"] == model_file.stat().st_size
    assert manifest["created"] != source["created"] and manifest["code_version"] != "old"
    assert "metrics" not in manifest and "promotion" not in manifest and "parity" not in manifest
    assert manifest["classes"] == ["a", "b"] and manifest["unknown"] == {"budget": 0.05}
    assert source["version"] == "hot-20260101-1" and "metrics" in source  # the source is left as it was
