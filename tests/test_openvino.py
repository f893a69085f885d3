"""OpenVINO beside ONNX Runtime: the same results from the same model.onnx, what "auto" picks, the
compiled-model cache per sha256, no recompiling for new window sizes, and a runtime without openvino.

Parity (ONNX Runtime's CPU provider is the reference), detections compared as sets: every
detection of one runtime has exactly one partner in the other with the same class, a score within
1e-4 and every box coordinate within 0.01 px, and none is left over; the optional class_scores
within 1e-4, novelty within 1e-4 relative, and the same `unknown` decisions. Checked on the shipped
fp32 models of both line types (hot on NEU-DET, cold on CR7-DET val images). An int8 copy runs on
ONNX Runtime under "auto" (OpenVINO's results for it differ: `inspection.backends`), so its results
there are ONNX Runtime's exactly, unless it carries its own OpenVINO quantization (then OpenVINO runs
that, checked against its fp32 source here; the mechanics in tests/test_openvino_copy.py).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from inspection import backends, gpu
from inspection.backends import openvino_installed
from inspection.detector import Detections, Detector
from inspection.errors import ManifestError
from inspection.extras import MissingExtraError
from inspection.registry import Manifest, Registry
from tests.tiny_models import blob_image, build_blob_model, tiny_manifest

pytestmark = pytest.mark.skipif(not openvino_installed(),
                                reason="openvino not installed (pip install -e '.[openvino]', part of dev)")

OPENVINO = "OpenVINO CPU"
CPU = gpu.CPU
# The shipped models: per line type the fp32 model, its int8 copy (the active one) and the dataset it was trained on.
SHIPPED = {"hot": ("hot-20261123-2", "hot-20261123-3", "neu-det"),
           "cold": ("cold-20261123-3", "cold-20261123-4", "cr7-det")}
REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
NO_GPU_HERE = not gpu.cuda_devices().devices
SCORE_TOL, BOX_TOL_PX = 1e-4, 0.01


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def _tiny(registry: Registry, tmp_path: Path, version: str = "hot-1", max_detections: int = 20) -> Manifest:
    """A tiny real model; `max_detections` changes the file and so its sha256."""
    model = build_blob_model(tmp_path / f"{version}.onnx", max_detections=max_detections)
    return registry.add(model, tiny_manifest(version=version, max_detections=max_detections))


def _partner(want: Detections, i: int, got: Detections, free: set[int]) -> int | None:
    """The detection of `got` (among `free`) that is `want`'s i-th within the tolerances, else None."""
    close = [j for j in free if got.labels[j] == want.labels[i]
             and abs(float(got.scores[j]) - float(want.scores[i])) <= SCORE_TOL
             and float(np.abs(got.boxes[j] - want.boxes[i]).max()) <= BOX_TOL_PX]
    return min(close, key=lambda j: float(np.abs(got.boxes[j] - want.boxes[i]).sum()), default=None)


def _same(reference: Detections, other: Detections, where: str) -> None:
    """The same detections as sets (order ignored), within the module's tolerances."""
    for name in ("class_scores", "novelty", "unknown"):
        assert (getattr(reference, name) is None) == (getattr(other, name) is None), f"{where}: {name}"
    free = set(range(len(other)))
    for i in range(len(reference)):
        j = _partner(reference, i, other, free)
        assert j is not None, (f"{where}: no partner for class {reference.labels[i]} score {reference.scores[i]:.5f} "
                               f"box {reference.boxes[i].round(2).tolist()}")
        free.remove(j)
        if reference.class_scores is not None:
            np.testing.assert_allclose(other.class_scores[j], reference.class_scores[i], atol=SCORE_TOL, rtol=0,
                                       err_msg=where)
            np.testing.assert_allclose(other.novelty[j], reference.novelty[i], rtol=1e-4, err_msg=where)
        if reference.unknown is not None:
            assert bool(other.unknown[j]) == bool(reference.unknown[i]), f"{where}: unknown"
    assert not free, f"{where}: {len(free)} detections only the second runtime found: {sorted(free)}"


