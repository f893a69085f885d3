"""CLI predict / evaluate / models on folders the tests write, with a tiny real ONNX model.

The folder (VOC or YOLO) has four 64 x 64 images, built so that every figure is known:

| image         | ground truth        | drawn                          | model sees (score)       |
| ------------- | ------------------- | ------------------------------ | ------------------------ |
| bright_spot_1 | bright (36,36,60,60)| bright blob, value 224         | bright, 0.878, exact     |
| bright_spot_2 | bright (4,36,20,60) | dim blob, value 140            | dark, 0.549: wrong class |
| dark_spot_1   | dark (4,4,20,20)    | dim blob, value 160            | dark, 0.627, exact       |
| dark_spot_2   | dark (40,4,56,20)   | no blob there; one elsewhere   | miss + bright FP, 0.784  |

dark: preds dark_spot_1 (TP .627), bright_spot_2 (FP .549) over 2 GT -> AP 0.5.
bright: preds bright_spot_1 (TP .878), dark_spot_2 (FP .784) over 2 GT -> AP 0.5.
Boxes are exact, so AP is the same at every IoU: mAP@0.5 = mAP@0.5:0.95 = 0.5.
Detection rate (any class, IoU >= .3, score >= .5): 3 of 4. False detections: 1 in 4 images.
Image accuracy: dark_spot_1 and bright_spot_1 right, the other two wrong: 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.cli import main
from inspection.registry import Registry
from tests.line_configs import clean_strip_gate_config
from tests.tiny_models import BRIGHT, DARK, add_tiny_model

CLASSES = ("dark_spot", "bright_spot")
# name: (GT boxes with class index, drawn blobs as (box, pixel value))
SCENE = {
    "bright_spot_1": ([((36, 36, 60, 60), 1)], [((36, 36, 60, 60), 224)]),
    "bright_spot_2": ([((4, 36, 20, 60), 1)], [((4, 36, 20, 60), 140)]),
    "dark_spot_1": ([((4, 4, 20, 20), 0)], [((4, 4, 20, 20), 160)]),
    "dark_spot_2": ([((40, 4, 56, 20), 0)], [((4, 40, 12, 48), 200)]),
}


def write_folder(root: Path, fmt: str) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name, (truth, drawn) in SCENE.items():
        image = np.full((64, 64), DARK, np.uint8)
        for (x1, y1, x2, y2), value in drawn:
            assert value >= BRIGHT
            image[y1:y2, x1:x2] = value
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        if fmt == "voc":
            objects = "".join(
                f"<object><name>{CLASSES[c]}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for (x1, y1, x2, y2), c in truth)
            (root / "annotations" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.png</filename><size><width>64</width><height>64</height>"
                f"<depth>1</depth></size>{objects}</annotation>")
        else:
            lines = [f"{c} {(x1 + x2) / 128} {(y1 + y2) / 128} {(x2 - x1) / 64} {(y2 - y1) / 64}"
                     for (x1, y1, x2, y2), c in truth]
            (root / "annotations" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "models")
    add_tiny_model(registry, tmp_path, classes=CLASSES, version="hot-test-1", activate=True,
                   operating_threshold=0.5)
    return registry


def cli(*args: str) -> int:
    return main([*args])


@pytest.mark.parametrize("model", ["hot", "hot-test-1", "PATH"])
def test_predict_writes_one_entry_per_image(registry: Registry, tmp_path: Path, model: str,
                                            capsys: pytest.CaptureFixture) -> None:
    folder = write_folder(tmp_path / "data", "voc")
    if model == "PATH":
        model = str(registry.root / "hot" / "hot-test-1" / "model.onnx")
    out = tmp_path / "out" / "pred.json"
    assert cli("predict", "--model", model, "--registry", str(registry.root), "--images",
               str(folder / "images"), "--json", str(out), "--providers", "cpu", "--no-progress") == 0
    entries = json.loads(out.read_text())
    assert [e["image"] for e in entries] == [f"{n}.png" for n in sorted(SCENE)]
    assert all((e["width"], e["height"]) == (64, 64) for e in entries)
    by_name = {e["image"]: e["defects"] for e in entries}
    assert by_name["bright_spot_1.png"] == [{"class": "bright_spot", "score": round(224 / 255, 6),
                                             "box": [36.0, 36.0, 60.0, 60.0]}]
    assert by_name["dark_spot_2.png"] == [{"class": "bright_spot", "score": round(200 / 255, 6),
                                           "box": [4.0, 40.0, 12.0, 48.0]}]
    assert "4 images, 4 defects at score >= 0.5, 0 unreadable" in capsys.readouterr().err


def test_predict_with_a_class_threshold_and_a_flip(registry: Registry, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    folder = write_folder(tmp_path / "data", "voc")
    out = tmp_path / "out" / "pred.json"
    # bright_spot's blobs score 224/255 and 200/255: a threshold of 0.8 keeps the first, drops the second
    assert cli("predict", "--model", "hot", "--registry", str(registry.root), "--images", str(folder / "images"),
               "--json", str(out), "--providers", "cpu", "--no-progress", "--class-threshold", "bright_spot=0.8",
               "--flip", "h") == 0
    by_name = {e["image"]: e["defects"] for e in json.loads(out.read_text())}
    assert by_name["bright_spot_1.png"] == [{"class": "bright_spot", "score": round(224 / 255, 6),
                                             "box": [36.0, 36.0, 60.0, 60.0]}]
    assert by_name["dark_spot_2.png"] == []
    capsys.readouterr()
    assert cli("predict", "--model", "hot", "--registry", str(registry.root), "--images", str(folder / "images"),
               "--json", str(out), "--class-threshold", "bright spot=0.8") == 2
    assert "--class-threshold: hot-test-1 has no class 'bright spot'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("predict", "--model", "hot", "--images", str(folder / "images"), "--json", str(out),
            "--class-threshold", "bright_spot=1")
    assert "expected CLASS=S with S between 0 and 1, got 'bright_spot=1'" in capsys.readouterr().err


def test_predict_min_score_and_unreadable_images(registry: Registry, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    images = write_folder(tmp_path / "data", "voc") / "images"
    (images / "broken.png").write_bytes(b"not a png at all")
    out = tmp_path / "pred.json"
    args = ["predict", "--model", "hot", "--registry", str(registry.root), "--images", str(images),
            "--json", str(out), "--providers", "cpu", "--no-progress", "--min-score", "0.8"]
    assert cli(*args) == 0
    entries = {e["image"]: e for e in json.loads(out.read_text())}
    assert entries["broken.png"]["defects"] == [] and entries["broken.png"]["width"] is None
    assert "not a decodable image" in entries["broken.png"]["error"]
    # only the 0.878 blob is at or above 0.8
    assert sum(len(e["defects"]) for e in entries.values()) == 1
    assert "1 unreadable: broken.png" in capsys.readouterr().err
    assert cli(*args, "--strict") == 1


def test_predict_bad_input_is_one_line_and_exit_2(registry: Registry, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert cli("predict", "--model", "hot", "--registry", str(registry.root), "--images",
               str(tmp_path / "empty"), "--json", str(tmp_path / "p.json")) == 2
    assert "no image files" in capsys.readouterr().err
    images = write_folder(tmp_path / "data", "voc") / "images"
    assert cli("predict", "--model", "cold", "--registry", str(registry.root), "--images", str(images),
               "--json", str(tmp_path / "p.json")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no active cold model" in err


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_evaluate_figures_and_plots(registry: Registry, tmp_path: Path, fmt: str,
                                    capsys: pytest.CaptureFixture) -> None:
    folder = write_folder(tmp_path / fmt, fmt)
    out = tmp_path / "eval" / f"{fmt}.json"
    assert cli("evaluate", "--model", "hot", "--registry", str(registry.root), "--data", str(folder),
               "--json", str(out), "--providers", "cpu", "--no-progress") == 0
    figures = json.loads(out.read_text())
    assert (figures["images"], figures["gt_boxes"]) == (4, 4)
    assert figures["per_class"]["dark_spot"]["ap50"] == pytest.approx(0.5)
    assert figures["per_class"]["bright_spot"]["ap50"] == pytest.approx(0.5)
    assert figures["map50"] == pytest.approx(0.5) and figures["map50_95"] == pytest.approx(0.5)
    assert figures["detection_rate"] == pytest.approx(0.75)
    assert figures["false_detections"] == 1 and figures["false_detections_per_image"] == pytest.approx(0.25)
    assert figures["image_accuracy"] == pytest.approx(0.5)
    assert figures["confusion_matrix"]["labels"] == [*CLASSES, "background"]
    assert figures["confusion_matrix"]["matrix"] == [[1, 0, 1], [1, 1, 0], [0, 1, 0]]
    assert figures["model"]["version"] == "hot-test-1" and figures["operating_threshold"] == 0.5
    for name in (f"{fmt}_pr_curves.png", f"{fmt}_confusion_matrix.png"):
        data = (out.parent / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert cv2.imread(str(out.parent / name)).shape[0] > 300
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["map50"] == pytest.approx(0.5)
    # 95 % intervals over resampled images (training.bootstrap): they hold the figure, and 4 images say little
    assert figures["bootstrap"]["resamples"] == 1000 and summary["ci95"] == figures["bootstrap"]["ci"]
    for name in ("map50", "detection_rate", "false_detections_per_image", "image_accuracy"):
        lo, hi = figures["bootstrap"]["ci"][name]
        assert lo <= figures[name] <= hi and hi - lo >= 0.25, name


def test_evaluate_min_score_moves_the_threshold_figures_only(registry: Registry, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "voc", "voc")
    out = tmp_path / "eval.json"
    assert cli("evaluate", "--model", "hot-test-1", "--registry", str(registry.root), "--data", str(folder),
               "--json", str(out), "--providers", "cpu", "--no-progress", "--min-score", "0.6",
               "--bootstrap", "0") == 0
    figures = json.loads(out.read_text())
    assert figures["map50"] == pytest.approx(0.5)  # AP uses every score
    assert "bootstrap" not in figures  # --bootstrap 0
    assert figures["detection_rate"] == pytest.approx(0.5)  # the 0.549 prediction no longer counts


def test_evaluate_rejects_boxes_of_unknown_classes(registry: Registry, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    folder = write_folder(tmp_path / "voc", "voc")
    xml = folder / "annotations" / "dark_spot_1.xml"
    xml.write_text(xml.read_text().replace("<name>dark_spot</name>", "<name>rust</name>"))
    assert cli("evaluate", "--model", "hot", "--registry", str(registry.root), "--data", str(folder),
               "--json", str(tmp_path / "e.json"), "--providers", "cpu", "--no-progress") == 2
    assert "rust" in capsys.readouterr().err


def test_evaluate_judges_an_unseen_class_apart(registry: Registry, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    # dark_spot_1's box, relabelled "rust": the model still finds it (as dark_spot, 0.627), so rust
    # is found once in one box and never called unknown (the tiny model has no unknown rule).
    folder = write_folder(tmp_path / "voc", "voc")
    xml = folder / "annotations" / "dark_spot_1.xml"
    xml.write_text(xml.read_text().replace("<name>dark_spot</name>", "<name>rust</name>"))
    out = tmp_path / "e.json"
    assert cli("evaluate", "--model", "hot", "--registry", str(registry.root), "--data", str(folder),
               "--json", str(out), "--providers", "cpu", "--no-progress", "--unseen-class", "rust") == 0
    figures = json.loads(out.read_text())
    assert figures["gt_boxes"] == 3  # rust is judged apart, not as a missed known defect
    assert figures["unseen_classes"]["rust"] == {"gt_boxes": 1, "found": 1, "found_as_unknown": 0,
                                                 "found_as": {"dark_spot": 1}, "found_rate": 1.0,
                                                 "unknown_share_of_found": 0.0}
    assert cli("evaluate", "--model", "hot", "--registry", str(registry.root), "--data", str(folder),
               "--json", str(out), "--providers", "cpu", "--no-progress", "--unseen-class", "dark_spot") == 2
    assert "learned these classes" in capsys.readouterr().err


def test_evaluate_split_of_the_real_dataset(tmp_path: Path, datasets_dir: Path) -> None:
    # The blob model knows nothing about steel: this checks the --split plumbing on real files,
    # not accuracy (the figures are whatever a brightness rule scores).
    from inspection.datasets import DATASET_CLASSES, read_split_file

    registry = Registry(tmp_path / "models")
    add_tiny_model(registry, tmp_path, classes=DATASET_CLASSES["neu-det"], version="hot-blob", activate=True)
    out = tmp_path / "neu.json"
    assert cli("evaluate", "--model", "hot", "--registry", str(registry.root), "--data",
               str(datasets_dir / "neu-det"), "--split", "test", "--json", str(out), "--providers", "cpu",
               "--no-progress") == 0
    figures = json.loads(out.read_text())
    assert figures["images"] == len(read_split_file("neu-det")["test"])
    assert figures["data"] == {"folder": str(datasets_dir / "neu-det"), "split": "test"}
    assert set(figures["per_class"]) == set(DATASET_CLASSES["neu-det"])


def test_models_cli_list_show_promote_rollback_history(registry: Registry, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    add_tiny_model(registry, tmp_path, classes=CLASSES, version="hot-test-2")
    root = str(registry.root)
    assert cli("models", "--registry", root, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("* hot-test-1") for line in lines)
    assert any(line.startswith("  hot-test-2") for line in lines)
    # the tiny models carry no test figures: the gate cannot judge them, only a forced promotion passes
    assert cli("models", "--registry", root, "promote", "hot-test-2", "--by", "qa", "--reason", "better") == 2
    assert "hot-test-1 has no test figures" in capsys.readouterr().err
    assert cli("models", "--registry", root, "promote", "hot-test-2", "--by", "qa", "--reason", "better",
               "--force") == 0
    assert "active model is now hot-test-2 (was hot-test-1)" in capsys.readouterr().out
    assert cli("models", "--registry", root, "show", "hot") == 0
    out = capsys.readouterr().out
    assert '"version": "hot-test-2"' in out and "sha256 verified" in out and "active for hot" in out
    assert cli("models", "--registry", root, "rollback", "hot") == 0
    assert "rolled back from hot-test-2 to hot-test-1" in capsys.readouterr().out
    assert cli("models", "--registry", root, "history", "--json") == 0
    history = json.loads(capsys.readouterr().out)
    assert [(h["action"], h["version"], h["by"]) for h in history][1:] == [
        ("promote", "hot-test-2", "qa"), ("rollback", "hot-test-1", history[2]["by"])]
    assert history[1]["forced_past_gate"] == ["hot-test-1 has no test figures in its manifest (metrics.test)"]
    assert cli("models", "--registry", root, "list", "--json") == 0
    rows = {r["version"]: r["active"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {"hot-test-1": True, "hot-test-2": False}


def test_models_cli_refuses_a_tampered_model(registry: Registry, capsys: pytest.CaptureFixture) -> None:
    model = registry.root / "hot" / "hot-test-1" / "model.onnx"
    data = model.read_bytes()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert cli("models", "--registry", str(registry.root), "show", "hot-test-1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to load" in err


def test_evaluate_counts_images_the_model_was_trained_on(tmp_path: Path) -> None:
    from tests.tiny_models import build_blob_model, tiny_manifest

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["dark_spot_1.png", "other.png"], "val": [], "test": []}))
    registry = Registry(tmp_path / "models")
    manifest = tiny_manifest(classes=CLASSES, version="hot-trained")
    manifest["data"] = {"dataset": "toy", "split_file": str(split)}
    registry.add(build_blob_model(tmp_path / "m.onnx"), manifest, activate=True)
    folder = write_folder(tmp_path / "voc", "voc")
    out = tmp_path / "e.json"
    assert cli("evaluate", "--model", "hot", "--registry", str(registry.root), "--data", str(folder),
               "--json", str(out), "--providers", "cpu", "--no-progress") == 0
    assert json.loads(out.read_text())["training_images_evaluated"] == 1


def test_predict_as_a_real_process(registry: Registry, tmp_path: Path) -> None:
    import subprocess
    import sys

    images = write_folder(tmp_path / "data", "yolo") / "images"
    out = tmp_path / "pred.json"
    result = subprocess.run(
        [sys.executable, "-m", "inspection", "predict", "--model", "hot-test-1", "--registry",
         str(registry.root), "--images", str(images), "--json", str(out), "--no-progress"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from inspection.backends import openvino_installed

    runs_on = "OpenVINO CPU" if openvino_installed() else "CPUExecutionProvider"  # what "auto" picks on a CPU
    assert f"model hot-test-1 on {runs_on}" in result.stderr
    assert len(json.loads(out.read_text())) == 4


def test_models_compare_prints_both_models_on_the_same_images(registry: Registry, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    add_tiny_model(registry, tmp_path, classes=CLASSES, version="hot-test-strict", operating_threshold=0.9)
    folder = write_folder(tmp_path / "voc", "voc")
    singles = {}
    for version in ("hot-test-1", "hot-test-strict"):
        out = tmp_path / f"{version}.json"
        assert cli("evaluate", "--model", version, "--registry", str(registry.root), "--data", str(folder),
                   "--json", str(out), "--providers", "cpu", "--no-progress") == 0
        singles[version] = json.loads(out.read_text())
    capsys.readouterr()
    out = tmp_path / "compare.json"
    assert cli("models", "--registry", str(registry.root), "compare", "hot", "hot-test-strict", "--data",
               str(folder), "--providers", "cpu", "--rounds", "1", "--json", str(out), "--no-progress") == 0
    printed = capsys.readouterr().out.splitlines()
    figures = json.loads(out.read_text())["figures"]
    for key, version in (("a", "hot-test-1"), ("b", "hot-test-strict")):
        for figure in ("detection_rate", "false_detections_per_image", "map50"):
            assert figures[key][figure] == singles[version][figure]
        assert figures[key]["ms_per_image_alternating"] > 0
    assert printed[0].split() == ["hot-test-1", "hot-test-strict", "B", "-", "A"]
    rate = next(line for line in printed if line.startswith("detection rate")).split()
    a, b = singles["hot-test-1"]["detection_rate"], singles["hot-test-strict"]["detection_rate"]
    assert rate[-3:] == [f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}"]
    assert b < a  # the stricter threshold finds less on these blobs, and the table says which class lost
    paired = json.loads(out.read_text())["figures"]["paired_bootstrap"]["figures"]["detection_rate"]
    lo, hi = paired["b_minus_a_ci"]
    assert lo <= b - a <= hi <= 0.0 and paired["share_b_better"] == 0.0  # the stricter model never finds more
    row = next(line for line in printed if line.strip().startswith("detection rate  ") and "[" in line)
    assert f"[{lo:+.3f}, {hi:+.3f}]" in row
    assert printed[-1].startswith("largest recall drop from A to B: ")


def test_models_compare_refuses_models_of_two_line_types(registry: Registry, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    add_tiny_model(registry, tmp_path, classes=CLASSES, line_type="cold", version="cold-test-1")
    folder = write_folder(tmp_path / "voc", "voc")
    assert cli("models", "--registry", str(registry.root), "compare", "hot", "cold-test-1", "--data",
               str(folder), "--providers", "cpu") == 2
    assert "compare models of one line type" in capsys.readouterr().err


def _with_test_figures(registry: Registry, tmp_path: Path, version: str, rate: float,
                       recalls: dict[str, float], images: int = 100) -> None:
    from tests.tiny_models import build_blob_model, tiny_manifest

    manifest = tiny_manifest(CLASSES, "hot", version)
    manifest["metrics"] = {"test": {"images": images, "gt_boxes": 150, "detection_rate": rate,
                                    "per_class": {c: {"recall_at_threshold": r} for c, r in recalls.items()}}}
    registry.add(build_blob_model(tmp_path / f"{version}.onnx", len(CLASSES)), manifest, version=version)


def test_models_promote_gate_refuses_a_worse_candidate_unless_forced_with_a_reason(
        tmp_path: Path, ipc_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """The test-split figures of the manifests (the clean-strip check, off here: tests/test_clean_strip.py)."""
    registry = Registry(tmp_path / "models")
    _with_test_figures(registry, tmp_path, "hot-a", 0.90, {"dark_spot": 0.80, "bright_spot": 0.90})
    _with_test_figures(registry, tmp_path, "hot-b", 0.91, {"dark_spot": 0.79, "bright_spot": 0.95})  # within 0.02
    _with_test_figures(registry, tmp_path, "hot-c", 0.92, {"dark_spot": 0.70, "bright_spot": 0.99})
    _with_test_figures(registry, tmp_path, "hot-d", 0.95, {"dark_spot": 0.99, "bright_spot": 0.99}, images=50)
    root = str(registry.root)
    registry.promote("hot-a")
    line = str(clean_strip_gate_config(tmp_path, ipc_dir, frames=0))

    def cli(*args: str) -> int:
        return main([*args, "--config", line])

    assert cli("models", "--registry", root, "promote", "hot-b") == 0
    assert registry.history()[-1]["clean_strip"] == {"run": False, "why": "promote_clean_strip_frames = 0"}
    assert cli("models", "--registry", root, "promote", "hot-c") == 2
    err = capsys.readouterr().err
    assert "hot-c is worse than the active hot-b" in err and "dark_spot recall 0.700 < 0.790" in err
    assert err.count("\n") == 1
    assert cli("models", "--registry", root, "promote", "hot-d") == 2
    assert "not comparable" in capsys.readouterr().err
    assert cli("models", "--registry", root, "promote", "hot-c", "--force") == 2
    assert "--force needs --reason" in capsys.readouterr().err
    assert registry.active("hot") == "hot-b"
    assert cli("models", "--registry", root, "promote", "hot-c", "--force", "--reason", "pits matter more") == 0
    assert registry.active("hot") == "hot-c"
    assert registry.history()[-1]["forced_past_gate"] == ["dark_spot recall 0.700 < 0.790 (allowed drop 0.020)"]


def test_models_history_at_a_time(registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import datetime as dt

    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    assert registry.active_at("hot", before) is None
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert registry.active_at("hot", now) == "hot-test-1"
    assert cli("models", "--registry", str(registry.root), "history", "--at", now.isoformat(), "--json") == 0
    assert json.loads(capsys.readouterr().out)["active"] == {"hot": "hot-test-1", "cold": None}
    with pytest.raises(SystemExit) as exited:  # argparse: usage line and exit 2
        cli("models", "--registry", str(registry.root), "history", "--at", "yesterday")
    assert exited.value.code == 2 and "expected an ISO time" in capsys.readouterr().err


def test_evaluate_explain_accounts_for_every_miss_and_false_detection(registry: Registry, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    folder = write_folder(tmp_path / "voc", "voc")
    out = tmp_path / "eval.json"
    assert cli("evaluate", "--model", "hot", "--registry", str(registry.root), "--data", str(folder),
               "--json", str(out), "--providers", "cpu", "--no-progress", "--bootstrap", "0", "--explain") == 0
    figures = json.loads(out.read_text())
    explained = figures["explain"]
    # the attribution adds up to the headline figures it explains
    assert explained["missed"]["total"] == round(figures["gt_boxes"] * (1 - figures["detection_rate"])) == 1
    assert explained["false"]["total"] == figures["false_detections"] == 1
    assert explained["missed"]["of_ground_truth"] == figures["gt_boxes"]
    err = capsys.readouterr().err
    assert "missed boxes by cause (1 of 4 ground-truth boxes)" in err and "false detections by cause (1)" in err


def test_each_cause_of_a_miss_and_of_a_false_detection() -> None:
    from training.explain import explain_images
    from training.metrics import ImageResult

    gt = [[0, 0, 20, 20], [50, 50, 70, 70], [100, 100, 120, 120], [150, 0, 190, 40]]
    preds = [([0, 0, 20, 20], 0.3, 0),       # on box 0 but below its class's threshold (0.5)
             ([50, 50, 56, 56], 0.9, 0),     # inside box 1, far too small: box mismatch and a near-defect fragment
             ([200, 200, 220, 220], 0.9, 1),  # on nothing: plain texture
             ([150, 0, 190, 40], 0.9, 1)]    # finds box 3
    im = ImageResult(gt_boxes=np.array(gt, float), gt_labels=np.array([0, 0, 1, 1]),
                     pred_boxes=np.array([p[0] for p in preds], float), pred_scores=np.array([p[1] for p in preds]),
                     pred_labels=np.array([p[2] for p in preds]), image_label=0)
    out = explain_images([im], CLASSES, np.array([0.5, 0.5]))
    assert out["missed"]["per_class"] == {"dark_spot": {"below_threshold": 1, "box_mismatch": 1, "no_detection": 0},
                                          "bright_spot": {"below_threshold": 0, "box_mismatch": 0, "no_detection": 1}}
    assert out["false"]["per_class"] == {"bright_spot": {"plain_texture": 1, "near_defect": 0},
                                         "dark_spot": {"plain_texture": 0, "near_defect": 1}}
    assert out["false"]["fragments"] == {"dark_spot": 1} and out["false"]["per_image"] == 2.0
