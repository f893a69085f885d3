"""Registered ensembles (inspection.ensemble, training.ensemble): the merged file, the fusion, the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from inspection.cli import main
from inspection.config import REPO_DIR
from inspection.datasets import load_split, read_image
from inspection.detector import Detections, Detector, reaching
from inspection.ensemble import EnsembleError, check_members, ensemble_members, fuse_members, member_versions
from inspection.errors import ManifestError
from inspection.registry import Manifest, Registry
from tests.tiny_models import add_tiny_model, blob_image, build_blob_model, tiny_manifest
from training.ensemble import check_mergeable, merge_onnx, stored_as_fp16

CLASSES = ("dark_spot", "bright_spot")
SHIPPED = Registry(REPO_DIR / "models")


def dets(boxes: list[list[float]], scores: list[float], labels: list[int], unknown: list[bool] | None = None
         ) -> Detections:
    return Detections(boxes=np.array(boxes, np.float32).reshape(-1, 4), scores=np.array(scores, np.float32),
                      labels=np.array(labels, np.int64), classes=CLASSES,
                      unknown=None if unknown is None else np.array(unknown, bool))


def tiny_ensemble(tmp: Path, registry: Registry, members: list[Manifest], version: str) -> Manifest:
    """Members merged into one file and registered as `version`, as `steel-inspect ensemble` does it
    (without the measurements, which need real data)."""
    merge_onnx([m.model_path for m in members], tmp / f"{version}.onnx", fp16_weights=False)
    manifest = tiny_manifest(CLASSES, version=version)
    manifest["ensemble"] = {"members": [{"version": m.version, "sha256": m.sha256, "unknown": None}
                                        for m in members]}
    return registry.add(tmp / f"{version}.onnx", manifest, version=version)


def test_the_vote_on_unknown_counts_the_members_that_found_the_defect() -> None:
    # Both members find the defect at x 10..30; one calls it unknown: half of them, so it is unknown. The
    # second defect only member b finds, and calls known; a member without a rule counts as known.
    a = dets([[10, 10, 30, 30]], [0.8], [1], [True])
    b = dets([[11, 10, 30, 31], [50, 50, 60, 60]], [0.6, 0.4], [1, 0], [False, False])
    fused = fuse_members([a, b], 80, 80)
    assert fused["unknown"].tolist() == [True, False] and fused["novelty"] is None
    np.testing.assert_allclose(fused["scores"], [0.7, 0.2])
    without_rule = dets([[10, 10, 30, 30]], [0.8], [1])
    assert fuse_members([without_rule, b], 80, 80)["unknown"].tolist() == [False, False]
    assert fuse_members([without_rule, without_rule], 80, 80)["unknown"] is None


def test_members_that_cannot_be_fused_are_named(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    a = add_tiny_model(registry, tmp_path, CLASSES, version="hot-a1")
    b = add_tiny_model(registry, tmp_path, ("x", "y"), version="hot-b1")
    c = add_tiny_model(registry, tmp_path, CLASSES, line_type="cold", version="cold-c1")
    with pytest.raises(EnsembleError, match=r"hot-b1 has classes \(x, y\), hot-a1 has \(dark_spot, bright_spot\)"):
        check_members([a, b])
    with pytest.raises(EnsembleError, match="cold-c1 is a cold model, hot-a1 a hot model"):
        check_members([a, c])
    with pytest.raises(EnsembleError, match="hot-a1 is named twice"):
        check_members([a, a])
    with pytest.raises(EnsembleError, match="at least two models, got 1"):
        check_members([a])
    int8 = SHIPPED.resolve("hot-20261205-3")  # the int8 copy of hot-20261205-2
    with pytest.raises(EnsembleError, match="hot-20261205-3 is an int8 copy: .* name its fp32 source hot-20261205-2"):
        check_mergeable([SHIPPED.resolve("hot-20261205-1"), int8])


def test_a_malformed_ensemble_entry_is_named(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    manifest = tiny_manifest(CLASSES, version="hot-e1")
    manifest["ensemble"] = {"members": [{"version": "hot-a1"}]}
    model = build_blob_model(tmp_path / "blob.onnx")
    with pytest.raises(ManifestError, match="field 'ensemble': expected 'members', a list of at least two"):
        ensemble_members(registry.add(model, manifest, version="hot-e1"))
    # The file must hold every member's outputs: a single model's file registered as an ensemble fails to load.
    manifest["ensemble"] = {"members": [{"version": "hot-a1"}, {"version": "hot-b1"}]}
    with pytest.raises(ManifestError, match=r"missing outputs \['m0_boxes', 'm0_scores', 'm0_labels'\]"):
        Detector(registry.add(model, manifest, version="hot-e2"), providers="cpu")


def test_a_tiny_ensemble_runs_as_one_model_and_gives_what_its_members_agree_on(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    # The same blob detector twice, one keeping fewer detections: on an image with three blobs the second
    # member keeps the two brightest, so the third is backed by one member of two and keeps half its score.
    a = add_tiny_model(registry, tmp_path, CLASSES, version="hot-a1", max_detections=20)
    b = add_tiny_model(registry, tmp_path / "b", CLASSES, version="hot-b1", max_detections=2)
    ensemble = tiny_ensemble(tmp_path, registry, [a, b], "hot-e1")
    assert member_versions(ensemble) == ["hot-a1", "hot-b1"]
    image = blob_image(64, 128, [((4, 4, 20, 20), 1), ((40, 8, 60, 24), 1), ((70, 40, 90, 60), 0)])
    alone = Detector(a, providers="cpu").detect([image], min_score=0.0)[0]
    found = Detector(ensemble, providers="cpu").detect([image], min_score=0.0)[0]
    assert len(alone) == 3 and len(found) == 3
    assert sorted(map(tuple, found.boxes.tolist())) == sorted(map(tuple, alone.boxes.tolist()))  # boxes unchanged
    third = int(np.argmin(alone.scores))
    expected = alone.scores.copy()
    expected[third] /= 2
    np.testing.assert_allclose(np.sort(found.scores), np.sort(expected), rtol=1e-6)
    # At the operating threshold (0.5) the half-backed blob is gone, the others stay.
    assert len(Detector(ensemble, providers="cpu").detect([image])[0]) == 2


def test_fp16_storage_halves_the_file_and_keeps_the_outputs_close(tmp_path: Path, datasets_dir: Path) -> None:
    import onnxruntime as ort

    source = SHIPPED.resolve("hot-20261205-1")
    half = tmp_path / "fp16.onnx"
    onnx.save(stored_as_fp16(onnx.load(str(source.model_path))), str(half))
    assert half.stat().st_size < 0.55 * source.model_path.stat().st_size
    image = read_image(load_split(datasets_dir, "neu-det", "val")[0].image_path)  # 200 x 200
    feed = {"image": np.pad(image, ((0, 24), (0, 24)), mode="edge")[None, None]}
    ours = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(["scores"], feed)[0]
    theirs = ort.InferenceSession(str(source.model_path), providers=["CPUExecutionProvider"]).run(["scores"], feed)[0]
    assert np.abs(ours - theirs).max() < 0.01


def test_the_merged_file_fuses_exactly_what_the_members_find_alone(tmp_path: Path, datasets_dir: Path) -> None:
    members = [SHIPPED.resolve("hot-20261205-2"), SHIPPED.resolve("hot-20261205-1")]
    registry = Registry(tmp_path / "models")
    merge_onnx([m.model_path for m in members], tmp_path / "model.onnx", fp16_weights=False)
    manifest = {k: v for k, v in members[0].data.items() if k not in ("sha256", "size_bytes", "metrics")}
    manifest["ensemble"] = {"members": [{"version": m.version, "unknown": m.data.get("unknown")} for m in members]}
    ensemble = registry.add(tmp_path / "model.onnx", manifest, version="hot-20991231-1")
    images = [read_image(s.image_path) for s in load_split(datasets_dir, "neu-det", "val")[:6]]
    together = Detector(ensemble, providers="cpu").detect(images)
    apart = [Detector(m, providers="cpu").detect(images, min_score=0.0) for m in members]
    threshold = Detector(members[0], providers="cpu").thresholds
    for index, found in enumerate(together):
        fused = fuse_members([a[index] for a in apart], *images[index].shape)
        keep = reaching(fused["scores"], fused["labels"], threshold)
        assert len(found) == int(keep.sum()) > 0
        np.testing.assert_allclose(found.boxes, fused["boxes"][keep], atol=1e-3)
        np.testing.assert_allclose(found.scores, fused["scores"][keep], atol=1e-5)
        np.testing.assert_array_equal(found.unknown, fused["unknown"][keep])


def test_ensemble_command_registers_a_measured_version_that_is_not_live(tmp_path: Path, datasets_dir: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    registry_dir = tmp_path / "models"
    for version in ("hot-20261205-2", "hot-20261205-1", "hot-20261205-3"):
        shutil.copytree(SHIPPED.resolve(version).model_path.parent, registry_dir / "hot" / version)
    Registry(registry_dir).promote("hot-20261205-3", reason="test setup")
    code = main(["ensemble", "hot-20261205-2", "hot-20261205-1", "--models", str(registry_dir), "--datasets",
                 str(datasets_dir), "--json", str(tmp_path / "summary.json")])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    new = Registry(registry_dir).resolve(summary["version"])  # loads = sha256 verified
    assert summary["activated"] is False and Registry(registry_dir).active("hot") == "hot-20261205-3"
    entry = new.data["ensemble"]
    assert [m["version"] for m in entry["members"]] == ["hot-20261205-2", "hot-20261205-1"]
    assert entry["members"][1]["sha256"] == SHIPPED.resolve("hot-20261205-1").sha256
    assert entry["parity"]["max_abs_diff"] <= 1e-4 and entry["parity"]["weights"] == "fp16"
    assert 0 < entry["parity"]["fp16_storage_max_score_diff"] < 0.05  # 0.016 measured (2026-12-05)
    assert new.model_path.stat().st_size < 0.55 * 2 * SHIPPED.resolve("hot-20261205-1").model_path.stat().st_size
    assert new.data["metrics"]["test"]["ensemble"] == ["hot-20261205-2", "hot-20261205-1"]
    assert new.data["metrics"]["val"]["images"] > 0 and new.data["metrics"]["test"]["training_images_evaluated"] == 0
    assert set(new.data["speed_side_by_side"]["threads_1"]) == {"hot-20261205-2", "ensemble"}
    assert "quantization" not in new.data and "openvino" not in new.data and "unknown" not in new.data
    assert entry["members"][0]["unknown"] == SHIPPED.resolve("hot-20261205-2").data["unknown"]
    assert Detector(new, providers="cpu").unknown_rule is not None  # the members' rules judge its detections
    assert summary["val"]["map50"] == new.data["metrics"]["val"]["map50"]


def test_the_line_runs_a_registered_ensemble_and_its_results_name_it(tmp_path: Path) -> None:
    from inspection.results import FrameResult
    from inspection.worker import InferenceWorker
    from tests.test_worker import SOURCE, Feed, _config, _frame

    registry = Registry(tmp_path / "models")
    a = add_tiny_model(registry, tmp_path, CLASSES, version="hot-a1")
    b = add_tiny_model(registry, tmp_path / "b", CLASSES, version="hot-b1", max_detections=5)
    ensemble = tiny_ensemble(tmp_path, registry, [a, b], "hot-e1")
    registry.promote("hot-e1", reason="test")
    feed, sent = Feed([_frame(0, blob=True), _frame(1)]), []
    worker = InferenceWorker(_config(registry.root, batch_size=2), registry, feed.receive, sent.append)
    worker.run(should_stop=lambda: len(sent) >= 2)
    results = [m for m in sent if isinstance(m, FrameResult)]
    assert [len(r.defects) for r in results] == [1, 0] and results[0].source == SOURCE
    assert {(r.model_version, r.model_sha256) for r in results} == {("hot-e1", ensemble.sha256)}
    assert results[0].defects[0].cls == "bright_spot"


def test_quantize_and_the_crop_classifier_refuse_an_ensemble_by_name(tmp_path: Path) -> None:
    from training.quantize import QuantizeError, quantize_version
    from training.relabel import RelabelError, relabel_version

    registry = Registry(tmp_path / "models")
    members = [add_tiny_model(registry, tmp_path, CLASSES, version="hot-a1"),
               add_tiny_model(registry, tmp_path / "b", CLASSES, version="hot-b1")]
    tiny_ensemble(tmp_path, registry, members, "hot-e1")
    with pytest.raises(QuantizeError, match="hot-e1 is an ensemble: quantizing one is not supported"):
        quantize_version("hot-e1", models_dir=registry.root, datasets_dir=tmp_path, register=False)
    with pytest.raises(RelabelError, match="hot-e1 is an ensemble: give a crop classifier to a single detector"):
        relabel_version("hot-e1", models_dir=registry.root, datasets_dir=tmp_path, register=False)