# -- which backend runs ---------------------------------------------------------------------------

@pytest.mark.skipif(not NO_GPU_HERE, reason="checks what a machine without a GPU picks")
def test_auto_picks_openvino_on_this_cpu(registry: Registry, tmp_path: Path) -> None:
    manifest = _tiny(registry, tmp_path)
    assert Detector(manifest, providers="auto", engine_cache=tmp_path / "cache").providers == [OPENVINO]
    assert Detector(manifest, providers="openvino", engine_cache=tmp_path / "cache").providers == [OPENVINO]
    assert Detector(manifest, providers="cpu").providers == [CPU]  # "cpu" stays ONNX Runtime's CPU provider


def test_threads_are_openvinos_inference_threads(registry: Registry, tmp_path: Path) -> None:
    manifest = _tiny(registry, tmp_path)
    one = Detector(manifest, providers="openvino", intra_op_threads=1, engine_cache=tmp_path / "cache")
    assert one.backend.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    default = Detector(manifest, providers="openvino", intra_op_threads=0, engine_cache=tmp_path / "cache")
    assert default.backend.compiled.get_property("INFERENCE_NUM_THREADS") >= 1  # OpenVINO's own choice
    assert default.backend.compiled.get_property("ENABLE_CPU_PINNING") is False


def test_without_openvino_auto_runs_onnxruntime_and_says_so_once(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    manifest = _tiny(registry, tmp_path)
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails as when it is not installed
    monkeypatch.setattr(backends, "_said", set())
    assert not openvino_installed()
    with caplog.at_level(logging.INFO, logger="inspection"):
        assert Detector(manifest, providers="auto").providers == [CPU]
        assert Detector(manifest, providers="auto").providers == [CPU]
    said = [r for r in caplog.records if "OpenVINO is not installed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    with pytest.raises(MissingExtraError, match=r"providers = \"openvino\" needs the `openvino` extra .*"
                                                r"pip install -e '\.\[openvino\]'"):
        Detector(manifest, providers="openvino")


def test_a_model_openvino_cannot_read(registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    manifest = registry.add(broken, tiny_manifest(version="hot-broken"))
    from inspection.backends.openvino import OpenVinoError

    with pytest.raises(OpenVinoError, match=r"model\.onnx: OpenVINO cannot compile the model: Unable to read"):
        Detector(manifest, providers="openvino", engine_cache=tmp_path / "cache")
    with caplog.at_level(logging.WARNING), pytest.raises(ManifestError, match="ONNX Runtime cannot load the model"):
        Detector(manifest, providers="auto", engine_cache=tmp_path / "cache")  # OpenVINO first, then ONNX Runtime
    assert "OpenVINO cannot run" in caplog.text


def test_doctor_reports_openvino_and_what_auto_runs(registry: Registry, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from inspection import doctor

    plain = _tiny(registry, tmp_path, "hot-p", 20)
    copy = registry.add(build_blob_model(tmp_path / "q.onnx", max_detections=21),
                        {**tiny_manifest(version="hot-q", max_detections=21),
                         "quantization": {"source_version": "hot-p"}})
    found = doctor.report(plain, tmp_path / "cache")
    import openvino

    assert found["openvino"]["installed"] is True and found["openvino"]["version"] == openvino.__version__.split("-")[0]
    assert found["openvino"]["session"] == "starts" and found["openvino"]["auto"] == "OpenVINO"
    assert not (tmp_path / "cache").exists()  # the check compiles without writing a cache
    said = doctor.lines(found)
    assert any(line.startswith(f"OpenVINO {found['openvino']['version']} on ") and
               line.endswith("model hot-p starts; auto runs it on the CPU with OpenVINO") for line in said), said
    assert doctor.report(copy)["openvino"]["auto"] == "ONNX Runtime"  # an int8 copy: `INT8_ON_OPENVINO`
    monkeypatch.setitem(sys.modules, "openvino", None)  # as when it is not installed
    absent = doctor.report(plain)["openvino"]
    assert absent == {"installed": False, "install": "pip install -e '.[openvino]'"}
    assert "OpenVINO: not installed (pip install -e '.[openvino]')" in "\n".join(doctor.lines(doctor.report(plain)))


def test_a_worker_configured_for_openvino_inspects_on_it(tmp_path: Path) -> None:
    import dataclasses

    from inspection.results import FrameResult
    from inspection.worker import InferenceWorker
    from tests.test_worker import Feed, _config, _frame
    from tests.tiny_models import add_tiny_model

    registry = Registry(tmp_path / "models")
    add_tiny_model(registry, tmp_path, version="hot-a", activate=True)
    config = _config(registry.root, batch_size=2)
    config = dataclasses.replace(config, worker=dataclasses.replace(config.worker, providers="openvino",
                                                                    gpu_engine_cache=tmp_path / "cache"))
    feed, sent = Feed([_frame(i, blob=(i == 1)) for i in range(3)]), []
    worker = InferenceWorker(config, registry, feed.receive, sent.append)
    assert worker.load("hot").detector.providers == [OPENVINO]  # what the worker loads for the hot line
    worker.run(should_stop=lambda: feed.q.empty() and not worker._pending and len(sent) >= 3)
    results = [m for m in sent if isinstance(m, FrameResult)]
    assert [len(r.defects) for r in sorted(results, key=lambda r: r.index)] == [0, 1, 0]
    assert results[0].model_version == "hot-a"
    assert list((tmp_path / "cache").glob("*/openvino"))  # the worker's cache folder holds OpenVINO's too


# -- compiled-model cache and shapes -------------------------------------------------------------

def test_compiled_models_are_cached_in_one_folder_per_model_sha256(registry: Registry, tmp_path: Path) -> None:
    one, two = _tiny(registry, tmp_path, "hot-1", 20), _tiny(registry, tmp_path, "hot-2", 21)
    assert one.sha256 != two.sha256
    root = tmp_path / "cache"
    first = Detector(one, providers="openvino", engine_cache=root)
    Detector(two, providers="openvino", engine_cache=root)
    folders = sorted(p.relative_to(root).as_posix() for p in root.glob("*/openvino"))
    assert folders == sorted([f"{one.sha256}/openvino", f"{two.sha256}/openvino"])
    assert all(any(f.suffix == ".blob" for f in (root / folder).iterdir()) for folder in folders)
    assert first.backend.from_cache is False
    again = Detector(one, providers="openvino", engine_cache=root)  # a restarted worker imports, not compiles
    assert again.backend.from_cache is True and again.backend.cache == root / one.sha256 / "openvino"


def test_new_window_sizes_and_batches_do_not_recompile(registry: Registry, tmp_path: Path) -> None:
    manifest = _tiny(registry, tmp_path)
    root = tmp_path / "cache"
    detector = Detector(manifest, providers="openvino", max_batch=64, engine_cache=root)
    reference = Detector(manifest, providers="cpu", max_batch=64)
    folder = root / manifest.sha256 / "openvino"
    before = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    # The first stage's window sizes (256 px .. the frame in 128-px steps, and sizes off the size multiple)
    # in batches of 1, 3 and 64.
    sizes = [(256, 256), (384, 640), (1024, 1600), (200, 333), (896, 1408)]
    for count in (1, 3, 64):
        for height, width in sizes[:2] if count == 64 else sizes:
            images = [blob_image(height, width, [((10 + i % 50, 20, 30 + i % 50, 40), i % 2)]) for i in range(count)]
            for got, want in zip(detector.detect(images), reference.detect(images), strict=True):
                _same(want, got, f"{count} x {height}x{width}")
    assert detector.backend.compiles == 1
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == before  # no new compiled model written


# -- parity on real images ------------------------------------------------------------------------

def _dataset_images(datasets_dir: Path, dataset: str, count: int) -> list[np.ndarray]:
    """Val images of `dataset`, and mosaics of them (larger windows) and a narrow strip (a width off the
    size multiple), as the first stage hands windows of many sizes to the model."""
    from inspection.datasets import load_split, read_image

    images = [read_image(s.image_path) for s in load_split(datasets_dir, dataset, "val")[:count]]
    mosaics = [np.block([[images[i], images[i + 1], images[i + 2]], [images[i + 3], images[i + 4], images[i + 5]]])
               for i in range(0, 12, 6)]
    return images + mosaics + [np.vstack(images[:5])[:, :130]]


def _registered(version: str) -> Manifest:
    return Registry(REPO_MODELS).resolve(version)


@pytest.mark.datasets
@pytest.mark.parametrize("line_type", list(SHIPPED))
def test_fp32_model_gives_the_same_detections_on_dataset_images(line_type: str, datasets_dir: Path,
                                                                tmp_path: Path) -> None:
    fp32, _, dataset = SHIPPED[line_type]
    manifest = _registered(fp32)
    assert "quantization" not in manifest.data
    images = _dataset_images(datasets_dir, dataset, 24)
    reference = Detector(manifest, providers="cpu", max_batch=4)
    openvino = Detector(manifest, providers="openvino", max_batch=4, engine_cache=tmp_path / "cache")
    assert openvino.providers == [OPENVINO]
    for min_score in (None, 0.05):  # the operating thresholds, and nearly every candidate
        found = 0
        for index, (want, got) in enumerate(zip(reference.detect(images, min_score), openvino.detect(images, min_score),
                                                strict=True)):
            _same(want, got, f"{fp32} image {index} at min_score {min_score}")
            found += len(want)
        assert found > len(images)  # the comparison covers many detections, not empty lists


@pytest.mark.datasets
@pytest.mark.parametrize("line_type", list(SHIPPED))
def test_int8_copy_runs_on_onnxruntime_under_auto(line_type: str, datasets_dir: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """OpenVINO's results for the int8 copy stray from the file's own arithmetic (README), so "auto"
    leaves it to ONNX Runtime, and its results are ONNX Runtime's exactly."""
    _, int8, dataset = SHIPPED[line_type]
    manifest = _registered(int8)
    images = _dataset_images(datasets_dir, dataset, 12)
    with caplog.at_level(logging.INFO, logger="inspection"):
        auto = Detector(manifest, providers="auto", engine_cache=tmp_path / "cache")
    assert auto.providers == [CPU] and auto.manifest.version == int8
    assert "is an int8 copy: ONNX Runtime runs it" in caplog.text
    reference = Detector(manifest, providers="cpu").detect(images)
    for index, (want, got) in enumerate(zip(reference, auto.detect(images), strict=True)):
        _same(want, got, f"{int8} image {index}")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        named = Detector(manifest, providers="openvino", engine_cache=tmp_path / "cache")  # asked for by name: runs
    assert named.providers == [OPENVINO] and "is an int8 copy, run by OpenVINO as asked" in caplog.text


# The shipped int8 copy that carries its own OpenVINO quantization, and its fp32 source.
OPENVINO_COPY = ("hot-20261204-4", "hot-20261204-2", "neu-det")


@pytest.mark.datasets
def test_the_shipped_openvino_copy_follows_its_fp32_source(datasets_dir: Path, tmp_path: Path) -> None:
    """Not the same arithmetic as the ONNX Runtime file (another quantization of the same fp32 model),
    so not the set parity above: the tolerance is the agreement `steel-inspect quantize` measured on
    64 val images (0.998 of the fp32 detections found by the copy, 0.937 of the copy's by the fp32
    model, mean score difference 0.019), with a margin: >= 0.95, >= 0.85 and <= 0.05."""
    from training.quantize import agreement

    version, source, dataset = OPENVINO_COPY
    copy = Detector(_registered(version), providers="auto", engine_cache=tmp_path / "cache")
    assert copy.providers == [OPENVINO] and copy.backend.model_path.name == "model.xml"
    images = _dataset_images(datasets_dir, dataset, 24)
    found = agreement(Detector(_registered(source), providers="cpu"), copy, images)
    assert found["fp32_detections"] > len(images)  # many detections compared, not empty lists
    assert found["fp32_found_by_int8"] >= 0.95 and found["int8_found_by_fp32"] >= 0.85, found
    assert found["matched_score_abs_diff_mean"] <= 0.05, found


def _exported_with_unknown_outputs(tmp_path: Path, rule: dict | None) -> Manifest:
    """A small real model with the class_scores / novelty outputs (as test_unknown builds it), and `rule`."""
    torch = pytest.importorskip("torch", reason="the `train` extra builds this model")
    from inspection.manifest import file_sha256, load_manifest
    from training.export import export_onnx
    from training.model import Detector as TorchDetector

    torch.manual_seed(3)
    model = TorchDetector(2, stride=8).eval()
    with torch.no_grad():
        model.heat_head[-1].bias.fill_(0.0)  # scores around 0.5: plenty of detections ...
        model.heat_head[-1].weight.mul_(1e4)  # ... but not all alike (no near-ties between neighbouring peaks)
    generator = torch.Generator().manual_seed(4)
    model.set_prototypes(torch.randn(2, 48, generator=generator), torch.eye(48))
    path = export_onnx(model, tmp_path / ("rule" if rule else "none") / "model.onnx")
    manifest = {"schema": 1, "version": "hot-u1", "line_type": "hot", "model_file": "model.onnx",
                "classes": ["a", "b"], "operating_threshold": 0.3, "sha256": file_sha256(path),
                "input": {"name": "image", "dtype": "uint8", "channels": 1, "size_multiple": 32},
                "outputs": {"max_detections": 100}, **({"unknown": rule} if rule else {})}
    (path.parent / "manifest.json").write_text(json.dumps(manifest))
    return load_manifest(path.parent / "manifest.json")


@pytest.mark.datasets
def test_optional_outputs_and_the_unknown_rule_are_the_same(datasets_dir: Path, tmp_path: Path) -> None:
    images = _dataset_images(datasets_dir, "neu-det", 12)
    # A novelty limit in the widest gap near the middle of what the model gives on these images: the rule
    # then calls some detections unknown and some not, and no detection sits on the limit.
    plain = Detector(_exported_with_unknown_outputs(tmp_path, None), providers="cpu")
    novelty = np.sort(np.concatenate([d.novelty for d in plain.detect(images)]))
    middle = range(len(novelty) // 4, 3 * len(novelty) // 4)
    gap = max(middle, key=lambda i: novelty[i + 1] - novelty[i])
    rule = {"novelty_max": float(novelty[gap] + novelty[gap + 1]) / 2, "class_share_min": 0.55}
    manifest = _exported_with_unknown_outputs(tmp_path, rule)
    reference = Detector(manifest, providers="cpu")
    openvino = Detector(manifest, providers="openvino", engine_cache=tmp_path / "cache")
    results = list(zip(reference.detect(images), openvino.detect(images), strict=True))
    for index, (want, got) in enumerate(results):
        assert got.class_scores is not None and got.novelty is not None and got.unknown is not None
        _same(want, got, f"image {index}")
        assert [e["class"] for e in got.to_list()] == [e["class"] for e in want.to_list()]
    unknown = [bool(u) for want, _ in results for u in want.unknown.tolist()]
    assert any(unknown) and not all(unknown)  # the rule decides both ways on these images, the same on both


# -- bench inference, side by side ----------------------------------------------------------------

def test_bench_inference_measures_each_runtime_and_model_side_by_side(registry: Registry, tmp_path: Path) -> None:
    from inspection.benchmarks._runtimes import bare_side_by_side, fastest, runtime_label

    plain = _tiny(registry, tmp_path, "hot-p", 20)
    copy = registry.add(build_blob_model(tmp_path / "q.onnx", max_detections=21),
                        {**tiny_manifest(version="hot-q", max_detections=21),
                         "quantization": {"source_version": "hot-p"}})
    detectors = [Detector(m, providers=p, engine_cache=tmp_path / "c")
                 for m in (copy, plain) for p in ("cpu", "openvino")]
    pairs = {(runtime_label(d), d.manifest.version): d for d in detectors}
    assert set(pairs) == {(r, v) for r in ("onnxruntime", "openvino") for v in ("hot-q", "hot-p")}
    tiles = [blob_image(64, 96, [((4, 4, 12, 12), 1)]) for _ in range(4)]
    bare = bare_side_by_side(pairs, tiles, frame_mpx=4 * 64 * 96 / 1e6, seconds=0.03, rounds=2)
    assert set(bare) == {"hot-q", "hot-p"}
    for version, entry in bare.items():
        for label in ("onnxruntime", "openvino"):
            figures = entry[label]
            assert figures["providers"] == pairs[(label, version)].providers
            assert set(figures["by_batch"]) == {"1", "2", "4", "8"} and figures["best_batch"] in (1, 2, 4, 8)
            assert figures["mpx_per_s"] == max(figures["by_batch"].values()) > 0
        assert entry["openvino_to_onnxruntime"] == pytest.approx(
            entry["openvino"]["mpx_per_s"] / entry["onnxruntime"]["mpx_per_s"], rel=0.01)
    # the int8 copy on OpenVINO is measured but is no baseline: its results are not the model's
    assert bare["hot-q"]["openvino"]["gives_the_models_results"] is False
    assert bare["hot-p"]["openvino"]["gives_the_models_results"] is True
    assert fastest(bare["hot-q"]) == "onnxruntime"


def test_bench_inference_prints_both_runtimes_for_the_model_and_its_fp32_source(
        registry: Registry, tmp_path: Path) -> None:
    from inspection.cli import main as cli_main
    from inspection.config import DEMO_CONFIG

    _tiny(registry, tmp_path, "hot-p", 20)
    registry.add(build_blob_model(tmp_path / "q.onnx", max_detections=21),
                 {**tiny_manifest(version="hot-q", max_detections=21), "quantization": {"source_version": "hot-p"}},
                 activate=True)
    config = tmp_path / "line.toml"
    config.write_text(DEMO_CONFIG.read_text(encoding="utf-8")
                      .replace('registry = ""', f'registry = "{registry.root}"')
                      .replace('gpu_engine_cache = ""', f'gpu_engine_cache = "{tmp_path / "cache"}"'), encoding="utf-8")
    out = tmp_path / "inference.json"
    assert cli_main(["bench", "inference", "--config", str(config), "--frames", "1", "--seconds", "0.05",
                     "--rounds", "2", "--skip-pipeline", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["model"] == "hot-q" and figures["runtime"] == "onnxruntime"  # auto: an int8 copy stays on ORT
    assert set(figures["bare_runtimes"]) == {"hot-q", "hot-p"} and figures["bare_fp32_source"] == "hot-p"
    for entry in figures["bare_runtimes"].values():
        assert set(entry) == {"onnxruntime", "openvino", "openvino_to_onnxruntime"}
    assert figures["bare_fastest_runtime"] == "onnxruntime"  # the int8 copy on OpenVINO is never the baseline
    assert figures["bare_mpx_per_s"] == figures["bare_runtimes"]["hot-q"]["onnxruntime"]["mpx_per_s"]
    assert set(figures["inspector_runtimes"]) == {"onnxruntime", "openvino"}
    assert figures["inspector_runtimes"]["openvino"]["gives_the_models_results"] is False
